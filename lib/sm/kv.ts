import { Decoder, Encoder } from 'cbor-x';
import type {
  Cmd,
  CmdResult,
  Configuration,
  Member,
  MemberAddr,
  StateDigest,
  StateMachine,
  Value,
} from '../core/types';
import {
  KEY_BYTES_MAX,
  OP_BYTES_MAX,
  OP_CBOR_DEPTH_MAX,
  SESSIONS_MAX_MAX,
  SID_MAX,
  SID_MIN,
} from '../limits';
import type { ErrorCode } from '../wire/client';
import { scanCbor } from '../wire/scan';
import { badMemberAddr, memberAddr, MembershipTable, type MemberOp } from './membership';
import { hex, ORDER_LOG_HASH_EVERY, StateHash } from './statehash';

export type { MemberOp };

/** A key-value operation as the client library encodes it (a CBOR array). */
export type KvOp =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'get'; key: string }
  | { kind: 'del'; key: string }
  | { kind: 'cas'; key: string; expected: string | null; value: string };

/**
 * Commands that are not key-value operations. `register` opens a session (the
 * Raft dissertation's RegisterClient, section 6.3); `limits` records the
 * cluster's state-machine limits in the log, once, when a new cluster starts.
 */
export type SysOp =
  | { kind: 'register' }
  | { kind: 'limits'; limits: SmLimits }
  /** Was request cid:seq applied, and what was its answer? (through the log: see outcomeOf) */
  | { kind: 'outcome'; cid: number; seq: number }
  /** A membership change (sent in a session, like a write): see MembershipTable.apply. */
  | MemberOp;

/** What the `outcome` command answers (JSON in its result's value). */
export type Outcome =
  | { outcome: 'applied'; result: CmdResult | null }
  | { outcome: 'not_applied' }
  | { outcome: 'unknown'; why: string };

/**
 * The limits that decide what applying a command does, or what a leader admits.
 * They are cluster-wide: recorded in the log by a `limits` command and carried
 * in snapshots, so that every replica applies the same log to the same state
 * whatever its own config file says.
 */
export interface SmLimits {
  /** Sessions kept in the exactly-once table; the least recently used goes first. */
  sessionsMax: number;
  /** Largest value (and cas expected value) a leader admits. Never checked at apply. */
  valueBytesMax: number;
}

/**
 * Why a command is refused, as the protocol says it: the code goes on the wire
 * (a client decides by it whether the request certainly never ran), the message
 * is for people. Made only by the factories below, so rewording a message can
 * never change a code (dht-rpc's errors.js).
 */
export type OpErrorCode = Extract<ErrorCode, 'bad_op' | 'too_large'>;
export interface OpError {
  code: OpErrorCode;
  message: string;
}
export const OpErrors = {
  /** The bytes are not a command this protocol knows. */
  badOp: (message: string): OpError => ({ code: 'bad_op', message }),
  /** The command (or its value) is above a size limit. */
  tooLarge: (message: string): OpError => ({ code: 'too_large', message }),
};

/** True for a refusal from parseCommand, decodeOp or admissionError. */
export function isOpError(x: object): x is OpError {
  return 'code' in x;
}

/** The client id of the `limits` command (no session ever has it: session ids start at 1). */
export const LIMITS_CID = 0;

/**
 * Session ids are allocated by the state machine, counting up from 1, below
 * this bound; a `register` carries a client-chosen nonce at or above it as its
 * client id, so that a nonce can never be mistaken for a session.
 */
export const REGISTER_NONCE_MIN = 2 ** 52;

/**
 * Limits of a state machine before any `limits` command was applied (a cluster
 * whose first leader has not recorded its own yet). Protocol constants, the
 * same in every build, so that such early commands apply alike everywhere.
 */
export const PROTOCOL_LIMITS: Readonly<SmLimits> = Object.freeze({
  sessionsMax: 100_000,
  valueBytesMax: 32_768,
});

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

/** The body of a session registration (sent with a nonce >= REGISTER_NONCE_MIN as cid, seq 1). */
export function encodeRegister(): Uint8Array {
  return opEncoder.encode(['register']);
}

