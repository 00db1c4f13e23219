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
 * Pruning rules, each keeping at least one valid linearization if any exists. Each is one
 * method of `KeySearch` (or a class) with the argument of its soundness next to it:
 *  - `isComplete`: unknown-outcome ops need not be linearized at all.
 *  - `skipNoOpUnknown`, `isUnobservable`: an unknown op, or a put/del, is placed only when
 *    it changes the register to a value some candidate needs (or is the deadline).
 *  - `forcesRead`: a valid read-only candidate (get, failed cas) is taken alone.
 *  - `keepFirstReturningTwins`: of writes with the same effect, only the first to return.
 *  - `addHiddenDeadline`, `childRestrictions`: a put/del overwritten straight away
 *    ("hidden") is placed retroactively once it is the deadline.
 *  - `losesSupport`, `SupportIndex`: the next reader of x needs an unplaced writer of x.
 *  - `firstVisit`, `StateCache`: memoisation, aware of the path's restrictions.
 * Before the search, `staleRead`, a polynomial pre-check, rejects reads of values never
 * written (or only written after the read returned) and stale reads, with a direct
 * explanation.
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

  const { byKey, totalOps } = partitionByKey(history);
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

/** Validates every event and splits the ones that constrain anything by key, in order. */
function partitionByKey(history: HistoryEvent[]): {
  byKey: Map<string, HistoryEvent[]>;
  totalOps: number;
} {
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
  return { byKey, totalOps };
}

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
  const ops = new KeyOps(input);
  if (ops.numRequired === 0) return { status: 'ok', explored: 0 };
  const support = new SupportIndex(ops);
  const reason = staleRead(ops, support);
  if (reason !== undefined) {
    const message = `key ${JSON.stringify(key)} is not linearizable: ${reason}`;
    return { status: 'fail', explored: 0, message };
  }
  return new KeySearch(key, ops, support, maxStates).run();
}

/**
 * The ops of one key in call order (stable), as parallel arrays indexed by op number, so
 * that the search's inner loops allocate nothing. Values are interned (0 = null, i.e.
 * absent; strings get ids >= 1), so the register's state is a small integer.
 */
class KeyOps {
  readonly events: HistoryEvent[];
  readonly n: number;
  readonly values: (string | null)[] = [null];
  private readonly valueIds = new Map<string, number>();
  private readonly effectIds = new Map<string, number>();
  readonly kind: Uint8Array;
  readonly arg: Int32Array; // put/cas: the value written
  readonly expected: Int32Array; // cas: the value expected
  readonly resVal: Int32Array; // get: the value read; failed cas: the value seen (or -1)
  readonly casOk: Uint8Array;
  readonly required: Uint8Array; // known result, so it must be linearized
  readonly readOnly: Uint8Array; // required and never changes the register
  readonly optIndex: Int32Array; // an unknown-outcome op's index among them (else -1)
  readonly callTime: Float64Array;
  readonly retTime: Float64Array; // +Infinity for an unknown outcome or ret === null
  readonly effect: Int32Array; // writes with the same effect share a class (else -1)
  readonly writerOf: Int32Array; // the value the op can set the register to (del: 0), or -1
  readonly readerOf: Int32Array; // the value a required op needs the register to hold, or -1
  numRequired = 0;
  numOptional = 0;

  constructor(input: HistoryEvent[]) {
    this.events = input
      .map((ev, idx) => ({ ev, idx }))
      .sort((a, b) => a.ev.call - b.ev.call || a.idx - b.idx)
      .map((x) => x.ev);
    const n = (this.n = this.events.length);
    this.kind = new Uint8Array(n);
    this.arg = new Int32Array(n);
    this.expected = new Int32Array(n);
    this.resVal = new Int32Array(n).fill(-1);
    this.casOk = new Uint8Array(n);
    this.required = new Uint8Array(n);
    this.readOnly = new Uint8Array(n);
    this.optIndex = new Int32Array(n).fill(-1);
    this.callTime = new Float64Array(n);
    this.retTime = new Float64Array(n);
    this.effect = new Int32Array(n).fill(-1);
    this.writerOf = new Int32Array(n).fill(-1);
    this.readerOf = new Int32Array(n).fill(-1);
    for (let i = 0; i < n; i++) this.classify(i);
  }

  get numValues(): number {
    return this.values.length;
  }

  get numEffects(): number {
    return this.effectIds.size;
  }

  private intern(v: string | null | undefined): number {
    if (v === null || v === undefined) return 0;
    let id = this.valueIds.get(v);
    if (id === undefined) {
      id = this.values.length;
      this.valueIds.set(v, id);
      this.values.push(v);
    }
    return id;
  }

