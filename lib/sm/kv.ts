import { Decoder, Encoder } from 'cbor-x';
import type { Cmd, CmdResult, StateMachine, Value } from '../core/types';
import { scanCbor } from '../wire/scan';

/** A key-value operation as the client library encodes it (a CBOR array). */
export type KvOp =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'get'; key: string }
  | { kind: 'del'; key: string }
  | { kind: 'cas'; key: string; expected: string | null; value: string };

export const KEY_BYTES_MAX = 1024;

/** Items per array in a snapshot (well under the decoder's array-size limit). */
const SNAPSHOT_CHUNK_ITEMS = 30_000;

// Strict decoding of untrusted bytes: no records, plain arrays/maps, and the
// result is treated as unknown and type-checked field by field.
const opDecoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const opEncoder = new Encoder({ useRecords: false });

export function encodeOp(op: KvOp): Uint8Array {
  switch (op.kind) {
    case 'put':
      return opEncoder.encode(['put', op.key, op.value]);
    case 'get':
      return opEncoder.encode(['get', op.key]);
    case 'del':
      return opEncoder.encode(['del', op.key]);
    case 'cas':
      return opEncoder.encode(['cas', op.key, op.expected, op.value]);
  }
}

/** Decode and check an operation; returns a reason string when it is not valid. */
export function decodeOp(bytes: Uint8Array, valueBytesMax: number): KvOp | string {
  if (bytes.length > valueBytesMax * 2 + KEY_BYTES_MAX + 64) return 'operation too large';
  if (scanCbor(bytes, 2) !== null) return 'operation is not valid CBOR';
  let raw: unknown;
  try {
    raw = opDecoder.decode(bytes);
  } catch {
    return 'operation is not valid CBOR';
  }
  if (!Array.isArray(raw) || raw.length < 2 || raw.length > 4) return 'operation must be an array';
  const [kind, key] = raw as unknown[];
  if (typeof key !== 'string') return 'key must be a string';
  if (Buffer.byteLength(key) > KEY_BYTES_MAX) return `key exceeds ${KEY_BYTES_MAX} bytes`;
  const checkValue = (v: unknown, nullable: boolean): string | null | undefined => {
    if (v === null && nullable) return null;
    if (typeof v !== 'string') return undefined;
    return v;
  };
  const tooBig = (v: string): boolean => Buffer.byteLength(v) > valueBytesMax;
  switch (kind) {
    case 'get':
    case 'del':
      if (raw.length !== 2) return `${kind} takes a key only`;
      return { kind, key };
    case 'put': {
      const value = checkValue(raw[2], false);
      if (raw.length !== 3 || typeof value !== 'string')
        return 'put takes a key and a string value';
      if (tooBig(value)) return `value exceeds the limit of ${valueBytesMax} bytes`;
      return { kind, key, value };
    }
    case 'cas': {
      const expected = checkValue(raw[2], true);
      const value = checkValue(raw[3], false);
      if (raw.length !== 4 || expected === undefined || typeof value !== 'string')
        return 'cas takes a key, an expected value (or null) and a new value';
      if (tooBig(value) || (expected !== null && tooBig(expected)))
        return `value exceeds the limit of ${valueBytesMax} bytes`;
      return { kind, key, expected, value };
    }
    default:
      return 'unknown operation (put, get, del, cas)';
  }
}

/** Short, deterministic text of a value for order-log lines. */
function show(v: string | null): string {
  if (v === null) return '<none>';
  const s = JSON.stringify(v);
  return s.length <= 48 ? s : `${s.slice(0, 40)}…(${Buffer.byteLength(v)} bytes)`;
}

export function describeOp(op: KvOp): string {
  switch (op.kind) {
    case 'put':
      return `put ${JSON.stringify(op.key)} ${show(op.value)}`;
    case 'get':
      return `get ${JSON.stringify(op.key)}`;
    case 'del':
      return `del ${JSON.stringify(op.key)}`;
    case 'cas':
      return `cas ${JSON.stringify(op.key)} ${show(op.expected)} ${show(op.value)}`;
  }
}

/**
 * Per-client memory of the last answer (exactly-once). `result` undefined means
 * the request was a read: a retried read is simply executed again, which is
 * still linearizable and keeps large values out of the table.
 */
interface Session {
  seq: number;
  result: CmdResult | undefined;
}

/**
 * The replicated key-value store. Deterministic: every node applying the same
 * chosen sequence reaches the same state, including which client sessions the
 * bounded exactly-once table evicts (least recently used, decided by log order).
 */
export class KvStateMachine implements StateMachine {
  readonly data = new Map<string, string>();
  /** Insertion order is recency order: the first entry is evicted first. */
  readonly sessions = new Map<number, Session>();
  appliedCommands = 0;

  constructor(
    readonly sessionsMax: number,
    readonly valueBytesMax: number,
  ) {}

  cached(cid: number, seq: number): CmdResult | undefined {
    const s = this.sessions.get(cid);
    return s && s.seq === seq ? s.result : undefined;
  }

  apply(slot: number, cmds: Value): { results: CmdResult[]; lines: string[] } {
    const results: CmdResult[] = [];
    // A no-op still gets a line, so every log covers every slot and a gap is visible.
    const lines: string[] = cmds.length === 0 ? [`${slot}.0 noop`] : [];
    for (let i = 0; i < cmds.length; i++) {
      const { result, text } = this.applyOne(cmds[i]);
      results.push(result);
      lines.push(`${slot}.${i} ${cmds[i].cid}:${cmds[i].seq} ${text}`);
    }
    return { results, lines };
  }

