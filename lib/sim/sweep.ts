import { runSimulation, type SimResult, type SimRunOptions } from './cluster';

export interface SweepSummary {
  seeds: number;
  /** Runs, counting the branches (continuations from a dangerous state). */
  runs: number;
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
  /** Partition shape -> worst ticks from its start (or the heal) to the next choice. */
  firstChoice: Record<string, { ticks: number; seed: number }>;
  /** Runs whose schedule family reached its dangerous state. */
  dangerous: number;
  /**
   * injectDivergence: runs whose injected replica applied the extra command,
   * runs where it was reported, and the worst report time in heartbeats after
   * the later of the injection and the heal.
   */
  divergence: { injected: number; detected: number; worstBeats: number };
}

export interface SweepOptions {
  /** Continuations run from each passing seed's dangerous state (0 = none). */
  branches?: number;
}

/** Run seeds start..start+count-1; `each` sees every result as it completes. */
export function runSweep(
  start: number,
  count: number,
  opts: SimRunOptions = {},
  each?: (r: SimResult, ms: number) => void,
  sweep: SweepOptions = {},
): SweepSummary {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const s: SweepSummary = {
    seeds: 0,
    runs: 0,
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
    firstChoice: {},
    dangerous: 0,
    divergence: { injected: 0, detected: 0, worstBeats: 0 },
  };
  const account = (r: SimResult, ms: number): void => {
    s.runs++;
    s.steps += r.stats.steps;
    s.opsCompleted += r.stats.opsCompleted;
    s.maxLiveLatency = Math.max(s.maxLiveLatency, r.stats.maxLiveLatency);
    for (const [shape, ticks] of Object.entries(r.stats.firstChoice)) {
      const prev = s.firstChoice[shape];
      if (!prev || ticks > prev.ticks) s.firstChoice[shape] = { ticks, seed: r.seed };
    }
    if (!r.ok) s.failures.push(r);
    const { divergeInjectedAt: inj, divergeDetectedAt: det } = r.stats;
    if (inj >= 0) s.divergence.injected++;
    if (inj >= 0 && det >= 0) {
      s.divergence.detected++;
      const beats = (det - Math.max(inj, r.config.faultSteps)) / r.config.timing.heartbeatTicks;
      s.divergence.worstBeats = Math.max(s.divergence.worstBeats, beats);
    }
    each?.(r, ms);
  };
  for (let i = 0; i < count; i++) {
    const seed = (start + i) >>> 0;
    let t = performance.now();
    const r = runSimulation(seed, opts);
    s.seeds++;
    s.byNodes[r.nodes] = (s.byNodes[r.nodes] ?? 0) + 1;
    account(r, performance.now() - t);
    const at = r.stats.dangerAt;
    if (at < 0) continue;
    s.dangerous++;
    // Branching: the same prefix up to the dangerous state, other continuations.
    for (let b = 1; r.ok && b <= (sweep.branches ?? 0); b++) {
      t = performance.now();
      const br = runSimulation(seed, { ...opts, fork: { step: at + 1, salt: b } });
      account(br, performance.now() - t);
      if (!br.ok) break;
    }
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
  if (opts.windowSlots !== undefined) extra.push(`--window ${opts.windowSlots}`);
  if (opts.wipe !== undefined) extra.push(opts.wipe ? '--wipe' : '--no-wipe');
  if (opts.membership !== undefined)
    extra.push(opts.membership ? '--membership' : '--no-membership');
  if (opts.alpha !== undefined) extra.push(`--alpha ${opts.alpha}`);
  if (opts.noConfigCheck) extra.push('--no-config-check');
  if (opts.wire) extra.push('--wire');
  if (opts.injectDivergence) extra.push('--inject-divergence');
  if (opts.sabotage !== undefined && opts.sabotage !== 'none')
    extra.push(`--sabotage ${opts.sabotage}`);
  if (opts.mutation !== undefined && opts.mutation !== 'none')
    extra.push(`--mutation ${opts.mutation}`);
  if (opts.family !== undefined) extra.push(`--family ${opts.family}`);
  if (opts.postHeal !== undefined) extra.push(`--post-heal ${opts.postHeal}`);
  const fork = r.fork ?? opts.fork;
  if (fork) extra.push(`--fork-step ${fork.step} --fork-salt ${fork.salt}`);
  return `npm run sim -- --seed ${r.seed}${extra.length ? ' ' + extra.join(' ') : ''}`;
}

/** One line per partition shape: the worst time to the next choice. */
export function firstChoiceLines(s: SweepSummary): string[] {
  return Object.entries(s.firstChoice)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([shape, v]) => `  ${shape}: worst ${v.ticks} ticks to the next choice (seed ${v.seed})`);
}