  /** Fills op i's entries from its event. */
  private classify(i: number): void {
    const ev = this.events[i];
    const known = ev.result !== 'unknown';
    const effectKey = this.decode(i, ev);
    if (effectKey !== undefined) {
      let c = this.effectIds.get(effectKey);
      if (c === undefined) {
        c = this.effectIds.size;
        this.effectIds.set(effectKey, c);
      }
      this.effect[i] = c;
      this.writerOf[i] = this.kind[i] === K_DEL ? 0 : this.arg[i];
    }
    this.callTime[i] = ev.call;
    this.retTime[i] = !known || ev.ret === null ? Infinity : ev.ret;
    if (!known) {
      this.optIndex[i] = this.numOptional++;
      return;
    }
    this.required[i] = 1;
    this.numRequired++;
    if (this.effect[i] < 0) this.readOnly[i] = 1;
    if (this.kind[i] === K_CAS && this.casOk[i]) this.readerOf[i] = this.expected[i];
    else if (this.resVal[i] >= 0) this.readerOf[i] = this.resVal[i];
  }

  /** Sets op i's kind and values; returns its effect (equal for equal writes) if it may write. */
  private decode(i: number, ev: HistoryEvent): string | undefined {
    const op = ev.op;
    const res = ev.result;
    const known = res !== 'unknown';
    switch (op.kind) {
      case 'put':
        this.kind[i] = K_PUT;
        this.arg[i] = this.intern(op.value);
        return `p${this.arg[i]}`;
      case 'get':
        this.kind[i] = K_GET;
        if (known) this.resVal[i] = this.intern(res.value);
        return undefined;
      case 'del':
        this.kind[i] = K_DEL;
        return 'd';
      case 'cas':
        this.kind[i] = K_CAS;
        this.arg[i] = this.intern(op.value);
        this.expected[i] = this.intern(op.expected);
        if (known) {
          this.casOk[i] = res.ok ? 1 : 0;
          if (!res.ok && res.value !== undefined) this.resVal[i] = this.intern(res.value);
        }
        return !known || this.casOk[i] ? `c${this.expected[i]},${this.arg[i]}` : undefined;
    }
  }

  /** Model transition; returns the new state id, or -1 if the op's result is impossible. */
  step(s: number, i: number): number {
    switch (this.kind[i]) {
      case K_PUT:
        return this.arg[i];
      case K_DEL:
        return 0;
      case K_GET:
        return s === this.resVal[i] ? s : -1;
      default: {
        const e = this.expected[i];
        if (!this.required[i]) return s === e ? this.arg[i] : s;
        if (this.casOk[i]) return s === e ? this.arg[i] : -1;
        const seen = this.resVal[i];
        return s !== e && (seen < 0 || seen === s) ? s : -1;
      }
    }
  }

  /** A put or del: its effect does not depend on the register. */
  isBlind(i: number): boolean {
    return this.kind[i] === K_PUT || this.kind[i] === K_DEL;
  }
}

/**
 * The ops not yet linearized, as two dancing-links lists (node = op + 1, 0 = head,
 * n + 1 = tail), so that stepping and backtracking are O(1): all ops in call order, and
 * required ops in return order, whose head is the deadline.
 */
class PendingOps {
  readonly tail: number;
  readonly cNext: Int32Array;
  private readonly cPrev: Int32Array;
  private readonly rNext: Int32Array;
  private readonly rPrev: Int32Array;

  constructor(private readonly ops: KeyOps) {
    const n = ops.n;
    const tail = (this.tail = n + 1);
    this.cNext = new Int32Array(n + 2);
    this.cPrev = new Int32Array(n + 2);
    for (let node = 0; node <= tail; node++) {
      this.cNext[node] = node + 1;
      this.cPrev[node] = node - 1;
    }
    const byRet: number[] = [];
    for (let i = 0; i < n; i++) if (ops.required[i]) byRet.push(i);
    byRet.sort((a, b) => ops.retTime[a] - ops.retTime[b] || a - b);
    this.rNext = new Int32Array(n + 2);
    this.rPrev = new Int32Array(n + 2);
    let last = 0;
    for (const i of byRet) {
      this.rNext[last] = i + 1;
      this.rPrev[i + 1] = last;
      last = i + 1;
    }
    this.rNext[last] = tail;
    this.rPrev[tail] = last;
  }

  /**
   * The pending required op that returns first: no op invoked after it returns can be
   * linearized before it (real-time order).
   */
  deadline(): number {
    return this.rNext[0] - 1;
  }

  remove(i: number): void {
    const x = i + 1;
    this.cNext[this.cPrev[x]] = this.cNext[x];
    this.cPrev[this.cNext[x]] = this.cPrev[x];
    if (this.ops.required[i]) {
      this.rNext[this.rPrev[x]] = this.rNext[x];
      this.rPrev[this.rNext[x]] = this.rPrev[x];
    }
  }

  /** Undoes the latest remove(i) (dancing links: in reverse order of removal). */
  restore(i: number): void {
    const x = i + 1;
    if (this.ops.required[i]) {
      this.rNext[this.rPrev[x]] = x;
      this.rPrev[this.rNext[x]] = x;
    }
    this.cNext[this.cPrev[x]] = x;
    this.cPrev[this.cNext[x]] = x;
  }
}

/**
 * The set of ops linearized so far and its compact encoding as a cache key:
 *   [f, optBits..., lin words from word(f) to the highest non-zero word]
 * where `lin` has a bit per op, `optBits` a bit per unknown op, and f is the first
 * required op not yet linearized (all required ops before it are linearized, so their
 * bits need not be stored).
 */
