// Second adversarial review of the newest core rules (read index, crash-consistent
// quorums for lost-disk rejoin). Each schedule drives real `Replica` objects
// (test/helpers/core-net.ts: delays, re-delivery, pauses, kills, lost disks,
// Outbound.sync honoured) through an attack that FAILS on this code, and asserts
// the safe outcome. Each assertion was checked to fail when the rule it names is
// broken (a built-in mutation, or a throwaway edit in a scratch copy; the note
// on each test says which). Papers: Lamport, "Paxos Made Simple" (PMS); Chandra
// et al., "Paxos Made Live" (PML); Michael et al., "Recovering Shared Objects
// Without Stable Storage" (DISC 2017, RSO); Ongaro, Raft thesis 6.4 (read index).
import t, { type Test } from 'tap';
import type { Replica } from '../lib/core/replica';
import type { Msg } from '../lib/core/types';
import { cmd, CoreNet, type CoreOpts, type Env, type LogMachine } from './helpers/core-net';

const A = 0;
/** Election periods as ticks: the longest randomised election timeout. */
const PERIOD = 10 + Math.floor(10 / 3);

function isType(e: Env, ...types: Msg['t'][]): boolean {
  return types.includes(e.msg.t);
}

/** Lose every datagram between the two groups, in both directions. */
function apart(e: Env, left: number[], right: number[]): boolean {
  return (
    (left.includes(e.from) && right.includes(e.to)) ||
    (right.includes(e.from) && left.includes(e.to))
  );
}

function appliedAt(net: CoreNet, sid: number, slot: number): string | undefined {
  return net.applied.get(sid)!.get(slot);
}

/** Tick until one of `sids` leads; returns it (the test fails if none does). */
function electAmong(t: Test, net: CoreNet, sids: number[], max = 100): number {
  const took = net.tickUntil(() => net.leaders().some((r) => sids.includes(r.sid)), max);
  const l = net.leaders().find((r) => sids.includes(r.sid));
  t.ok(took <= max && l, `one of ${sids.join(',')} leads (after ${took} ticks)`);
  return l ? l.sid : -1;
}

/**
 * Record, for every read id a replica releases (Ready.reads), the state its
 * state machine would answer from at that moment (every applied command).
 */
function watchReads(net: CoreNet): Map<number, string[]> {
  const out = new Map<number, string[]>();
  const wrapped = new WeakSet<Replica>();
  const collect = net.collect.bind(net);
  net.collect = (sid: number): void => {
    const r = net.nodes.get(sid);
    if (r && !wrapped.has(r)) {
      wrapped.add(r);
      const ready = r.ready.bind(r);
      const sm = (r as unknown as { o: { sm: LogMachine } }).o.sm;
      r.ready = () => {
        const rd = ready();
        for (const id of rd.reads) out.set(id, [...sm.cmds]);
        return rd;
      };
    }
    collect(sid);
  };
  return out;
}

function read(net: CoreNet, sid: number, id: number): string {
  const kind = net.node(sid).submitRead(id).kind;
  net.collect(sid);
  return kind;
}

/** Did the state a read was answered from miss `text` (a stale read)? */
function staleRead(reads: Map<number, string[]>, id: number, text: string): boolean {
  const state = reads.get(id);
  return state !== undefined && !state.some((l) => l.endsWith(text));
}

/**
 * Read index (Raft 6.4): a deposed leader paused through an election resumes
 * believing it leads, cut from the new leader; the write acknowledged meanwhile
 * must be in any state it answers a read from. The other node's nacks are lost
 * too, so only the confirmation round stands between the read and a stale
 * answer. Control run: the built-in 'read-without-confirm' mutation answers the
 * read stale (shows the assertion can fail).
 */
function pausedLeaderRead(t: Test, mutate: boolean): boolean {
  const opts = (mutate ? { mutations: ['read-without-confirm'] } : {}) as Partial<CoreOpts>;
  const net = new CoreNet([0, 1, 2], opts);
  const reads = watchReads(net);
  net.tick(15);
  t.equal(net.leader()?.sid, A, 'A leads at b1');
  net.submit(A, cmd(1, 1, 'x=1'));
  net.tick(3);
  net.pause(A);
  const n = electAmong(t, net, [1, 2]);
  const f = 3 - n;
  net.submit(n, cmd(2, 1, 'x=2'));
  net.tick(3);
  t.ok(
    [...net.applied.get(n)!.values()].includes('2:1:x=2'),
    'x=2 is acknowledged by the new leader',
  );
  // A resumes: what was sent to it while stopped overflowed its socket buffer;
  // it stays cut from the new leader, and the other node's refusals are lost.
  net.parked = net.parked.filter((e) => e.to !== A);
  net.drop = (e) => apart(e, [A], [n]) || (e.from === f && e.to === A && isType(e, 'nack'));
  net.resume(A);
  t.equal(net.node(A).role, 'leader', 'A still believes it leads');
  t.equal(read(net, A, 1), 'queued', 'A takes the read');
  net.tick(3 * PERIOD);
  t.same(net.violations, [], 'no safety violation');
  return staleRead(reads, 1, 'x=2');
}

