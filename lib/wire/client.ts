import { createHmac, timingSafeEqual } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import type { CmdResult } from '../core/types';
import {
  BATCH_OPS_MAX,
  CLIENT_CBOR_DEPTH_MAX,
  CLIENT_REQUEST_HEADROOM_BYTES,
  DATAGRAM_BYTES_MAX,
} from '../limits';
import { HEADER_BYTES, TAG_BYTES } from './envelope';
import { scanCbor } from './scan';

/*
 * Client protocol bodies (inside the envelope, kinds ClientRequest/ClientReply):
 *   request  [1, cid, seq, opBytes, token?]         one operation
 *            [2, nonce, token?]                     status
 *            [2, nonce, token|null, pad]            status, padded (see STATUS_REQUEST_BYTES)
 *            [3, [[cid, seq, opBytes], ...], token?] several operations (one datagram)
 *            [4, nonce, sid, pad, token?]           transfer leadership to sid (pad: see
 *                 TRANSFER_REQUEST_BYTES)
 *            [5, nonce, token|null, pad]            snapshot save: pin a snapshot taken at or
 *                 above a read index (padded as status: STATUS_REQUEST_BYTES)
 *            [6, nonce, id, offset, token?]         snapshot save: the chunk of pinned
 *                 snapshot `id` at `offset` (offset = its size: done, unpin it)
 *   reply    [1, cid, seq, ok, value, err]  result (value/err may be null)
 *            [2, cid, seq, leaderSid]       redirect (-1: leader unknown)
 *            [3, cid, seq, code, message]   error (busy, bad_op, too_large, ...)
 *            [4, nonce, status]             status (a small map of scalars)
 *            [5, [[cid, seq, ok, value, err], ...]] several results (one datagram)
 *            [6, sid, token, [[cid, seq], ...], nonce|null]  validate: these requests
 *                 were held back by the anti-amplification limit; send them again
 *                 with this token (nonce: a held-back status request)
 *            [7, nonce, code, leader, message]  transfer-leader answer (leader: who leads
 *                 as far as this node knows, -1 if unknown); never larger than its request
 *            [8, nonce, id, slot, hash|null, bytes, digest]  snapshot pinned as `id`: its
 *                 slot, state hash, size and SHA-256 (sent to a validated address only)
 *            [9, nonce, id, offset, data]       a chunk of pinned snapshot `id`
 *            [10, nonce, code, leader, message] snapshot save refused (SnapshotCode)
 * Anti-amplification (QUIC, RFC 9000 s.8): to an address that has not proved it
 * receives this node's datagrams (a valid token, or an authenticated request), a
 * node sends at most AMPLIFICATION_FACTOR times the bytes of the request datagram
 * it answers; a reply that would be larger becomes a small 'validate' reply.
 */

export interface OpRequest {
  cid: number;
  seq: number;
  op: Buffer;
}

// Re-exported for the protocol's users; defined, with its reason, in lib/limits.ts.
export { BATCH_OPS_MAX };

/**
 * Before an address is validated, the bytes a node sends it in answer to a
 * request datagram are at most this many times the datagram's bytes (QUIC's
 * factor, RFC 9000 s.8.1): a forged source cannot turn a node into an amplifier.
 */
export const AMPLIFICATION_FACTOR = 3;

/** Bytes of an address token (a truncated HMAC-SHA256: 128 bits cannot be guessed). */
export const TOKEN_BYTES = 16;

/**
 * Bytes of a one-operation request's own CBOR fields, at most: array head 1,
 * type 1, cid 9, seq 9, the operation's byte-string head 3 (it is below 65,536
 * bytes), token 1 + TOKEN_BYTES. With the envelope they must fit in the room
 * OP_BYTES_MAX leaves in a datagram, or a request the client library sends
 * could be dropped as oversized.
 */
const REQUEST_FIELDS_BYTES = 1 + 1 + 9 + 9 + 3 + 1 + TOKEN_BYTES;
if (HEADER_BYTES + TAG_BYTES + REQUEST_FIELDS_BYTES > CLIENT_REQUEST_HEADROOM_BYTES)
  throw new Error('lib/wire/client.ts: a request does not fit CLIENT_REQUEST_HEADROOM_BYTES');

