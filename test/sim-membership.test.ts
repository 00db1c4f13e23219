// Membership changes in the simulator (issue 13): seeds in membership mode add
// spares as learners, promote them, remove voters (the leader too) and replace a
// node whose disk was lost for good, while the seed's faults run. Invariants:
// one configuration per slot (each replica's configurations are the chosen
// log's), chosen = a majority of the governing configuration's voters at one
// ballot (a learner's accept never counts), agreement, no acknowledged write
// lost (linearizability), and liveness after the faults stop.
// A failing seed replays exactly: npm run sim -- --seed S --membership.
import t from 'tap';
import { runSimulation, type SimResult } from '../lib/sim/cluster';
import { Oracle } from '../lib/sim/oracle';
import { replayCommand } from '../lib/sim/sweep';
import { encodeMember, encodeOp, encodeRegister, REGISTER_NONCE_MIN } from '../lib/sm/kv';
import type { Configuration } from '../lib/core/types';

/** Membership seeds run (about 0.2 s each here). */
const SEEDS = Number(process.env.SIM_MEMBERSHIP_SEEDS ?? 120);

function explain(r: SimResult, opts: Parameters<typeof replayCommand>[1]): string {
  if (r.ok) return 'ok';
  return `seed ${r.seed} (${r.nodes} nodes) failed at step ${r.failure!.step}: ${r.failure!.invariant}: ${r.failure!.detail.split('\n')[0]}\n  replay: ${replayCommand(r, opts)}`;
}

t.test('membership seeds: every invariant holds, changes of every kind applied', async (t) => {
  const opts = { membership: true };
  const kinds: Record<string, number> = {};
  let changes = 0;
  let refused = 0;
  let lin = 0;
  let exits = 0;
  let outside = 0;
  let outsideVoted = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    // The linearizability check (no acknowledged write lost) on half of them.
    const skip = seed % 2 === 0;
    const r = runSimulation(seed, { ...opts, skipLinearizability: skip });
    if (!skip) lin++;
    t.ok(r.config.membership, `seed ${seed}: membership mode`);
    t.ok(r.ok, explain(r, opts));
    changes += r.stats.memberChanges;
    refused += r.stats.memberRefused;
    for (const [k, n] of Object.entries(r.stats.memberKinds)) kinds[k] = (kinds[k] ?? 0) + n;
    exits += r.stats.memberExits.length;
    if (r.config.membership!.outside.length > 0) outside++;
    if (r.stats.outsideVoters.length > 0) outsideVoted++;
  }
  t.comment(
    `${SEEDS} seeds (${lin} with linearizability): ${changes} changes applied (${JSON.stringify(kinds)}), ${refused} refused; ${exits} removed nodes left; ${outside} seeds with spares outside the servers list, in ${outsideVoted} one voted`,
  );
  // Removed nodes leave (the daemon's exit rule), and spares outside the servers
  // list are added with their address, promoted, and vote.
  t.ok(exits > 0, `removed nodes left (${exits})`);
  t.ok(outsideVoted > 0, `an outside spare voted in ${outsideVoted} of ${outside} seeds`);
  // The schedule must reach what it claims to: otherwise the passes say little.
  for (const k of ['add', 'promote', 'remove', 'remove-leader', 'remove-lost'])
    t.ok((kinds[k] ?? 0) > 0, `some ${k} applied (${kinds[k] ?? 0})`);
  t.ok(refused > 0, `the one-at-a-time rule refused changes (${refused})`);
});

t.test('change-depose: the leader deposed inside a change window, invariants hold', async (t) => {
  const opts = { family: 'change-depose' as const, skipLinearizability: true };
  let reached = 0;
  for (let seed = 1; seed <= 8; seed++) {
    const r = runSimulation(seed, opts);
    t.ok(r.config.membership, `seed ${seed}: membership mode`);
    t.ok(r.ok, explain(r, opts));
    if (r.stats.dangerAt >= 0) reached++;
  }
  t.ok(reached >= 4, `dangerous state reached in ${reached}/8 seeds`);
});