t.test(
  'read index: a leader paused through an election never answers a read from a state without the write acknowledged meanwhile',
  async (t) => {
    t.notOk(pausedLeaderRead(t, false), 'no stale read');
    t.ok(pausedLeaderRead(t, true), "control: with 'read-without-confirm' the read is stale");
  },
);

t.test(
  "read index: a confirmation from the leader's previous process life (same round number, older ballot) never counts",
  async (t) => {
    // A leads at b1 and starts read round 1; both answers are delayed. A is killed
    // and restarts (round numbers start again at 1), leads again at b3, is paused
    // while B and C elect a leader at b4 that acknowledges x=2, and resumes cut
    // from it. Its new read is round 1 again; the other node's nack is lost and
    // its old confirmed{b1, round 1} arrives instead. Counted, it would complete
    // a majority with A and answer without x=2.
    // (Checked: with the ballot test in onConfirmed removed, the read is stale.)
    const net = new CoreNet([0, 1, 2]);
    const reads = watchReads(net);
    net.tick(15);
    t.equal(net.leader()?.sid, A, 'A leads at b1');
    const b1 = net.node(A).ballot;
    net.submit(A, cmd(1, 1, 'x=1'));
    net.tick(3);
    net.drop = (e) => isType(e, 'confirmed');
    t.equal(read(net, A, 1), 'queued', 'A takes read 1');
    net.run();
    const old = net.sent((e) => e.to === A && isType(e, 'confirmed'));
    t.equal(old.length, 2, 'both confirmations of round 1 are in flight');
    t.notOk(reads.has(1), 'read 1 is not answered');
    net.restart(A, 'kill');
    net.drop = () => false;
    electAmong(t, net, [A]);
    t.ok(net.node(A).ballot > b1, 'A leads again at a higher ballot');
    net.pause(A);
    const n = electAmong(t, net, [1, 2]);
    const f = 3 - n;
    net.submit(n, cmd(2, 1, 'x=2'));
    net.tick(3);
    t.ok([...net.applied.get(n)!.values()].includes('2:1:x=2'), 'x=2 is acknowledged at b4');
    net.parked = net.parked.filter((e) => e.to !== A);
    net.drop = (e) => apart(e, [A], [n]) || (e.from === f && e.to === A && isType(e, 'nack'));
    net.resume(A);
    t.equal(net.node(A).role, 'leader', 'A still believes it leads');
    t.equal(read(net, A, 2), 'queued', 'A takes read 2 (its round 1 again)');
    for (const e of old) if (e.from === f) net.deliver(e);
    net.tick(3 * PERIOD);
    t.notOk(staleRead(reads, 2, 'x=2'), 'read 2 is never answered without x=2');
    t.same(net.violations, [], 'no safety violation');
  },
);

function incOf(net: CoreNet, holder: number, sid: number): number {
  return net.node(holder).incs[sid];
}