/**
 * Width of a token's time bucket. A token is accepted in its own bucket and the
 * next one, so it lives 1-2 buckets: a client re-validates at most once per
 * bucket, and an address a client has left stays validated for at most 2 buckets.
 */
export const TOKEN_BUCKET_MS = 60_000;

/** A request's address token (present once the client was given one). */
type Token = { token?: Buffer };

/**
 * Bytes a transfer-leader request body is padded to. Its answer is never larger
 * than its request (an operator's command needs no more, and a forged source
 * then draws at most what it sent), so the padding is the answer's room.
 */
export const TRANSFER_REQUEST_BYTES = 200;

/**
 * Bytes the client library pads a status request body to: a node answers a
 * request it cannot read (wrong cluster id, client key) with a refusal only if
 * the refusal is no larger than the request, and an unpadded status request is
 * smaller than any refusal, so a misconfigured client would hear nothing.
 */
export const STATUS_REQUEST_BYTES = 64;

/**
 * How a transfer-leader request ended. ok: `leader` leads (it may have led
 * already); not_leader: ask `leader` (-1: no leader known, retry); unknown_sid:
 * not a member; not_voter: the target does not vote, or the leader has no two-way
 * contact with it; handoff_timeout: the target did not take over in time (not
 * caught up, or cut off), the old leader leads on; in_progress: this request's
 * hand-off, or another, is running (ask the same node again).
 */
export type TransferCode =
  'ok' | 'not_leader' | 'unknown_sid' | 'not_voter' | 'handoff_timeout' | 'in_progress';

const TRANSFER_CODES: ReadonlySet<string> = new Set<TransferCode>([
  'ok',
  'not_leader',
  'unknown_sid',
  'not_voter',
  'handoff_timeout',
  'in_progress',
]);

/**
 * Bytes of snapshot data in one chunk reply: with its fields and the envelope
 * well inside DATAGRAM_BYTES_MAX, and large enough that a save costs few round
 * trips (a chunk reply goes only to a validated address: no amplification).
 */
export const SNAPSHOT_CHUNK_BYTES = 32 * 1024;
if (SNAPSHOT_CHUNK_BYTES + CLIENT_REQUEST_HEADROOM_BYTES > DATAGRAM_BYTES_MAX)
  throw new Error('lib/wire/client.ts: a snapshot chunk does not fit in a datagram');

/** Bytes of a SHA-256 (a snapshot's digest and its state hash). */
export const SNAPSHOT_DIGEST_BYTES = 32;

/**
 * Why a snapshot save request was refused. not_leader: ask `leader` (-1: none
 * known, retry); busy: the node pins as many snapshots as it may, retry later;
 * expired: no such pinned snapshot (idle too long, or the node restarted).
 */
export type SnapshotCode = 'not_leader' | 'busy' | 'expired';

const SNAPSHOT_CODES: ReadonlySet<string> = new Set<SnapshotCode>([
  'not_leader',
  'busy',
  'expired',
]);

export type ClientRequest =
  | ({ t: 'op' } & OpRequest & Token)
  | ({ t: 'ops'; ops: OpRequest[] } & Token)
  | ({ t: 'status'; nonce: number; pad?: boolean } & Token)
  | ({ t: 'transfer'; nonce: number; to: number } & Token)
  | ({ t: 'snapshot'; nonce: number } & Token)
  | ({ t: 'chunk'; nonce: number; id: number; offset: number } & Token);

/**
 * The codes of an error reply, each with what a client may conclude from it:
 * the code is the protocol, the message is for people. The one table of codes:
 * the type and the decoder's check both come from it (dht-rpc's errors.js).
 */