class LinearizedSet {
  private readonly lin: Uint32Array;
  private readonly optBits: Uint32Array;
  private hiWord = -1;
  private first = 0;
  /** Required ops not yet linearized. */
  remaining: number;
  readonly keyBuf: Uint32Array;

  constructor(private readonly ops: KeyOps) {
    const nWords = (ops.n + 31) >>> 5;
    const uWords = (ops.numOptional + 31) >>> 5;
    this.lin = new Uint32Array(nWords);
    this.optBits = new Uint32Array(uWords);
    this.keyBuf = new Uint32Array(1 + uWords + nWords);
    this.remaining = ops.numRequired;
    while (this.first < ops.n && !ops.required[this.first]) this.first++;
  }

  has(i: number): boolean {
    return (this.lin[i >>> 5] & (1 << (i & 31))) !== 0;
  }

  add(i: number): void {
    const w = i >>> 5;
    this.lin[w] |= 1 << (i & 31);
    if (w > this.hiWord) this.hiWord = w;
    const o = this.ops.optIndex[i];
    if (o >= 0) this.optBits[o >>> 5] |= 1 << (o & 31);
    if (!this.ops.required[i]) return;
    this.remaining--;
    if (i !== this.first) return;
    const { n, required } = this.ops;
    while (this.first < n && (!required[this.first] || this.has(this.first))) this.first++;
  }

  delete(i: number): void {
    const w = i >>> 5;
    this.lin[w] &= ~(1 << (i & 31));
    if (w === this.hiWord) while (this.hiWord >= 0 && this.lin[this.hiWord] === 0) this.hiWord--;
    const o = this.ops.optIndex[i];
    if (o >= 0) this.optBits[o >>> 5] &= ~(1 << (o & 31));
    if (!this.ops.required[i]) return;
    this.remaining++;
    if (i < this.first) this.first = i;
  }

  /** Writes the key into keyBuf and returns its length. */
  encode(): number {
    const buf = this.keyBuf;
    let p = 0;
    buf[p++] = this.first;
    for (let j = 0; j < this.optBits.length; j++) buf[p++] = this.optBits[j];
    for (let w = this.first >>> 5; w <= this.hiWord; w++) buf[p++] = this.lin[w];
    return p;
  }
}

/**
 * Support check: a cheap necessary condition that prunes dead configurations early.
 * Every op that needs the register to hold x when it takes effect (a get of x, a failed
 * cas that saw x, a successful cas expecting x) is a "reader" of x; every op that can set
 * the register to x is a "writer" of x. Sound: if the register does not hold x now, the
 * earliest-returning unlinearized reader of x must be preceded in any completion by an
 * unlinearized writer of x, which real-time order requires to be invoked before that
 * reader returns; writers are kept in call order, so checking the first one suffices.
 */
class SupportIndex {
  /** Writers of each value x in call order: wList[wStart[x] .. wStart[x + 1]). */
  readonly wStart: Int32Array;
  readonly wList: Int32Array;
  /** Readers of each value in return order, likewise. */
  private readonly rStart: Int32Array;
  private readonly rList: Int32Array;
  private readonly wPosOf: Int32Array;
  private readonly rPosOf: Int32Array;
  /** The first unlinearized writer (reader) of each value, as a position in the list. */
  private readonly wPtr: Int32Array;
  private readonly rPtr: Int32Array;

  constructor(private readonly ops: KeyOps) {
    const { n, writerOf, readerOf, retTime } = ops;
    const V = ops.numValues;
    this.wStart = SupportIndex.starts(writerOf, V);
    this.rStart = SupportIndex.starts(readerOf, V);
    this.wList = new Int32Array(this.wStart[V]);
    this.rList = new Int32Array(this.rStart[V]);
    this.wPosOf = new Int32Array(n);
    this.rPosOf = new Int32Array(n);
    const writers: number[] = [];
    const readers: number[] = [];
    for (let i = 0; i < n; i++) {
      if (writerOf[i] >= 0) writers.push(i);
      if (readerOf[i] >= 0) readers.push(i);
    }
    readers.sort((a, b) => retTime[a] - retTime[b] || a - b);
    SupportIndex.fill(writers, writerOf, this.wStart, this.wList, this.wPosOf);
    SupportIndex.fill(readers, readerOf, this.rStart, this.rList, this.rPosOf);
    this.wPtr = this.wStart.slice(0, V);
    this.rPtr = this.rStart.slice(0, V);
  }

  /** Start of each value's run in a list grouped by value (counting sort). */
  private static starts(valueOf: Int32Array, V: number): Int32Array {
    const start = new Int32Array(V + 1);
    for (let i = 0; i < valueOf.length; i++) if (valueOf[i] >= 0) start[valueOf[i] + 1]++;
    for (let x = 0; x < V; x++) start[x + 1] += start[x];
    return start;
  }

