import { Decoder, Encoder } from 'cbor-x';
import type { CmdResult } from '../core/types';
import { scanCbor } from './scan';

/*
 * Client protocol bodies (inside the envelope, kinds ClientRequest/ClientReply):
 *   request  [1, cid, seq, opBytes]         one operation
 *            [2, nonce]                     status
 *   reply    [1, cid, seq, ok, value, err]  result (value/err may be null)
 *            [2, cid, seq, leaderSid]       redirect (-1: leader unknown)
 *            [3, cid, seq, code, message]   error (busy, bad_op, too_large, ...)
 *            [4, nonce, status]             status (a small map of scalars)
 * Replies to unauthenticated requests are never larger than the request except
 * results and status, which only authenticated (or trusted-network) clients get.
 */

export type ClientRequest =
  { t: 'op'; cid: number; seq: number; op: Buffer } | { t: 'status'; nonce: number };

export type ClientReply =
  | { t: 'result'; cid: number; seq: number; result: CmdResult }
  | { t: 'redirect'; cid: number; seq: number; leader: number }
  | { t: 'error'; cid: number; seq: number; code: string; message: string }
  | { t: 'status'; nonce: number; status: Record<string, string | number | boolean | null> };

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export function encodeRequest(r: ClientRequest): Buffer {
  return r.t === 'op' ? encoder.encode([1, r.cid, r.seq, r.op]) : encoder.encode([2, r.nonce]);
}

export function encodeReply(r: ClientReply): Buffer {
  switch (r.t) {
    case 'result':
      return encoder.encode([
        1,
        r.cid,
        r.seq,
        r.result.ok,
        r.result.value === undefined ? null : r.result.value,
        r.result.err ?? null,
      ]);
    case 'redirect':
      return encoder.encode([2, r.cid, r.seq, r.leader]);
    case 'error':
      return encoder.encode([3, r.cid, r.seq, r.code, r.message]);
    case 'status': {
      const flat: unknown[] = [];
      for (const [k, v] of Object.entries(r.status)) flat.push(k, v);
      return encoder.encode([4, r.nonce, flat]);
    }
  }
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function decodeArray(body: Uint8Array): unknown[] | string {
  const refused = scanCbor(body, 4);
  if (refused) return `cbor_${refused}`;
  let raw: unknown;
  try {
    raw = decoder.decode(body);
  } catch {
    return 'cbor';
  }
  return Array.isArray(raw) ? raw : 'not_array';
}

export function decodeRequest(body: Uint8Array): ClientRequest | { error: string } {
  const a = decodeArray(body);
  if (typeof a === 'string') return { error: a };
  if (a[0] === 1 && a.length === 4) {
    if (!isUint(a[1]) || !isUint(a[2]) || a[2] < 1 || !Buffer.isBuffer(a[3]))
      return { error: 'field' };
    return { t: 'op', cid: a[1], seq: a[2], op: a[3] };
  }
  if (a[0] === 2 && a.length === 2 && isUint(a[1])) return { t: 'status', nonce: a[1] };
  return { error: 'unknown_type' };
}

export function decodeReply(body: Uint8Array): ClientReply | { error: string } {
  const a = decodeArray(body);
  if (typeof a === 'string') return { error: a };
  switch (a[0]) {
    case 1: {
      if (a.length !== 6 || !isUint(a[1]) || !isUint(a[2]) || typeof a[3] !== 'boolean')
        return { error: 'field' };
      const result: CmdResult = { ok: a[3] };
      if (typeof a[4] === 'string' || a[4] === null) result.value = a[4];
      if (typeof a[5] === 'string') result.err = a[5];
      return { t: 'result', cid: a[1], seq: a[2], result };
    }
    case 2:
      if (a.length !== 4 || !isUint(a[1]) || !isUint(a[2]) || !Number.isInteger(a[3]))
        return { error: 'field' };
      return { t: 'redirect', cid: a[1], seq: a[2], leader: a[3] as number };
    case 3:
      if (a.length !== 5 || !isUint(a[1]) || !isUint(a[2]) || typeof a[3] !== 'string')
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
    default:
      return { error: 'unknown_type' };
  }
}