t.test(
  'seed 1: removed 123 leaves; 88, outside the servers list, is added, promoted and votes',
  async (t) => {
    // 7 voters, spares 7 and 88; 88 is in no replica's servers list (paxosd --join):
    // its add carries an address, and the others talk to it once their log has it.
    const opts = { membership: true, skipLinearizability: true };
    const r = runSimulation(1, opts);
    t.ok(r.ok, explain(r, opts));
    t.same(r.config.membership!.outside, [88], 'sid 88 is outside the servers list');
    t.same(r.stats.memberExits, [123], 'removed 123 left once the new configuration was settled');
    t.same(r.stats.outsideVoters, [88], '88 is among the voters that chose some slots');
    t.ok(r.stats.outsideVotes > 10, `88 voted in ${r.stats.outsideVotes} chosen slots`);
  },
);

t.test('a seed without membership mode keeps every sid a voter', async (t) => {
  const r = runSimulation(3, { membership: false, skipLinearizability: true });
  t.equal(r.config.membership, null);
  t.equal(r.stats.memberChanges, 0);
  t.ok(r.ok, explain(r, { membership: false }));
});

// The oracle itself: its verdicts must be able to fail.
const ALPHA = 2;
const voters = (...s: number[]) => s.map((sid) => ({ sid, voter: true }));
function oracle(): Oracle {
  return new Oracle(99, { members: voters(1, 2, 3), alpha: ALPHA, sids: [1, 2, 3, 4] });
}
const value = (cid: number) => [{ cid, seq: 1, op: encodeOp({ kind: 'get', key: 'k' }) }];
function choose(o: Oracle, slot: number, v: ReturnType<typeof value>, ackers: number[]): void {
  o.onAccept(1, { t: 'accept', ballot: 11, entries: [[slot, v]], commit: 0 } as never);
  for (const s of ackers) o.onAccepted(s, { t: 'accepted', ballot: 11, slots: [slot] } as never);
}

t.test('oracle: a learner or a non-member never completes a majority', async (t) => {
  const o = oracle();
  // Sid 4 is in the servers list but not a member: {1, 4} is no majority of {1, 2, 3}.
  choose(o, 1, value(7), [1, 4]);
  t.notOk(o.chosen.has(1), 'not chosen by 1 and a non-member');
  choose(o, 1, value(7), [2]);
  t.ok(o.chosen.has(1), 'chosen once 2 of the 3 voters accepted');
  t.throws(
    () =>
      o.onApplied(1, { slot: 2, cmds: value(8), results: [{ ok: true }], lines: ['2 x'] } as never),
    /apply only chosen values/,
    'applying a slot nobody chose fails',
  );
});

t.test('oracle: a change governs alpha slots later; a replica that disagrees fails', async (t) => {
  const o = oracle();
  // Slot 1 opens a session, slot 2 adds 4 as a learner (it governs from slot 2 + ALPHA).
  const reg = [{ cid: REGISTER_NONCE_MIN + 5, seq: 1, op: encodeRegister() }];
  choose(o, 1, reg, [1, 2]);
  choose(o, 2, [{ cid: 1, seq: 1, op: encodeMember('add', 4) }], [1, 2]);
  t.equal(o.ghostThrough, 2, 'the ghost applied the chosen prefix');
  t.same(
    o.newestConfig.members,
    [...voters(1, 2, 3), { sid: 4, voter: false }],
    'the change is in the log',
  );
  t.equal(o.governing(3)!.slot, 0, 'slot 3 is still governed by the bootstrap configuration');
  t.equal(o.governing(4)!.slot, 2, 'slot 4 = 2 + alpha by the change');
  t.equal(o.governing(5), undefined, 'slot 5: not known before slot 3 is chosen');
  const cs = [o.configHistory[0], o.newestConfig];
  const right = (s: number): Configuration => (s >= 2 + ALPHA ? cs[1] : cs[0]);
  t.doesNotThrow(() => o.checkConfigurations(1, 2, cs, right), 'the right window passes');
  t.throws(
    () => o.checkConfigurations(1, 2, cs, () => cs[1]),
    /one configuration per slot/,
    'a replica whose change governs at once (no alpha window) fails',
  );
  t.throws(
    () => o.checkConfigurations(1, 2, [cs[0]], () => cs[0]),
    /configurations of the chosen log/,
    'a replica that applied slot 2 without its change fails',
  );
  // Acks of slot 5 wait until its configuration is known (slot 3 chosen).
  choose(o, 5, value(9), [1, 2]);
  t.notOk(o.chosen.has(5), 'slot 5: judged later');
  choose(o, 3, value(10), [1, 3]);
  t.ok(o.chosen.has(5), 'slot 5 chosen once its configuration is known');
});