  private static fill(
    order: number[],
    valueOf: Int32Array,
    start: Int32Array,
    list: Int32Array,
    posOf: Int32Array,
  ): void {
    const next = start.slice(0, start.length - 1);
    for (const i of order) {
      posOf[i] = next[valueOf[i]]++;
      list[posOf[i]] = i;
    }
  }

  /** Returns an unlinearized reader of x that can no longer be satisfied in state s, or -1. */
  unsupportedReader(x: number, s: number): number {
    if (x === s) return -1;
    const rp = this.rPtr[x];
    if (rp === this.rStart[x + 1]) return -1;
    const wp = this.wPtr[x];
    const rList = this.rList;
    if (
      wp < this.wStart[x + 1] &&
      this.ops.callTime[this.wList[wp]] <= this.ops.retTime[rList[rp]]
    ) {
      return -1;
    }
    return rList[rp];
  }

  /** Moves the pointers past op i, now linearized (in `set`). */
  linearized(i: number, set: LinearizedSet): void {
    const wx = this.ops.writerOf[i];
    if (wx >= 0 && this.wPosOf[i] === this.wPtr[wx]) {
      this.wPtr[wx] = SupportIndex.skip(this.wList, this.wPtr[wx], this.wStart[wx + 1], set);
    }
    const rx = this.ops.readerOf[i];
    if (rx >= 0 && this.rPosOf[i] === this.rPtr[rx]) {
      this.rPtr[rx] = SupportIndex.skip(this.rList, this.rPtr[rx], this.rStart[rx + 1], set);
    }
  }

  private static skip(list: Int32Array, p: number, end: number, set: LinearizedSet): number {
    while (p < end && set.has(list[p])) p++;
    return p;
  }

  unlinearized(i: number): void {
    const wx = this.ops.writerOf[i];
    if (wx >= 0 && this.wPosOf[i] < this.wPtr[wx]) this.wPtr[wx] = this.wPosOf[i];
    const rx = this.ops.readerOf[i];
    if (rx >= 0 && this.rPosOf[i] < this.rPtr[rx]) this.rPtr[rx] = this.rPosOf[i];
  }
}

/**
 * Pre-check (polynomial, before the search), with a direct explanation: each reader of x
 * needs a write of x (or, for null, the initial state) that may precede it with no
 * completed overwrite in between. Sound: the latest-returning writer w of x invoked by
 * the time the reader r returns is the source that leaves the least room for an
 * overwrite; if a known write of another value is invoked after w returned and returns
 * before r is invoked, it lies between every possible source and r, so r cannot read x.
 * Returns why the key is not linearizable, or undefined.
 */
function staleRead(ops: KeyOps, support: SupportIndex): string | undefined {
  const overwrites = new OverwriteIndex(ops);
  const latest = new LatestWriters(ops, support);
  const { events, values, readerOf, writerOf, retTime, callTime } = ops;
  for (let r = 0; r < ops.n; r++) {
    const x = readerOf[r];
    if (x < 0 || writerOf[r] === x) continue;
    const w = latest.before(x, retTime[r]);
    if (w < 0 && x !== 0) {
      return (
        `${describeEvent(events[r])} observed ${fmtValue(values[x])}, which ` +
        (latest.count(x) === 0
          ? 'no operation on the key ever writes'
          : 'is only written by operations invoked after it returned')
      );
    }
    const R = w < 0 ? -Infinity : retTime[w];
    if (R >= callTime[r]) continue;
    const o = overwrites.firstReturningAfter(R, x);
    if (o >= 0 && retTime[o] < callTime[r]) {
      const xs = fmtValue(values[x]);
      return (
        `stale read: ${describeEvent(events[r])} observed ${xs}, but ` +
        `${describeEvent(events[o])} overwrote ` +
        (w < 0
          ? 'the initial (absent) value'
          : `it after the latest write of ${xs} that could precede the read ` +
            `(${describeEvent(events[w])}) had returned`) +
        ', and returned before the read was invoked'
      );
    }
  }
  return undefined;
}

/** For the pre-check: per value, the latest-returning writer invoked by a given time. */
class LatestWriters {
  /** Per value, prefix maximum (by return time) of its writers in call order. */
  private readonly prefMax: Int32Array;

  constructor(
    private readonly ops: KeyOps,
    private readonly support: SupportIndex,
  ) {
    const { wStart, wList } = support;
    this.prefMax = new Int32Array(wList.length);
    for (let x = 0; x < ops.numValues; x++) {
      let best = -1;
      for (let p = wStart[x]; p < wStart[x + 1]; p++) {
        if (best < 0 || ops.retTime[wList[p]] > ops.retTime[best]) best = wList[p];
        this.prefMax[p] = best;
      }
    }
  }

  count(x: number): number {
    return this.support.wStart[x + 1] - this.support.wStart[x];
  }

  /** The latest-returning writer of x invoked no later than t, or -1. */
  before(x: number, t: number): number {
    const { wStart, wList } = this.support;
    let lo = wStart[x];
    let hi = wStart[x + 1];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ops.callTime[wList[mid]] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo > wStart[x] ? this.prefMax[lo - 1] : -1;
  }
}

