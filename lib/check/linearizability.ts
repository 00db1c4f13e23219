/**
 * Linearizability checker for key-value store histories: a Wing & Gong / Lowe style search
 * with memoisation (as in Porcupine's `checkSingle` and Knossos), plus pruning rules that
 * are specific to a register and keep the search fast on long, highly concurrent histories.
 *
 * Each key is an independent register, so the history is partitioned by key
 * (P-compositionality) and each sub-history is checked on its own.
 *
 * Per key, a configuration is (set of ops linearized so far, value of the register). The
 * "deadline" is the not-yet-linearized op (with a known result) that returns first; only
 * ops invoked no later than the deadline returns can be linearized next. A depth-first
 * search (iterative, with an explicit stack) tries candidates in a heuristic order and
 * backtracks; a cache of visited configurations prunes it (Lowe, "Testing for
 * linearizability", 2017). The ops not yet linearized are kept in dancing-links lists in
 * call order and in return order, so stepping and backtracking are O(1).
 *
 * Pruning (each rule keeps at least one valid linearization if any exists):
 *  - Unknown-outcome ops need not be linearized at all (placing one after every known op
 *    is the same as it never happening), so the search succeeds once every known op is
 *    placed. An unknown op is placed only when it changes the register to a value some
 *    candidate needs, and is never followed directly by a blind write (put/del).
 *  - A valid read-only candidate (get, failed cas) can be moved to the current point of
 *    any valid completion, so it is taken without trying alternatives.
 *  - Of candidate writes with the same effect, only the one returning first is tried.
 *  - A put/del that is overwritten straight away ("hidden") has no observable effect. It
 *    is only placed visibly when some candidate needs its value next (or it is the
 *    deadline); otherwise, once it is the deadline, it may be placed "retroactively" just
 *    before the latest blind write already placed, if real-time order allows.
 *  - Support check: if the register does not hold x, the next reader of x to return needs
 *    a write of x not yet placed and invoked before that reader returns.
 * The hidden-write and unknown-op rules depend on the path, not just the configuration, so
 * the cache stores with each configuration the restrictions it was explored under, and a
 * hit prunes only when those were no stronger.
 *
 * Before the search, a polynomial pre-check rejects reads of values never written (or only
 * written after the read returned) and stale reads (a completed overwrite lies entirely
 * between every possible source write and the read), with a direct explanation.
 */

export type KvOp =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'get'; key: string }
  | { kind: 'del'; key: string }
  | { kind: 'cas'; key: string; expected: string | null; value: string };

export type KvResult = { ok: boolean; value?: string | null };

export interface HistoryEvent {
  /** Who issued the operation (informational only; used in messages). */
  client: string | number;
  /** Invocation time (any monotonic unit shared by all clients). */
  call: number;
  /** Response time; null when the outcome is unknown (e.g. timed out). */
  ret: number | null;
  op: KvOp;
  /** 'unknown' => the op may or may not have taken effect, at any time after `call`. */
  result: KvResult | 'unknown';
}

export interface CheckResult {
  /** True only when every key was proven linearizable. */
  ok: boolean;
  /** The key that failed (or, when `timedOut`, the first key whose check was abandoned). */
  key?: string;
  /** Number of keys checked (up to and including a failing key). */
  checkedKeys: number;
  /** Number of search states (configurations) entered, summed over the checked keys. */
  explored: number;
  /** Set when some key's search hit `maxStatesPerKey`; `ok` is then false (inconclusive). */
  timedOut?: boolean;
  message: string;
}

export interface CheckOptions {
  /**
   * Give up on a key after entering this many search states (default 5,000,000, which
   * takes roughly 5-15 s and a few hundred MB), or after scanning 64 times as many
   * candidate operations.
   */
  maxStatesPerKey?: number;
}

export const DEFAULT_MAX_STATES_PER_KEY = 5_000_000;

/**
 * Checks whether `history` is linearizable with respect to a key-value store in which
 * every key starts absent (null).
 *
 * Interpretation of the history:
 *  - An event whose `result` is 'unknown' may take effect at any time after `call`, or
 *    never (its `ret` is ignored). An unknown `get` constrains nothing and is dropped.
 *  - An event with a known result but `ret === null` must take effect at some time after
 *    `call` (its response time is treated as +infinity).
 *  - A put/get/del whose result has `ok: false` is treated as having definitely not
 *    taken effect and is dropped. A cas with `ok: false` is a failed comparison: it is
 *    valid only where the current value differs from `expected` and, when the result
 *    carries a `value` field, where the current value equals it.
 *  - A get result with no `value` field is read as null (key absent).
 *  - An op that returns at exactly the time another is invoked is treated as concurrent
 *    with it (lenient on ties).
 *
 * Keys are checked in order of first appearance; the first key found to be
 * non-linearizable is reported. If no key fails but some key exceeded `maxStatesPerKey`,
 * the result is `{ ok: false, timedOut: true }` naming the first such key.
 *
 * Throws a TypeError for malformed events (bad kind, non-finite call, ret < call).
 */
