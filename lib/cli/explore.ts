import {
  explore,
  exploreAround,
  randomWalks,
  withDefaults,
  type ExploreOptions,
  type ExploreResult,
} from '../check/explore';
import type { Mutation } from '../core/replica';
import { handleCommonFlags, parseFlags } from './common';

const USAGE = `usage: node dist/lib/cli/explore.js [--depth N] [options]

Bounded exhaustive exploration of 3 real replicas (lib/check/explore.ts).

modes (default: one exhaustive search of --depth events after the warm-up)
  --iterative          exhaustive searches of depth 1, 2, ... --depth (shortest counterexample)
  --walks N            N seeded random walks of --depth events instead
  --around N           N random prefixes of --prefix events, each followed by an
                       exhaustive search of --depth events
  --seed S             first seed of --walks / --around (default 1)
  --prefix P           random events before each --around search (default 30)
  --prefix-ticks T --prefix-crashes K --prefix-dups D --prefix-drops D --prefix-submits S
                       budgets of those random prefixes (default 15, 2, 3, 3, 3)

model
  --nodes N            cluster size, 3 to 7 (default 3)
  --warmup W           none | connected | leader (default connected)
  --commands C         client commands, 1 or 2 (default 1)
  --ticks T            ticks per node (default 2)
  --crashes K          kills or power losses per path (default 1)
  --dups D             re-deliveries of old messages per path (default 1)
  --drops D            explicit drops per path (default 0; a message never delivered is lost anyway)
  --submits S          submissions per command (client retries, default 2)
  --reads R            read-index reads at a leader per path (default 0)
  --transfers T        operator hand-offs (transfer-leader) per path (default 0)
  --tick-policy P      any | quiescent (default any)
  --no-sync-on-open    a restart does not sync the replayed records (the daemon does)
  --sabotage release-before-sync   break the driver: acknowledgements leave before their sync
  --heartbeat H --election E --window W --retransmit R   timing in ticks (2, 3, 1, 2)
  --mutation M         test-only protocol bug(s), comma-separated: ignore-promise-values,
                       accept-below-promise, minority-quorum, read-without-confirm
search
  --hash H             full | observable | none (default full)
  --no-sleep           no sleep-set reduction
  --max-states N       stop after N states (default 1000000)
  --time-limit S       stop after S seconds (default 600)

Exit status: 0 no violation, 1 a violation (its trace is printed), 2 usage.`;

const parsed = parseFlags(process.argv.slice(2), {
  // Numbers are parsed (and checked) by int() below.
  string: [
    'depth',
    'nodes',
    'warmup',
    'commands',
    'ticks',
    'crashes',
    'dups',
    'drops',
    'submits',
    'reads',
    'transfers',
    'tick-policy',
    'heartbeat',
    'election',
    'window',
    'retransmit',
    'mutation',
    'hash',
    'max-states',
    'time-limit',
    'walks',
    'around',
    'seed',
    'prefix',
    'prefix-ticks',
    'prefix-crashes',
    'prefix-dups',
    'prefix-drops',
    'prefix-submits',
    'sabotage',
  ],
  boolean: ['help', 'version', 'iterative', 'sleep', 'sync-on-open'],
  default: { sleep: true, 'sync-on-open': true },
  alias: { h: 'help' },
});
const early = handleCommonFlags('explore', USAGE, parsed);
if (early !== null) process.exit(early);
if (typeof parsed === 'string') process.exit(2);
const argv = parsed;

function usage(why: string): never {
  process.stderr.write(`explore: ${why}\n${USAGE}\n`);
  process.exit(2);
}

function int(name: string, dflt: number): number {
  const v = argv[name] as unknown;
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) usage(`--${name} must be a non-negative integer`);
  return n;
}

function oneOf<T extends string>(name: string, allowed: readonly T[], dflt: T): T {
  const v = argv[name] as unknown;
  if (v === undefined) return dflt;
  if (!allowed.includes(v as T)) usage(`--${name} must be one of ${allowed.join(', ')}`);
  return v as T;
}

const MUTATIONS: readonly Mutation[] = [
  'ignore-promise-values',
  'accept-below-promise',
  'minority-quorum',
  'read-without-confirm',
];
const mutations = (argv.mutation ? String(argv.mutation).split(',') : []).map((m) => {
  if (!MUTATIONS.includes(m as Mutation)) usage(`unknown mutation ${m}`);
  return m as Mutation;
});

