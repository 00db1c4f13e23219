// Divergence detection (issue 12): the rolling state hash, its comparison in
// heartbeats, order-log digests and state-hash lines, paxos-logcmp on them.
import { Encoder } from 'cbor-x';
import t from 'tap';
import { StateCheck } from '../lib/core/statecheck';
import type { Cmd } from '../lib/core/types';
import { orderLogCut, parseOrderLine } from '../lib/io/orderlog';
import { compareLogTexts } from '../lib/logcmp';
import {
  encodeOp,
  encodeRegister,
  KvStateMachine,
  REGISTER_NONCE_MIN,
  type KvOp,
} from '../lib/sm/kv';
import { runSimulation } from '../lib/sim/cluster';
import { runSweep } from '../lib/sim/sweep';
import { hex, ORDER_LOG_HASH_EVERY } from '../lib/sm/statehash';
import { decodePeerBody, encodePeerBody } from '../lib/wire/peer';

/** A state machine with session 1 registered at slot 1. */
function machine(): KvStateMachine {
  const sm = new KvStateMachine(100, 32768);
  sm.apply(1, [{ cid: REGISTER_NONCE_MIN, seq: 1, op: encodeRegister() }]);
  return sm;
}

function put(seq: number, key: string, value: string): Cmd {
  const op: KvOp = { kind: 'put', key, value };
  return { cid: 1, seq, op: encodeOp(op) };
}

t.test('the rolling hash: equal logs agree, any differing byte differs for good', async (t) => {
  const a = machine();
  const b = machine();
  t.same(a.digest(), b.digest(), 'same log, same hash');
  const v1 = 'x'.repeat(99) + '1';
  const v2 = 'x'.repeat(99) + '2';
  const la = a.apply(2, [put(1, 'k', v1)]).lines;
  const lb = b.apply(2, [put(1, 'k', v2)]).lines;
  t.notSame(a.digest()!.hash, b.digest()!.hash, 'a different 100-byte value at slot 2');
  t.not(la[0], lb[0], 'the order-log lines differ (their digests)');
  t.equal(
    la[0].replace(/ \[(?:v\d+:)?[0-9a-f]{16}\]$/, ''),
    lb[0].replace(/ \[(?:v\d+:)?[0-9a-f]{16}\]$/, ''),
    'although their readable prefixes are the same',
  );
  a.apply(3, []);
  b.apply(3, []);
  t.notSame(a.digest()!.hash, b.digest()!.hash, 'a later no-op does not hide it');
  t.ok(a.hashAt(2) && a.hashAt(3), 'recent hashes are remembered');
  t.equal(a.hashAt(2 + 5000), undefined, 'slots not applied are not');
});

t.test('the hash covers results: same command, different state, different hash', async (t) => {
  const a = machine();
  const b = machine();
  a.apply(2, [put(1, 'k', 'v')]);
  b.apply(2, [put(1, 'k', 'v')]);
  b.data.set('k', 'corrupt'); // state damaged outside the log
  const get: Cmd = { cid: 1, seq: 2, op: encodeOp({ kind: 'get', key: 'k' }) };
  a.apply(3, [get]);
  b.apply(3, [get]);
  t.notSame(a.digest()!.hash, b.digest()!.hash, 'the answer of a get differs, so does the hash');
});

t.test('snapshots carry the hash (format 5); formats 3/4 load with it unknown', async (t) => {
  const a = machine();
  a.apply(2, [put(1, 'k', 'v')]);
  const b = new KvStateMachine(100, 32768);
  b.restore(a.snapshot());
  t.same(b.digest(), a.digest(), 'restored: same slot and hash');
  a.apply(3, [put(2, 'k', 'w')]);
  b.apply(3, [put(2, 'k', 'w')]);
  t.same(b.digest(), a.digest(), 'and the chain continues alike');

  // A format-4 snapshot (written before the hash existed).
  const enc = new Encoder({ useRecords: false });
  const old = enc.encode([4, 0, [['k', 'v']], [[1, 1, [true, false, null, null], 7]], null, 2]);
  const c = new KvStateMachine(100, 32768);
  c.restore(old);
  t.equal(c.data.get('k'), 'v', 'a format-4 snapshot still loads');
  t.equal(c.digest(), null, 'with the hash unknown');
  t.match(
    c.apply(9, [put(2, 'k', 'z')]).lines[0],
    /^9\.0 1:2 put "k" "z" \[(?:v\d+:)?[0-9a-f]{16}\]$/,
  );
  t.equal(c.digest(), null, 'and it stays unknown: nothing to report or compare');
  t.throws(() => c.restore(enc.encode([5, 0, [], [], null, 1, 3, Buffer.alloc(5)])), {
    message: /bad state hash/,
  });
});

