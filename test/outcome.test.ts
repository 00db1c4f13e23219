// Outcome lookup (issue 12): the `outcome` command answers, through the log,
// whether request cid:seq was applied and with what answer; "not applied" is
// made final (a late copy can no longer run); a request the exactly-once table
// no longer remembers is "unknown".
import t from 'tap';
import type { Cmd, CmdResult } from '../lib/core/types';
import {
  encodeOp,
  encodeOutcome,
  encodeRegister,
  KvStateMachine,
  REGISTER_NONCE_MIN,
  type Outcome,
} from '../lib/sm/kv';

let slot = 0;
function run(sm: KvStateMachine, c: Cmd): CmdResult {
  return sm.apply(++slot, [c]).results[0];
}
function register(sm: KvStateMachine, nonce: number): number {
  return Number(run(sm, { cid: REGISTER_NONCE_MIN + nonce, seq: 1, op: encodeRegister() }).value);
}
function put(cid: number, seq: number, key: string, value: string): Cmd {
  return { cid, seq, op: encodeOp({ kind: 'put', key, value }) };
}
/** A state machine with sessions `a` (which ran put k=v1 as its request 1) and `q` (the asker). */
function twoSessions(sessionsMax: number): { sm: KvStateMachine; a: number; q: number } {
  const sm = new KvStateMachine(sessionsMax, 1000);
  const a = register(sm, 1);
  const q = register(sm, 2);
  run(sm, put(a, 1, 'k', 'v1'));
  return { sm, a, q };
}

/** Session `asker` (at its request `seq`) asks about cid:seq. */
function ask(sm: KvStateMachine, asker: number, seq: number, cid: number, s: number): Outcome {
  const r = run(sm, { cid: asker, seq, op: encodeOutcome(cid, s) });
  t.ok(r.ok, 'the query itself succeeds');
  return JSON.parse(r.value!) as Outcome;
}

t.test('applied: the first answer, also for a cas that did not match', async (t) => {
  const { sm, a, q } = twoSessions(10);
  t.same(ask(sm, q, 1, a, 1), { outcome: 'applied', result: { ok: true } });
  run(sm, { cid: a, seq: 2, op: encodeOp({ kind: 'cas', key: 'k', expected: 'x', value: 'y' }) });
  t.same(ask(sm, q, 2, a, 2), { outcome: 'applied', result: { ok: false, value: 'v1' } });
  t.same(
    ask(sm, q, 2, a, 2),
    { outcome: 'applied', result: { ok: false, value: 'v1' } },
    'a retried query: the same answer',
  );
});

t.test('not applied, and made final: a late copy no longer runs', async (t) => {
  const { sm, a, q } = twoSessions(10);
  t.same(ask(sm, q, 1, a, 2), { outcome: 'not_applied' }, 'seq 2 never reached the log');
  const late = run(sm, put(a, 2, 'k', 'late'));
  t.same(late, { ok: false, err: 'not_applied' }, 'its late copy is refused');
  t.equal(sm.data.get('k'), 'v1', 'and changed nothing');
  t.same(ask(sm, q, 2, a, 2), { outcome: 'not_applied' }, 'asked again: still not applied');
  run(sm, put(a, 3, 'k', 'v3'));
  t.equal(sm.data.get('k'), 'v3', 'the session goes on with later requests');
  t.same(
    ask(sm, q, 3, 424242, 1),
    { outcome: 'not_applied' },
    'a session never registered ran nothing',
  );
});

t.test('unknown: older than the last request, evicted, or asked by itself', async (t) => {
  const { sm, a, q } = twoSessions(2);
  run(sm, put(a, 2, 'k', 'v2'));
  t.match(ask(sm, q, 1, a, 1), {
    outcome: 'unknown',
    why: /keeps only session \d+'s last request/,
  });
  t.match(ask(sm, q, 2, q, 1), { outcome: 'unknown', why: /its own requests/ });
  register(sm, 3); // sessionsMax 2: the least recently used (a) is evicted
  t.ok(sm.evicted(a), 'session a was evicted');
  t.match(ask(sm, q, 3, a, 2), { outcome: 'unknown', why: /no longer in the exactly-once table/ });
});
