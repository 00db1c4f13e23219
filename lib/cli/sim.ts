import type { Mutation } from '../core/replica';
import {
  FAMILIES,
  MUTATIONS,
  POST_HEAL_SHAPES,
  SABOTAGES,
  type Family,
  type PostHealShape,
  type Sabotage,
} from '../sim/config';
import { describeConfig, runSimulation, type SimResult, type SimRunOptions } from '../sim/cluster';
import { runSweepParallel } from '../sim/parallel';
import { firstChoiceLines, replayCommand, type SweepSummary } from '../sim/sweep';
import { handleCommonFlags, parseFlags } from './common';

const USAGE = `usage: npm run sim -- [--seed S | --seeds N [--start S]] [options]
       npm run sim -- --help | --version

  --seed S            run one seed (replays exactly); prints its configuration and stats
  --seeds N           run N seeds from --start (default 1) and summarise
  --nodes 3|5|7       pin the cluster size (default: drawn from the seed)
  --steps N           pin the number of fault steps
  --snapshot-every N  pin snapshotEverySlots
  --window N          pin windowSlots
  --wipe / --no-wipe  force / forbid the lost-disk fault
  --family F          pin the targeted schedule family (${['none', ...FAMILIES].join(', ')})
  --membership / --no-membership   force / forbid membership mode (default: drawn,
                      a third of the seeds: spares added, promoted, voters removed)
  --alpha N           pin alpha (membership mode)
  --no-config-check   membership mode: skip the check that each replica's
                      configurations are the chosen log's (agreement alone)
  --post-heal S       pin the cuts kept after the heal (${POST_HEAL_SHAPES.join(', ')})
  --branches N        run N continuations from each seed's dangerous state (sweeps)
  --jobs N            worker threads for a sweep (default 1; results are the same,
                      seed lines may come out of order)
  --fork-step S --fork-salt K   replay one such continuation
  --sabotage KIND     break the driver on purpose (${SABOTAGES.join(', ')})
  --mutation NAME     break the protocol on purpose (${MUTATIONS.join(', ')})
  --wire              send peer messages through the real wire codec (slower)
  --inject-divergence one replica applies an extra command at one slot (test-only
                      fault); the divergence detector must report it
  --trace             stream the whole trace to stdout (with --seed)
  --last N            trace lines shown on failure (default 150)
  --no-lin            skip the linearizability check
  --quiet             print only failures and the summary

Exit status: 0 all seeds passed, 1 some seed failed, 2 usage.`;

const parsed = parseFlags(process.argv.slice(2), {
  string: [
    'sabotage',
    'mutation',
    'family',
    'post-heal',
    'seed',
    'seeds',
    'start',
    'nodes',
    'steps',
    'snapshot-every',
    'window',
    'branches',
    'fork-step',
    'fork-salt',
    'last',
    'jobs',
    'alpha',
  ],
  boolean: [
    'trace',
    'quiet',
    'help',
    'wipe',
    'lin',
    'wire',
    'inject-divergence',
    'version',
    'membership',
    'config-check',
  ],
  default: { lin: true, 'config-check': true },
  alias: { h: 'help' },
});
// --help, --version and a flag error answer at once (an unknown flag is not a run).
const early = handleCommonFlags('sim', USAGE, parsed);
if (early !== null || typeof parsed === 'string') process.exit(early ?? 2);
const argv = parsed;

function intArg(name: string): number | undefined {
  const v = argv[name] as unknown;
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`sim: --${name} must be a non-negative integer\n${USAGE}\n`);
    process.exit(2);
  }
  return n;
}

const opts: SimRunOptions = {
  nodes: intArg('nodes'),
  faultSteps: intArg('steps'),
  snapshotEverySlots: intArg('snapshot-every'),
  windowSlots: intArg('window'),
  skipLinearizability: argv.lin === false,
  wire: argv.wire === true ? true : undefined,
  injectDivergence: argv['inject-divergence'] === true ? true : undefined,
  noConfigCheck: argv['config-check'] === false ? true : undefined,
};
if (opts.nodes !== undefined && ![3, 5, 7].includes(opts.nodes)) {
  process.stderr.write(`sim: --nodes must be 3, 5 or 7\n`);
  process.exit(2);
}
if (process.argv.includes('--wipe')) opts.wipe = true;
if (process.argv.includes('--no-wipe')) opts.wipe = false;
if (process.argv.includes('--membership')) opts.membership = true;
if (process.argv.includes('--no-membership')) opts.membership = false;
opts.alpha = intArg('alpha');
if (opts.alpha === 0) {
  process.stderr.write(`sim: --alpha must be at least 1\n`);
  process.exit(2);
}
opts.sabotage = choice<Sabotage>('sabotage', ['none', ...SABOTAGES]);
function choice<T extends string>(name: string, allowed: readonly T[]): T | undefined {
  const v = argv[name] as unknown;
  if (v === undefined) return undefined;
  if (!allowed.includes(String(v) as T)) {
    process.stderr.write(`sim: unknown --${name} ${String(v)} (one of ${allowed.join(', ')})\n`);
    process.exit(2);
  }
  return String(v) as T;
}
opts.mutation = choice<Mutation | 'none'>('mutation', ['none', ...MUTATIONS]);
opts.family = choice<Family>('family', ['none', ...FAMILIES]);
opts.postHeal = choice<PostHealShape>('post-heal', POST_HEAL_SHAPES);
const forkStep = intArg('fork-step');
if (forkStep !== undefined) opts.fork = { step: forkStep, salt: intArg('fork-salt') ?? 1 };
const branches = intArg('branches') ?? 0;
const last = intArg('last') ?? 150;
const out = (s: string): boolean => process.stdout.write(s + '\n');

