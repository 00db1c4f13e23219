// Deterministic simulation (VOPR style): the real Replica + KvStateMachine under
// seeded network, disk and process faults, with safety invariants checked as it
// runs, liveness after the faults stop, and a linearizability check at the end.
// A failing seed replays exactly: npm run sim -- --seed S [--nodes N].
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import { runSimulation, type SimResult } from '../lib/sim/cluster';
import { drawConfig, FAMILIES, POST_HEAL_SHAPES, runPrng } from '../lib/sim/config';
import { connectedMajority } from '../lib/sim/network';
import { encodeOp, encodeRegister, KvStateMachine, REGISTER_NONCE_MIN } from '../lib/sm/kv';
import { firstChoiceLines, replayCommand, runSweep } from '../lib/sim/sweep';
import { runSweepParallel } from '../lib/sim/parallel';

/** Seeds per cluster size in the CI sweep (3 sizes): ~30 s of CPU (more wall time on a loaded machine). */
const SEEDS_PER_SIZE = Number(process.env.SIM_SEEDS ?? 250);

function explain(r: SimResult, opts: Parameters<typeof replayCommand>[1] = {}): string {
  if (r.ok) return 'ok';
  return `seed ${r.seed} (${r.nodes} nodes) failed at step ${r.failure!.step}: ${r.failure!.invariant}: ${r.failure!.detail}\n  replay: ${replayCommand(r, opts)}`;
}

// Found by the simulator ("identical snapshots", then wrong cached answers and
// linearizability failures): KvStateMachine.restore() decoded the session table's
// results as Maps (the decoder runs with mapsAsObjects: false), so a node that
// restarted from or installed a snapshot answered retried writes with a Map and
// re-encoded snapshots differently from its peers.
t.test('KvStateMachine: snapshot -> restore -> snapshot round-trips exactly', async (t) => {
  const a = new KvStateMachine(100, 1000);
  // Sessions are opened through the log: register two, then write with their ids.
  const reg = a.apply(1, [
    { cid: REGISTER_NONCE_MIN + 1, seq: 1, op: encodeRegister() },
    { cid: REGISTER_NONCE_MIN + 2, seq: 1, op: encodeRegister() },
  ]);
  const [c1, c2] = reg.results.map((r) => Number(r.value));
  t.ok(c1 > 0 && c2 > 0 && c1 !== c2, 'two sessions registered');
  a.apply(2, [{ cid: c1, seq: 1, op: encodeOp({ kind: 'put', key: 'k', value: 'v' }) }]);
  a.apply(3, [
    { cid: c2, seq: 1, op: encodeOp({ kind: 'cas', key: 'k', expected: 'x', value: 'y' }) },
  ]);
  t.ok(a.cached(c1, 1)?.ok, 'the put ran and its answer is cached');
  t.ok(a.cached(c2, 1), 'the cas answer is cached');
  const b = new KvStateMachine(100, 1000);
  b.restore(a.snapshot());
  t.same(Buffer.from(b.snapshot()), Buffer.from(a.snapshot()), 'same bytes');
  t.strictSame(b.cached(c1, 1), a.cached(c1, 1), 'cached put answer is a plain object');
  t.strictSame(b.cached(c2, 1), a.cached(c2, 1), 'cached cas answer is a plain object');
});

t.test('same seed, same run: byte-identical trace hash and history', async (t) => {
  // A busy configuration: lost disk, frequent snapshots (compaction + snapshot catch-up).
  const opts = { nodes: 5, wipe: true, snapshotEverySlots: 5 };
  const a = runSimulation(4242, opts);
  const b = runSimulation(4242, opts);
  t.ok(a.ok, explain(a, opts));
  t.equal(a.hash, b.hash, 'trace hash');
  t.equal(JSON.stringify(a.history), JSON.stringify(b.history), 'history');
  t.same(a.stats, b.stats, 'stats');
  t.ok(a.stats.opsCompleted > 0 && a.stats.maxSlot > 0, 'the run did some work');
  // Tracing only observes: it must not draw from the PRNG or change the run.
  const traced = runSimulation(4242, { ...opts, traceLines: 50 });
  t.equal(traced.hash, a.hash, 'tracing does not perturb the run');
  t.equal(traced.trace.length, 50, 'trace ring keeps the last lines');
  const other = runSimulation(4243, opts);
  t.not(other.hash, a.hash, 'another seed, another run');
  // A branch (continuation from a step) replays exactly too, and differs.
  const fork = { step: 400, salt: 1 };
  const f1 = runSimulation(4242, { ...opts, fork });
  const f2 = runSimulation(4242, { ...opts, fork });
  t.equal(f1.hash, f2.hash, 'a branch replays exactly');
  t.not(f1.hash, a.hash, 'a branch is another continuation');
});