t.test(
  'PML/RSO rejoin threshold: the n - q + 1 answers that set it include a voter that accepted what the lost disk accepted, so later answers may be ignored (5 nodes)',
  async (t) => {
    // Leader A proposes v2 (slot 2) and v3 (slot 3); their accepts reach only U (3)
    // and Z (4), whose acknowledgements are delayed. Z loses its disk. Its rejoin
    // is answered by 1, 2 (next = 2: they hold slot 1 only) and U (next = 4); A's
    // answer (4th, next = 4) is lost, and the threshold is frozen after three.
    // Then slot 2 and slot 3 are chosen by A with {A, U, Z's forgotten vote}; A
    // and U crash before anyone else learns slot 3. Had the threshold been
    // taken from 1 and 2 only (2), Z would vote knowing slot 2 but not slot 3,
    // and {1, 2, Z} would put another value at slot 3, which A applied.
    // (Checked: with U's `next` left out of the threshold, this schedule breaks
    // agreement at slot 3.)
    const U = 3;
    const Z = 4;
    const net = new CoreNet([0, 1, 2, 3, 4]);
    net.tick(15);
    t.equal(net.leader()?.sid, A, 'A leads');
    net.submit(A, cmd(1, 1, 'u'));
    net.tick(3);
    t.equal(appliedAt(net, 1, 1), '1:1:u', 'slot 1 chosen everywhere');
    const held = (e: Env): boolean =>
      (e.from === A && [1, 2].includes(e.to) && isType(e, 'accept')) ||
      ([U, Z].includes(e.from) && e.to === A && isType(e, 'accepted'));
    net.drop = held;
    net.submit(A, cmd(1, 2, 'v2'));
    net.run();
    net.submit(A, cmd(1, 3, 'v3'));
    net.run();
    const acks = (slot: number): Env[] =>
      net.sent(
        (e) =>
          held(e) &&
          isType(e, 'accepted') &&
          (e.msg as Extract<Msg, { t: 'accepted' }>).slots.includes(slot),
      );
    t.equal(acks(2).length, 2, 'U and Z accepted v2 (acks delayed)');
    t.equal(acks(3).length, 2, 'U and Z accepted v3 (acks delayed)');
    t.notOk(net.node(A).chosenValue(2), 'nothing chosen yet at slot 2');
    // Z loses its disk; A and Z do not hear each other during the rejoin.
    net.wipe(Z);
    net.drop = (e) => held(e) || apart(e, [A], [Z]);
    const recorded = (): boolean =>
      incOf(net, Z, Z) > 0 && [1, 2, U].every((s) => incOf(net, s, Z) === incOf(net, Z, Z));
    t.ok(net.tickUntil(recorded, 100) <= 100, "1, 2 and U recorded Z's new incarnation");
    net.tick(2);
    // Slot 2 is chosen with {A, U, Z's forgotten vote}; the commit reaches everyone.
    for (const e of acks(2)) net.deliver(e);
    net.run();
    t.ok(net.node(A).chosenValue(2), 'A chose slot 2');
    // A's accepts to Z stay lost (a later one would be a real vote of Z's).
    net.drop = (e) => held(e) || (e.from === A && e.to === Z && isType(e, 'accept'));
    net.tick(5);
    t.ok(net.node(Z).chosenThrough >= 2, 'Z learned slot 2');
    t.notOk(net.node(Z).voter, 'Z does not vote yet (its threshold is above slot 3)');
    // Slot 3 is chosen the same way and A applies v3; A and U crash at once.
    for (const e of acks(3)) net.deliver(e);
    t.equal(appliedAt(net, A, 3), '1:3:v3', 'A applied v3 at slot 3');
    net.crash(A);
    net.crash(U);
    net.queue = net.queue.filter((e) => e.from !== A && e.from !== U);
    net.drop = () => false;
    let seq = 0;
    net.tickUntil(() => {
      const l = net.leader();
      if (l) net.submit(l.sid, cmd(7, ++seq, 'w'));
      return seq > 3;
    }, 20 * PERIOD);
    t.notOk(
      net.node(Z).voter && net.node(Z).chosenThrough < 3,
      'Z never votes knowing fewer than 3 slots chosen',
    );
    t.same(net.violations, [], 'no safety violation while A and U are down');
    net.restart(A, 'kill');
    net.restart(U, 'kill');
    net.tick(20 * PERIOD);
    t.ok(net.node(Z).voter, 'Z rejoins once A and U are back');
    for (const s of [1, 2, Z])
      t.equal(appliedAt(net, s, 3), '1:3:v3', `sid ${s} applies v3 at slot 3`);
    t.same(net.violations, [], 'no safety violation');
  },
);

