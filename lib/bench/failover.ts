import { performance } from 'node:perf_hooks';
import { sleep, statusOf, waitForLeader } from './cluster';
import { Load } from './load';
import { fmtMs, note } from './log';
import type { Env } from './run';
import { median } from './stats';

// The failover experiment (--failover).

export interface FailoverRound {
  killed: number;
  newLeader: number | null;
  /** SIGKILL of the leader until the next write answered by another node. */
  gapMs: number | null;
  maxLatencyMs: number;
  /** Operations after the kill that ended without success (errors + unknown outcomes). */
  failed: number;
}

export interface FailoverResult {
  clients: number;
  rounds: FailoverRound[];
  medianGapMs: number | null;
}

/**
 * `--failover-rounds` times: under write load, SIGKILL the leader and time until
 * a write is answered by another node; then restart the killed node and let it
 * catch up before the next round.
 */
export async function failover(env: Env): Promise<FailoverResult> {
  const cluster = env.cluster!;
  const sids = cluster.nodes.map((n) => n.sid);
  const clients = Math.max(...env.opts.clients, 1);
  const rounds: FailoverRound[] = [];
  for (let round = 1; round <= env.opts.failoverRounds; round++) {
    const leader = await waitForLeader(env.ctl, sids);
    env.target.leader = leader;
    const load = new Load(env.target, clients, 'put', env.keyNames, env.opts.valueBytes, false);
    load.start();
    await sleep(1000);
    let killAt = Infinity;
    let gap: number | null = null;
    let maxLat = 0;
    let failed = 0;
    load.onDone = (ok, sid, at, lat, isWrite) => {
      if (at < killAt) return;
      if (lat > maxLat) maxLat = lat;
      if (!ok) failed++;
      if (gap === null && ok && isWrite && sid !== leader) gap = at - killAt;
    };
    killAt = performance.now();
    await cluster.kill(leader);
    const deadline = performance.now() + 30_000;
    while (gap === null && performance.now() < deadline) await sleep(5);
    await sleep(500);
    await load.stop();
    let newLeader: number | null = null;
    try {
      newLeader = await waitForLeader(
        env.ctl,
        sids.filter((s) => s !== leader),
        5000,
      );
    } catch {
      newLeader = null;
    }
    rounds.push({
      killed: leader,
      newLeader,
      gapMs: gap === null ? null : Math.round(gap * 10) / 10,
      maxLatencyMs: Math.round(maxLat * 10) / 10,
      failed,
    });
    note(
      `  failover ${round}/${env.opts.failoverRounds}: killed leader ${leader}; next write committed after ${gap === null ? 'NEVER (30 s)' : fmtMs(gap) + ' ms'} (new leader ${newLeader ?? '?'})`,
    );
    // Bring the node back (its data directory is intact: no --init) and let it catch up.
    await cluster.startNode(leader, false);
    await waitCaughtUp(env, leader, 60_000);
  }
  const gaps = rounds.map((r) => r.gapMs).filter((g): g is number => g !== null);
  return { clients, rounds, medianGapMs: median(gaps) };
}

/** Wait until `sid` has applied everything the leader had applied when we started waiting. */
async function waitCaughtUp(env: Env, sid: number, timeoutMs: number): Promise<number | null> {
  const sids = env.cluster!.nodes.map((n) => n.sid);
  const leader = await waitForLeader(env.ctl, sids);
  const ls = await statusOf(env.ctl, leader);
  const goal = ls?.applied ?? 0;
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const s = await statusOf(env.ctl, sid, 200);
    if (s && s.applied >= goal) return performance.now() - t0;
    await sleep(10);
  }
  return null;
}
