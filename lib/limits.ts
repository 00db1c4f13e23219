/**
 * Limits that more than one layer relies on, in one place (like TigerBeetle's
 * constants.zig): each with its unit last and a one-line reason, and the
 * relations between them asserted when this module loads, so that a change
 * that breaks one fails at startup (and in every test) instead of in the field.
 *
 * Limits private to one module, with no relation to another layer's, stay
 * there (e.g. DEPTH_MAX in lib/wire/peer.ts, ORDER_LOG_PENDING_BYTES_MAX in
 * lib/io/orderlog.ts); the per-node tunables are the config's `limits`
 * section (lib/io/config.ts), bounded by the values here.
 *
 * This module imports nothing impure, so any layer (the core included) may use it.
 */

import { SID_LIMIT } from './core/ballot';

/** Largest UDP payload over IPv4 (65,535 - 8 UDP header - 20 IP header): the hard ceiling. */
export const UDP_IPV4_PAYLOAD_BYTES_MAX = 65_507;

/**
 * Largest datagram, peer or client, that is sent or accepted (the envelope drops
 * a bigger one as 'oversized'). Below the UDP ceiling with a margin for IP options.
 */
export const DATAGRAM_BYTES_MAX = 65_000;

/**
 * Room in a datagram kept for what is not payload: the envelope (header and
 * HMAC tag), a message's own fields and the CBOR framing of each command, which
 * the byte budgets only estimate.
 */
export const DATAGRAM_HEADROOM_BYTES = 5_000;

/**
 * Largest byte budget for what one peer message carries: the upper bound of the
 * config's batchBytesMax, valueBytesMax and catchupBytesMax, so that a full
 * batch, value or catch-up chunk still fits in one datagram with its headroom.
 */
export const PAYLOAD_BYTES_MAX = DATAGRAM_BYTES_MAX - DATAGRAM_HEADROOM_BYTES;

/**
 * Items in one decoded CBOR array or map (cbor-x's global size limit, set by
 * lib/wire/peer.ts): hostile sizes fail fast instead of allocating. No array in
 * a datagram can be longer than the datagram has bytes.
 */
export const CBOR_ARRAY_ITEMS_MAX = 70_000;

/**
 * Largest payload of one write-ahead-log record (lib/io/recordlog.ts refuses a
 * larger one). A record holds at most one slot's value, which travelled in one
 * datagram, so any value the wire carries must fit.
 */
export const RECORD_BYTES_MAX = 8 * 1024 * 1024;

/**
 * Operations in one client request datagram (lib/wire/client.ts refuses more;
 * the client library and the daemon split longer lists at this size).
 */
export const BATCH_OPS_MAX = 256;

/** Smallest server id. */
export const SID_MIN = 0;

/**
 * Largest server id. Ballots pack (round, sid) as round * SID_LIMIT + sid
 * (lib/core/ballot.ts), so a sid must stay below SID_LIMIT or two ballots collide.
 */
export const SID_MAX = 255;

/** Servers in one cluster: each needs its own sid. */
export const SERVERS_MAX = 255;

/** The limits whose relations limitViolations checks. */
export interface LimitValues {
  datagramBytesMax: number;
  payloadBytesMax: number;
  cborArrayItemsMax: number;
  recordBytesMax: number;
  batchOpsMax: number;
  sidMin: number;
  sidMax: number;
  sidLimit: number;
  serversMax: number;
}

/** The relations between the limits that break nothing when they hold; each broken one, named. */
export function limitViolations(l: LimitValues): string[] {
  const broken: string[] = [];
  const check = (ok: boolean, relation: string) => ok || broken.push(relation);
  check(
    l.datagramBytesMax <= UDP_IPV4_PAYLOAD_BYTES_MAX,
    'DATAGRAM_BYTES_MAX <= UDP_IPV4_PAYLOAD_BYTES_MAX',
  );
  check(l.payloadBytesMax > 0, 'PAYLOAD_BYTES_MAX > 0');
  check(l.payloadBytesMax < l.datagramBytesMax, 'PAYLOAD_BYTES_MAX < DATAGRAM_BYTES_MAX');
  // An array of n items takes at least n bytes.
  check(l.cborArrayItemsMax >= l.datagramBytesMax, 'CBOR_ARRAY_ITEMS_MAX >= DATAGRAM_BYTES_MAX');
  check(l.recordBytesMax >= l.datagramBytesMax, 'RECORD_BYTES_MAX >= DATAGRAM_BYTES_MAX');
  // A batch is one CBOR array: the decoder's cap must admit a full one.
  check(l.batchOpsMax <= l.cborArrayItemsMax, 'BATCH_OPS_MAX <= CBOR_ARRAY_ITEMS_MAX');
  check(0 <= l.sidMin && l.sidMin <= l.sidMax, '0 <= SID_MIN <= SID_MAX');
  // A sid of SID_LIMIT would carry into the round: ballot (r, SID_LIMIT) = (r + 1, 0).
  check(l.sidMax < l.sidLimit, 'SID_MAX < SID_LIMIT');
  check(l.serversMax <= l.sidMax - l.sidMin + 1, 'SERVERS_MAX <= SID_MAX - SID_MIN + 1');
  return broken;
}

/** The limits in force. */
export const LIMITS: Readonly<LimitValues> = Object.freeze({
  datagramBytesMax: DATAGRAM_BYTES_MAX,
  payloadBytesMax: PAYLOAD_BYTES_MAX,
  cborArrayItemsMax: CBOR_ARRAY_ITEMS_MAX,
  recordBytesMax: RECORD_BYTES_MAX,
  batchOpsMax: BATCH_OPS_MAX,
  sidMin: SID_MIN,
  sidMax: SID_MAX,
  sidLimit: SID_LIMIT,
  serversMax: SERVERS_MAX,
});

const broken = limitViolations(LIMITS);
if (broken.length > 0) throw new Error(`lib/limits.ts: broken: ${broken.join('; ')}`);
