// Unit tests of the protocol core. Each test names the rule of the papers it
// checks: Lamport, "Paxos Made Simple" (PMS); van Renesse & Altinbuken, "Paxos
// Made Moderately Complex" (PMMC); Chandra et al., "Paxos Made Live" (PML).
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { makeBallot } from '../lib/core/ballot';
import { Prng } from '../lib/core/prng';
import { Replica } from '../lib/core/replica';
import type { Cmd, DurableRecord, Msg, Outbound, Value } from '../lib/core/types';
import { encodeOp, encodeRegister, KvStateMachine, REGISTER_NONCE_MIN } from '../lib/sm/kv';

const OPTS = {
  heartbeatTicks: 2,
  electionTicks: 10,
  retransmitTicks: 2,
  retransmitMaxTicks: 8,
  windowSlots: 4,
  batchBytesMax: 60000,
  pendingMax: 100,
  catchupBytesMax: 60000,
  snapshotEverySlots: 1000,
};

function replica(sid: number, sids = [0, 1, 2], extra: Partial<typeof OPTS> = {}): Replica {
  return new Replica({
    sid,
    sids,
    prng: new Prng(sid + 1),
    sm: new KvStateMachine(1000, 32768),
    ...OPTS,
    ...extra,
  });
}

function put(cid: number, seq: number, key: string, value: string): Cmd {
  return { cid, seq, op: encodeOp({ kind: 'put', key, value }) };
}

/** Open a session (Raft's RegisterClient): the n-th registration gets session id n. */
function register(nonce: number): Cmd {
  return { cid: REGISTER_NONCE_MIN + nonce, seq: 1, op: encodeRegister() };
}

/** A hand-driven cluster: messages queue up until delivered, with optional drops. */
class Net {
  nodes = new Map<number, Replica>();
  queue: { from: number; to: number; msg: Msg }[] = [];
  disk = new Map<number, DurableRecord[]>();
  applied = new Map<number, { slot: number; value: Value }[]>();
  reads = new Map<number, number[]>();
  down = new Set<number>();

  constructor(sids: number[], extra: Partial<typeof OPTS> = {}) {
    for (const s of sids) {
      const r = replica(s, sids, extra);
      r.bootstrap();
      this.nodes.set(s, r);
      this.disk.set(s, []);
      this.applied.set(s, []);
      this.reads.set(s, []);
    }
    this.collect();
  }

  collect(): void {
    for (const [sid, r] of this.nodes) {
      if (this.down.has(sid)) continue;
      const rd = r.ready();
      this.disk.get(sid)!.push(...rd.persist);
      for (const a of rd.applied) this.applied.get(sid)!.push({ slot: a.slot, value: a.cmds });
      this.reads.get(sid)?.push(...rd.reads);
      for (const m of rd.messages) this.queue.push({ from: sid, to: m.to, msg: m.msg });
    }
  }

  /** Deliver queued messages (filter may drop) until quiet or `max` rounds. */
  run(max = 50, keep: (m: { from: number; to: number; msg: Msg }) => boolean = () => true): void {
    for (let i = 0; i < max && this.queue.length > 0; i++) {
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        if (this.down.has(m.to) || this.down.has(m.from) || !keep(m)) continue;
        this.nodes.get(m.to)!.step(m.from, m.msg);
      }
      this.collect();
    }
  }

  tick(n: number, keep?: (m: { from: number; to: number; msg: Msg }) => boolean): void {
    for (let i = 0; i < n; i++) {
      for (const [sid, r] of this.nodes) if (!this.down.has(sid)) r.tick();
      this.collect();
      this.run(50, keep);
    }
  }

  leader(): Replica | undefined {
    return [...this.nodes.values()].find((r) => r.role === 'leader' && !this.down.has(r.sid));
  }
}

t.test('ballots are (round, sid) pairs, totally ordered', async (t) => {
  t.ok(makeBallot(1, 2) > makeBallot(1, 1), 'same round: higher sid wins');
  t.ok(makeBallot(2, 0) > makeBallot(1, 200), 'higher round wins regardless of sid');
});