export function checkLinearizable(history: HistoryEvent[], opts: CheckOptions = {}): CheckResult {
  const maxStates = opts.maxStatesPerKey ?? DEFAULT_MAX_STATES_PER_KEY;
  if (!(maxStates > 0)) throw new RangeError('maxStatesPerKey must be positive');

  const byKey = new Map<string, HistoryEvent[]>();
  let totalOps = 0;
  for (let i = 0; i < history.length; i++) {
    const ev = history[i];
    validateEvent(ev, i);
    if (isDropped(ev)) continue;
    let list = byKey.get(ev.op.key);
    if (list === undefined) {
      list = [];
      byKey.set(ev.op.key, list);
    }
    list.push(ev);
    totalOps++;
  }

  let explored = 0;
  let checkedKeys = 0;
  let timedOutKey: string | undefined;
  let timedOutStates = 0;
  for (const [key, events] of byKey) {
    const r = checkKey(key, events, maxStates);
    explored += r.explored;
    checkedKeys++;
    if (r.status === 'fail') {
      return { ok: false, key, checkedKeys, explored, message: r.message };
    }
    if (r.status === 'timeout' && timedOutKey === undefined) {
      timedOutKey = key;
      timedOutStates = r.explored;
    }
  }

  if (timedOutKey !== undefined) {
    return {
      ok: false,
      key: timedOutKey,
      checkedKeys,
      explored,
      timedOut: true,
      message:
        `inconclusive: gave up on key ${JSON.stringify(timedOutKey)} after ${timedOutStates} ` +
        `states (maxStatesPerKey ${maxStates}); no violation found in the other keys`,
    };
  }
  return {
    ok: true,
    checkedKeys,
    explored,
    message: `linearizable: ${totalOps} ops over ${checkedKeys} keys, ${explored} states explored`,
  };
}

// ---------------------------------------------------------------------------------------
// Input handling

function validateEvent(ev: HistoryEvent, index: number): void {
  const where = `history[${index}]`;
  if (ev === null || typeof ev !== 'object') throw new TypeError(`${where} is not an object`);
  if (typeof ev.call !== 'number' || !Number.isFinite(ev.call)) {
    throw new TypeError(`${where}.call must be a finite number`);
  }
  if (ev.ret !== null) {
    if (typeof ev.ret !== 'number' || Number.isNaN(ev.ret)) {
      throw new TypeError(`${where}.ret must be a number or null`);
    }
    if (ev.ret < ev.call) throw new TypeError(`${where}: ret (${ev.ret}) < call (${ev.call})`);
  }
  const op = ev.op;
  if (op === null || typeof op !== 'object' || typeof op.key !== 'string') {
    throw new TypeError(`${where}.op must have a string key`);
  }
  switch (op.kind) {
    case 'put':
    case 'get':
    case 'del':
    case 'cas':
      break;
    default:
      throw new TypeError(`${where}.op has unknown kind ${JSON.stringify((op as KvOp).kind)}`);
  }
  const res = ev.result;
  if (res !== 'unknown' && (res === null || typeof res !== 'object')) {
    throw new TypeError(`${where}.result must be an object or 'unknown'`);
  }
}

function isDropped(ev: HistoryEvent): boolean {
  if (ev.result === 'unknown') return ev.op.kind === 'get';
  return !ev.result.ok && ev.op.kind !== 'cas';
}

// ---------------------------------------------------------------------------------------
// Per-key search

const K_PUT = 0;
const K_GET = 1;
const K_DEL = 2;
const K_CAS = 3;

/** The search of a key also stops after scanning this many candidates per allowed state. */
const WORK_PER_STATE = 64;

/** Number of trailing ops of the longest linearizable prefix shown in failure messages. */
const SHOW_PREFIX_OPS = 4;

interface FailureReason {
  /**
   * 'invalid': the deadline op cannot take effect in the current state and nothing else
   * can be linearized before it; 'stuck': every continuation fails before the deadline op
   * returns; 'unsupported': `op`, a reader of `value`, can no longer observe it.
   */
  kind: 'invalid' | 'stuck' | 'unsupported';
  op: number;
  value: string | null;
  /** Value of the key after the prefix. */
  state: string | null;
}

type KeyResult =
  | { status: 'ok'; explored: number }
  | { status: 'timeout'; explored: number }
  | { status: 'fail'; explored: number; message: string };