/** The body of an `outcome` query about request cid:seq (sent in a session, like a write). */
export function encodeOutcome(cid: number, seq: number): Uint8Array {
  return opEncoder.encode(['outcome', cid, seq]);
}

/** The body of a membership change (sent in a session, like a write). */
export function encodeMember(
  action: MemberOp['action'],
  sid: number,
  addr?: MemberAddr,
): Uint8Array {
  if (addr)
    return opEncoder.encode(['member', action, sid, addr.host, addr.peerPort, addr.clientPort]);
  return opEncoder.encode(['member', action, sid]);
}

/** The body of the `limits` command (sent with cid LIMITS_CID, seq 1). */
export function encodeLimits(l: SmLimits): Uint8Array {
  return opEncoder.encode(['limits', l.sessionsMax, l.valueBytesMax]);
}

function validLimits(l: SmLimits): boolean {
  return (
    Number.isSafeInteger(l.sessionsMax) &&
    l.sessionsMax >= 1 &&
    l.sessionsMax <= SESSIONS_MAX_MAX &&
    Number.isSafeInteger(l.valueBytesMax) &&
    l.valueBytesMax >= 1 &&
    l.valueBytesMax <= OP_BYTES_MAX
  );
}

/**
 * Decode a command's bytes and check their shape only: what it says, never how
 * big its value is. The result depends on the bytes and protocol constants
 * alone, so every replica (and every leader admitting it) decides alike.
 * Returns the reason when the bytes are not a valid command.
 */
export function parseCommand(bytes: Uint8Array): KvOp | SysOp | OpError {
  if (bytes.length > OP_BYTES_MAX) return OpErrors.tooLarge('operation too large');
  if (scanCbor(bytes, OP_CBOR_DEPTH_MAX) !== null)
    return OpErrors.badOp('operation is not valid CBOR');
  let raw: unknown;
  try {
    raw = opDecoder.decode(bytes);
  } catch {
    return OpErrors.badOp('operation is not valid CBOR');
  }
  // `member add SID HOST PEERPORT CLIENTPORT` is the longest command.
  if (!Array.isArray(raw) || raw.length < 1 || raw.length > (raw[0] === 'member' ? 6 : 4))
    return OpErrors.badOp('operation must be an array');
  const kind = raw[0] as unknown;
  if (kind === 'register')
    return raw.length === 1 ? { kind } : OpErrors.badOp('register takes nothing');
  if (kind === 'outcome') {
    const [, cid, seq] = raw as unknown[];
    const id = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 1;
    if (raw.length !== 3 || !id(cid) || !id(seq))
      return OpErrors.badOp('outcome takes a client id and a sequence number');
    return { kind, cid, seq };
  }
  if (kind === 'member') {
    const [, action, sid] = raw as unknown[];
    if (
      (raw.length !== 3 && !(raw.length === 6 && action === 'add')) ||
      (action !== 'add' && action !== 'promote' && action !== 'remove') ||
      !Number.isSafeInteger(sid) ||
      (sid as number) < SID_MIN ||
      (sid as number) > SID_MAX
    )
      return OpErrors.badOp(
        `member takes add, promote or remove and a sid (${SID_MIN}-${SID_MAX}); add may give HOST PEERPORT CLIENTPORT`,
      );
    if (raw.length === 3) return { kind, action, sid: sid as number };
    const why = badMemberAddr(raw.slice(3));
    if (why) return OpErrors.badOp(`member add ${sid as number}: ${why}`);
    return { kind, action, sid: sid as number, addr: memberAddr(raw.slice(3)) };
  }
  if (kind === 'limits') {
    const limits = { sessionsMax: raw[1] as number, valueBytesMax: raw[2] as number };
    if (raw.length !== 3 || !validLimits(limits))
      return OpErrors.badOp('limits takes two integers in range');
    return { kind, limits };
  }
  if (raw.length < 2) return OpErrors.badOp('operation must be an array');
  const key = raw[1] as unknown;
  if (typeof key !== 'string') return OpErrors.badOp('key must be a string');
  if (Buffer.byteLength(key) > KEY_BYTES_MAX)
    return OpErrors.tooLarge(`key exceeds ${KEY_BYTES_MAX} bytes`);
  const checkValue = (v: unknown, nullable: boolean): string | null | undefined => {
    if (v === null && nullable) return null;
    if (typeof v !== 'string') return undefined;
    return v;
  };
  switch (kind) {
    case 'get':
    case 'del':
      if (raw.length !== 2) return OpErrors.badOp(`${kind} takes a key only`);
      return { kind, key };
    case 'put': {
      const value = checkValue(raw[2], false);
      if (raw.length !== 3 || typeof value !== 'string')
        return OpErrors.badOp('put takes a key and a string value');
      return { kind, key, value };
    }
    case 'cas': {
      const expected = checkValue(raw[2], true);
      const value = checkValue(raw[3], false);
      if (raw.length !== 4 || expected === undefined || typeof value !== 'string')
        return OpErrors.badOp('cas takes a key, an expected value (or null) and a new value');
      return { kind, key, expected, value };
    }
    default:
      return OpErrors.badOp('unknown operation (put, get, del, cas)');
  }
}