t.test(
  'PMS P1a: an acceptor accepts ballot n iff it has not promised a higher ballot',
  async (t) => {
    const a = replica(1);
    a.bootstrap();
    a.ready();
    a.step(2, { t: 'prepare', ballot: makeBallot(5, 2), from: 1 });
    let rd = a.ready();
    t.same(rd.persist, [{ t: 'promise', ballot: makeBallot(5, 2) }], 'the promise is persisted');
    t.equal(rd.messages[0].msg.t, 'promise', '... in the same ready() as the promise message');
    a.step(0, {
      t: 'accept',
      ballot: makeBallot(4, 0),
      entries: [[1, [put(1, 1, 'k', 'old')]]],
      commit: 0,
    });
    rd = a.ready();
    t.same(rd.persist, [], 'a lower ballot is not accepted');
    t.match(
      rd.messages[0].msg,
      { t: 'nack', promised: makeBallot(5, 2) },
      'and it is refused with the promise',
    );
    a.step(2, {
      t: 'accept',
      ballot: makeBallot(5, 2),
      entries: [[1, [put(1, 1, 'k', 'new')]]],
      commit: 0,
    });
    rd = a.ready();
    t.equal(rd.persist[0].t, 'accept', 'the promised ballot is accepted and persisted');
    t.match(rd.messages[0].msg, { t: 'accepted', slots: [1] });
  },
);

t.test('PMS phase 1b: a promise reports the highest-numbered proposal accepted', async (t) => {
  const a = replica(1);
  a.bootstrap();
  a.step(0, {
    t: 'accept',
    ballot: makeBallot(1, 0),
    entries: [[3, [put(1, 1, 'x', 'v')]]],
    commit: 0,
  });
  a.ready();
  // Leader 0 falls silent (a live leader's followers refuse other prepares).
  for (let i = 0; i <= OPTS.electionTicks; i++) a.tick();
  a.step(2, { t: 'prepare', ballot: makeBallot(2, 2), from: 1 });
  const msg = a.ready().messages.find((m) => m.msg.t === 'promise')!.msg;
  t.match(msg, { t: 'promise', ballot: makeBallot(2, 2), hi: 0 });
  const entries = (msg as Extract<Msg, { t: 'promise' }>).entries;
  t.equal(entries.length, 1);
  t.equal(entries[0][0], 3);
  t.equal(entries[0][1], makeBallot(1, 0));
});

t.test(
  'PMS P2c / PMMC: a new leader re-proposes the value with the highest accepted ballot',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    const l0 = net.leader()!;
    t.equal(l0.sid, 0, 'SID 0 (highest bully rank) leads');
    // Slot 1: accepted by sid 1 only (the others' accepts are dropped), then the leader dies.
    l0.submit(put(7, 1, 'k', 'v1'));
    net.collect();
    net.run(5, (m) => !(m.msg.t === 'accept' && m.to !== 1) && m.msg.t !== 'accepted');
    t.ok(net.nodes.get(1)!.acceptedEntry(1), 'sid 1 accepted slot 1');
    t.notOk(l0.acceptedEntry(1)?.chosen, 'not chosen yet');
    net.down.add(0);
    net.queue = [];
    net.tick(60);
    const l1 = net.leader()!;
    t.equal(l1.sid, 1, 'sid 1 took over');
    const chosen = l1.chosenValue(1)!;
    t.equal(chosen.length, 1, 'slot 1 chosen with the accepted batch');
    t.equal(
      Buffer.from(chosen[0].op).toString('hex'),
      Buffer.from(put(7, 1, 'k', 'v1').op).toString('hex'),
    );
  },
);