function checkKey(key: string, input: HistoryEvent[], maxStates: number): KeyResult {
  // Order ops by invocation time (stable).
  const events = input
    .map((ev, idx) => ({ ev, idx }))
    .sort((a, b) => a.ev.call - b.ev.call || a.idx - b.idx)
    .map((x) => x.ev);
  const n = events.length;

  // Intern values: 0 = null (absent); strings get ids >= 1.
  const valueIds = new Map<string, number>();
  const values: (string | null)[] = [null];
  const intern = (v: string | null | undefined): number => {
    if (v === null || v === undefined) return 0;
    let id = valueIds.get(v);
    if (id === undefined) {
      id = values.length;
      valueIds.set(v, id);
      values.push(v);
    }
    return id;
  };

  const kind = new Uint8Array(n);
  const arg = new Int32Array(n); // put/cas: new value id
  const expected = new Int32Array(n); // cas: expected value id
  const resVal = new Int32Array(n).fill(-1); // get: value read; failed cas: value seen
  const casOk = new Uint8Array(n);
  const required = new Uint8Array(n); // known result => must be linearized
  const readOnly = new Uint8Array(n); // required and never changes the state
  const optIndex = new Int32Array(n).fill(-1);
  const callTime = new Float64Array(n);
  const retTime = new Float64Array(n); // +Infinity for unknown outcome or ret === null
  const effect = new Int32Array(n).fill(-1); // writes with equal effect share a class
  const effectIds = new Map<string, number>();
  let numRequired = 0;
  let numOptional = 0;

  for (let i = 0; i < n; i++) {
    const ev = events[i];
    const op = ev.op;
    const res = ev.result;
    const known = res !== 'unknown';
    let effectKey: string | undefined;
    switch (op.kind) {
      case 'put':
        kind[i] = K_PUT;
        arg[i] = intern(op.value);
        effectKey = `p${arg[i]}`;
        break;
      case 'get':
        kind[i] = K_GET;
        if (known) resVal[i] = intern(res.value);
        break;
      case 'del':
        kind[i] = K_DEL;
        effectKey = 'd';
        break;
      case 'cas':
        kind[i] = K_CAS;
        arg[i] = intern(op.value);
        expected[i] = intern(op.expected);
        if (known) {
          casOk[i] = res.ok ? 1 : 0;
          if (!res.ok && res.value !== undefined) resVal[i] = intern(res.value);
        }
        if (!known || casOk[i]) effectKey = `c${expected[i]},${arg[i]}`;
        break;
    }
    if (effectKey !== undefined) {
      let c = effectIds.get(effectKey);
      if (c === undefined) {
        c = effectIds.size;
        effectIds.set(effectKey, c);
      }
      effect[i] = c;
    }
    callTime[i] = ev.call;
    retTime[i] = !known || ev.ret === null ? Infinity : ev.ret;
    if (known) {
      required[i] = 1;
      numRequired++;
      if (effect[i] < 0) readOnly[i] = 1;
    } else {
      optIndex[i] = numOptional++;
    }
  }

  if (numRequired === 0) return { status: 'ok', explored: 0 };

  /** Model transition; returns the new state id, or -1 if the op's result is impossible. */
  const step = (s: number, i: number): number => {
    switch (kind[i]) {
      case K_PUT:
        return arg[i];
      case K_DEL:
        return 0;
      case K_GET:
        return s === resVal[i] ? s : -1;
      default: {
        const e = expected[i];
        if (!required[i]) return s === e ? arg[i] : s;
        if (casOk[i]) return s === e ? arg[i] : -1;
        return s !== e && (resVal[i] < 0 || resVal[i] === s) ? s : -1;
      }
    }
  };

  // ---- Unlinearized ops, as two dancing-links lists (node = op + 1, 0 = head, n+1 = tail):
  // all ops in call order, and required ops in return order (the head is the "deadline":
  // no op invoked after it returns can be linearized before it).
  const TAIL = n + 1;
  const cNext = new Int32Array(n + 2);
  const cPrev = new Int32Array(n + 2);
  for (let node = 0; node <= TAIL; node++) {
    cNext[node] = node + 1;
    cPrev[node] = node - 1;
  }
  const byRet: number[] = [];
  for (let i = 0; i < n; i++) if (required[i]) byRet.push(i);
  byRet.sort((a, b) => retTime[a] - retTime[b] || a - b);
  const rNext = new Int32Array(n + 2);
  const rPrev = new Int32Array(n + 2);
  {
    let last = 0;
    for (const i of byRet) {
      rNext[last] = i + 1;
      rPrev[i + 1] = last;
      last = i + 1;
    }
    rNext[last] = TAIL;
    rPrev[TAIL] = last;
  }
  const lift = (i: number): void => {
    const x = i + 1;
    cNext[cPrev[x]] = cNext[x];
    cPrev[cNext[x]] = cPrev[x];
    if (required[i]) {
      rNext[rPrev[x]] = rNext[x];
      rPrev[rNext[x]] = rPrev[x];
    }
  };
  const unlift = (i: number): void => {
    const x = i + 1;
    if (required[i]) {
      rNext[rPrev[x]] = x;
      rPrev[rNext[x]] = x;
    }
    cNext[cPrev[x]] = x;
    cPrev[cNext[x]] = x;
  };

  // ---- Linearized set. `lin` has a bit per op; `optBits` a bit per unknown op.
  // Cache keys are encoded compactly as
  //   [f, optBits..., lin words from word(f) to the highest non-zero word]
  // where f = index of the first required op not yet linearized (all required ops before
  // f are linearized, so their bits need not be stored).
  const nWords = (n + 31) >>> 5;
  const uWords = (numOptional + 31) >>> 5;
  const lin = new Uint32Array(nWords);
  const optBits = new Uint32Array(uWords);
  let hiWord = -1;
  const keyBuf = new Uint32Array(1 + uWords + nWords);

  const setBit = (i: number): void => {
    const w = i >>> 5;
    lin[w] |= 1 << (i & 31);
    if (w > hiWord) hiWord = w;
    const o = optIndex[i];
    if (o >= 0) optBits[o >>> 5] |= 1 << (o & 31);
  };
  const clearBit = (i: number): void => {
    const w = i >>> 5;
    lin[w] &= ~(1 << (i & 31));
    if (w === hiWord) while (hiWord >= 0 && lin[hiWord] === 0) hiWord--;
    const o = optIndex[i];
    if (o >= 0) optBits[o >>> 5] &= ~(1 << (o & 31));
  };
  const isLin = (i: number): boolean => (lin[i >>> 5] & (1 << (i & 31))) !== 0;

  let f = 0;
  while (f < n && !required[f]) f++;
  const encode = (): number => {
    let p = 0;
    keyBuf[p++] = f;
    for (let j = 0; j < uWords; j++) keyBuf[p++] = optBits[j];
    for (let w = f >>> 5; w <= hiWord; w++) keyBuf[p++] = lin[w];
    return p;
  };

  // ---- Support check (a cheap necessary condition, used to prune dead configurations
  // early). Every op that needs the register to hold x when it takes effect (a get of x,
  // a failed cas that saw x, a successful cas expecting x) is a "reader" of x; every op
  // that can set the register to x is a "writer" of x. If the register does not hold x
  // now, the earliest-returning unlinearized reader of x needs some unlinearized writer
  // of x invoked before that reader returns.
  const V = values.length;
  const readerOf = new Int32Array(n).fill(-1);
  const writerOf = new Int32Array(n).fill(-1);
  for (let i = 0; i < n; i++) {
    if (effect[i] >= 0) writerOf[i] = kind[i] === K_DEL ? 0 : arg[i];
    if (!required[i]) continue;
    if (kind[i] === K_CAS && casOk[i]) readerOf[i] = expected[i];
    else if (resVal[i] >= 0) readerOf[i] = resVal[i];
  }
  // Writers of each value in call order (= index order); readers in return order.
  const wStart = new Int32Array(V + 1);
  const rStart = new Int32Array(V + 1);
  for (let i = 0; i < n; i++) {
    if (writerOf[i] >= 0) wStart[writerOf[i] + 1]++;
    if (readerOf[i] >= 0) rStart[readerOf[i] + 1]++;
  }
  for (let x = 0; x < V; x++) {
    wStart[x + 1] += wStart[x];
    rStart[x + 1] += rStart[x];
  }
  const wList = new Int32Array(wStart[V]);
  const rList = new Int32Array(rStart[V]);
  const wPosOf = new Int32Array(n);
  const rPosOf = new Int32Array(n);
  {
    const wFill = wStart.slice(0, V);
    for (let i = 0; i < n; i++) {
      if (writerOf[i] >= 0) {
        wPosOf[i] = wFill[writerOf[i]]++;
        wList[wPosOf[i]] = i;
      }
    }
    const readers: number[] = [];
    for (let i = 0; i < n; i++) if (readerOf[i] >= 0) readers.push(i);
    readers.sort((a, b) => retTime[a] - retTime[b] || a - b);
    const rFill = rStart.slice(0, V);
    for (const i of readers) {
      rPosOf[i] = rFill[readerOf[i]]++;
      rList[rPosOf[i]] = i;
    }
  }
  const wPtr = wStart.slice(0, V); // first unlinearized writer of each value
  const rPtr = rStart.slice(0, V); // first unlinearized reader of each value
  /** Returns an unlinearized reader of x that can no longer be satisfied, or -1. */
  const unsupportedReader = (x: number, s: number): number => {
    if (x === s) return -1;
    const rp = rPtr[x];
    if (rp === rStart[x + 1]) return -1;
    const wp = wPtr[x];
    if (wp < wStart[x + 1] && callTime[wList[wp]] <= retTime[rList[rp]]) return -1;
    return rList[rp];
  };

  // ---- Linearize / un-linearize one op (everything except the entry lists and state).
  let remaining = numRequired;
  const linearize = (i: number): void => {
    setBit(i);
    if (required[i]) {
      remaining--;
      if (i === f) while (f < n && (!required[f] || isLin(f))) f++;
    }
    const wx = writerOf[i];
    if (wx >= 0 && wPosOf[i] === wPtr[wx]) {
      const end = wStart[wx + 1];
      let p = wPtr[wx];
      while (p < end && isLin(wList[p])) p++;
      wPtr[wx] = p;
    }
    const rx = readerOf[i];
    if (rx >= 0 && rPosOf[i] === rPtr[rx]) {
      const end = rStart[rx + 1];
      let p = rPtr[rx];
      while (p < end && isLin(rList[p])) p++;
      rPtr[rx] = p;
    }
  };
  const unlinearize = (i: number): void => {
    clearBit(i);
    if (required[i]) {
      remaining++;
      if (i < f) f = i;
    }
    const wx = writerOf[i];
    if (wx >= 0 && wPosOf[i] < wPtr[wx]) wPtr[wx] = wPosOf[i];
    const rx = readerOf[i];
    if (rx >= 0 && rPosOf[i] < rPtr[rx]) rPtr[rx] = rPosOf[i];
  };

  const cache = new StateCache();

  // ---- Search frames, one per configuration on the current path (depth d), with the
  // candidates of each frame stacked in `cand`.
  //
  // A put or del w that is immediately overwritten by another blind write ("hidden") has no
  // observable effect: rather than placing it just to be hidden, the search places it
  // hidden once it is the deadline op, conceptually just before the latest blind write
  // already on the path. That is valid iff no op from that write on returned before w was
  // invoked. So after an unknown-outcome op, or after a put/del that was not the deadline
  // op, the next op may not be a blind write (fNoBlind); and fWit tracks the minimum
  // return time of the ops from the latest visible blind write on (-Infinity if none):
  // hidden placement of the deadline op D is possible iff fWit[d] >= call(D).
  const maxDepthPossible = n + 1;
  const fState = new Int32Array(maxDepthPossible);
  const fChosen = new Int32Array(maxDepthPossible); // op, or op + n when placed hidden
  const fStart = new Int32Array(maxDepthPossible);
  const fPos = new Int32Array(maxDepthPossible);
  const fEnd = new Int32Array(maxDepthPossible);
  const fNoBlind = new Uint8Array(maxDepthPossible);
  const fWit = new Float64Array(maxDepthPossible).fill(-Infinity);
  let cand = new Int32Array(1024);
  let candRank = new Uint8Array(1024);
  let candTop = 0;
  const classStamp = new Int32Array(effectIds.size);
  const classBest = new Int32Array(effectIds.size);
  const neededStamp = new Int32Array(V);
  let stamp = 0;

  let state = 0;
  let explored = 0;
  // Scanning work, bounded too, so that huge candidate windows cannot stall the search.
  let work = 0;
  const maxWork = maxStates * WORK_PER_STATE;

  const isBlind = (i: number): boolean => kind[i] === K_PUT || kind[i] === K_DEL;

  const pushCand = (i: number, k: number): void => {
    if (candTop === cand.length) {
      const bigger = new Int32Array(cand.length * 2);
      bigger.set(cand);
      cand = bigger;
      const biggerRank = new Uint8Array(cand.length);
      biggerRank.set(candRank);
      candRank = biggerRank;
    }
    cand[candTop] = i;
    candRank[candTop] = k;
    candTop++;
  };

  /** Sorts cand[start..end) (with candRank) by (rank, return time, index). */
  const before = (k1: number, i1: number, k2: number, i2: number): boolean =>
    k1 < k2 ||
    (k1 === k2 && (retTime[i1] < retTime[i2] || (retTime[i1] === retTime[i2] && i1 < i2)));
  const sortCandidates = (start: number, end: number): void => {
    if (end - start <= 32) {
      for (let r = start + 1; r < end; r++) {
        const i = cand[r];
        const k = candRank[r];
        let p = r;
        while (p > start && before(k, i, candRank[p - 1], cand[p - 1])) {
          cand[p] = cand[p - 1];
          candRank[p] = candRank[p - 1];
          p--;
        }
        cand[p] = i;
        candRank[p] = k;
      }
      return;
    }
    const ci = cand.slice(start, end);
    const ck = candRank.slice(start, end);
    const order = Array.from({ length: end - start }, (_, j) => j);
    order.sort((a, b) => (before(ck[a], ci[a], ck[b], ci[b]) ? -1 : 1)); // a total order
    for (let j = 0; j < order.length; j++) {
      cand[start + j] = ci[order[j]];
      candRank[start + j] = ck[order[j]];
    }
  };

  /**
   * Computes the candidates for the next linearization point in the current
   * configuration and pushes them as frame d's list, in the order they will be tried.
   */
  const buildCandidates = (d: number): void => {
    const D = rNext[0] - 1; // the deadline: no op invoked after it returns can go before it
    const deadline = retTime[D];
    const start = candTop;
    stamp++;
    const noBlind = fNoBlind[d] !== 0;
    let needAnyChange = false;
    let forced = -1;
    for (let node = cNext[0]; node !== TAIL; node = cNext[node]) {
      const i = node - 1;
      if (callTime[i] > deadline) break;
      work++;
      const ns = step(state, i);
      if (ns < 0) {
        if (readerOf[i] >= 0) neededStamp[readerOf[i]] = stamp;
        else needAnyChange = true; // a failed cas (no value seen) that expected this state
        continue;
      }
      if (readOnly[i]) {
        // A valid read-only op can be moved to this point of any valid completion: it
        // dominates every other choice.
        forced = i;
        break;
      }
      if (!required[i] && ns === state) {
        // No-op: same as never taking effect. It would take effect from its expected value.
        neededStamp[expected[i]] = stamp;
        continue;
      }
      if (noBlind && isBlind(i)) continue;
      pushCand(i, 0);
    }
    if (forced >= 0) {
      candTop = start;
      pushCand(forced, 0);
    } else {
      // Rank the candidates (lower is tried first), lazily: the deadline op itself or ops
      // that make it valid, then successful cas ops whose expected value holds now (it may
      // not recur) and writes of values some candidate needs, then other writes, then
      // unknown-outcome ops; ties in earliest-deadline-first order. An unknown-outcome op,
      // or a put/del, that changes the value to one no candidate needs would be overwritten
      // before anything observes it (no blind write may follow it), so it is skipped.
      const dValid = step(state, D) >= 0;
      // Of several writes with the same effect only the one returning first need be tried:
      // swapping it with a later-returning twin in any valid completion keeps it valid.
      // (Twins get the same rank below; the deadline op returns first anyway.) On a tie,
      // a required op beats an unknown-outcome twin: the unknown one may be left out,
      // the required one may not (and an unknown op that no one needs is skipped below,
      // which would drop the whole class).
      for (let r = start; r < candTop; r++) {
        const i = cand[r];
        const c = effect[i];
        if (classStamp[c] !== stamp) {
          classStamp[c] = stamp;
          classBest[c] = i;
        } else {
          const b = classBest[c];
          if (
            retTime[i] < retTime[b] ||
            (retTime[i] === retTime[b] &&
              (required[i] > required[b] || (required[i] === required[b] && i < b)))
          )
            classBest[c] = i;
        }
      }
      let w = start;
      for (let r = start; r < candTop; r++) {
        const i = cand[r];
        if (classBest[effect[i]] !== i) continue;
        const ns = step(state, i);
        const needed = needAnyChange || neededStamp[ns] === stamp;
        let k: number;
        if (!required[i]) {
          if (!needed) continue;
          k = 3;
        } else if (!needed && i !== D && isBlind(i) && ns !== state) {
          continue;
        } else if (dValid ? i === D : step(ns, D) >= 0) k = 0;
        else if (needed || (kind[i] === K_CAS && ns !== state)) k = 1;
        else k = 2;
        cand[w] = i;
        candRank[w] = k;
        w++;
      }
      sortCandidates(start, w);
      candTop = w;
      // The deadline op, if a put or del, may instead be placed hidden; try that right
      // after the rank-0 candidates.
      if (isBlind(D) && fWit[d] >= callTime[D]) {
        pushCand(D + n, 0);
        let p = candTop - 1;
        while (p > start && candRank[p - 1] > 0) {
          cand[p] = cand[p - 1];
          candRank[p] = candRank[p - 1];
          p--;
        }
        cand[p] = D + n;
        candRank[p] = 0;
      }
    }
    fState[d] = state;
    fStart[d] = start;
    fPos[d] = start;
    fEnd[d] = candTop;
  };

  // Diagnostics: the deepest point reached and why it could not be extended.
  let maxDepth = 0;
  let deepestTail: number[] = [];
  let why: FailureReason | undefined;
  const fail = (reason?: string): KeyResult => ({
    status: 'fail',
    explored,
    message:
      reason !== undefined
        ? `key ${JSON.stringify(key)} is not linearizable: ${reason}`
        : failureMessage(key, events, numRequired + numOptional, maxDepth, deepestTail, why),
  });
  const recordTail = (depth: number): void => {
    maxDepth = depth;
    deepestTail = [];
    for (let k = Math.max(0, depth - SHOW_PREFIX_OPS); k < depth; k++) {
      deepestTail.push(fChosen[k] % n);
    }
  };

  // Quick necessary check (polynomial): each reader of x needs a write of x (or, for null,
  // the initial state) that may precede it with no completed overwrite in between.
  {
    // Known writes in call order; suffix minimum return time, overall and for a value
    // other than the overall minimum's, to find a write of a value != x entirely inside an
    // interval.
    const kw: number[] = [];
    for (let i = 0; i < n; i++) if (required[i] && writerOf[i] >= 0) kw.push(i);
    const m = kw.length;
    const bestOp = new Int32Array(m + 1).fill(-1);
    const secondOp = new Int32Array(m + 1).fill(-1);
    const ret = (i: number): number => (i < 0 ? Infinity : retTime[i]);
    for (let j = m - 1; j >= 0; j--) {
      const i = kw[j];
      const b = bestOp[j + 1];
      const sec = secondOp[j + 1];
      if (retTime[i] < ret(b)) {
        bestOp[j] = i;
        secondOp[j] = b >= 0 && writerOf[b] !== writerOf[i] ? b : sec;
      } else {
        bestOp[j] = b;
        secondOp[j] = writerOf[i] !== writerOf[b] && retTime[i] < ret(sec) ? i : sec;
      }
    }
    // Per value, prefix maximum of return times of its writers (in call order).
    const wPrefMax = new Int32Array(wList.length);
    for (let x = 0; x < V; x++) {
      let best = -1;
      for (let p = wStart[x]; p < wStart[x + 1]; p++) {
        if (best < 0 || retTime[wList[p]] > retTime[best]) best = wList[p];
        wPrefMax[p] = best;
      }
    }
    for (let r = 0; r < n; r++) {
      const x = readerOf[r];
      if (x < 0 || writerOf[r] === x) continue;
      // Latest-returning writer of x invoked by the time r returns.
      let lo = wStart[x];
      let hi = wStart[x + 1];
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (callTime[wList[mid]] <= retTime[r]) lo = mid + 1;
        else hi = mid;
      }
      const w = lo > wStart[x] ? wPrefMax[lo - 1] : -1;
      if (w < 0 && x !== 0) {
        return fail(
          `${describeEvent(events[r])} observed ${fmtValue(values[x])}, which ` +
            (wStart[x + 1] === wStart[x]
              ? 'no operation on the key ever writes'
              : 'is only written by operations invoked after it returned'),
        );
      }
      const R = w < 0 ? -Infinity : retTime[w];
      if (R >= callTime[r]) continue;
      // First known write invoked strictly after R.
      lo = 0;
      hi = m;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (callTime[kw[mid]] <= R) lo = mid + 1;
        else hi = mid;
      }
      const o = bestOp[lo] >= 0 && writerOf[bestOp[lo]] !== x ? bestOp[lo] : secondOp[lo];
      if (o >= 0 && retTime[o] < callTime[r]) {
        const xs = fmtValue(values[x]);
        return fail(
          `stale read: ${describeEvent(events[r])} observed ${xs}, but ` +
            `${describeEvent(events[o])} overwrote ` +
            (w < 0
              ? 'the initial (absent) value'
              : `it after the latest write of ${xs} that could precede the read ` +
                `(${describeEvent(events[w])}) had returned`) +
            ', and returned before the read was invoked',
        );
      }
    }
  }

  let d = 0;
  buildCandidates(0);
  for (;;) {
    if (fPos[d] < fEnd[d]) {
      const c = cand[fPos[d]++];
      const hidden = c >= n;
      const i = hidden ? c - n : c;
      const ns = hidden ? state : step(state, i);
      linearize(i);
      if (remaining === 0) return { status: 'ok', explored: explored + 1 };
      let lost = -1;
      let lostValue = 0;
      if (ns !== state) {
        lost = unsupportedReader(state, ns);
        lostValue = state;
      } else if (hidden) {
        lost = unsupportedReader(writerOf[i], state);
        lostValue = writerOf[i];
      }
      if (lost >= 0) {
        // Dead: report it if it is the deepest point so far.
        if (d + 1 > maxDepth) {
          fChosen[d] = c;
          recordTail(d + 1);
          why = {
            kind: 'unsupported',
            op: lost,
            value: values[lostValue],
            state: values[ns],
          };
        }
        unlinearize(i);
        continue;
      }
      // The child's restrictions, which depend on the path and not only on (set, state).
      let noBlind: boolean;
      let wit: number;
      if (hidden) {
        noBlind = fNoBlind[d] !== 0;
        wit = fWit[d];
      } else {
        noBlind = !required[i] || (isBlind(i) && i !== rNext[0] - 1);
        wit = isBlind(i) ? retTime[i] : Math.min(fWit[d], retTime[i]);
      }
      if (cache.insert(keyBuf, encode(), ns, noBlind, wit)) {
        if (++explored > maxStates || work > maxWork) return { status: 'timeout', explored };
        fChosen[d] = c;
        lift(i);
        state = ns;
        d++;
        fNoBlind[d] = noBlind ? 1 : 0;
        fWit[d] = wit;
        if (d > maxDepth) {
          recordTail(d);
          why = undefined;
        }
        buildCandidates(d);
        continue;
      }
      // Already visited (and so known to fail): undo.
      unlinearize(i);
      continue;
    }

    // Every candidate failed: backtrack.
    if (d === maxDepth && why === undefined) {
      const b = rNext[0] - 1;
      why = {
        kind: step(state, b) >= 0 ? 'stuck' : 'invalid',
        op: b,
        value: values[state],
        state: values[state],
      };
    }
    candTop = fStart[d];
    if (d === 0) return fail();
    d--;
    const i = fChosen[d] % n;
    unlift(i);
    unlinearize(i);
    state = fState[d];
  }
}