t.test('the invariants catch a driver that loses durable records', async (t) => {
  for (const sabotage of ['drop-promise-records', 'drop-accept-records'] as const) {
    const s = runSweep(1, 20, { sabotage, nodes: 3 });
    t.ok(s.failures.length > 0, `${sabotage}: ${s.failures.length}/20 seeds fail`);
    const names = new Set(s.failures.map((r) => r.failure!.invariant));
    t.ok(
      [...names].every((n) => /survive restarts|promise|P2b|chosen/.test(n)),
      `${sabotage}: caught by ${[...names].join(', ')}`,
    );
  }
});

// The daemon bug of acknowledging before the fdatasync: a process kill keeps the
// page cache, so only the power-loss model can tell. This shows the driver's
// gating (Outbound.sync) and the two crash kinds both matter.
t.test('the invariants catch a driver that acknowledges before the sync', async (t) => {
  const opts = { sabotage: 'ack-before-sync' as const, nodes: 3 };
  const s = runSweep(1, 40, opts);
  t.ok(s.failures.length > 0, `ack-before-sync: ${s.failures.length}/40 seeds fail`);
  const durability = s.failures.filter((r) =>
    /survive restarts|promise|P2b|chosen/.test(r.failure!.invariant),
  );
  t.ok(
    durability.length > 0,
    `caught by ${[...new Set(s.failures.map((r) => r.failure!.invariant))].join(', ')}`,
  );
  for (const r of durability.slice(0, 3))
    t.ok(r.stats.powerLosses > 0, `seed ${r.seed}: failed after a power loss`);
});

// The other side: a process kill keeps the page cache (written records are
// replayed, then synced by the open), so the same broken driver goes unseen when
// every crash is a kill. A kill model that dropped unsynced records would fail here.
t.test('a process kill keeps written records: ack-before-sync survives kills', async (t) => {
  const opts = {
    sabotage: 'ack-before-sync' as const,
    nodes: 3,
    powerLoss: 0,
    family: 'none' as const,
  };
  let kills = 0;
  const s = runSweep(1, 40, opts, (r) => (kills += r.stats.kills));
  t.ok(kills > 0, `${kills} process kills in 40 seeds`);
  const durability = s.failures.filter((r) =>
    /survive restarts|promise|P2b|chosen/.test(r.failure!.invariant),
  );
  t.equal(durability.length, 0, 'no durability failure without power loss', {
    failures: durability.map((r) => explain(r, opts)),
  });
});

t.test('connected majority: bridges and one-way cuts', async (t) => {
  const cut = (pairs: [number, number][]) => {
    const set = new Set(pairs.map(([a, b]) => `${a}>${b}`));
    return (a: number, b: number): boolean => set.has(`${a}>${b}`);
  };
  t.same(connectedMajority([1, 2, 3], 2, cut([])), [1, 2, 3], 'no cut: everyone');
  // Bridge 1 <-> 2 <-> 3: {1,2} and {2,3} are connected majorities.
  t.equal(
    connectedMajority(
      [1, 2, 3],
      2,
      cut([
        [1, 3],
        [3, 1],
      ]),
    ).length,
    2,
    'bridge',
  );
  // One-way 1 -> 2 cut: 1 and 2 are not connected both ways.
  t.same(connectedMajority([1, 2, 3], 2, cut([[1, 2]])), [1, 3], 'one-way cut');
  t.same(
    connectedMajority(
      [1, 2, 3],
      2,
      cut([
        [1, 2],
        [2, 3],
        [3, 1],
      ]),
    ),
    [],
    'a one-way ring leaves no connected majority',
  );
});