/**
 * For the pre-check: known writes in call order, with the suffix minimum of return times,
 * overall and for a value other than the overall minimum's, to find a write of a value
 * other than x entirely inside an interval.
 */
class OverwriteIndex {
  private readonly kw: number[] = [];
  private readonly bestOp: Int32Array;
  private readonly secondOp: Int32Array;

  constructor(private readonly ops: KeyOps) {
    const { n, required, writerOf, retTime } = ops;
    for (let i = 0; i < n; i++) if (required[i] && writerOf[i] >= 0) this.kw.push(i);
    const m = this.kw.length;
    const bestOp = (this.bestOp = new Int32Array(m + 1).fill(-1));
    const secondOp = (this.secondOp = new Int32Array(m + 1).fill(-1));
    const ret = (i: number): number => (i < 0 ? Infinity : retTime[i]);
    for (let j = m - 1; j >= 0; j--) {
      const i = this.kw[j];
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
  }

  /** The first-returning known write of a value other than x invoked after t, or -1. */
  firstReturningAfter(t: number, x: number): number {
    const kw = this.kw;
    let lo = 0;
    let hi = kw.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ops.callTime[kw[mid]] <= t) lo = mid + 1;
      else hi = mid;
    }
    const b = this.bestOp[lo];
    return b >= 0 && this.ops.writerOf[b] !== x ? b : this.secondOp[lo];
  }
}

/**
 * The candidates of every frame on the search path, stacked, each with a rank (lower is
 * tried first).
 */
class CandidateStack {
  ids = new Int32Array(1024);
  ranks = new Uint8Array(1024);
  top = 0;

  constructor(private readonly retTime: Float64Array) {}

  push(i: number, k: number): void {
    if (this.top === this.ids.length) {
      const ids = new Int32Array(this.ids.length * 2);
      ids.set(this.ids);
      this.ids = ids;
      const ranks = new Uint8Array(ids.length);
      ranks.set(this.ranks);
      this.ranks = ranks;
    }
    this.ids[this.top] = i;
    this.ranks[this.top] = k;
    this.top++;
  }

  /** Candidate order: rank, then earliest return, then index. */
  private before(k1: number, i1: number, k2: number, i2: number): boolean {
    const ret = this.retTime;
    return k1 < k2 || (k1 === k2 && (ret[i1] < ret[i2] || (ret[i1] === ret[i2] && i1 < i2)));
  }

  /** Sorts the candidates in [start, end) by (rank, return time, index). */
  sort(start: number, end: number): void {
    const { ids, ranks } = this;
    if (end - start <= 32) {
      for (let r = start + 1; r < end; r++) {
        const i = ids[r];
        const k = ranks[r];
        let p = r;
        while (p > start && this.before(k, i, ranks[p - 1], ids[p - 1])) {
          ids[p] = ids[p - 1];
          ranks[p] = ranks[p - 1];
          p--;
        }
        ids[p] = i;
        ranks[p] = k;
      }
      return;
    }
    const ci = ids.slice(start, end);
    const ck = ranks.slice(start, end);
    const order = Array.from({ length: end - start }, (_, j) => j);
    order.sort((a, b) => (this.before(ck[a], ci[a], ck[b], ci[b]) ? -1 : 1)); // a total order
    for (let j = 0; j < order.length; j++) {
      ids[start + j] = ci[order[j]];
      ranks[start + j] = ck[order[j]];
    }
  }

  /** Inserts c with rank 0 after the rank-0 candidates of the frame starting at start. */
  insertAfterRank0(start: number, c: number): void {
    this.push(c, 0);
    const { ids, ranks } = this;
    let p = this.top - 1;
    while (p > start && ranks[p - 1] > 0) {
      ids[p] = ids[p - 1];
      ranks[p] = ranks[p - 1];
      p--;
    }
    ids[p] = c;
    ranks[p] = 0;
  }
}

/** The deepest point the search reached and why it could not be extended. */
class Deepest {
  depth = 0;
  tail: number[] = [];
  why: FailureReason | undefined;

  /** Records the path chosen[0 .. depth) (ops, or op + n when hidden) as the deepest. */
  reached(depth: number, chosen: Int32Array, n: number): void {
    this.depth = depth;
    this.tail = [];
    for (let k = Math.max(0, depth - SHOW_PREFIX_OPS); k < depth; k++) {
      this.tail.push(chosen[k] % n);
    }
  }
}

/**
 * The depth-first search over the configurations of one key. Each pruning rule is one
 * method, with the argument of its soundness (it keeps at least one valid linearization
 * if any exists); the search loop itself is `run`, `tryCandidate` and `buildCandidates`.
 *
 * A put or del that is immediately overwritten by another blind write ("hidden") has no
 * observable effect; see `addHiddenDeadline` for where such a write is placed, and
 * `childRestrictions` for what that costs the rest of the path.
 */
