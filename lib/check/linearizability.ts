/**
 * Linearizability checker for a key-value store history (Wing & Gong search with
 * Lowe's memoisation, in the style of Porcupine's `checkSingle` / Knossos).
 *
 * The register for each key is independent of every other key, so the history is
 * partitioned by key (P-compositionality) and each sub-history is checked on its own.
 *
 * Per key, the search works on a doubly linked list of call/return entries sorted by time.
 * Scanning the list from the front, any call entry met before the first return entry is a
 * candidate for the next linearization point. A candidate that the model accepts is "lifted"
 * out of the list (together with its return entry) and the scan restarts; when a return
 * entry is met first, no pending operation can be linearized before that operation
 * returns, so the search backtracks. A cache of (set of linearized ops, model state)
 * configurations already visited prunes the search (Lowe 2017). The search is iterative
 * (explicit stack), so deep histories do not overflow the JS stack.
 *
 * Extra pruning that is sound for this model:
 *  - Operations with an unknown outcome never have to be linearized: an unknown op
 *    linearized after every known op has no observable effect, which is the same as it
 *    never happening. The search succeeds as soon as every known op is linearized, and an
 *    unknown op is never linearized at a point where it would not change the state.
 *  - A read-only op (a get, or a cas that reported failure) that is valid in the current
 *    state can always be moved to the current point of any valid completion, so when it is
 *    a valid candidate the other candidates at that point need not be tried.
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
  /** Total number of distinct search states visited, summed over the checked keys. */
  explored: number;
  /** Set when some key's search hit `maxStatesPerKey`; `ok` is then false (inconclusive). */
  timedOut?: boolean;
  message: string;
}

export interface CheckOptions {
  /** Give up on a key after visiting this many distinct search states (default 5,000,000). */
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
  for (const [key, events] of byKey) {
    const r = checkKey(key, events, maxStates);
    explored += r.explored;
    checkedKeys++;
    if (r.status === 'fail') {
      return { ok: false, key, checkedKeys, explored, message: r.message };
    }
    if (r.status === 'timeout' && timedOutKey === undefined) timedOutKey = key;
  }

  if (timedOutKey !== undefined) {
    return {
      ok: false,
      key: timedOutKey,
      checkedKeys,
      explored,
      timedOut: true,
      message:
        `inconclusive: search for key ${JSON.stringify(timedOutKey)} exceeded ` +
        `${maxStates} states; no violation found in the other keys`,
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

/** Number of trailing ops of the longest linearizable prefix shown in failure messages. */
const SHOW_PREFIX_OPS = 4;

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
  const rank = new Uint8Array(n).fill(2); // candidate order: cas-ok, other known, unknown
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
      rank[i] = casOk[i] ? 0 : 1;
    } else {
      optIndex[i] = numOptional++;
    }
  }

  if (numRequired === 0) return { status: 'ok', explored: 0 };

  // Fast path: an observed value that no op on this key ever writes.
  const written = new Uint8Array(values.length);
  written[0] = 1;
  for (let i = 0; i < n; i++) if (kind[i] === K_PUT || kind[i] === K_CAS) written[arg[i]] = 1;
  for (let i = 0; i < n; i++) {
    if (required[i] && resVal[i] >= 0 && !written[resVal[i]]) {
      return {
        status: 'fail',
        explored: 0,
        message:
          `key ${JSON.stringify(key)} is not linearizable: ${describeEvent(events[i])} ` +
          `observed ${fmtValue(values[resVal[i]])}, which no operation on the key ever writes`,
      };
    }
  }

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

  const cache = new StateCache();

  // ---- Search frames, one per configuration on the current path (depth d).
  const maxDepthPossible = n + 1;
  const fState = new Int32Array(maxDepthPossible);
  const fF = new Int32Array(maxDepthPossible);
  const fChosen = new Int32Array(maxDepthPossible);
  const fStart = new Int32Array(maxDepthPossible);
  const fPos = new Int32Array(maxDepthPossible);
  const fEnd = new Int32Array(maxDepthPossible);
  let cand = new Int32Array(1024);
  let candTop = 0;
  const classStamp = new Int32Array(effectIds.size);
  let stamp = 0;

  let state = 0;
  let remaining = numRequired;
  let explored = 0;