export const ERROR_CODES = {
  /** Not an operation this protocol knows: it never ran. */
  bad_op: 'not a valid operation',
  /** The operation (or its key or value) is above a size limit: it never ran. */
  too_large: 'above a size limit',
  /** The leader could not queue it now (full queue, too many reads): retry. */
  busy: 'leader busy',
  /** The request was not authenticated (no or a wrong client key). */
  auth: 'unauthenticated',
  /** The request carries another cluster's id. */
  wrong_cluster: 'wrong cluster',
} as const;

/** An error reply's code: a typo fails to compile. */
export type ErrorCode = keyof typeof ERROR_CODES;

function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && Object.hasOwn(ERROR_CODES, v);
}

/** A request a validate reply names. */
export interface RequestRef {
  cid: number;
  seq: number;
}

export type ClientReply =
  | { t: 'result'; cid: number; seq: number; result: CmdResult }
  | { t: 'redirect'; cid: number; seq: number; leader: number }
  | { t: 'error'; cid: number; seq: number; code: ErrorCode; message: string }
  | { t: 'status'; nonce: number; status: Record<string, string | number | boolean | null> }
  | { t: 'results'; results: { cid: number; seq: number; result: CmdResult }[] }
  | { t: 'validate'; sid: number; token: Buffer; ops: RequestRef[]; nonce: number | null }
  | { t: 'transfer'; nonce: number; code: TransferCode; leader: number; message: string }
  | {
      t: 'snapinfo';
      nonce: number;
      id: number;
      slot: number;
      hash: Buffer | null;
      bytes: number;
      digest: Buffer;
    }
  | { t: 'snapchunk'; nonce: number; id: number; offset: number; data: Buffer }
  | { t: 'snaperr'; nonce: number; code: SnapshotCode; leader: number; message: string };

/** The reply types that answer a snapshot save's requests (matched by nonce). */
export type SnapshotReply = Extract<ClientReply, { t: 'snapinfo' | 'snapchunk' | 'snaperr' }>;

/**
 * Stateless address validation: a token is an HMAC, under a node's own random
 * secret, of the client's address:port and a coarse time bucket. A node keeps no
 * state per unvalidated address: whoever shows a valid token received it at that
 * address (a forged source never sees the reply that carries it).
 */
export class AddressTokens {
  constructor(
    private readonly secret: Buffer,
    /** Milliseconds since the epoch (injected for tests). */
    private readonly now: () => number = Date.now,
  ) {
    if (secret.length < 16) throw new Error('AddressTokens: the secret must have >= 16 bytes');
  }

  private bucket(): number {
    return Math.floor(this.now() / TOKEN_BUCKET_MS);
  }

  private mac(address: string, port: number, bucket: number): Buffer {
    // Domain-separated, so the secret never signs anything else.
    return createHmac('sha256', this.secret)
      .update(`paxosd-address-token-v1|${address}|${port}|${bucket}`)
      .digest()
      .subarray(0, TOKEN_BYTES);
  }

  /** A token for address:port, valid in this bucket and the next. */
  issue(address: string, port: number): Buffer {
    return this.mac(address, port, this.bucket());
  }

  /** True if `token` was issued by this secret to address:port in this bucket or the last. */
  check(token: Buffer, address: string, port: number): boolean {
    if (token.length !== TOKEN_BYTES) return false;
    const b = this.bucket();
    return (
      timingSafeEqual(this.mac(address, port, b), token) ||
      timingSafeEqual(this.mac(address, port, b - 1), token)
    );
  }
}

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export function encodeRequest(r: ClientRequest): Buffer {
  // The token is a trailing field, sent only when the client holds one.
  const tail = r.token ? [r.token] : [];
  switch (r.t) {
    case 'op':
      return encoder.encode([1, r.cid, r.seq, r.op, ...tail]);
    case 'ops':
      return encoder.encode([3, r.ops.map((o) => [o.cid, o.seq, o.op]), ...tail]);
    case 'status': {
      if (!r.pad) return encoder.encode([2, r.nonce, ...tail]);
      const fields = [2, r.nonce, r.token ?? null];
      return encoder.encode([...fields, padding(fields, STATUS_REQUEST_BYTES)]);
    }
    case 'transfer': {
      // Padded so that the request is TRANSFER_REQUEST_BYTES long (its answer's room).
      const fields = [4, r.nonce, r.to];
      return encoder.encode([...fields, padding(fields, TRANSFER_REQUEST_BYTES), ...tail]);
    }
    case 'snapshot': {
      // Padded as status: a refusal (wrong cluster, client key) must fit its room.
      const fields = [5, r.nonce, r.token ?? null];
      return encoder.encode([...fields, padding(fields, STATUS_REQUEST_BYTES)]);
    }
    case 'chunk':
      return encoder.encode([6, r.nonce, r.id, r.offset, ...tail]);
  }
}

