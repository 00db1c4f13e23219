import { Decoder, Encoder } from 'cbor-x';
import type { CmdResult } from '../core/types';
import { scanCbor } from './scan';

/*
 * Client protocol bodies (inside the envelope, kinds ClientRequest/ClientReply):
 *   request  [1, cid, seq, opBytes]         one operation
 *            [2, nonce]                     status
 *            [3, [[cid, seq, opBytes], ...]] several operations (one datagram)
 *   reply    [1, cid, seq, ok, value, err]  result (value/err may be null)
 *            [2, cid, seq, leaderSid]       redirect (-1: leader unknown)
 *            [3, cid, seq, code, message]   error (busy, bad_op, too_large, ...)
 *            [4, nonce, status]             status (a small map of scalars)
 *            [5, [[cid, seq, ok, value, err], ...]] several results (one datagram)
 * Replies to unauthenticated requests are never larger than the request except
 * results and status, which only authenticated (or trusted-network) clients get.
 */

export interface OpRequest {
  cid: number;
  seq: number;
  op: Buffer;
}

/** Most operations one request datagram may carry. */
export const BATCH_OPS_MAX = 256;

export type ClientRequest =
  ({ t: 'op' } & OpRequest) | { t: 'ops'; ops: OpRequest[] } | { t: 'status'; nonce: number };

export type ClientReply =
  | { t: 'result'; cid: number; seq: number; result: CmdResult }
  | { t: 'redirect'; cid: number; seq: number; leader: number }
  | { t: 'error'; cid: number; seq: number; code: string; message: string }
  | { t: 'status'; nonce: number; status: Record<string, string | number | boolean | null> }
  | { t: 'results'; results: { cid: number; seq: number; result: CmdResult }[] };

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export function encodeRequest(r: ClientRequest): Buffer {
  switch (r.t) {
    case 'op':
      return encoder.encode([1, r.cid, r.seq, r.op]);
    case 'ops':
      return encoder.encode([3, r.ops.map((o) => [o.cid, o.seq, o.op])]);
    case 'status':
      return encoder.encode([2, r.nonce]);
  }
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
  if (a[0] === 3 && a.length === 2 && Array.isArray(a[1])) {
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
    return { t: 'ops', ops };
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