t.test('PMMC: holes below the highest accepted slot are filled with no-ops', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const l0 = net.leader()!;
  l0.submit(put(1, 1, 'a', '1'));
  net.collect();
  // Slot 1 accepted by sid 2 only; slot 2 by sid 2 as well. Nobody learns slot 1.
  net.run(5, (m) => !(m.msg.t === 'accept' && m.to !== 2) && m.msg.t !== 'accepted');
  const a2 = net.nodes.get(2)!;
  a2.step(0, { t: 'accept', ballot: l0.ballot, entries: [[3, [put(1, 2, 'b', '2')]]], commit: 0 });
  net.collect();
  net.queue = [];
  net.down.add(0);
  net.tick(60);
  const l = net.leader()!;
  t.ok(l && l.sid !== 0, 'a new leader');
  t.equal(l.chosenValue(1)!.length, 1, 'slot 1 keeps its value');
  t.same(l.chosenValue(2), [], 'slot 2 (never accepted anywhere) becomes a no-op');
  t.equal(l.chosenValue(3)!.length, 1, 'slot 3 keeps its value');
});

t.test(
  'PMS learner: a value is chosen only when a majority accepted it at one ballot',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    const l0 = net.leader()!;
    l0.submit(put(1, 1, 'a', '1'));
    net.collect();
    // Only the leader's own accept goes through: no majority.
    net.run(10, (m) => !(m.msg.t === 'accept' && m.to !== 0));
    t.equal(l0.chosenThrough, 0, 'one acceptor of three is not a majority');
    net.tick(5);
    t.equal(l0.chosenThrough, 1, 'after retransmission a majority accepts and it is chosen');
  },
);

t.test('every node applies chosen slots in slot order, never skipping a hole', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const l0 = net.leader()!;
  for (let i = 1; i <= 3; i++) {
    l0.submit(put(1, i, 'k', String(i)));
    net.collect();
    // Sid 2 misses slot 2's accept and every commit for a while.
    net.run(
      10,
      (m) =>
        !(
          m.to === 2 &&
          (m.msg.t === 'commit' || m.msg.t === 'heartbeat' || (i === 2 && m.msg.t === 'accept'))
        ),
    );
  }
  const n2 = net.nodes.get(2)!;
  t.ok(n2.applied < 2, 'sid 2 does not apply past the hole at slot 2');
  net.tick(20);
  t.same(
    net.applied.get(2)!.map((a) => a.slot),
    net.applied.get(0)!.map((a) => a.slot),
    'after catch-up, the same slots in the same order',
  );
});

t.test(
  'bully election: higher ranks lead, lower ranks defer, a returning node does not preempt',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    t.equal(net.leader()?.sid, 0, 'sid 0 leads');
    t.equal(net.nodes.get(1)!.leader, 0, 'sid 1 follows sid 0');
    net.down.add(0);
    net.tick(40);
    t.equal(net.leader()?.sid, 1, 'with sid 0 gone, the next rank (sid 1) leads');
    t.equal(net.nodes.get(2)!.role, 'follower', 'sid 2 defers');
    const elections = net.nodes.get(2)!.stats.elections;
    net.down.delete(0);
    net.tick(60);
    t.equal(
      net.leader()?.sid,
      1,
      'sid 0 comes back and follows the live leader (no election storm)',
    );
    t.equal(net.nodes.get(0)!.role, 'follower');
    t.equal(net.nodes.get(2)!.stats.elections, elections, 'no new elections');
  },
);

t.test('two nodes that both believe they lead: ballots decide', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const l0 = net.leader()!;
  // Sid 1 is cut off from sid 0's heartbeats and campaigns with a higher ballot.
  net.tick(30, (m) => !(m.from === 0 && m.to === 1) && !(m.from === 1 && m.to === 0));
  const l1 = net.nodes.get(1)!;
  l0.submit(put(1, 1, 'a', 'from0'));
  l1.submit(put(2, 1, 'a', 'from1'));
  net.tick(30);
  const values = [0, 1, 2].map((s) =>
    JSON.stringify(net.applied.get(s)!.map((a) => a.value.map((c) => [c.cid, c.seq]))),
  );
  t.equal(values[1], values[0]);
  t.equal(values[2], values[0], 'every node applied the same sequence');
  t.equal(
    [...net.nodes.values()].filter((r) => r.role === 'leader').length,
    1,
    'one leader remains',
  );
});