/** A byte string that brings `[...fields, pad]` to about `bytes` bytes (a request's padding). */
function padding(fields: unknown[], bytes: number): Buffer {
  const bare = encoder.encode([...fields, Buffer.alloc(0)]).length;
  // Its length head grows by a byte once it is 24 bytes or more.
  return Buffer.alloc(Math.max(0, bytes - bare - 1));
}

function resultFields(cid: number, seq: number, result: CmdResult): unknown[] {
  return [
    cid,
    seq,
    result.ok,
    result.value === undefined ? null : result.value,
    result.err ?? null,
  ];
}

/** Bytes a result takes in a batch (for packing datagrams; an upper estimate). */
export function resultBytes(result: CmdResult): number {
  return (
    40 + (result.value ? result.value.length * 3 : 0) + (result.err ? result.err.length * 3 : 0)
  );
}

/**
 * Bytes a single-result reply body takes, at most (no encoding: CBOR takes at
 * most 9 bytes per integer and 5 + UTF-8 bytes per string).
 */
export function resultReplyBytesMax(result: CmdResult): number {
  const str = (v: string | null | undefined): number => (v ? 5 + Buffer.byteLength(v) : 1);
  return 2 + 9 + 9 + 1 + str(result.value) + str(result.err);
}

export function encodeReply(r: ClientReply): Buffer {
  switch (r.t) {
    case 'result':
      return encoder.encode([1, ...resultFields(r.cid, r.seq, r.result)]);
    case 'results':
      return encoder.encode([5, r.results.map((x) => resultFields(x.cid, x.seq, x.result))]);
    case 'redirect':
      return encoder.encode([2, r.cid, r.seq, r.leader]);
    case 'error':
      return encoder.encode([3, r.cid, r.seq, r.code, r.message]);
    case 'status': {
      const flat: unknown[] = [];
      for (const [k, v] of Object.entries(r.status)) flat.push(k, v);
      return encoder.encode([4, r.nonce, flat]);
    }
    case 'validate':
      return encoder.encode([6, r.sid, r.token, r.ops.map((o) => [o.cid, o.seq]), r.nonce]);
    case 'transfer':
      return encoder.encode([7, r.nonce, r.code, r.leader, r.message]);
    case 'snapinfo':
      return encoder.encode([8, r.nonce, r.id, r.slot, r.hash, r.bytes, r.digest]);
    case 'snapchunk':
      return encoder.encode([9, r.nonce, r.id, r.offset, r.data]);
    case 'snaperr':
      return encoder.encode([10, r.nonce, r.code, r.leader, r.message]);
  }
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function decodeArray(body: Uint8Array): unknown[] | string {
  const refused = scanCbor(body, CLIENT_CBOR_DEPTH_MAX);
  if (refused) return `cbor_${refused}`;
  let raw: unknown;
  try {
    raw = decoder.decode(body);
  } catch {
    return 'cbor';
  }
  return Array.isArray(raw) ? raw : 'not_array';
}

/** The optional trailing token of a request with `fields` fields before it. */
function tokenOf(a: unknown[], fields: number): Token | null {
  if (a.length === fields) return {};
  if (a.length !== fields + 1) return null;
  const tok = a[fields];
  return Buffer.isBuffer(tok) && tok.length === TOKEN_BYTES ? { token: tok } : null;
}

export function decodeRequest(body: Uint8Array): ClientRequest | { error: string } {
  const a = decodeArray(body);
  if (typeof a === 'string') return { error: a };
  if (a[0] === 1 && (a.length === 4 || a.length === 5)) {
    const tok = tokenOf(a, 4);
    if (!isUint(a[1]) || !isUint(a[2]) || a[2] < 1 || !Buffer.isBuffer(a[3]) || !tok)
      return { error: 'field' };
    return { t: 'op', cid: a[1], seq: a[2], op: a[3], ...tok };
  }
  if (a[0] === 2 && (a.length === 2 || a.length === 3) && isUint(a[1])) {
    const tok = tokenOf(a, 2);
    return tok ? { t: 'status', nonce: a[1], ...tok } : { error: 'field' };
  }
  if (a[0] === 2 && a.length === 4 && isUint(a[1]) && Buffer.isBuffer(a[3])) {
    const tok = a[2] === null ? {} : tokenOf(a.slice(0, 3), 2);
    return tok ? { t: 'status', nonce: a[1], ...tok } : { error: 'field' };
  }
  if (a[0] === 4 && (a.length === 4 || a.length === 5)) {
    const tok = tokenOf(a, 4);
    if (!isUint(a[1]) || !isUint(a[2]) || !Buffer.isBuffer(a[3]) || !tok) return { error: 'field' };
    return { t: 'transfer', nonce: a[1], to: a[2], ...tok };
  }
  if (a[0] === 5 && a.length === 4 && isUint(a[1]) && Buffer.isBuffer(a[3])) {
    const tok = a[2] === null ? {} : tokenOf(a.slice(0, 3), 2);
    return tok ? { t: 'snapshot', nonce: a[1], ...tok } : { error: 'field' };
  }
  if (a[0] === 6 && (a.length === 4 || a.length === 5)) {
    const tok = tokenOf(a, 4);
    if (!isUint(a[1]) || !isUint(a[2]) || !isUint(a[3]) || !tok) return { error: 'field' };
    return { t: 'chunk', nonce: a[1], id: a[2], offset: a[3], ...tok };
  }
  if (a[0] === 3 && (a.length === 2 || a.length === 3) && Array.isArray(a[1])) {
    const tok = tokenOf(a, 2);
    if (!tok) return { error: 'field' };
    const list = a[1] as unknown[];
    if (list.length < 1 || list.length > BATCH_OPS_MAX) return { error: 'batch_size' };
    const ops: OpRequest[] = [];
    for (const item of list) {
      if (!Array.isArray(item) || item.length !== 3) return { error: 'field' };
      const [cid, seq, op] = item as unknown[];
      if (!isUint(cid) || !isUint(seq) || seq < 1 || !Buffer.isBuffer(op))
        return { error: 'field' };
      ops.push({ cid, seq, op });
    }
    return { t: 'ops', ops, ...tok };
  }
  return { error: 'unknown_type' };
}

function decodeResult(a: unknown[]): { cid: number; seq: number; result: CmdResult } | null {
  if (a.length !== 5 || !isUint(a[0]) || !isUint(a[1]) || typeof a[2] !== 'boolean') return null;
  const result: CmdResult = { ok: a[2] };
  if (typeof a[3] === 'string' || a[3] === null) result.value = a[3];
  if (typeof a[4] === 'string') result.err = a[4];
  return { cid: a[0], seq: a[1], result };
}

export function decodeReply(body: Uint8Array): ClientReply | { error: string } {
  const a = decodeArray(body);
  if (typeof a === 'string') return { error: a };
  switch (a[0]) {
    case 1: {
      const r = decodeResult(a.slice(1));
      return r ? { t: 'result', ...r } : { error: 'field' };
    }
    case 5: {
      if (a.length !== 2 || !Array.isArray(a[1])) return { error: 'field' };
      const results: { cid: number; seq: number; result: CmdResult }[] = [];
      for (const item of a[1] as unknown[]) {
        const r = Array.isArray(item) ? decodeResult(item) : null;
        if (!r) return { error: 'field' };
        results.push(r);
      }
      return { t: 'results', results };
    }
    case 2:
      if (a.length !== 4 || !isUint(a[1]) || !isUint(a[2]) || !Number.isInteger(a[3]))
        return { error: 'field' };
      return { t: 'redirect', cid: a[1], seq: a[2], leader: a[3] as number };
    case 3:
      if (a.length !== 5 || !isUint(a[1]) || !isUint(a[2]) || !isErrorCode(a[3]))
        return { error: 'field' };
      return { t: 'error', cid: a[1], seq: a[2], code: a[3], message: String(a[4]) };
    case 4: {
      if (a.length !== 3 || !isUint(a[1]) || !Array.isArray(a[2])) return { error: 'field' };
      const status: Record<string, string | number | boolean | null> = Object.create(null);
      const flat = a[2] as unknown[];
      for (let i = 0; i + 1 < flat.length && i < 64; i += 2) {
        const v = flat[i + 1];
        if (
          typeof flat[i] === 'string' &&
          (v === null || ['string', 'number', 'boolean'].includes(typeof v))
        )
          status[flat[i] as string] = v as string | number | boolean | null;
      }
      return { t: 'status', nonce: a[1], status };
    }
    case 6: {
      if (
        a.length !== 5 ||
        !isUint(a[1]) ||
        !Buffer.isBuffer(a[2]) ||
        a[2].length !== TOKEN_BYTES ||
        !Array.isArray(a[3]) ||
        (a[4] !== null && !isUint(a[4]))
      )
        return { error: 'field' };
      const ops: RequestRef[] = [];
      for (const item of a[3] as unknown[]) {
        if (!Array.isArray(item) || item.length !== 2 || !isUint(item[0]) || !isUint(item[1]))
          return { error: 'field' };
        ops.push({ cid: item[0], seq: item[1] });
      }
      return { t: 'validate', sid: a[1], token: a[2], ops, nonce: a[4] as number | null };
    }
    case 7:
      if (
        a.length !== 5 ||
        !isUint(a[1]) ||
        typeof a[2] !== 'string' ||
        !TRANSFER_CODES.has(a[2]) ||
        !Number.isInteger(a[3]) ||
        typeof a[4] !== 'string'
      )
        return { error: 'field' };
      return {
        t: 'transfer',
        nonce: a[1],
        code: a[2] as TransferCode,
        leader: a[3] as number,
        message: a[4],
      };
    case 8:
    case 9:
    case 10:
      return decodeSnapshotReply(a);
    default:
      return { error: 'unknown_type' };
  }
}

function isDigest(v: unknown): v is Buffer {
  return Buffer.isBuffer(v) && v.length === SNAPSHOT_DIGEST_BYTES;
}

/** Reply types 8-10 (snapshot save); the shape of each field is checked. */
function decodeSnapshotReply(a: unknown[]): SnapshotReply | { error: string } {
  if (a.length < 5 || !isUint(a[1])) return { error: 'field' };
  const nonce = a[1];
  if (a[0] === 8) {
    if (a.length !== 7 || !isUint(a[2]) || !isUint(a[3]) || !isUint(a[5]) || !isDigest(a[6]))
      return { error: 'field' };
    if (a[4] !== null && !isDigest(a[4])) return { error: 'field' };
    return { t: 'snapinfo', nonce, id: a[2], slot: a[3], hash: a[4], bytes: a[5], digest: a[6] };
  }
  if (a[0] === 9) {
    if (!isUint(a[2]) || !isUint(a[3]) || !Buffer.isBuffer(a[4])) return { error: 'field' };
    return { t: 'snapchunk', nonce, id: a[2], offset: a[3], data: a[4] };
  }
  if (
    typeof a[2] !== 'string' ||
    !SNAPSHOT_CODES.has(a[2]) ||
    !Number.isInteger(a[3]) ||
    typeof a[4] !== 'string'
  )
    return { error: 'field' };
  return {
    t: 'snaperr',
    nonce,
    code: a[2] as SnapshotCode,
    leader: a[3] as number,
    message: a[4],
  };
}