/**
 * The leader's admission check of a key-value operation against the cluster's
 * limits: done once, before the command enters the log, never at apply (a
 * replica's verdict at apply would depend on its own limits; PMMC's replicas
 * apply whatever was decided). Returns the reason for a refusal, or null.
 */
export function admissionError(op: KvOp, valueBytesMax: number): OpError | null {
  const noKey = keyError(op);
  if (noKey) return noKey;
  const tooBig = (v: string | null): boolean => v !== null && Buffer.byteLength(v) > valueBytesMax;
  if (
    ((op.kind === 'put' || op.kind === 'cas') && tooBig(op.value)) ||
    (op.kind === 'cas' && tooBig(op.expected))
  )
    return OpErrors.tooLarge(`value exceeds the limit of ${valueBytesMax} bytes`);
  return null;
}

/**
 * An empty key names nothing (etcd refuses it too: "key is not provided").
 * Checked at admission only, like every refusal: a log written before this
 * rule still applies.
 */
export function keyError(op: KvOp): OpError | null {
  return op.key === '' ? OpErrors.badOp('the key is empty') : null;
}

/** Decode a client's key-value operation and check it against `valueBytesMax`. */
export function decodeOp(bytes: Uint8Array, valueBytesMax: number): KvOp | OpError {
  const op = parseCommand(bytes);
  if (isOpError(op)) return op;
  // Membership changes are not taken from clients yet: the daemon does not learn
  // new members' addresses from the log (issue 13 continues).
  if (
    op.kind === 'register' ||
    op.kind === 'limits' ||
    op.kind === 'outcome' ||
    op.kind === 'member'
  )
    return OpErrors.badOp('unknown operation (put, get, del, cas)');
  return admissionError(op, valueBytesMax) ?? op;
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
 * A session's memory of its last answer (exactly-once). `result` undefined
 * means the last request was a read (a retried read is simply executed again,
 * which is still linearizable and keeps large values out of the table) or that
 * nothing ran yet (seq 0, just registered).
 */
interface Session {
  seq: number;
  result: CmdResult | undefined;
  /** The nonce the session was registered with (0 for a session restored from format 3). */
  nonce: number;
}

/**
 * The replicated key-value store. Deterministic: what applying a command does
 * depends only on the log (and snapshots of it), never on a node's config:
 *
 * - Sessions are registered through the log (`register`, Raft dissertation
 *   6.3) and get ids counted up by the state machine, so an id is never reused.
 *   A request whose session is not in the table (evicted, or never registered)
 *   is refused with `session_expired` and never applied: it may be a late copy
 *   of a request that already ran before its session was evicted, so it cannot
 *   be proven fresh. This holds for seq 1 too: there is no implicit session.
 * - The table is bounded by the cluster's `sessionsMax` and evicts the least
 *   recently used session in log order, so every node evicts the same ones.
 * - The limits come from the first `limits` command in the log (until then
 *   PROTOCOL_LIMITS); later ones are ignored. Sizes are not checked at apply.
 */
export class KvStateMachine implements StateMachine {
  readonly data = new Map<string, string>();
  /** Insertion order is recency order: the first entry is evicted first. */
  readonly sessions = new Map<number, Session>();
  /** Live sessions by registration nonce: a retried `register` gets the same id. */
  private readonly byNonce = new Map<number, number>();
  /** The next session id; every id below it was handed out once, and never again. */
  nextSessionId = 1;
  /** The cluster's limits, or null until a `limits` command is applied. */
  limits: SmLimits | null = null;
  appliedCommands = 0;
  /** Rolling hash over every applied slot (carried in snapshots from format 5 on). */
  private readonly stateHash = new StateHash();
  /** Configurations applied (carried in snapshots from format 6 on). */
  private readonly membership = new MembershipTable();

  /**
   * `sessionsMax` and `valueBytesMax`, when given, are the limits the cluster was
   * created with: every replica of one cluster must be constructed alike (tests
   * and the simulator do). The daemon passes nothing: its cluster records its
   * limits in the log, whatever each node's config file says.
   */
  constructor(sessionsMax?: number, valueBytesMax?: number) {
    if (sessionsMax !== undefined)
      this.limits = {
        sessionsMax,
        valueBytesMax: valueBytesMax ?? PROTOCOL_LIMITS.valueBytesMax,
      };
  }

  /** The limits applying commands use now. */
  get effectiveLimits(): SmLimits {
    return this.limits ?? PROTOCOL_LIMITS;
  }

  /**
   * True when `cid` names a session that was registered and since evicted. Once
   * true at some applied slot it stays true at every later one (ids are never
   * reused), so a leader may refuse such a request before it enters the log.
   */
  evicted(cid: number): boolean {
    return cid >= 1 && cid < this.nextSessionId && !this.sessions.has(cid);
  }

  cached(cid: number, seq: number): CmdResult | undefined {
    const s = this.sessions.get(cid);
    if (s) return s.seq === seq ? s.result : undefined;
    // A retried registration whose session is still live: the same id again.
    const id = seq === 1 ? this.byNonce.get(cid) : undefined;
    return id === undefined ? undefined : { ok: true, value: String(id) };
  }

  apply(slot: number, cmds: Value): { results: CmdResult[]; lines: string[] } {
    const results: CmdResult[] = [];
    const texts: string[] = [];
    for (const c of cmds) {
      const { result, text } = this.applyOne(c, slot);
      results.push(result);
      texts.push(text);
    }
    // Each line ends with the digest of the whole command and its result, so
    // that logs differing past the readable prefix still differ (paxos-logcmp).
    const digests = this.stateHash.step(slot, cmds, results);
    // A no-op still gets a line, so every log covers every slot and a gap is visible.
    const lines: string[] = cmds.length === 0 ? [`${slot}.0 noop`] : [];
    for (let i = 0; i < cmds.length; i++)
      lines.push(`${slot}.${i} ${cmds[i].cid}:${cmds[i].seq} ${texts[i]} [${digests[i]}]`);
    // Every ORDER_LOG_HASH_EVERY slots, the rolling hash: logs compare by it alone.
    // (Its bytes are made only then: a buffer per slot was garbage on every apply.)
    const h = slot % ORDER_LOG_HASH_EVERY === 0 ? this.stateHash.hash : null;
    if (h) lines.push(`# state hash at slot ${slot}: ${hex(h)}`);
    return { results, lines };
  }

  /** The rolling hash at the last applied slot (null: restored from a format 3/4 snapshot). */
  digest(): StateDigest | null {
    return this.stateHash.digest();
  }

  hashAt(slot: number): Uint8Array | undefined {
    return this.stateHash.hashAt(slot);
  }

  adoptDigest(slot: number, hash: Uint8Array): boolean {
    return this.stateHash.adopt(slot, hash);
  }

  bootstrapMembers(members: Member[], alphaSlots: number, sids: readonly number[]): void {
    this.membership.bootstrap(members, alphaSlots, sids);
  }

  configurations(): readonly Configuration[] {
    return this.membership.configurations();
  }

  private applyOne(c: Cmd, slot: number): { result: CmdResult; text: string } {
    const parsed = parseCommand(c.op);
    const op = isOpError(parsed) ? null : parsed;
    if (op?.kind === 'limits') return this.applyLimits(c, op.limits);
    if (op?.kind === 'register') return this.applyRegister(c);
    const s = this.sessions.get(c.cid);
    if (!s) {
      // Evicted or never registered: this may be a late copy of a request that
      // already ran before its session was evicted, so it must not run (again).
      return { result: { ok: false, err: 'session_expired' }, text: 'session expired' };
    }
    if (c.seq < s.seq) return { result: { ok: false, err: 'stale' }, text: 'stale' };
    if (c.seq === s.seq) {
      this.touch(c.cid, s);
      if (s.result) return { result: s.result, text: 'duplicate' };
      // A retried read runs again.
      if (op?.kind === 'get')
        return { result: this.read(op.key), text: `${describeOp(op)} (retry)` };
      return { result: { ok: false, err: 'stale' }, text: 'stale' };
    }
    this.appliedCommands++;
    let result: CmdResult;
    let text: string;
    if (op === null) {
      // The same text whatever the refusal's code: results are replicated state.
      const why = (parsed as OpError).message;
      result = { ok: false, err: `bad_op: ${why}` };
      text = `invalid (${why})`;
    } else if (op.kind === 'member') {
      ({ result, text } = this.membership.apply(slot, op));
    } else if (op.kind === 'outcome') {
      result = this.outcomeOf(op.cid, op.seq, c.cid);
      text = `outcome ${op.cid}:${op.seq} ${JSON.parse(result.value!).outcome as string}`;
    } else {
      result = this.exec(op);
      text = describeOp(op) + (op.kind === 'cas' ? (result.ok ? ' ok' : ' mismatch') : '');
    }
    s.seq = c.seq;
    s.result = op?.kind === 'get' ? undefined : result;
    this.touch(c.cid, s);
    return { result, text };
  }

  /**
   * Open a session: the id comes from the log, so it is fresh on every replica
   * alike. Registering has no effect on the data, so a duplicated `register`
   * that runs twice costs one unused table entry (evicted in time), nothing more.
   */
  private applyRegister(c: Cmd): { result: CmdResult; text: string } {
    if (!(c.cid >= REGISTER_NONCE_MIN) || !Number.isSafeInteger(c.cid))
      return {
        result: { ok: false, err: 'bad_op: register needs a nonce client id' },
        text: 'invalid (register without a nonce)',
      };
    const known = this.byNonce.get(c.cid);
    if (known !== undefined) {
      this.touch(known, this.sessions.get(known)!);
      return { result: { ok: true, value: String(known) }, text: `register -> ${known} (again)` };
    }
    const id = this.nextSessionId++;
    if (id >= REGISTER_NONCE_MIN) throw new Error('session ids exhausted');
    this.byNonce.set(c.cid, id);
    this.touch(id, { seq: 0, result: undefined, nonce: c.cid });
    return { result: { ok: true, value: String(id) }, text: `register -> ${id}` };
  }

  /** The first `limits` command fixes the cluster's limits; later ones change nothing. */
  private applyLimits(c: Cmd, l: SmLimits): { result: CmdResult; text: string } {
    const show = (x: SmLimits): string =>
      `sessionsMax=${x.sessionsMax} valueBytesMax=${x.valueBytesMax}`;
    if (c.cid !== LIMITS_CID)
      return { result: { ok: false, err: 'bad_op: limits' }, text: 'invalid (limits)' };
    if (this.limits) return { result: { ok: true }, text: `limits ignored (${show(this.limits)})` };
    this.limits = { sessionsMax: l.sessionsMax, valueBytesMax: l.valueBytesMax };
    this.evictOverflow();
    return { result: { ok: true }, text: `limits ${show(l)}` };
  }

  private read(key: string): CmdResult {
    return { ok: true, value: this.data.get(key) ?? null };
  }

  /**
   * The `outcome` command: was request cid:seq applied? Answered at its slot,
   * through the log, so the answer is linearizable, and made final: a request
   * of that session up to `seq` that has not run is refused from now on (its
   * session's sequence moves to `seq`, answered `not_applied`), so a delayed
   * copy can never run after the asker was told "not applied". The table keeps
   * one answer per session (its last request): an older request, or one of an
   * evicted session, is `unknown`. A session id never handed out can run
   * nothing (there is no implicit session): `not_applied`.
   */
  private outcomeOf(cid: number, seq: number, asker: number): CmdResult {
    const answer = (o: Outcome): CmdResult => ({ ok: true, value: JSON.stringify(o) });
    // Its own sequence moves on with this very command: ask from another session.
    if (cid === asker)
      return answer({ outcome: 'unknown', why: 'a session cannot ask about its own requests' });
    const s = this.sessions.get(cid);
    if (!s)
      return cid >= this.nextSessionId
        ? answer({ outcome: 'not_applied' })
        : answer({
            outcome: 'unknown',
            why: `session ${cid} is no longer in the exactly-once table`,
          });
    if (seq < s.seq)
      return answer({
        outcome: 'unknown',
        why: `the exactly-once table keeps only session ${cid}'s last request (${s.seq})`,
      });
    const fenced = s.result?.ok === false && s.result.err === 'not_applied';
    if (seq === s.seq && !fenced) return answer({ outcome: 'applied', result: s.result ?? null });
    if (seq > s.seq) {
      s.seq = seq;
      s.result = { ok: false, err: 'not_applied' };
      this.touch(cid, s);
    }
    return answer({ outcome: 'not_applied' });
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
    this.evictOverflow();
  }

  private evictOverflow(): void {
    const max = this.effectiveLimits.sessionsMax;
    while (this.sessions.size > max) {
      const [oldest, s] = this.sessions.entries().next().value as [number, Session];
      this.sessions.delete(oldest);
      if (this.byNonce.get(s.nonce) === oldest) this.byNonce.delete(s.nonce);
    }
  }

  /**
   * Format 7: [7, appliedCommands, kvChunks, sessionChunks, limits, nextSessionId,
   * hashSlot, hash, configurations] (6: members without addresses; 5: without
   * configurations; 4: without the hash either), with sessions as (cid, seq, result, nonce) and limits [sessionsMax,
   * valueBytesMax] or null. Both tables are split into chunks of at most
   * SNAPSHOT_CHUNK_ITEMS items, because the CBOR decoder's array-size limit (set
   * low for hostile datagrams) applies to every array. Results are arrays [ok,
   * hasValue, value, err], not objects: the strict decoder turns CBOR maps into
   * Maps, and a restored table must answer retries with exactly the first
   * answer (and snapshot identically on every node).
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
        s.nonce,
      );
    }
    const limits = this.limits ? [this.limits.sessionsMax, this.limits.valueBytesMax] : null;
    const h = this.stateHash;
    return opEncoder.encode([
      7,
      this.appliedCommands,
      kv,
      sessions,
      limits,
      this.nextSessionId,
      h.slot,
      h.hash === null ? null : Buffer.from(h.hash),
      this.membership.snapshot(),
    ]);
  }

  /**
   * Replace the state with a snapshot's; on a bad snapshot, throws and changes
   * nothing. Format 3 (before sessions were registered) is read too: its
   * sessions keep working, and its limits are unset until the log records them.
   * Formats 3 and 4 (before the state hash) load with the hash unknown: the
   * chain cannot be rebuilt without the log below the snapshot, and refusing
   * them would keep an upgraded node from starting. Such a node reports and
   * compares no hash until it adopts a peer's (README: Diagnostics).
   */
  restore(bytes: Uint8Array): void {
    const raw = opDecoder.decode(bytes) as unknown;
    if (
      !Array.isArray(raw) ||
      (raw[0] !== 3 && raw[0] !== 4 && raw[0] !== 5 && raw[0] !== 6 && raw[0] !== 7) ||
      !Array.isArray(raw[2]) ||
      !Array.isArray(raw[3])
    )
      throw new Error('snapshot: not a version 3, 4, 5, 6 or 7 key-value snapshot');
    const v4 = raw[0] >= 4;
    const width = v4 ? 4 : 3;
    const data = new Map<string, string>();
    const sessions = new Map<number, Session>();
    for (const kv of raw[2] as unknown[][]) {
      if (!Array.isArray(kv)) throw new Error('snapshot: bad key-value chunk');
      for (let i = 0; i + 1 < kv.length; i += 2) data.set(String(kv[i]), String(kv[i + 1]));
    }
    for (const ss of raw[3] as unknown[][]) {
      if (!Array.isArray(ss)) throw new Error('snapshot: bad session chunk');
      for (let i = 0; i + width - 1 < ss.length; i += width) {
        const a = ss[i + 2] as [boolean, boolean, string | null, string | null] | null;
        let result: CmdResult | undefined;
        if (Array.isArray(a)) {
          result = { ok: a[0] === true };
          if (a[1] === true) result.value = a[2];
          if (typeof a[3] === 'string') result.err = a[3];
        }
        const nonce = v4 ? Number(ss[i + 3]) : 0;
        sessions.set(Number(ss[i]), { seq: Number(ss[i + 1]), result, nonce });
      }
    }
    let limits: SmLimits | null = null;
    if (v4 && raw[4] !== null) {
      const l = raw[4] as unknown[];
      limits = { sessionsMax: Number(l?.[0]), valueBytesMax: Number(l?.[1]) };
      if (!Array.isArray(l) || !validLimits(limits)) throw new Error('snapshot: bad limits');
    }
    const nextSessionId = v4 ? Number(raw[5]) : 1;
    if (!Number.isSafeInteger(nextSessionId) || nextSessionId < 1)
      throw new Error('snapshot: bad next session id');
    const hashSlot = raw[0] >= 5 ? Number(raw[6]) : 0;
    const hash = raw[0] >= 5 ? (raw[7] as unknown) : null;
    if (!Number.isSafeInteger(hashSlot) || hashSlot < 0 || !(hash === null || isHash(hash)))
      throw new Error('snapshot: bad state hash');
    // Before format 6 no change was ever applied: the bootstrap configuration holds;
    // format 7 added members' addresses.
    const configs = this.membership.parse(raw[0] >= 6 ? raw[8] : null, raw[0] === 6 ? 2 : 3);
    this.data.clear();
    for (const [k, v] of data) this.data.set(k, v);
    this.sessions.clear();
    this.byNonce.clear();
    for (const [k, v] of sessions) {
      this.sessions.set(k, v);
      if (v.nonce >= REGISTER_NONCE_MIN) this.byNonce.set(v.nonce, k);
    }
    this.limits = limits;
    this.nextSessionId = nextSessionId;
    this.appliedCommands = Number(raw[1]) || 0;
    this.stateHash.reset(hashSlot, hash === null ? null : new Uint8Array(hash));
    this.membership.restore(configs);
  }
}

/**
 * A key-value snapshot with its membership history dropped (format 6's
 * configurations set to null; older formats have none): what a restore into a
 * new cluster seeds, whose configuration is its own config file's bootstrap one
 * (as etcd's `snapshot restore` takes the membership from --initial-cluster).
 * Everything else, the state hash included, is the source's.
 */
export function withoutMembership(bytes: Uint8Array): Uint8Array {
  const raw = opDecoder.decode(bytes) as unknown;
  if (!Array.isArray(raw) || !(raw[0] === 6 || raw[0] === 7) || raw[8] === null) return bytes;
  raw[8] = null;
  return opEncoder.encode(raw);
}

function isHash(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array && x.length === 32;
}
