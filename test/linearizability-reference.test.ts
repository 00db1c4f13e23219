import t from 'tap';
import {
  checkLinearizable,
  type HistoryEvent,
  type KvOp,
  type KvResult,
} from '../lib/check/linearizability';
import { rng } from './helpers/faults';

// The checker (lib/check/linearizability.ts) prunes hard: per-key split, KV
// rules, memo. Here it is cross-checked against a reference that shares none of
// that: a plain search over every order of every admissible set of operations,
// straight from the definition (Herlihy & Wing), on the whole multi-key history
// at once (so the checker's per-key split is checked too). Small histories only:
// the reference is exponential.
//
// The definition, for this KV store:
// - an operation with a definite answer (ok, or a cas failure) takes effect
//   exactly once, between its call and its return (no upper bound if ret is
//   null), and its answer is what the store gives at that point;
// - a refusal (ok:false of put, get or del) takes no effect;
// - an operation with an unknown outcome takes effect at most once, at any
//   point after its call; an unknown get has no effect and nothing to match;
// - if a returns before b is called (a.ret < b.call, touching is concurrent),
//   a takes effect before b.

type Store = Map<string, string>;

/** What the store answers to `op`, and the store after it. */
function step(store: Store, op: KvOp): { result: KvResult; next: Store } {
  const next = new Map(store);
  const cur = store.get(op.key) ?? null;
  switch (op.kind) {
    case 'put':
      next.set(op.key, op.value);
      return { result: { ok: true }, next };
    case 'del':
      next.delete(op.key);
      return { result: { ok: true }, next };
    case 'get':
      return { result: { ok: true, value: cur }, next };
    case 'cas':
      if (cur !== op.expected) return { result: { ok: false, value: cur }, next };
      next.set(op.key, op.value);
      return { result: { ok: true }, next };
  }
}

/** Does the recorded answer match the store's? (A cas failure may omit the value.) */
function matches(recorded: KvResult, actual: KvResult, op: KvOp): boolean {
  if (recorded.ok !== actual.ok) return false;
  if (op.kind === 'get') return (recorded.value ?? null) === actual.value;
  if (op.kind === 'cas' && !recorded.ok)
    return recorded.value === undefined || recorded.value === actual.value;
  return true;
}