  private applyOne(c: Cmd): { result: CmdResult; text: string } {
    const s = this.sessions.get(c.cid);
    const op = decodeOp(c.op, this.valueBytesMax);
    if (s) {
      if (c.seq < s.seq) return { result: { ok: false, err: 'stale' }, text: 'stale' };
      if (c.seq === s.seq) {
        this.touch(c.cid, s);
        if (s.result) return { result: s.result, text: 'duplicate' };
        // A retried read runs again.
        if (typeof op !== 'string' && op.kind === 'get')
          return { result: this.read(op.key), text: `${describeOp(op)} (retry)` };
        return { result: { ok: false, err: 'stale' }, text: 'stale' };
      }
    } else if (c.seq !== 1) {
      // The session was evicted (or never existed): this may be a retry of a
      // request already applied, so it must not run again.
      return { result: { ok: false, err: 'session_expired' }, text: 'session expired' };
    }
    this.appliedCommands++;
    let result: CmdResult;
    let text: string;
    if (typeof op === 'string') {
      result = { ok: false, err: `bad_op: ${op}` };
      text = `invalid (${op})`;
    } else {
      result = this.exec(op);
      text = describeOp(op) + (op.kind === 'cas' ? (result.ok ? ' ok' : ' mismatch') : '');
    }
    const isRead = typeof op !== 'string' && op.kind === 'get';
    this.touch(c.cid, { seq: c.seq, result: isRead ? undefined : result });
    return { result, text };
  }

  private read(key: string): CmdResult {
    return { ok: true, value: this.data.get(key) ?? null };
  }

  private exec(op: KvOp): CmdResult {
    switch (op.kind) {
      case 'get':
        return this.read(op.key);
      case 'put':
        this.data.set(op.key, op.value);
        return { ok: true };
      case 'del':
        this.data.delete(op.key);
        return { ok: true };
      case 'cas': {
        const cur = this.data.get(op.key) ?? null;
        if (cur !== op.expected) return { ok: false, value: cur };
        this.data.set(op.key, op.value);
        return { ok: true };
      }
    }
  }

  private touch(cid: number, s: Session): void {
    this.sessions.delete(cid);
    this.sessions.set(cid, s);
    while (this.sessions.size > this.sessionsMax) {
      const oldest = this.sessions.keys().next().value as number;
      this.sessions.delete(oldest);
    }
  }

  /**
   * Format 3: [3, appliedCommands, kvChunks, sessionChunks]. Both tables are
   * split into chunks of at most SNAPSHOT_CHUNK_ITEMS items, because the CBOR
   * decoder's array-size limit (set low for hostile datagrams) applies to every
   * array. Results are arrays [ok, hasValue, value, err], not objects: the strict
   * decoder turns CBOR maps into Maps, and a restored table must answer retries
   * with exactly the first answer (and snapshot identically on every node).
   */
  snapshot(): Uint8Array {
    const kv: string[][] = [[]];
    for (const [k, v] of this.data) {
      let chunk = kv[kv.length - 1];
      if (chunk.length >= SNAPSHOT_CHUNK_ITEMS) kv.push((chunk = []));
      chunk.push(k, v);
    }
    const sessions: unknown[][] = [[]];
    for (const [cid, s] of this.sessions) {
      let chunk = sessions[sessions.length - 1];
      if (chunk.length >= SNAPSHOT_CHUNK_ITEMS) sessions.push((chunk = []));
      const r = s.result;
      chunk.push(
        cid,
        s.seq,
        r ? [r.ok, r.value !== undefined, r.value ?? null, r.err ?? null] : null,
      );
    }
    return opEncoder.encode([3, this.appliedCommands, kv, sessions]);
  }

  /** Replace the state with a snapshot's; on a bad snapshot, throws and changes nothing. */
  restore(bytes: Uint8Array): void {
    const raw = opDecoder.decode(bytes) as unknown;
    if (!Array.isArray(raw) || raw[0] !== 3 || !Array.isArray(raw[2]) || !Array.isArray(raw[3]))
      throw new Error('snapshot: not a version 3 key-value snapshot');
    const data = new Map<string, string>();
    const sessions = new Map<number, Session>();
    for (const kv of raw[2] as unknown[][]) {
      if (!Array.isArray(kv)) throw new Error('snapshot: bad key-value chunk');
      for (let i = 0; i + 1 < kv.length; i += 2) data.set(String(kv[i]), String(kv[i + 1]));
    }
    for (const ss of raw[3] as unknown[][]) {
      if (!Array.isArray(ss)) throw new Error('snapshot: bad session chunk');
      for (let i = 0; i + 2 < ss.length; i += 3) {
        const a = ss[i + 2] as [boolean, boolean, string | null, string | null] | null;
        let result: CmdResult | undefined;
        if (Array.isArray(a)) {
          result = { ok: a[0] === true };
          if (a[1] === true) result.value = a[2];
          if (typeof a[3] === 'string') result.err = a[3];
        }
        sessions.set(Number(ss[i]), { seq: Number(ss[i + 1]), result });
      }
    }
    this.data.clear();
    for (const [k, v] of data) this.data.set(k, v);
    this.sessions.clear();
    for (const [k, v] of sessions) this.sessions.set(k, v);
    this.appliedCommands = Number(raw[1]) || 0;
  }
}