class KeySearch {
  private readonly pending: PendingOps;
  private readonly set: LinearizedSet;
  private readonly cache = new StateCache();
  private readonly cands: CandidateStack;
  // Search frames, one per configuration on the current path (index = depth).
  private readonly fState: Int32Array;
  private readonly fChosen: Int32Array; // op, or op + n when placed hidden
  private readonly fStart: Int32Array; // the frame's candidates: cands[fStart, fEnd)
  private readonly fPos: Int32Array; // the next candidate to try
  private readonly fEnd: Int32Array;
  private readonly fNoBlind: Uint8Array; // restrictions, see childRestrictions
  private readonly fWit: Float64Array;
  private depth = 0;
  private state = 0;
  private explored = 0;
  // Scanning work, bounded too, so that huge candidate windows cannot stall the search.
  private work = 0;
  private readonly maxWork: number;
  // Per-frame marks, valid where equal to `stamp`: values some candidate needs, and the
  // best op of each effect class.
  private stamp = 0;
  private readonly neededStamp: Int32Array;
  private readonly classStamp: Int32Array;
  private readonly classBest: Int32Array;
  private needAnyChange = false;
  // The restrictions of the child being tried (set by childRestrictions).
  private childNoBlind = false;
  private childWit = -Infinity;
  private readonly deepest = new Deepest();

  constructor(
    private readonly key: string,
    private readonly ops: KeyOps,
    private readonly support: SupportIndex,
    private readonly maxStates: number,
  ) {
    this.pending = new PendingOps(ops);
    this.set = new LinearizedSet(ops);
    this.cands = new CandidateStack(ops.retTime);
    const frames = ops.n + 1;
    this.fState = new Int32Array(frames);
    this.fChosen = new Int32Array(frames);
    this.fStart = new Int32Array(frames);
    this.fPos = new Int32Array(frames);
    this.fEnd = new Int32Array(frames);
    this.fNoBlind = new Uint8Array(frames);
    this.fWit = new Float64Array(frames).fill(-Infinity);
    this.maxWork = maxStates * WORK_PER_STATE;
    this.neededStamp = new Int32Array(ops.numValues);
    this.classStamp = new Int32Array(ops.numEffects);
    this.classBest = new Int32Array(ops.numEffects);
  }

  run(): KeyResult {
    this.buildCandidates();
    for (;;) {
      const d = this.depth;
      if (this.fPos[d] < this.fEnd[d]) {
        const result = this.tryCandidate(this.cands.ids[this.fPos[d]++]);
        if (result !== undefined) return result;
        continue;
      }
      // Every candidate failed: backtrack.
      if (d === this.deepest.depth && this.deepest.why === undefined) this.explainDeadEnd();
      this.cands.top = this.fStart[d];
      if (d === 0) return this.fail();
      this.backtrack();
    }
  }

  /**
   * Linearizes candidate c (an op, or op + n when placed hidden) next, and enters the
   * child configuration unless it is dead or already visited. Returns the key's result
   * when the search ends here.
   */
  private tryCandidate(c: number): KeyResult | undefined {
    const n = this.ops.n;
    const hidden = c >= n;
    const i = hidden ? c - n : c;
    const ns = hidden ? this.state : this.ops.step(this.state, i);
    this.linearize(i);
    if (this.isComplete()) return { status: 'ok', explored: this.explored + 1 };
    if (this.losesSupport(c, i, hidden, ns) || !this.firstVisit(i, hidden, ns)) {
      this.unlinearize(i);
      return undefined;
    }
    if (++this.explored > this.maxStates || this.work > this.maxWork) {
      return { status: 'timeout', explored: this.explored };
    }
    this.descend(c, i, ns);
    return undefined;
  }

  /**
   * Rule: unknown-outcome ops need not be linearized at all, so the search succeeds once
   * every known op is placed. Sound: placing the remaining unknown ops after every known
   * op is the same as them never happening, since nothing observes them.
   */
  private isComplete(): boolean {
    return this.set.remaining === 0;
  }

  /**
   * Rule: the support check (see SupportIndex) after placing op i. Only two steps can
   * take a reader's support: changing the register away from x (its readers now need a
   * later writer), and placing a writer of x hidden (it was used up without the register
   * holding x). Records the deepest dead end for the failure message.
   */
  private losesSupport(c: number, i: number, hidden: boolean, ns: number): boolean {
    let lost = -1;
    let lostValue = 0;
    if (ns !== this.state) {
      lost = this.support.unsupportedReader(this.state, ns);
      lostValue = this.state;
    } else if (hidden) {
      lostValue = this.ops.writerOf[i];
      lost = this.support.unsupportedReader(lostValue, this.state);
    }
    if (lost < 0) return false;
    const d = this.depth;
    if (d + 1 > this.deepest.depth) {
      this.fChosen[d] = c;
      this.deepest.reached(d + 1, this.fChosen, this.ops.n);
      const values = this.ops.values;
      this.deepest.why = {
        kind: 'unsupported',
        op: lost,
        value: values[lostValue],
        state: values[ns],
      };
    }
    return true;
  }