function statsLine(r: SimResult): string {
  const s = r.stats;
  return `steps=${s.steps} ops=${s.opsCompleted}+${s.opsUnknown}? slots=${s.maxSlot} leaders=${s.leaderships} crashes=${s.crashes} (kills ${s.kills}, power ${s.powerLosses}, in ready ${s.crashesInReady}) restarts=${s.restarts} wipes=${s.wipes} pauses=${s.pauses} partitions=${s.partitions} bursts=${s.bursts} snapshots=${s.snapshotsTaken}/${s.snapshotsInstalled} installed syncs=${s.syncs} packets=${s.packets} replayed=${s.replayed} danger@${s.dangerAt}${r.config.membership ? ` changes=${s.memberChanges} refused=${s.memberRefused}` : ''} liveMax=${s.maxLiveLatency}/${r.config.liveBound} hash=${r.hash}${r.fork ? ` fork=${r.fork.step}/${r.fork.salt}` : ''}`;
}

function reportFailure(r: SimResult): void {
  // Runs are deterministic: replay the seed with the trace on to show how it got there.
  const traced = runSimulation(r.seed, { ...opts, fork: r.fork, traceLines: last });
  const f = traced.failure ?? r.failure!;
  out(`\nFAIL seed ${r.seed} (${r.nodes} nodes) at step ${f.step}: ${f.invariant}`);
  out(`  ${f.detail.split('\n').join('\n  ')}`);
  out(describeConfig(r.config));
  out(`--- last ${traced.trace.length} trace lines ---`);
  for (const l of traced.trace) out(l);
  out(`--- replay: ${replayCommand(r, opts)} ---`);
  out(`--- family ${r.config.family}, post-heal ${r.config.postHeal} ---`);
  if (traced.hash !== r.hash)
    out(`WARNING: the traced replay diverged (hash ${traced.hash} vs ${r.hash})`);
}

const seedArg = intArg('seed');
if (seedArg !== undefined) {
  const t0 = performance.now();
  const r = runSimulation(seedArg, {
    ...opts,
    onTrace: argv.trace ? (l) => out(l) : undefined,
  });
  const ms = performance.now() - t0;
  out(describeConfig(r.config));
  out(statsLine(r));
  out(
    `${r.ok ? 'PASS' : 'FAIL'} seed ${r.seed} in ${ms.toFixed(0)} ms (${Math.round(r.stats.steps / (ms / 1000))} steps/s)`,
  );
  for (const [shape, ticks] of Object.entries(r.stats.firstChoice))
    out(`  ${shape}: ${ticks} ticks to the next choice`);
  if (!r.ok) reportFailure(r);
  process.exit(r.ok ? 0 : 1);
}

const count = intArg('seeds') ?? 100;
const start = intArg('start') ?? 1;
const jobs = intArg('jobs') ?? 1;
void runSweepParallel(
  start,
  count,
  opts,
  (r, ms) => {
    if (!argv.quiet || !r.ok)
      out(
        `${r.ok ? 'ok  ' : 'FAIL'} seed ${r.seed} n=${r.nodes} ${ms.toFixed(0)}ms ${statsLine(r)}${r.ok ? '' : `\n     ${r.failure!.invariant}: ${r.failure!.detail.split('\n')[0]}\n     replay: ${replayCommand(r, opts)}`}`,
      );
  },
  { branches },
  jobs,
).then(report);

function report(summary: SweepSummary): void {
  out(
    `\n${summary.seeds} seeds (${Object.entries(summary.byNodes)
      .map(([n, k]) => `${k}x${n} nodes`)
      .join(
        ', ',
      )}), ${summary.steps} steps in ${(summary.ms / 1000).toFixed(1)} s (${(summary.cpuMs / 1000).toFixed(1)} s CPU): ${Math.round(summary.stepsPerSec)} steps/s (${Math.round(summary.stepsPerCpuSec)} per CPU second), ${summary.seedsPerSec.toFixed(2)} seeds/s; ${summary.opsCompleted} client ops; max post-heal latency ${summary.maxLiveLatency} ticks; ${summary.dangerous} seeds reached a family's dangerous state, ${summary.runs - summary.seeds} branches; ${summary.failures.length} failure(s)`,
  );
  if (opts.injectDivergence) {
    const d = summary.divergence;
    out(
      `divergence injected in ${d.injected} runs (the others never applied the slot), reported in ${d.detected}; worst ${d.worstBeats.toFixed(1)} heartbeats after the later of the injection and the heal`,
    );
  }
  out('worst time to the next choice, per partition shape:');
  for (const l of firstChoiceLines(summary)) out(l);
  if (summary.failures.length > 0) {
    out(
      `failed seeds: ${summary.failures.map((r) => (r.fork ? `${r.seed}@${r.fork.step}/${r.fork.salt}` : r.seed)).join(' ')}`,
    );
    reportFailure(summary.failures[0]);
    process.exit(1);
  }
}