  /**
   * Computes the candidates for the next linearization point in the current
   * configuration and pushes them as frame d's list, in the order they will be tried.
   */
  const buildCandidates = (d: number): void => {
    const deadline = retTime[rNext[0] - 1];
    const start = candTop;
    let forced = -1;
    for (let node = cNext[0]; node !== TAIL; node = cNext[node]) {
      const i = node - 1;
      if (callTime[i] > deadline) break;
      const ns = step(state, i);
      if (ns < 0) continue;
      if (readOnly[i]) {
        // A valid read-only op can be moved to this point of any valid completion: it
        // dominates every other choice.
        forced = i;
        break;
      }
      if (!required[i] && ns === state) continue; // no-op: same as never taking effect
      if (candTop === cand.length) {
        const bigger = new Int32Array(cand.length * 2);
        bigger.set(cand);
        cand = bigger;
      }
      // Insertion sort by (rank, return time, index). A successful cas is tried first
      // while the state it needs holds (it may not recur); other writes go in earliest
      // deadline first order, so they are linearized as late as possible; unknown-outcome
      // ops (return time +infinity) come last.
      let p = candTop++;
      const ri = retTime[i];
      const ki = rank[i];
      while (p > start) {
        const q = cand[p - 1];
        const kq = rank[q];
        if (kq < ki || (kq === ki && (retTime[q] < ri || (retTime[q] === ri && q < i)))) break;
        cand[p] = q;
        p--;
      }
      cand[p] = i;
    }
    if (forced >= 0) {
      candTop = start;
      cand[candTop++] = forced;
    } else {
      // Of several writes with the same effect only the one returning first need be tried:
      // swapping it with a later-returning twin in any valid completion keeps it valid.
      stamp++;
      let w = start;
      for (let r = start; r < candTop; r++) {
        const c = effect[cand[r]];
        if (classStamp[c] === stamp) continue;
        classStamp[c] = stamp;
        cand[w++] = cand[r];
      }
      candTop = w;
    }
    fState[d] = state;
    fStart[d] = start;
    fPos[d] = start;
    fEnd[d] = candTop;
  };

  // Diagnostics for the deepest point reached.
  let maxDepth = 0;
  let deepestTail: number[] = [];
  let blockingOp = -1;
  let blockingState = 0;
  let blockingValid = false;
  let blockingRecorded = false;

  let d = 0;
  buildCandidates(0);
  for (;;) {
    if (fPos[d] < fEnd[d]) {
      const i = cand[fPos[d]++];
      const ns = step(state, i);
      const oldF = f;
      setBit(i);
      if (required[i]) {
        remaining--;
        if (remaining === 0) return { status: 'ok', explored: explored + 1 };
        if (i === f) while (f < n && (!required[f] || isLin(f))) f++;
      }
      if (cache.insert(keyBuf, encode(), ns)) {
        if (++explored > maxStates) return { status: 'timeout', explored };
        fChosen[d] = i;
        fF[d] = oldF;
        lift(i);
        state = ns;
        d++;
        if (d > maxDepth) {
          maxDepth = d;
          deepestTail = Array.from(fChosen.subarray(Math.max(0, d - SHOW_PREFIX_OPS), d));
          blockingRecorded = false;
        }
        buildCandidates(d);
        continue;
      }
      // Already visited (and so known to fail): undo.
      clearBit(i);
      f = oldF;
      if (required[i]) remaining++;
      continue;
    }

    // Every candidate failed: backtrack.
    if (d === maxDepth && !blockingRecorded) {
      blockingRecorded = true;
      blockingOp = rNext[0] - 1;
      blockingState = state;
      blockingValid = step(state, blockingOp) >= 0;
    }
    candTop = fStart[d];
    if (d === 0) {
      return {
        status: 'fail',
        explored,
        message: failureMessage(
          key,
          events,
          numRequired + numOptional,
          maxDepth,
          deepestTail,
          blockingOp,
          blockingValid,
          values[blockingState],
        ),
      };
    }
    d--;
    const i = fChosen[d];
    unlift(i);
    clearBit(i);
    f = fF[d];
    state = fState[d];
    if (required[i]) remaining++;
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
  private pool = new Uint32Array(1 << 14);
  private poolLen = 0;
  private size = 0;

  /** Adds (key[0..len), state); returns false if it was already present. */
  insert(key: Uint32Array, len: number, state: number): boolean {
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
        return false;
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
    const grow = <T extends Uint32Array | Int32Array>(a: T, make: (c: number) => T): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.hashes = grow(this.hashes, (c) => new Uint32Array(c));
    this.states = grow(this.states, (c) => new Int32Array(c));
    this.offsets = grow(this.offsets, (c) => new Uint32Array(c));
    this.lengths = grow(this.lengths, (c) => new Uint32Array(c));
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
  blockingOp: number,
  blockingValid: boolean,
  blockingValue: string | null,
): string {
  const k = JSON.stringify(key);
  const v = fmtValue(blockingValue);
  let prefix: string;
  if (depth === 0) {
    prefix = 'no op can be linearized first';
  } else {
    const shown = tail.map((i) => describeEvent(events[i])).join('; ');
    prefix =
      `longest linearizable prefix has ${depth} of ${total} ops, ` +
      `ending with: ${shown}; after it ${k} = ${v}`;
  }
  let cause: string;
  if (blockingOp >= 0) {
    const b = describeEvent(events[blockingOp]);
    cause = blockingValid
      ? `no pending op can be linearized before ${b} returns`
      : `${b} cannot be placed (its result is impossible when ${k} = ${v}), ` +
        `and no other pending op can be linearized before it returns`;
  } else {
    cause = `no pending op can be linearized next`;
  }
  return `key ${k} is not linearizable: ${prefix}; ${cause}`;
}