t.test('a restarted acceptor keeps its promise (durable records replayed)', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const before = net.nodes.get(2)!.promised;
  t.ok(before > 0);
  const fresh = replica(2);
  fresh.restore(null, net.disk.get(2)!);
  t.equal(fresh.promised, before, 'promised ballot survives');
  t.ok(fresh.voter, 'still a voter');
  fresh.step(1, { t: 'prepare', ballot: before - 1, from: 1 });
  t.equal(fresh.ready().messages[0].msg.t, 'nack', 'a lower prepare is refused after restart');
});

t.test(
  'PML: a node with a lost disk does not vote until it saw a complete instance begin after it came back',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    const l0 = net.leader()!;
    l0.submit(put(1, 1, 'a', '1'));
    net.tick(5);
    // Sid 2 loses its disk.
    const blank = replica(2);
    blank.restore(null, []);
    net.nodes.set(2, blank);
    net.disk.set(2, []);
    net.applied.set(2, []);
    blank.step(0, { t: 'prepare', ballot: makeBallot(99, 0), from: 1 });
    t.same(blank.ready().messages, [], 'it ignores prepare while not a voter');
    t.equal(blank.voter, false);
    net.tick(40);
    t.ok(blank.voter, 'after the leader ran an instance that began after it came back, it votes');
    t.ok(blank.promised >= l0.ballot, 'and it adopted the highest promise its peers reported');
    t.ok(
      net.disk.get(2)!.some((r) => r.t === 'voter'),
      'the decision is durable',
    );
  },
);

t.test(
  'exactly-once: a retried (cid, seq) is applied once and gets the first answer',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    const l0 = net.leader()!;
    l0.submit(register(9));
    net.tick(3);
    const c = {
      cid: 1,
      seq: 1,
      op: encodeOp({ kind: 'cas', key: 'x', expected: null, value: 'a' }),
    };
    l0.submit(c);
    net.tick(3);
    const again = l0.submit({ ...c });
    t.equal(again.kind, 'cached', 'the leader answers a retry from the session table');
    // A duplicate that reaches the log anyway (e.g. through a new leader) is not re-applied.
    const sm = new KvStateMachine(10, 1000);
    sm.apply(1, [register(9)]);
    const r1 = sm.apply(1, [c]);
    const r2 = sm.apply(2, [c]);
    t.same(r1.results[0], { ok: true });
    t.same(r2.results[0], { ok: true }, 'same answer');
    t.match(r2.lines[0], /duplicate/);
    t.equal(sm.data.get('x'), 'a');
  },
);

t.test(
  'the exactly-once table is bounded; eviction follows log order, so every node evicts alike',
  async (t) => {
    const a = new KvStateMachine(2, 1000);
    const b = new KvStateMachine(2, 1000);
    const cmds = [1, 2, 3].flatMap((id) => [register(id), put(id, 1, 'k', String(id))]);
    a.apply(1, cmds);
    b.apply(1, cmds);
    t.same([...a.sessions.keys()], [2, 3], 'the least recently used session went first');
    t.same([...a.sessions.keys()], [...b.sessions.keys()]);
    const r = a.apply(2, [put(1, 2, 'k', 'x')]);
    t.equal(
      r.results[0].err,
      'session_expired',
      'an evicted client cannot have a retry re-applied',
    );
  },
);

t.test('catch-up: a node missing chosen slots fetches them in bounded chunks', async (t) => {
  const net = new Net([0, 1, 2], { catchupBytesMax: 200 });
  net.tick(15);
  net.down.add(2);
  const l0 = net.leader()!;
  for (let i = 1; i <= 20; i++) {
    l0.submit(put(1, i, 'k' + i, 'v'.repeat(50)));
    net.tick(1);
  }
  net.down.delete(2);
  const before = net.nodes.get(2)!.stats.catchupRequests;
  net.tick(40);
  t.equal(net.nodes.get(2)!.chosenThrough, l0.chosenThrough, 'caught up');
  t.ok(net.nodes.get(2)!.stats.catchupRequests - before > 3, 'in several bounded chunks');
});