t.test('a node restored from a format-4 snapshot adopts the hash of a peer', async (t) => {
  const healthy = machine();
  healthy.apply(2, [put(1, 'k', 'v')]);
  const enc = new Encoder({ useRecords: false });
  const old = new KvStateMachine(100, 32768);
  // Its state after slot 1 (session 1 registered), written by an older build.
  old.restore(enc.encode([4, 0, [], [[1, 0, null, REGISTER_NONCE_MIN]], null, 2]));
  const check = new StateCheck(old, 2);
  t.equal(check.heard(0, true, 1, healthy.hashAt(1)!, 0), null);
  t.equal(old.digest(), null, 'a hash of another slot is not taken');
  t.equal(check.heard(0, true, 3, healthy.hashAt(2)!, 0), null, 'a later one waits');
  old.apply(2, [put(1, 'k', 'v')]); // it applies slot 2 too, with its hash unknown
  t.equal(check.heard(0, true, 2, healthy.hashAt(2)!, 2), null);
  t.same(old.digest(), healthy.digest(), 'the hash of its last applied slot is adopted');
  old.apply(3, []);
  healthy.apply(3, []);
  t.same(old.digest(), healthy.digest(), 'and the chain goes on alike');
  t.equal(check.self, null, 'no divergence was reported on the way');
});

t.test('a state-hash line every ORDER_LOG_HASH_EVERY slots', async (t) => {
  const sm = machine();
  for (let s = 2; s < ORDER_LOG_HASH_EVERY; s++) sm.apply(s, []);
  const lines = sm.apply(ORDER_LOG_HASH_EVERY, []).lines;
  t.same(lines, [
    `${ORDER_LOG_HASH_EVERY}.0 noop`,
    `# state hash at slot ${ORDER_LOG_HASH_EVERY}: ${hex(sm.digest()!.hash)}`,
  ]);
  t.same(parseOrderLine(lines[1]), {
    kind: 'hash',
    slot: ORDER_LOG_HASH_EVERY,
    hash: hex(sm.digest()!.hash),
  });
  // The restart rule: a hash line ends its slot, which is whole.
  const text = Buffer.from(`999.0 noop\n${lines.join('\n')}\n1001.0 no`);
  t.same(orderLogCut(text, text.length), {
    cut: text.length - '1001.0 no'.length,
    lastSlot: ORDER_LOG_HASH_EVERY,
  });
});

t.test('heartbeats carry (slot, hash); older heartbeats without them still decode', async (t) => {
  const hb = {
    t: 'heartbeat' as const,
    promised: 257,
    leading: true,
    chosen: 5,
    next: 6,
    eligible: true,
    voter: true,
    heard: [1, 2],
    leader: 0,
    tick: 9,
  };
  const hash = new Uint8Array(32).fill(7);
  const d = decodePeerBody(encodePeerBody(0, { ...hb, hashSlot: 5, hash }));
  if ('error' in d) throw new Error(d.error);
  t.equal(d.msg.t === 'heartbeat' && d.msg.hashSlot, 5);
  t.same(d.msg.t === 'heartbeat' && [...d.msg.hash!], [...hash]);
  const old = decodePeerBody(encodePeerBody(0, hb));
  if ('error' in old) throw new Error(old.error);
  t.equal(old.msg.t === 'heartbeat' && old.msg.hashSlot, undefined, 'no hash: decodes');
});

t.test('StateCheck: compares at the same slot, waits for slots not applied yet', async (t) => {
  const mine = machine();
  const other = machine();
  mine.apply(2, [put(1, 'k', 'a')]);
  other.apply(2, [put(1, 'k', 'b')]);
  mine.apply(3, []);
  other.apply(3, []);
  const check = new StateCheck(mine, 2);
  const good = new StateCheck(mine, 2);
  t.equal(good.heard(0, true, 3, mine.hashAt(3), 3), null, 'equal: nothing');
  const peer = check.heard(2, false, 3, other.hashAt(3), 3);
  t.ok(peer && !peer.self && peer.peer === 2, 'a peer (not our leader) differs: reported as its');
  const ahead = check.heard(0, true, 4, other.hashAt(3), 3);
  t.equal(ahead, null, 'a slot we have not applied: waits');
  t.equal(check.self, null, 'one differing peer of three: not ourselves');
  const d = check.heard(0, true, 2, other.hashAt(2)!, 3);
  t.ok(d?.self, 'the leader differs at slot 2: this node diverged');
  t.equal(d!.slot, 2);
  t.same(check.appliedThrough(3), [], 'not yet at slot 4');
  // A follower's report differs (seen by the leader, or by any peer).
  const lead = new StateCheck(other, 2);
  const f = lead.heard(1, false, 3, mine.hashAt(3)!, 3);
  t.ok(f && !f.self && f.peer === 1, 'the leader notices a bad follower');
  t.equal(lead.heard(1, false, 3, mine.hashAt(3)!, 3), null, 'reported once');
  t.equal(lead.self, null, 'and does not distrust itself');
  t.equal(lead.heard(1, false, 3, other.hashAt(3)!, 3), null, 'the follower agrees again');
  t.equal(lead.peers.size, 0, 'and is no longer listed');
  // Both peers in a 3-node cluster differ from this node: it is the odd one.
  lead.heard(1, false, 3, mine.hashAt(3)!, 3);
  const out = lead.heard(2, false, 2, mine.hashAt(2)!, 3);
  t.ok(out?.self, 'a node outvoted by a majority distrusts itself');
  t.same(out?.outvotedBy, [1, 2]);
});

