// The exactly-once rules of the key-value state machine (issue 15), applied to
// hand-made logs: what applying a command does depends on the log only.
import t from 'tap';
import type { Cmd } from '../lib/core/types';
import {
  encodeLimits,
  encodeOp,
  encodeRegister,
  KvStateMachine,
  LIMITS_CID,
  PROTOCOL_LIMITS,
  REGISTER_NONCE_MIN,
  type KvOp,
} from '../lib/sm/kv';

const reg = (n: number): Cmd => ({ cid: REGISTER_NONCE_MIN + n, seq: 1, op: encodeRegister() });
const cmd = (cid: number, seq: number, op: KvOp): Cmd => ({ cid, seq, op: encodeOp(op) });
const put = (cid: number, seq: number, key: string, value: string): Cmd =>
  cmd(cid, seq, { kind: 'put', key, value });
const limits = (sessionsMax: number, valueBytesMax = 32768): Cmd => ({
  cid: LIMITS_CID,
  seq: 1,
  op: encodeLimits({ sessionsMax, valueBytesMax }),
});

/** Apply each command in its own slot; the results in order. */
function run(
  sm: KvStateMachine,
  cmds: Cmd[],
  from = 1,
): { ok: boolean; err?: string; value?: string | null }[] {
  return cmds.map((c, i) => sm.apply(from + i, [c]).results[0]);
}

t.test(
  'Raft 6.3 RegisterClient: a session id comes from the log, counted up, never reused',
  async (t) => {
    const sm = new KvStateMachine(2);
    const r = run(sm, [reg(1), reg(2), reg(3)]);
    t.same(
      r.map((x) => x.value),
      ['1', '2', '3'],
      'ids 1, 2, 3 in log order',
    );
    t.same([...sm.sessions.keys()], [2, 3], 'sessionsMax 2: the least recently used went');
    t.ok(sm.evicted(1), 'session 1 is evicted');
    t.notOk(sm.evicted(4), 'an id not handed out yet is not "evicted"');
    // A retried registration whose session is live gets the same id (from the
    // leader's table, or again through the log); it changes no data either way.
    t.same(
      sm.cached(REGISTER_NONCE_MIN + 3, 1),
      { ok: true, value: '3' },
      'cached register answer',
    );
    t.same(run(sm, [reg(3)], 10)[0], { ok: true, value: '3' }, 'same id through the log');
    t.equal(sm.nextSessionId, 4);
  },
);

t.test('a request from an unknown or evicted session is refused, seq 1 included', async (t) => {
  const sm = new KvStateMachine(2);
  t.same(
    run(sm, [put(7, 1, 'k', 'never')])[0],
    { ok: false, err: 'session_expired' },
    'unregistered',
  );
  run(sm, [reg(1)], 2); // session 1
  t.same(run(sm, [put(1, 1, 'k', 'x1')], 3)[0], { ok: true });
  run(sm, [reg(2), reg(3)], 4); // sessions 2, 3 evict session 1
  t.same(run(sm, [put(2, 1, 'k', 'y')], 6)[0], { ok: true });
  // The late copy of session 1's first request (a UDP duplicate, or a replay).
  const late = sm.apply(7, [put(1, 1, 'k', 'x1')]);
  t.same(late.results[0], { ok: false, err: 'session_expired' }, 'refused');
  t.match(late.lines[0], /^7\.0 1:1 session expired \[(?:v\d+:)?[0-9a-f]{16}\]$/, 'order-log line');
  t.equal(sm.data.get('k'), 'y', 'the newer value stays');
});

t.test('retries: the first answer again (duplicate), older seqs are stale', async (t) => {
  const sm = new KvStateMachine(10);
  run(sm, [reg(1)]);
  const cas = cmd(1, 1, { kind: 'cas', key: 'x', expected: null, value: 'a' });
  t.same(run(sm, [cas], 2)[0], { ok: true });
  const dup = sm.apply(3, [cas]);
  t.same(dup.results[0], { ok: true }, 'same answer');
  t.match(dup.lines[0], /duplicate \[(?:v\d+:)?[0-9a-f]{16}\]$/);
  run(sm, [put(1, 3, 'x', 'b')], 4); // a gap in seq (seq 2 timed out) is allowed
  t.same(run(sm, [put(1, 2, 'x', 'late')], 5)[0], { ok: false, err: 'stale' }, 'stale');
  t.equal(sm.data.get('x'), 'b');
});

t.test(
  'limits: the first limits command in the log decides; sizes are not checked at apply',
  async (t) => {
    const sm = new KvStateMachine();
    t.equal(sm.limits, null, 'no limits until the log records them');
    t.same(sm.effectiveLimits, PROTOCOL_LIMITS, 'protocol constants meanwhile');
    const a = sm.apply(1, [limits(2, 16384)]);
    t.match(a.lines[0], /limits sessionsMax=2 valueBytesMax=16384/);
    const b = sm.apply(2, [limits(100, 32768)]);
    t.match(b.lines[0], /limits ignored/, 'a later one changes nothing');
    t.same(sm.limits, { sessionsMax: 2, valueBytesMax: 16384 });
    run(sm, [reg(1)], 3);
    // The leader admitted it (its admission check used the cluster's limit at the
    // time); applying it must not depend on any node's own limit.
    const big = 'b'.repeat(20_000);
    t.same(run(sm, [put(1, 1, 'big', big)], 4)[0], { ok: true }, 'a 20,000-byte put applies');
    t.equal(sm.data.get('big'), big);
    // Only LIMITS_CID may set limits (a client cannot).
    const forged = new KvStateMachine();
    forged.apply(1, [{ ...limits(1), cid: 5 }]);
    t.equal(forged.limits, null, 'limits from another cid are invalid');
  },
);

t.test('two replicas with different local configs apply one log to one state', async (t) => {
  // The daemon constructs its state machine without limits; the log carries them.
  const a = new KvStateMachine();
  const b = new KvStateMachine();
  const log: Cmd[] = [
    limits(2),
    reg(1),
    put(1, 1, 'k', 'a1'),
    reg(2),
    reg(3),
    put(1, 2, 'k', 'a2'),
  ];
  log.forEach((c, i) => {
    const ra = a.apply(i + 1, [c]);
    const rb = b.apply(i + 1, [c]);
    t.same(ra, rb, `slot ${i + 1}: same results and lines`);
  });
  t.same(Buffer.from(a.snapshot()), Buffer.from(b.snapshot()), 'same snapshot bytes');
  t.equal(a.data.get('k'), 'a1', 'session 1 was evicted on both, so a2 was refused on both');
});

t.test('snapshot format 4 round-trips limits, the id counter, nonces and answers', async (t) => {
  const a = new KvStateMachine();
  run(a, [limits(3), reg(1), put(1, 1, 'k', 'v'), reg(2)]);
  a.apply(5, [cmd(2, 1, { kind: 'cas', key: 'k', expected: 'x', value: 'y' })]);
  const b = new KvStateMachine();
  b.restore(a.snapshot());
  t.same(Buffer.from(b.snapshot()), Buffer.from(a.snapshot()), 'same bytes');
  t.same(b.limits, a.limits);
  t.equal(b.nextSessionId, 3);
  t.strictSame(b.cached(1, 1), { ok: true }, 'cached put answer');
  t.strictSame(b.cached(2, 1), { ok: false, value: 'v' }, 'cached cas answer');
  t.strictSame(b.cached(REGISTER_NONCE_MIN + 2, 1), { ok: true, value: '2' }, 'register retry');
  t.same(run(b, [reg(9)], 6)[0].value, '3', 'the counter continues');
});