t.test(
  'compaction: a node behind the snapshot point catches up through the snapshot',
  async (t) => {
    const net = new Net([0, 1, 2], { snapshotEverySlots: 5, catchupBytesMax: 100 });
    net.tick(15);
    net.down.add(2);
    const l0 = net.leader()!;
    for (let i = 1; i <= 30; i++) {
      l0.submit(put(1, i, 'k' + (i % 4), 'v' + i));
      net.tick(1);
    }
    t.ok(l0.base > 0, 'the leader compacted its log');
    net.down.delete(2);
    net.tick(60);
    const n2 = net.nodes.get(2)!;
    t.equal(n2.stats.snapshotsInstalled, 1, 'installed a snapshot');
    t.equal(n2.applied, l0.applied, 'and applied the tail');
  },
);

t.test(
  'read index: a read is answered only after a majority confirms the leadership and the log caught up',
  async (t) => {
    const net = new Net([0, 1, 2]);
    net.tick(15);
    const l0 = net.leader()!;
    l0.submit(put(1, 1, 'k', 'v1'));
    t.equal(l0.submitRead(100).kind, 'queued', 'the leader takes a read');
    const rd = l0.ready();
    t.same(rd.reads, [], 'not answered before confirmation');
    const confirms = rd.messages.filter((m) => m.msg.t === 'confirm');
    t.equal(confirms.length, 2, 'one confirmation round to the peers for all reads of the turn');
    for (const m of rd.messages) net.queue.push({ from: 0, to: m.to, msg: m.msg });
    net.run(20);
    t.same(net.reads.get(0), [100], 'answered once confirmed');
    t.ok(l0.applied >= 1, 'after the write proposed before it was applied');
    t.equal(net.nodes.get(1)!.submitRead(101).kind, 'redirect', 'a follower redirects reads');
  },
);

t.test('read index: a deposed leader cut off from the majority never answers a read', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const l0 = net.leader()!;
  const cut = (m: { from: number; to: number }): boolean => m.from !== 0 && m.to !== 0;
  t.equal(
    l0.submitRead(7).kind,
    'queued',
    'the leader, not yet aware of the partition, takes a read',
  );
  net.tick(40, cut);
  t.not(net.leader()?.sid, 0, 'the majority side elected another leader');
  t.same(net.reads.get(0), [], 'the old leader never answered the read');
});

t.test('lib/core stays pure: no I/O, clocks, timers or Math.random', async (t) => {
  const dir = path.join(__dirname, '..', '..', 'lib', 'core');
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    const src = fs.readFileSync(path.join(dir, f), 'utf8');
    t.notMatch(
      src,
      /from ['"]node:|require\(|Date\.now|new Date|Math\.random|setTimeout|setInterval|process\./,
      f,
    );
  }
});

export type { Outbound };

t.test('hostile but authenticated input: slot 0 and far-future slots are ignored', async (t) => {
  const net = new Net([0, 1, 2]);
  net.tick(15);
  const n1 = net.nodes.get(1)!;
  n1.step(2, { t: 'catchupReq', from: 0, to: 5 });
  const resp = n1.ready().messages.find((m) => m.msg.t === 'catchupResp')!.msg;
  t.match(resp, { t: 'catchupResp', from: 1 }, 'a request for slot 0 is answered from slot 1');
  const l0 = net.leader()!;
  n1.step(0, { t: 'accept', ballot: l0.ballot, entries: [[10_000_000, []]], commit: 0 });
  t.same(n1.ready().persist, [], 'an accept ten million slots ahead is not taken');
  t.equal(n1.acceptedEntry(10_000_000), undefined);
});