// The adversary cannot quietly do less: over a small sweep, every fault kind
// fires, every schedule family reaches its dangerous state, and every
// post-heal shape keeps its cuts while liveness is demanded.
t.test('the adversary fires: faults, families and persistent cuts', async (t) => {
  const totals = { replayed: 0, bursts: 0, kills: 0, powerLosses: 0, wipes: 0, syncs: 0 };
  for (let seed = 1; seed <= 30; seed++) {
    const r = runSimulation(seed, { skipLinearizability: true });
    for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += r.stats[k];
  }
  for (const [k, v] of Object.entries(totals)) t.ok(v > 0, `${k}: ${v}`);
  for (const family of FAMILIES) {
    let reached = 0;
    for (let seed = 1; seed <= 6; seed++)
      if (runSimulation(seed, { family, skipLinearizability: true }).stats.dangerAt >= 0) reached++;
    t.ok(reached > 0, `${family}: dangerous state reached in ${reached}/6 seeds`);
  }
  for (const postHeal of POST_HEAL_SHAPES) {
    if (postHeal === 'none') continue;
    const r = runSimulation(1, { postHeal, skipLinearizability: true });
    t.ok(
      Object.keys(r.stats.firstChoice).includes(`after heal: ${postHeal}`),
      `${postHeal}: time to the next choice after the heal measured`,
    );
  }
});

// Election timeouts of each node's own (HANDOFF-LIFETIME-CONFIG: a target whose
// timeout is longer than its leader's) come from a PRNG of the seed's own: with
// them on or off, the rest of the configuration and the run's PRNG stream stay
// the same (drawn from the run's PRNG, the stream after the draw would move);
// the run's timeout, hence the live bound, is the largest node's.
t.test('per-node election timeouts: drawn aside, bounds from the largest', async (t) => {
  let differ = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const [pOn, pOff] = [runPrng(seed), runPrng(seed)];
    const on = drawConfig(pOn, seed, { nodeTiming: true });
    const off = drawConfig(pOff, seed, { nodeTiming: false });
    if (pOn.nextU32() !== pOff.nextU32()) t.fail(`seed ${seed}: the run's stream moved`);
    for (const k of ['sids', 'net', 'replay', 'limits', 'nodeLimits', 'family', 'clockRates'])
      if (JSON.stringify(on[k as keyof typeof on]) !== JSON.stringify(off[k as keyof typeof off]))
        t.fail(`seed ${seed}: ${k} differs with per-node timeouts`);
    const e = on.nodeElectionTicks;
    if (
      e.length !== on.sids.length ||
      new Set(e).size < 2 ||
      Math.max(...e) !== on.timing.electionTicks
    )
      t.fail(`seed ${seed}: per-node timeouts ${e.join(' ')}, run's ${on.timing.electionTicks}`);
    if (on.liveBound < 12 * on.timing.electionTicks)
      t.fail(`seed ${seed}: live bound ${on.liveBound}`);
    if (off.nodeElectionTicks.some((x) => x !== off.timing.electionTicks))
      t.fail(`seed ${seed}: timeouts differ with per-node timing off`);
    const drawn = drawConfig(runPrng(seed), seed).nodeElectionTicks;
    if (new Set(drawn).size > 1) differ++;
  }
  t.ok(differ >= 20 && differ <= 80, `timeouts differ between nodes in ${differ}/200 seeds`);
});

// Catch-up under load is demanded, not only reached at the end: in the
// lagging-under-load family the check measures every node catching up within
// its bound while the clients keep writing (scripts/mutants/9.10-no-snapshot-pin.patch
// makes it fail: a transfer restarted by every new snapshot never finishes).
t.test('lagging-under-load: every node catches up while the clients keep writing', async (t) => {
  for (let seed = 1; seed <= 3; seed++) {
    const r = runSimulation(seed, { family: 'lagging-under-load', skipLinearizability: true });
    t.ok(r.ok, `seed ${seed}: ${r.failure?.invariant ?? 'ok'}`);
    t.ok(
      r.stats.catchupAfterHeal >= 0 && r.stats.catchupAfterHeal < r.config.liveSteps,
      `seed ${seed}: caught up ${r.stats.catchupAfterHeal} ticks after the heal, clients writing for ${r.config.liveSteps}`,
    );
  }
});

