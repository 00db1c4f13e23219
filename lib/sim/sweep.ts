import { runSimulation, type SimResult, type SimRunOptions } from './cluster';

export interface SweepSummary {
  seeds: number;
  steps: number;
  ms: number;
  /** CPU time of this process during the sweep (wall time lies on a loaded machine). */
  cpuMs: number;
  stepsPerSec: number;
  stepsPerCpuSec: number;
  seedsPerSec: number;
  byNodes: Record<number, number>;
  failures: SimResult[];
  opsCompleted: number;
  maxLiveLatency: number;
}

/** Run seeds start..start+count-1; `each` sees every result as it completes. */
export function runSweep(
  start: number,
  count: number,
  opts: SimRunOptions = {},
  each?: (r: SimResult, ms: number) => void,
): SweepSummary {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const s: SweepSummary = {
    seeds: 0,
    steps: 0,
    ms: 0,
    cpuMs: 0,
    stepsPerSec: 0,
    stepsPerCpuSec: 0,
    seedsPerSec: 0,
    byNodes: {},
    failures: [],
    opsCompleted: 0,
    maxLiveLatency: 0,
  };
  for (let i = 0; i < count; i++) {
    const seed = (start + i) >>> 0;
    const t = performance.now();
    const r = runSimulation(seed, opts);
    s.seeds++;
    s.steps += r.stats.steps;
    s.opsCompleted += r.stats.opsCompleted;
    s.maxLiveLatency = Math.max(s.maxLiveLatency, r.stats.maxLiveLatency);
    s.byNodes[r.nodes] = (s.byNodes[r.nodes] ?? 0) + 1;
    if (!r.ok) s.failures.push(r);
    each?.(r, performance.now() - t);
  }
  s.ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  s.cpuMs = (cpu.user + cpu.system) / 1000;
  s.stepsPerSec = s.steps / (s.ms / 1000);
  s.stepsPerCpuSec = s.steps / (s.cpuMs / 1000);
  s.seedsPerSec = s.seeds / (s.ms / 1000);
  return s;
}

/** The command that replays a run exactly. */
export function replayCommand(r: SimResult, opts: SimRunOptions = {}): string {
  const extra: string[] = [];
  if (opts.nodes !== undefined) extra.push(`--nodes ${opts.nodes}`);
  if (opts.faultSteps !== undefined) extra.push(`--steps ${opts.faultSteps}`);
  if (opts.snapshotEverySlots !== undefined)
    extra.push(`--snapshot-every ${opts.snapshotEverySlots}`);
  if (opts.wipe !== undefined) extra.push(opts.wipe ? '--wipe' : '--no-wipe');
  if (opts.wire) extra.push('--wire');
  if (opts.sabotage !== undefined && opts.sabotage !== 'none')
    extra.push(`--sabotage ${opts.sabotage}`);
  return `npm run sim -- --seed ${r.seed}${extra.length ? ' ' + extra.join(' ') : ''}`;
}