// ---------------------------------------------------------------------------------------
// Visited-configuration cache: open addressing over typed arrays, keys stored in a pool.

class StateCache {
  private slots = new Int32Array(1 << 12); // entry index + 1; 0 = empty
  private mask = (1 << 12) - 1;
  private hashes = new Uint32Array(1 << 11);
  private states = new Int32Array(1 << 11);
  private offsets = new Uint32Array(1 << 11);
  private lengths = new Uint32Array(1 << 11);
  private noBlind = new Uint8Array(1 << 11);
  private wits = new Float64Array(1 << 11);
  private pool = new Uint32Array(1 << 14);
  private poolLen = 0;
  private size = 0;

  /**
   * Records a visit of configuration (key[0..len), state) reached with the given path
   * restrictions: `noBlind` (no blind write may come next) and `wit` (hidden placement
   * threshold; larger allows more). Returns false if the configuration was visited before
   * with restrictions no stronger than these (so it is known to fail); otherwise records
   * these restrictions and returns true.
   */
  insert(key: Uint32Array, len: number, state: number, noBlind: boolean, wit: number): boolean {
    let h = Math.imul(state ^ 0x9e3779b9, 0x85ebca6b) ^ len;
    for (let j = 0; j < len; j++) {
      h = Math.imul(h ^ key[j], 0x5bd1e995);
      h ^= h >>> 15;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = h >>> 0;

    let slot = h & this.mask;
    for (;;) {
      const e = this.slots[slot];
      if (e === 0) break;
      const idx = e - 1;
      if (
        this.hashes[idx] === h &&
        this.states[idx] === state &&
        this.lengths[idx] === len &&
        this.sameKey(this.offsets[idx], key, len)
      ) {
        if ((this.noBlind[idx] === 0 || noBlind) && this.wits[idx] >= wit) return false;
        this.noBlind[idx] = noBlind ? 1 : 0;
        this.wits[idx] = wit;
        return true;
      }
      slot = (slot + 1) & this.mask;
    }

    const idx = this.size;
    if (idx === this.hashes.length) this.growEntries();
    if (this.poolLen + len > this.pool.length) this.growPool(this.poolLen + len);
    this.pool.set(key.subarray(0, len), this.poolLen);
    this.hashes[idx] = h;
    this.states[idx] = state;
    this.offsets[idx] = this.poolLen;
    this.lengths[idx] = len;
    this.noBlind[idx] = noBlind ? 1 : 0;
    this.wits[idx] = wit;
    this.poolLen += len;
    this.slots[slot] = idx + 1;
    this.size++;
    if (this.size * 2 > this.slots.length) this.rehash();
    return true;
  }

  private sameKey(off: number, key: Uint32Array, len: number): boolean {
    const pool = this.pool;
    for (let j = 0; j < len; j++) if (pool[off + j] !== key[j]) return false;
    return true;
  }

  private growEntries(): void {
    const cap = this.hashes.length * 2;
    const grow = <T extends Uint32Array | Int32Array | Uint8Array | Float64Array>(
      a: T,
      make: (c: number) => T,
    ): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.hashes = grow(this.hashes, (c) => new Uint32Array(c));
    this.states = grow(this.states, (c) => new Int32Array(c));
    this.offsets = grow(this.offsets, (c) => new Uint32Array(c));
    this.lengths = grow(this.lengths, (c) => new Uint32Array(c));
    this.noBlind = grow(this.noBlind, (c) => new Uint8Array(c));
    this.wits = grow(this.wits, (c) => new Float64Array(c));
  }

  private growPool(min: number): void {
    let cap = this.pool.length * 2;
    while (cap < min) cap *= 2;
    const b = new Uint32Array(cap);
    b.set(this.pool.subarray(0, this.poolLen));
    this.pool = b;
  }

  private rehash(): void {
    const cap = this.slots.length * 2;
    const slots = new Int32Array(cap);
    const mask = cap - 1;
    for (let idx = 0; idx < this.size; idx++) {
      let slot = this.hashes[idx] & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = idx + 1;
    }
    this.slots = slots;
    this.mask = mask;
  }
}

// ---------------------------------------------------------------------------------------
// Messages

function fmtValue(v: string | null | undefined): string {
  return v === null || v === undefined ? 'null' : JSON.stringify(v);
}

function fmtOp(ev: HistoryEvent): string {
  const op = ev.op;
  let s: string;
  switch (op.kind) {
    case 'put':
      s = `put(${fmtValue(op.value)})`;
      break;
    case 'get':
      s = 'get()';
      break;
    case 'del':
      s = 'del()';
      break;
    case 'cas':
      s = `cas(${fmtValue(op.expected)} -> ${fmtValue(op.value)})`;
      break;
  }
  const res = ev.result;
  if (res === 'unknown') return `${s} -> ?`;
  if (op.kind === 'get') return `${s} -> ${fmtValue(res.value)}`;
  if (op.kind === 'cas' && !res.ok) {
    return res.value === undefined ? `${s} -> fail` : `${s} -> fail(${fmtValue(res.value)})`;
  }
  return `${s} -> ok`;
}

/** Human-readable description of one history event. */
export function describeEvent(ev: HistoryEvent): string {
  const ret = ev.result === 'unknown' || ev.ret === null ? '?' : String(ev.ret);
  return `client ${ev.client} ${fmtOp(ev)} [${ev.call}, ${ret}]`;
}

function failureMessage(
  key: string,
  events: HistoryEvent[],
  total: number,
  depth: number,
  tail: number[],
  why: FailureReason | undefined,
): string {
  const k = JSON.stringify(key);
  const head = `key ${k} is not linearizable: `;
  if (why === undefined) return head + 'no linearization found';
  const b = describeEvent(events[why.op]);
  const x = fmtValue(why.value);
  const v = fmtValue(why.state);
  let prefix = '';
  if (depth > 0) {
    const shown = tail.map((i) => describeEvent(events[i])).join('; ');
    prefix =
      `longest linearizable prefix has ${depth} of ${total} ops, ` +
      `ending with: ${shown}; after it ${k} = ${v}; `;
  }
  switch (why.kind) {
    case 'unsupported':
      return (
        head +
        prefix +
        `${b} needs ${k} = ${x}, but no remaining ` +
        (why.value === null ? 'del' : `write of ${x}`) +
        ` is invoked before it returns`
      );
    case 'invalid':
      return (
        head +
        prefix +
        `${b} cannot take effect (impossible when ${k} = ${v}), ` +
        `and no other op can be linearized before it returns`
      );
    case 'stuck':
      return head + prefix + `no continuation can linearize the pending ops before ${b} returns`;
  }
}