  /**
   * Rule: memoisation (Lowe 2017). A configuration (linearized set, state) whose search
   * failed fails again, so it is entered once. The hidden-write and unknown-op rules
   * depend on the path, not just the configuration, so the cache stores with each
   * configuration the restrictions it was explored under, and a hit prunes only when
   * those were no stronger than the child's.
   */
  private firstVisit(i: number, hidden: boolean, ns: number): boolean {
    this.childRestrictions(i, hidden);
    const set = this.set;
    return this.cache.insert(set.keyBuf, set.encode(), ns, this.childNoBlind, this.childWit);
  }

  /**
   * The child's path restrictions, for the hidden-write rule (see addHiddenDeadline).
   * noBlind: after an unknown-outcome op, or after a put/del that was not the deadline
   * op, the next op may not be a blind write: such a pair is covered elsewhere (the
   * unknown op left out; the put/del placed hidden once it is the deadline), so trying
   * it here would only repeat work. wit: the minimum return time of the ops from the
   * latest visible blind write on (-Infinity if none).
   */
  private childRestrictions(i: number, hidden: boolean): void {
    const d = this.depth;
    if (hidden) {
      this.childNoBlind = this.fNoBlind[d] !== 0;
      this.childWit = this.fWit[d];
      return;
    }
    const blind = this.ops.isBlind(i);
    this.childNoBlind = !this.ops.required[i] || (blind && i !== this.pending.deadline());
    this.childWit = blind ? this.ops.retTime[i] : Math.min(this.fWit[d], this.ops.retTime[i]);
  }

  private descend(c: number, i: number, ns: number): void {
    const d = this.depth;
    this.fChosen[d] = c;
    this.pending.remove(i);
    this.state = ns;
    this.depth = d + 1;
    this.fNoBlind[d + 1] = this.childNoBlind ? 1 : 0;
    this.fWit[d + 1] = this.childWit;
    if (d + 1 > this.deepest.depth) {
      this.deepest.reached(d + 1, this.fChosen, this.ops.n);
      this.deepest.why = undefined;
    }
    this.buildCandidates();
  }

  private backtrack(): void {
    const d = --this.depth;
    const i = this.fChosen[d] % this.ops.n;
    this.pending.restore(i);
    this.unlinearize(i);
    this.state = this.fState[d];
  }

  private linearize(i: number): void {
    this.set.add(i);
    this.support.linearized(i, this.set);
  }

  private unlinearize(i: number): void {
    this.set.delete(i);
    this.support.unlinearized(i);
  }

  /**
   * Computes the candidates for the next linearization point in the current
   * configuration and pushes them as the current frame's list, in the order they will be
   * tried.
   */
  private buildCandidates(): void {
    const d = this.depth;
    const start = this.cands.top;
    const D = this.pending.deadline();
    this.stamp++;
    const forced = this.scanWindow(D, this.fNoBlind[d] !== 0);
    if (forced >= 0) {
      this.cands.top = start;
      this.cands.push(forced, 0);
    } else {
      this.keepFirstReturningTwins(start);
      this.rankCandidates(start, D);
      this.cands.sort(start, this.cands.top);
      this.addHiddenDeadline(start, D);
    }
    this.fState[d] = this.state;
    this.fStart[d] = start;
    this.fPos[d] = start;
    this.fEnd[d] = this.cands.top;
  }

  /**
   * Pushes the ops that may be linearized next (invoked no later than the deadline op D
   * returns, and valid now), and marks the values they need. Returns a forced read-only
   * op instead, if there is one.
   */
  private scanWindow(D: number, noBlind: boolean): number {
    const ops = this.ops;
    const { callTime, readerOf, required } = ops;
    const cNext = this.pending.cNext;
    const tail = this.pending.tail;
    const deadline = ops.retTime[D];
    this.needAnyChange = false;
    for (let node = cNext[0]; node !== tail; node = cNext[node]) {
      const i = node - 1;
      if (callTime[i] > deadline) break;
      this.work++;
      const ns = ops.step(this.state, i);
      if (ns < 0) {
        if (readerOf[i] >= 0) this.neededStamp[readerOf[i]] = this.stamp;
        else this.needAnyChange = true; // a failed cas (no value seen) that expected this state
        continue;
      }
      if (this.forcesRead(i)) return i;
      if (!required[i] && ns === this.state) {
        this.skipNoOpUnknown(i);
        continue;
      }
      if (noBlind && ops.isBlind(i)) continue; // see childRestrictions
      this.cands.push(i, 0);
    }
    return -1;
  }

  /**
   * Rule: a valid read-only candidate (get, failed cas) is taken without trying
   * alternatives. Sound: it can be moved to the current point of any valid completion;
   * it changes nothing, so the ops it jumps over stay valid, and real time allows it,
   * since every pending required op returns no earlier than it is invoked.
   */
  private forcesRead(i: number): boolean {
    return this.ops.readOnly[i] !== 0;
  }

  /**
   * Rule: an unknown-outcome op that would change nothing now is not a candidate. Sound:
   * taking effect here is the same as never taking effect. It would take effect from its
   * expected value, so that value is marked as needed (for a put, whose `expected` is 0,
   * null is marked: marking more values needed only prunes less).
   */
  private skipNoOpUnknown(i: number): void {
    this.neededStamp[this.ops.expected[i]] = this.stamp;
  }