t.test(
  'RSO incarnations: re-delivered rejoin requests of an earlier, completed incarnation do not void the votes of the current one (3 nodes)',
  async (t) => {
    // Z (2) loses its disk and rejoins as Z1; it loses its disk again and rejoins
    // as Z2 (step 1 hears of Z1, so Z2 is in a higher epoch). Every rejoinReq it
    // ever sent for Z1 is delivered again to A and B; then B crashes, and A and Z
    // must still choose. (Checked: with the epoch not taken above the known
    // incarnations and no re-take when an answer names a newer one, Z2 < Z1 for
    // seeds 2 to 4, and A and Z never choose again.)
    for (const seed of [1, 2, 3, 4]) {
      const net = new CoreNet([0, 1, 2], {}, seed);
      const Z = 2;
      net.tick(15);
      const rejoin = (): number => {
        net.wipe(Z);
        const took = net.tickUntil(() => net.node(Z).voter, 300);
        t.ok(took <= 300, `seed ${seed}: Z rejoined`);
        return incOf(net, Z, Z);
      };
      const z1 = rejoin();
      const z2 = rejoin();
      t.ok(z2 > z1, `seed ${seed}: Z2 ${z2} above Z1 ${z1}`);
      const old = net.sent(
        (e) =>
          e.from === Z &&
          e.to !== Z &&
          isType(e, 'rejoinReq') &&
          (e.msg as { inc: number }).inc === z1,
      );
      t.ok(old.length > 0, `seed ${seed}: Z1's rejoin requests are in the history`);
      for (const e of old) net.deliver(e);
      net.run();
      net.crash(1);
      let seq = 0;
      const took = net.tickUntil(() => {
        const l = net.leader();
        if (l) net.submit(l.sid, cmd(9, ++seq, 'after'));
        return [...net.applied.get(A)!.values()].some((v) => v.startsWith('9:'));
      }, 40 * PERIOD);
      t.ok(took <= 10 * PERIOD, `seed ${seed}: A and Z choose a command (took ${took} ticks)`);
      t.same(net.violations, [], `seed ${seed}: no safety violation`);
    }
  },
);

/**
 * An acceptor acknowledges an accept for a slot it already knows chosen without
 * storing it (onAccept), whatever the value. Attack: a deposed leader L (paused
 * through an election) re-sends its accept of x for a slot the new leader chose
 * y at; node 1 learned y by catch-up without ever promising the new ballot, so
 * it acknowledges L's x. Safe by quorum intersection (PMS): the new ballot's
 * quorum {2, 3, 4} promised above L, so L finds at most 1 + 1 acknowledgements
 * below it. Control run: with the 'minority-quorum' mutation the same schedule
 * lets L choose x (the assertion can fail).
 */
function chosenAckSchedule(t: Test, mutate: boolean): string | undefined {
  const opts = (mutate ? { mutations: ['minority-quorum'] } : {}) as Partial<CoreOpts>;
  const net = new CoreNet([0, 1, 2, 3, 4], opts);
  net.tick(15);
  t.equal(net.leader()?.sid, A, 'L leads at b1');
  net.submit(A, cmd(1, 1, 'u'));
  net.tick(3);
  // x for slot 2 reaches only L itself.
  net.drop = (e) => e.from === A && e.to !== A && isType(e, 'accept');
  net.submit(A, cmd(1, 2, 'x'));
  net.run();
  net.pause(A);
  // 1 never hears the new ballot (prepares and accepts to it are lost) but
  // learns what is chosen by catch-up; 2, 3 and 4 elect one of them.
  net.drop = (e) => e.to === 1 && e.from !== 1 && isType(e, 'prepare', 'accept');
  net.frozen.add(1); // its election timer does not fire meanwhile
  const n = electAmong(t, net, [2, 3, 4]);
  net.submit(n, cmd(2, 1, 'y'));
  net.tick(3);
  net.frozen.delete(1);
  net.tick(PERIOD);
  const slot = [...net.applied.get(n)!.entries()].find(([, v]) => v === '2:1:y')?.[0];
  t.ok(slot !== undefined && net.node(1).chosenValue(slot) !== undefined, '1 learned y chosen');
  t.ok(net.node(1).promised < net.node(n).ballot, '1 never promised the new ballot');
  // L resumes cut from 2, 3, 4 (what reached it while stopped is lost) and
  // re-sends its accept of x to 1; catch-up between L and 1 is lost, so L does
  // not learn y (and step down) first.
  net.parked = net.parked.filter((e) => e.to !== A);
  net.drop = (e) =>
    apart(e, [A], [2, 3, 4]) ||
    (e.to === 1 && isType(e, 'prepare', 'accept') && e.from !== A) ||
    (apart(e, [A], [1]) && isType(e, 'catchupReq', 'catchupResp'));
  const before = net.history.length;
  net.resume(A);
  net.tick(2 * PERIOD);
  const acked = net.history
    .slice(before)
    .some((e) => e.from === 1 && e.to === A && isType(e, 'accepted'));
  t.ok(acked, "1 acknowledged L's accept of x (it knows the slot chosen)");
  return appliedAt(net, A, 2);
}

t.test(
  'PMS quorum intersection: acknowledgements of slots known chosen never let a deposed leader choose its own value there',
  async (t) => {
    t.not(chosenAckSchedule(t, false), '1:2:x', 'L never applies x at slot 2');
    t.equal(chosenAckSchedule(t, true), '1:2:x', "control: with 'minority-quorum' L applies x");
  },
);