// The CI sweep runs on worker threads (one test file runs at a time, so one core
// would idle): the summary must be the one a single thread gives.
t.test('a sweep over worker threads sums to the same as one thread', async (t) => {
  const opts = { nodes: 5 };
  const one = runSweep(1, 12, opts);
  let each = 0;
  const par = await runSweepParallel(1, 12, opts, () => each++, {}, 2);
  const pick = (s: typeof one) => ({
    seeds: s.seeds,
    runs: s.runs,
    steps: s.steps,
    ops: s.opsCompleted,
    dangerous: s.dangerous,
    maxLiveLatency: s.maxLiveLatency,
    byNodes: s.byNodes,
    firstChoice: s.firstChoice,
    divergence: s.divergence,
    failures: s.failures.map((r) => r.seed),
  });
  t.same(pick(par), pick(one), `12 seeds: ${one.steps} steps either way`);
  t.equal(each, 12, 'every result reached the caller');
  t.ok(par.cpuMs > 0 && par.ms > 0, 'time measured');
});

t.test('sweep: 3, 5 and 7 replicas under seeded faults', async (t) => {
  let steps = 0;
  let ms = 0;
  let cpuMs = 0;
  let ops = 0;
  const shapes: string[] = [];
  for (const nodes of [3, 5, 7]) {
    const opts = { nodes };
    const s = await runSweepParallel(1, SEEDS_PER_SIZE, opts);
    shapes.push(`${nodes} nodes, worst time to the next choice:`, ...firstChoiceLines(s));
    steps += s.steps;
    ms += s.ms;
    cpuMs += s.cpuMs;
    ops += s.opsCompleted;
    t.equal(
      s.failures.length,
      0,
      `${nodes} nodes: ${s.seeds} seeds, ${Math.round(s.stepsPerSec)} steps/s, max post-heal latency ${s.maxLiveLatency} ticks`,
      { failures: s.failures.slice(0, 10).map((r) => explain(r, opts)) },
    );
  }
  for (const l of shapes) t.comment(l);
  t.comment(
    `${3 * SEEDS_PER_SIZE} seeds, ${steps} steps, ${ops} client ops in ${(ms / 1000).toFixed(1)} s (${(cpuMs / 1000).toFixed(1)} s CPU): ${Math.round(steps / (ms / 1000))} steps/s, ${Math.round(steps / (cpuMs / 1000))} per CPU second`,
  );
});

t.test('sweep through the real wire codec', async (t) => {
  const opts = { wire: true };
  const s = runSweep(1, 15, opts);
  t.equal(s.failures.length, 0, `${s.seeds} seeds, messages encoded and decoded`, {
    failures: s.failures.map((r) => explain(r, opts)),
  });
});

t.test('CLI: --seed replays one run and exits 0 when it passes', async (t) => {
  const cli = path.join(__dirname, '..', 'lib', 'cli', 'sim.js');
  const r = spawnSync(process.execPath, [cli, '--seed', '7', '--nodes', '3'], {
    encoding: 'utf8',
  });
  t.equal(r.status, 0, 'exit 0', { output: r.stdout + r.stderr });
  t.match(r.stdout, /PASS seed 7 .* steps\/s/);
  const bad = spawnSync(
    process.execPath,
    [cli, '--seeds', '3', '--nodes', '3', '--sabotage', 'drop-promise-records', '--quiet'],
    { encoding: 'utf8' },
  );
  t.equal(bad.status, 1, 'a failing sweep exits 1');
  t.match(bad.stdout, /FAIL seed \d+ .*\n[\s\S]*--- replay: npm run sim -- --seed \d+ --nodes 3/);
});