/** Brute force: is there an order of the history that the definition above accepts? */
export function bruteForce(history: HistoryEvent[]): boolean {
  const must: HistoryEvent[] = [];
  const may: HistoryEvent[] = [];
  for (const e of history) {
    if (e.result === 'unknown') {
      if (e.op.kind !== 'get') may.push(e);
    } else if (e.result.ok || e.op.kind === 'cas') must.push(e);
    // else: a refusal, no effect
  }
  const ops = [...must, ...may];
  const isMust = ops.map((_, i) => i < must.length);
  const end = ops.map((e) => (e.result === 'unknown' || e.ret === null ? Infinity : e.ret));
  const placed = ops.map(() => false);
  const search = (store: Store, mustLeft: number): boolean => {
    if (mustLeft === 0) return true; // the remaining unknown ones never took effect
    for (let i = 0; i < ops.length; i++) {
      if (placed[i]) continue;
      // Some definite operation not yet placed returned before this one was called.
      let blocked = false;
      for (let j = 0; j < ops.length && !blocked; j++)
        blocked = j !== i && !placed[j] && isMust[j] && end[j] < ops[i].call;
      if (blocked) continue;
      const e = ops[i];
      const { result, next } = step(store, e.op);
      if (e.result !== 'unknown' && !matches(e.result, result, e.op)) continue;
      placed[i] = true;
      const found = search(next, mustLeft - (isMust[i] ? 1 : 0));
      placed[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(new Map(), must.length);
}

// ---------------------------------------------------------------------------

const ev = (
  client: number,
  call: number,
  ret: number | null,
  op: KvOp,
  result: KvResult | 'unknown',
): HistoryEvent => ({ client, call, ret, op, result });

t.test('the reference itself, on hand-made histories', async (t) => {
  const put = (v: string, key = 'k'): KvOp => ({ kind: 'put', key, value: v });
  const get = (key = 'k'): KvOp => ({ kind: 'get', key });
  const OK = { ok: true };
  const val = (value: string | null): KvResult => ({ ok: true, value });
  // Stale read.
  t.notOk(
    bruteForce([
      ev(0, 0, 1, put('a'), OK),
      ev(0, 2, 3, put('b'), OK),
      ev(1, 4, 5, get(), val('a')),
    ]),
  );
  // Concurrent read may see either.
  t.ok(bruteForce([ev(0, 0, 10, put('a'), OK), ev(1, 1, 2, get(), val(null))]));
  t.ok(bruteForce([ev(0, 0, 10, put('a'), OK), ev(1, 1, 2, get(), val('a'))]));
  // Touching intervals are concurrent.
  t.ok(bruteForce([ev(0, 0, 5, put('a'), OK), ev(1, 5, 6, get(), val(null))]));
  // Unknown write applied late, at most once.
  t.ok(
    bruteForce([
      ev(0, 0, null, put('a'), 'unknown'),
      ev(1, 9, 10, get(), val(null)),
      ev(1, 11, 12, get(), val('a')),
    ]),
  );
  t.notOk(
    bruteForce([
      ev(0, 0, null, put('a'), 'unknown'),
      ev(1, 1, 2, get(), val('a')),
      ev(1, 3, 4, put('b'), OK),
      ev(1, 5, 6, get(), val('a')),
    ]),
  );
  // Refusals take no effect.
  t.ok(bruteForce([ev(0, 0, 1, put('a'), { ok: false }), ev(1, 2, 3, get(), val(null))]));
  // Keys are separate stores, but one order must explain all of them at once
  // (here it exists: per-key answers alone never conflict across keys).
  t.ok(
    bruteForce([
      ev(0, 0, 1, put('a', 'x'), OK),
      ev(1, 2, 3, get('y'), val(null)),
      ev(1, 4, 5, get('x'), val('a')),
    ]),
  );
  t.notOk(bruteForce([ev(0, 0, 1, put('a', 'x'), OK), ev(1, 2, 3, get('x'), val(null))]));
});

/** A random small history: arbitrary intervals and answers (often not linearizable). */
function randomHistory(r: () => number, keys: number): HistoryEvent[] {
  const vals = [null, 'a', 'b', 'c'];
  const anyVal = (): string => vals[1 + Math.floor(r() * 3)] as string;
  const valOrNull = (): string | null => vals[Math.floor(r() * vals.length)];
  const n = 1 + Math.floor(r() * 7);
  const h: HistoryEvent[] = [];
  for (let i = 0; i < n; i++) {
    const key = `k${Math.floor(r() * keys)}`;
    const call = Math.floor(r() * 10);
    const ret = r() < 0.1 ? null : call + Math.floor(r() * 6);
    const x = r();
    let op: KvOp;
    let res: KvResult;
    if (x < 0.35) {
      op = { kind: 'get', key };
      res = r() < 0.05 ? { ok: false } : { ok: true, value: valOrNull() };
    } else if (x < 0.65) {
      op = { kind: 'put', key, value: anyVal() };
      res = { ok: r() >= 0.05 };
    } else if (x < 0.75) {
      op = { kind: 'del', key };
      res = { ok: r() >= 0.05 };
    } else {
      op = { kind: 'cas', key, expected: valOrNull(), value: anyVal() };
      const y = r();
      res = y < 0.5 ? { ok: true } : y < 0.75 ? { ok: false } : { ok: false, value: valOrNull() };
    }
    const unknown = r() < 0.2;
    h.push(ev(i, call, unknown ? null : ret, op, unknown ? 'unknown' : res));
  }
  return h;
}

/**
 * A history from a real run of the model (linearizable by construction: each
 * operation takes effect at a random point of its interval), then with
 * probability 1/2 one answer or interval changed (often not linearizable).
 */
function modelHistory(r: () => number, keys: number): HistoryEvent[] {
  const vals = ['a', 'b', 'c'];
  const n = 2 + Math.floor(r() * 6);
  type P = { e: HistoryEvent; point: number; effect: boolean };
  const ps: P[] = [];
  for (let i = 0; i < n; i++) {
    const key = `k${Math.floor(r() * keys)}`;
    const call = Math.floor(r() * 12);
    const ret = call + 1 + Math.floor(r() * 6);
    const x = r();
    const op: KvOp =
      x < 0.35
        ? { kind: 'get', key }
        : x < 0.65
          ? { kind: 'put', key, value: vals[Math.floor(r() * 3)] }
          : x < 0.75
            ? { kind: 'del', key }
            : {
                kind: 'cas',
                key,
                expected: r() < 0.3 ? null : vals[Math.floor(r() * 3)],
                value: vals[Math.floor(r() * 3)],
              };
    const unknown = op.kind !== 'get' && r() < 0.2;
    ps.push({
      e: ev(i, call, unknown ? null : ret, op, 'unknown'),
      point: call + r() * (ret - call),
      effect: !unknown || r() < 0.5,
    });
  }
  let store: Store = new Map();
  for (const p of [...ps].sort((a, b) => a.point - b.point)) {
    if (!p.effect) continue;
    const { result, next } = step(store, p.e.op);
    store = next;
    if (p.e.ret !== null) p.e.result = result;
  }
  const h = ps.map((p) => p.e);
  if (r() < 0.5) {
    const i = Math.floor(r() * h.length);
    const e = h[i];
    if (e.result !== 'unknown') {
      if (e.op.kind === 'get')
        h[i] = { ...e, result: { ok: true, value: r() < 0.3 ? null : vals[Math.floor(r() * 3)] } };
      else if (e.op.kind === 'cas')
        h[i] = { ...e, result: e.result.ok ? { ok: false } : { ok: true } };
      else if (e.ret !== null) h[i] = { ...e, ret: e.call + Math.floor((e.ret - e.call) * r()) };
    }
  }
  return h;
}

/** Histories cross-checked (the count the README states). */
const HISTORIES = 60_000;

t.test(
  `the checker agrees with the brute-force reference on ${HISTORIES} small histories`,
  async (t) => {
    const r = rng(20261202);
    const tally = { linearizable: 0, multiKey: 0, withUnknown: 0, byGen: [0, 0] };
    const started = Date.now();
    for (let i = 0; i < HISTORIES; i++) {
      const keys = 1 + (i % 3); // one third each of 1, 2 and 3 keys
      const model = i % 2 === 1;
      const h = model ? modelHistory(r, keys) : randomHistory(r, keys);
      const expected = bruteForce(h);
      const got = checkLinearizable(h);
      if (got.ok !== expected || got.timedOut) {
        t.fail(`history ${i}: reference says ${expected}, checker says ${got.message}`, {
          history: h,
        });
        return;
      }
      if (expected) tally.linearizable++;
      if (new Set(h.map((e) => e.op.key)).size > 1) tally.multiKey++;
      if (h.some((e) => e.result === 'unknown')) tally.withUnknown++;
      tally.byGen[model ? 1 : 0]++;
    }
    t.pass(
      `${HISTORIES} histories agree in ${Date.now() - started} ms: ${tally.linearizable} linearizable, ${tally.multiKey} on several keys, ${tally.withUnknown} with unknown outcomes (${tally.byGen[0]} random, ${tally.byGen[1]} from model runs)`,
    );
    // Both verdicts, several keys and unknown outcomes must be well represented,
    // or the agreement says little.
    t.ok(
      tally.linearizable > HISTORIES * 0.2 && tally.linearizable < HISTORIES * 0.8,
      `both verdicts are common (${tally.linearizable} linearizable)`,
    );
    t.ok(tally.multiKey > HISTORIES * 0.4, `multi-key histories: ${tally.multiKey}`);
    t.ok(
      tally.withUnknown > HISTORIES * 0.3,
      `histories with unknown outcomes: ${tally.withUnknown}`,
    );
  },
);
