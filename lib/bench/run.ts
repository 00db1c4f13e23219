import { performance } from 'node:perf_hooks';
import type { PaxosClient } from '../client';
import type { OpKind, Options } from './args';
import { sleep, statusOf, type LocalCluster } from './cluster';
import { Load, type Target } from './load';
import { fmtInt, fmtMs, note } from './log';
import { hostBusyS, procCpuS } from './procstat';
import {
  histogram,
  latencySummary,
  pct,
  percentileCurve,
  type Bucket,
  type LatencySummary,
} from './stats';

// One measured run of the throughput sweep: closed-loop load, CPU marks, latency summary.

export interface RunResult {
  clients: number;
  op: OpKind;
  durationS: number;
  ops: number;
  opsPerSec: number;
  latencyMs: LatencySummary;
  errors: number;
  unknown: number;
  redirects: number;
  retries: number;
  errorKinds: Record<string, number>;
  /** Leader (sid) before and after the run; they differ if an election happened. */
  leaderBefore: number | null;
  leaderAfter: number | null;
  cpu: {
    /** This load generator: % of one core over the measurement window. */
    loadgenPct: number;
    /**
     * Busy CPU of the whole host not accounted to the bench or (local) nodes, as % of
     * one core: other programs competing for the cores. null if unknown.
     */
    otherPct: number | null;
    nodes: { sid: number; pid: number | null; role: string; pct: number | null }[];
  };
  histogram: Bucket[];
  /** Percentile curve for the plot: [quantile, ms]. */
  curve: [number, number][];
}

export interface Env {
  opts: Options;
  target: Target;
  cluster: LocalCluster | null;
  ctl: PaxosClient;
  keyNames: string[];
}

interface CpuMark {
  wall: number;
  self: NodeJS.CpuUsage;
  nodes: Map<number, number | null>;
  host: number | null;
  retries: number;
  redirects: number;
}

function cpuMark(env: Env, load: Load): CpuMark {
  const nodes = new Map<number, number | null>();
  if (env.cluster)
    for (const n of env.cluster.nodes) nodes.set(n.sid, n.pid === null ? null : procCpuS(n.pid));
  const s = load.clientStats();
  return {
    wall: performance.now(),
    self: process.cpuUsage(),
    host: hostBusyS(),
    nodes,
    retries: s.retries,
    redirects: s.redirects,
  };
}

export async function currentLeader(env: Env): Promise<number | undefined> {
  const sids = env.target.clientConfig.servers.map((s) => s.sid);
  const st = await Promise.all(sids.map((s) => statusOf(env.ctl, s)));
  return st.find((s) => s?.role === 'leader')?.sid;
}

/** Progress lines every second while a run lasts (none with --json). */
function progressTicker(opts: Options, clients: number, load: Load, measureStart: number) {
  if (opts.json) return null;
  return setInterval(() => {
    const now = performance.now();
    const phase =
      now < measureStart
        ? 'warm-up'
        : `${Math.min(opts.durationS, (now - measureStart) / 1000).toFixed(0)}/${opts.durationS}s`;
    const sorted = load.tickSamples.sorted();
    note(
      `  ${opts.op} clients=${clients} [${phase}] ${fmtInt(load.tick.ops)} ops/s  p50 ${fmtMs(pct(sorted, 0.5))} ms  p99 ${fmtMs(pct(sorted, 0.99))} ms  errors ${load.tick.errors}  unknown ${load.tick.unknown}`,
    );
    load.resetTick();
  }, 1000);
}

/** CPU use between two marks: the bench's, each local node's, and the rest of the host's. */
async function cpuUse(env: Env, startMark: CpuMark, endMark: CpuMark): Promise<RunResult['cpu']> {
  const wallS = (endMark.wall - startMark.wall) / 1000;
  const selfUs =
    endMark.self.user - startMark.self.user + (endMark.self.system - startMark.self.system);
  const roles = new Map<number, string>();
  if (env.cluster) {
    const st = await Promise.all(env.cluster.nodes.map((n) => statusOf(env.ctl, n.sid)));
    for (const s of st) if (s) roles.set(s.sid, s.role);
  }
  const nodes = env.cluster
    ? env.cluster.nodes.map((n) => {
        const a = startMark.nodes.get(n.sid);
        const b = endMark.nodes.get(n.sid);
        return {
          sid: n.sid,
          pid: n.pid,
          role: roles.get(n.sid) ?? '?',
          pct: a != null && b != null ? Math.round(((b - a) / wallS) * 1000) / 10 : null,
        };
      })
    : [];
  return {
    loadgenPct: Math.round((selfUs / 1e6 / wallS) * 1000) / 10,
    otherPct:
      startMark.host !== null && endMark.host !== null && nodes.every((n) => n.pct !== null)
        ? Math.max(
            0,
            Math.round(
              (((endMark.host - startMark.host) / wallS) * 100 -
                (selfUs / 1e6 / wallS) * 100 -
                nodes.reduce((a, n) => a + (n.pct ?? 0), 0)) *
                10,
            ) / 10,
          )
        : null,
    nodes,
  };
}

/**
 * One closed-loop run with `clients` logical clients: warm-up, then the measured
 * window; only operations that complete inside it count.
 */
export async function runOnce(env: Env, clients: number): Promise<RunResult> {
  const { opts } = env;
  const leader = await currentLeader(env);
  if (leader !== undefined) env.target.leader = leader;
  const load = new Load(env.target, clients, opts.op, env.keyNames, opts.valueBytes, !opts.json);
  const t0 = performance.now();
  const measureStart = t0 + opts.warmupS * 1000;
  const measureEnd = measureStart + opts.durationS * 1000;
  load.setWindow(measureStart, measureEnd);
  load.start();

  const progress = progressTicker(opts, clients, load, measureStart);
  await sleep(Math.max(0, measureStart - performance.now()));
  const startMark = cpuMark(env, load);
  await sleep(Math.max(0, measureEnd - performance.now()));
  const endMark = cpuMark(env, load);
  if (progress) clearInterval(progress);
  await load.stop();

  const wallS = (endMark.wall - startMark.wall) / 1000;
  const cpu = await cpuUse(env, startMark, endMark);
  const sorted = load.samples.sorted();
  return {
    clients,
    op: opts.op,
    durationS: Math.round(wallS * 1000) / 1000,
    ops: load.window.ops,
    opsPerSec: Math.round(load.window.ops / wallS),
    latencyMs: latencySummary(sorted),
    errors: load.window.errors,
    unknown: load.window.unknown,
    redirects: endMark.redirects - startMark.redirects,
    retries: endMark.retries - startMark.retries,
    errorKinds: Object.fromEntries(load.errorKinds),
    leaderBefore: leader ?? null,
    leaderAfter: (await currentLeader(env)) ?? null,
    cpu,
    histogram: histogram(sorted),
    curve: percentileCurve(sorted),
  };
}