t.test(
  'StateCheck: outvoted by a majority of the newest configuration, voters only (issue 13)',
  async (t) => {
    const mine = machine();
    const other = machine();
    mine.apply(2, [put(1, 'k', 'a')]);
    other.apply(2, [put(1, 'k', 'b')]);
    // Bootstrap {0,1,2}, grown to five voters {0..4}; 5 is a learner.
    let quorum = 2;
    const voters = new Set([0, 1, 2]);
    const check = new StateCheck(
      mine,
      () => quorum,
      (s) => voters.has(s),
    );
    quorum = 3;
    for (const s of [3, 4]) voters.add(s);
    t.ok(check.heard(5, false, 2, other.hashAt(2)!, 2), "a learner's differing report: listed");
    check.heard(1, false, 2, other.hashAt(2)!, 2);
    t.equal(
      check.heard(2, false, 2, other.hashAt(2)!, 2)?.self,
      false,
      'two voters of five differ',
    );
    t.equal(
      check.self,
      null,
      'two voters and a learner: not outvoted (the bootstrap majority was)',
    );
    const out = check.heard(3, false, 2, other.hashAt(2)!, 2);
    t.ok(out?.self, 'three voters of five: outvoted');
    t.same(out?.outvotedBy, [1, 2, 3], 'the voters that differ, not the learner');
  },
);

t.test('paxos-logcmp compares digests and state hashes', async (t) => {
  const a = machine();
  const b = machine();
  const v1 = 'y'.repeat(99) + '1';
  const v2 = 'y'.repeat(99) + '2';
  const la = [...a.apply(2, [put(1, 'k', v1)]).lines, ...a.apply(3, []).lines];
  const lb = [...b.apply(2, [put(1, 'k', v2)]).lines, ...b.apply(3, []).lines];
  const r = compareLogTexts([
    { file: 'a.log', text: la.join('\n') + '\n' },
    { file: 'b.log', text: lb.join('\n') + '\n' },
  ]);
  t.notOk(r.ok, 'two different 100-byte values: divergence');
  t.match(r.message, /first divergence at 2\.0 \(slot 2\)/, 'names the slot');

  // Old-format lines (no digest) are compared by their text, against old or new.
  const old = '2.0 1:1 put "k" "v"\n3.0 noop\n';
  const neu = '2.0 1:1 put "k" "v" [0123456789abcdef]\n3.0 noop\n';
  t.ok(
    compareLogTexts([
      { file: 'o', text: old },
      { file: 'n', text: neu },
    ]).ok,
    'old vs new',
  );

  // Rotated logs sharing no command line: compared by their state-hash lines.
  const h1 = `# state hash at slot 1000: ${'a'.repeat(64)}\n`;
  const h2 = `# state hash at slot 1000: ${'b'.repeat(64)}\n`;
  const x = compareLogTexts([
    { file: 'x', text: `999.0 noop\n1000.0 noop\n${h1}` },
    { file: 'y', text: `1000.0 noop\n${h2}1001.0 noop\n` },
  ]);
  t.notOk(x.ok, 'same lines, different state hashes: divergence');
  t.match(x.message, /at slot 1000 or before \(state hashes differ\)/);
  const y = compareLogTexts([
    { file: 'x', text: `1000.0 noop\n${h1}` },
    { file: 'y', text: `${h1}1001.0 noop\n` },
  ]);
  t.ok(y.ok, y.message);
  t.match(y.message, /state hashes at 1 slots/);
});

t.test('the simulator: every injected divergence is reported, soon after the heal', async (t) => {
  const s = runSweep(1, 16, { injectDivergence: true });
  t.same(
    s.failures.map((r) => `${r.seed}: ${r.failure?.invariant}: ${r.failure?.detail}`),
    [],
    'no invariant broken (detection bound included)',
  );
  t.ok(s.divergence.injected >= 8, `the fault fired in ${s.divergence.injected} of 16 runs`);
  t.equal(s.divergence.detected, s.divergence.injected, 'and was reported in every one');
  t.comment(`worst ${s.divergence.worstBeats} heartbeats after the later of injection and heal`);
});

t.test('the simulator invariant can fail: a detector that never compares is caught', async (t) => {
  const heard = StateCheck.prototype.heard;
  StateCheck.prototype.heard = () => null;
  t.teardown(() => {
    StateCheck.prototype.heard = heard;
  });
  // A run whose injected replica was later healed (a snapshot from a healthy
  // node replaced its state) owes no report; the others must fail.
  const failed: string[] = [];
  for (let seed = 1; seed <= 8; seed++) {
    const r = runSimulation(seed, { injectDivergence: true });
    if (r.failure) failed.push(`${r.failure.invariant}: ${r.failure.detail.split('\n')[0]}`);
  }
  t.ok(failed.length >= 2, `${failed.length} of 8 runs failed`);
  t.ok(
    failed.every((f) => f.startsWith('divergence detected: ')),
    `all on 'divergence detected' (${failed[0]})`,
  );
});