  /**
   * Rule: of several writes with the same effect only the one returning first need be
   * tried. Sound: swapping it with a later-returning twin in any valid completion keeps
   * it valid (same effect; the earlier return only loosens real-time order). Twins get
   * the same rank later; the deadline op returns first anyway. On a tie, a required op
   * beats an unknown-outcome twin: the unknown one may be left out, the required one may
   * not (and an unknown op that no one needs is skipped, which would drop the class).
   */
  private keepFirstReturningTwins(start: number): void {
    const { effect, retTime, required } = this.ops;
    const ids = this.cands.ids;
    for (let r = start; r < this.cands.top; r++) {
      const i = ids[r];
      const c = effect[i];
      if (this.classStamp[c] !== this.stamp) {
        this.classStamp[c] = this.stamp;
        this.classBest[c] = i;
        continue;
      }
      const b = this.classBest[c];
      if (
        retTime[i] < retTime[b] ||
        (retTime[i] === retTime[b] &&
          (required[i] > required[b] || (required[i] === required[b] && i < b)))
      )
        this.classBest[c] = i;
    }
  }

  /** A write with a twin that keepFirstReturningTwins preferred. */
  private isOutrankedTwin(i: number): boolean {
    return this.classBest[this.ops.effect[i]] !== i;
  }

  /**
   * Keeps the best of each effect class, drops the unobservable ones and ranks the rest
   * (lower is tried first, a heuristic with no bearing on soundness): 0, the deadline op
   * itself or ops that make it valid; 1, successful cas ops whose expected value holds
   * now (it may not recur) and writes of values some candidate needs; 2, other writes;
   * 3, unknown-outcome ops. Ties in earliest-deadline-first order (see sort).
   */
  private rankCandidates(start: number, D: number): void {
    const { ops, cands } = this;
    const ids = cands.ids;
    const dValid = ops.step(this.state, D) >= 0;
    let w = start;
    for (let r = start; r < cands.top; r++) {
      const i = ids[r];
      if (this.isOutrankedTwin(i)) continue;
      const ns = ops.step(this.state, i);
      const needed = this.needAnyChange || this.neededStamp[ns] === this.stamp;
      if (this.isUnobservable(i, ns, needed, D)) continue;
      let k: number;
      if (!ops.required[i]) k = 3;
      else if (dValid ? i === D : ops.step(ns, D) >= 0) k = 0;
      else if (needed || (ops.kind[i] === K_CAS && ns !== this.state)) k = 1;
      else k = 2;
      ids[w] = i;
      cands.ranks[w] = k;
      w++;
    }
    cands.top = w;
  }

  /**
   * Rule: an unknown-outcome op, or a put/del other than the deadline op, that changes
   * the register to a value no candidate needs is not a candidate. Sound: in a valid
   * completion that places it here, the ops that follow it and neither write nor need a
   * value (valid now too, or some candidate would fail now and mark every change needed)
   * can move before it. After them comes a blind write, which hides it (an unknown op is
   * then left out; a put/del is placed hidden once it is the deadline); or an op needing
   * the new value, which is placed before the deadline op returns, so it is a candidate
   * now, failing now, and marked the value needed; or nothing, and an unknown op is left
   * out (a put/del is then the deadline op itself or placed hidden).
   */
  private isUnobservable(i: number, ns: number, needed: boolean, D: number): boolean {
    if (needed) return false;
    if (!this.ops.required[i]) return true;
    return i !== D && this.ops.isBlind(i) && ns !== this.state;
  }

  /**
   * Rule: the deadline op D, if a put or del, may be placed hidden, i.e. conceptually
   * just before the latest blind write already on the path, where it is overwritten at
   * once and observed by no one (tried right after the rank-0 candidates). That is valid
   * iff real time allows it there: no op from that write on returned before D was
   * invoked, i.e. wit >= call(D) (see childRestrictions). Together with isUnobservable
   * and noBlind this replaces placing a hidden put/del where it is overwritten.
   */
  private addHiddenDeadline(start: number, D: number): void {
    const ops = this.ops;
    if (ops.isBlind(D) && this.fWit[this.depth] >= ops.callTime[D]) {
      this.cands.insertAfterRank0(start, D + ops.n);
    }
  }

  /** The deadline op cannot be placed here: record why, for the failure message. */
  private explainDeadEnd(): void {
    const b = this.pending.deadline();
    const s = this.ops.values[this.state];
    const kind = this.ops.step(this.state, b) >= 0 ? 'stuck' : 'invalid';
    this.deepest.why = { kind, op: b, value: s, state: s };
  }

  private fail(): KeyResult {
    const { ops, deepest } = this;
    const total = ops.numRequired + ops.numOptional;
    return {
      status: 'fail',
      explored: this.explored,
      message: failureMessage(
        this.key,
        ops.events,
        total,
        deepest.depth,
        deepest.tail,
        deepest.why,
      ),
    };
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