const d = withDefaults();
const opts: ExploreOptions = {
  nodes: int('nodes', d.nodes),
  commands: int('commands', d.commands),
  timing: {
    heartbeatTicks: int('heartbeat', d.timing.heartbeatTicks),
    electionTicks: int('election', d.timing.electionTicks),
    windowSlots: int('window', d.timing.windowSlots),
    retransmitTicks: int('retransmit', d.timing.retransmitTicks),
  },
  budgets: {
    ticksPerNode: int('ticks', d.budgets.ticksPerNode),
    crashes: int('crashes', d.budgets.crashes),
    dups: int('dups', d.budgets.dups),
    drops: int('drops', d.budgets.drops),
    submitsPerCmd: int('submits', d.budgets.submitsPerCmd),
    reads: int('reads', 0),
    transfers: int('transfers', 0),
  },
  depth: int('depth', d.depth),
  tickPolicy: oneOf('tick-policy', ['any', 'quiescent'], d.tickPolicy),
  warmup: oneOf('warmup', ['none', 'connected', 'leader'], d.warmup),
  hash: oneOf('hash', ['full', 'observable', 'none'], d.hash),
  mutations,
  sleepSets: argv.sleep as boolean,
  syncOnOpen: argv['sync-on-open'] as boolean,
  sabotage:
    argv.sabotage === undefined
      ? undefined
      : oneOf('sabotage', ['release-before-sync'] as const, 'release-before-sync'),
  maxStates: int('max-states', d.maxStates),
  timeLimitMs: 1000 * int('time-limit', 600),
};
if (opts.commands < 1 || opts.commands > 2) usage('--commands must be 1 or 2');
if (opts.nodes < 3 || opts.nodes > 7) usage('--nodes must be 3 to 7');
if (opts.timing.heartbeatTicks < 1 || opts.timing.electionTicks < 1 || opts.timing.windowSlots < 1)
  usage('--heartbeat, --election and --window must be at least 1');

const seed = int('seed', 1);
const settings = `${opts.nodes} nodes, depth ${opts.depth}, warm-up ${opts.warmup}, ${opts.commands} command(s), budgets ${JSON.stringify(opts.budgets)}, timing ${JSON.stringify(opts.timing)}, ticks ${opts.tickPolicy}, hash ${opts.hash}, sleep sets ${opts.sleepSets ? 'on' : 'off'}, sync on open ${opts.syncOnOpen ? 'on' : 'off'}${mutations.length ? `, mutations ${mutations.join(',')}` : ''}${opts.sabotage ? `, sabotage ${opts.sabotage}` : ''}`;
process.stdout.write(`explore: ${settings}\n`);

function printViolation(v: ExploreResult['violation']): void {
  if (!v) return;
  process.stdout.write(
    `VIOLATION ${v.rule}: ${v.detail}\nafter ${v.depth} events (past the warm-up):\n`,
  );
  for (const [i, l] of v.trace.entries()) process.stdout.write(`  ${i + 1}. ${l}\n`);
  process.stdout.write('state at the violation:\n');
  for (const l of v.summary) process.stdout.write(`  ${l}\n`);
  process.stdout.write(`path (JSON): ${JSON.stringify(v.path)}\n`);
}

function perSecond(n: number, ms: number): string {
  return `${Math.round((1000 * n) / Math.max(1, ms))}/s`;
}

let violated = false;
if (argv.walks !== undefined) {
  const r = randomWalks({ ...opts, seed, walks: int('walks', 0) });
  process.stdout.write(
    `walks: ${r.walks} from seed ${seed}, ${r.events} events (${perSecond(r.events, r.timeMs)}), ${r.timeMs} ms${r.violation ? `; failing walk seed ${r.seed}` : ''}\n` +
      `coverage: a slot chosen in ${r.coverage.chosen} walks, two slots in ${r.coverage.chosenTwo}, proposals at 2+ ballots in ${r.coverage.ballots}, a crash in ${r.coverage.crashed}, a leader's own promise lost to a power loss in ${r.coverage.lostLeaderPromise}, a campaign at a ballot proposed at by an earlier life in ${r.coverage.ballotReused}, a hand-off campaign in ${r.coverage.handoff}\n`,
  );
  printViolation(r.violation);
  violated = r.violation !== null;
} else if (argv.around !== undefined) {
  const r = exploreAround({
    ...opts,
    seed,
    walks: int('around', 0),
    prefixDepth: int('prefix', 30),
    walkBudgets: {
      ticksPerNode: int('prefix-ticks', 15),
      crashes: int('prefix-crashes', 2),
      dups: int('prefix-dups', 3),
      drops: int('prefix-drops', 3),
      submitsPerCmd: int('prefix-submits', 3),
    },
  });
  process.stdout.write(
    `around: ${r.walks} random prefixes from seed ${seed}, ${r.states} states, ${r.events} events, ${r.timeMs} ms${r.violation ? `; failing prefix seed ${r.seed}` : ''}\n`,
  );
  printViolation(r.violation);
  violated = r.violation !== null;
} else {
  const depths = argv.iterative
    ? Array.from({ length: opts.depth }, (_, i) => i + 1)
    : [opts.depth];
  for (const depth of depths) {
    const r = explore({ ...opts, depth });
    process.stdout.write(
      `depth ${depth}: ${r.states} states (${perSecond(r.states, r.timeMs)}), ${r.pruned} pruned by hash, ${r.slept} by sleep sets, ${r.events} events replayed, warm-up ${r.warmupEvents} events, ${r.timeMs} ms${r.complete ? '' : ' (cut short by --max-states/--time-limit: NOT complete)'}\n`,
    );
    printViolation(r.violation);
    if (r.violation) {
      violated = true;
      break;
    }
    if (!r.complete) break;
  }
}
process.exit(violated ? 1 : 0);
