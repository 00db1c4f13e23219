/**
 * Limits that more than one layer relies on, in one place (like TigerBeetle's
 * constants.zig): each with its unit last and a one-line reason, and the
 * relations between them asserted when this module loads, so that a change
 * that breaks one fails at startup (and in every test) instead of in the field.
 *
 * Every `_MAX` of lib/ outside the simulator is defined here, once, even when
 * one module alone uses it: a reader looking for a bound looks in one file. The
 * per-node tunables are the config's `limits` section (lib/io/config.ts),
 * bounded by the values here; the simulator's own invariant bounds (how long
 * liveness may take after a heal) stay in lib/sim/cluster.ts.
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

/**
 * Room in a client request datagram kept for what is not the operation: the
 * envelope (10 header + 32 HMAC tag bytes) and the request's own CBOR fields
 * (type, cid, seq, the byte-string head and the 16-byte token: at most 40).
 * lib/wire/client.ts asserts that these fit.
 */
export const CLIENT_REQUEST_HEADROOM_BYTES = 200;

/**
 * Largest encoded operation (a command's bytes), and the bytes of operations
 * one request datagram carries. One value for client and server: the server
 * could not receive a larger one (its datagram would be over DATAGRAM_BYTES_MAX
 * and dropped unanswered, so the client would learn nothing but a timeout), so
 * the client library refuses exactly what the state machine's parser refuses,
 * as `too_large`, before sending. (Was 65,000 in lib/sm/kv.ts, which no
 * datagram could reach, and 64,800 in lib/client.ts.)
 */
export const OP_BYTES_MAX = DATAGRAM_BYTES_MAX - CLIENT_REQUEST_HEADROOM_BYTES;

/** Largest key, in UTF-8 bytes (a protocol constant: every replica refuses alike). */
export const KEY_BYTES_MAX = 1024;

/** Largest sessionsMax a `limits` command may record (else it is ignored, everywhere). */
export const SESSIONS_MAX_MAX = 10_000_000;

/** Deepest CBOR nesting of an operation (an array of scalars: 2). */
export const OP_CBOR_DEPTH_MAX = 2;

/** Deepest CBOR nesting of a client request or reply (a batch of ops, each an array: 4). */
export const CLIENT_CBOR_DEPTH_MAX = 4;

/** Deepest CBOR nesting of a valid peer message (promise entries: 5). */
export const PEER_CBOR_DEPTH_MAX = 8;

/** Older snapshots a replica keeps for peers still fetching them (memory bound). */
export const SNAPSHOTS_PINNED_MAX = 2;

/**
 * Snapshot saves (paxos-client snapshot save) a node serves at once: each pins
 * one copy of the state machine's snapshot in memory until done or idle.
 */
export const BACKUPS_PINNED_MAX = 2;

/**
 * Largest snapshot the client library saves by default (a save holds it in
 * memory, then writes it); above it the save stops with 'too_large'.
 */
export const SNAPSHOT_SAVE_BYTES_MAX = 1024 * 1024 * 1024;

/** Lives of a peer remembered for heartbeat echoes: a re-delivered copy from one of them is no news. */
export const ECHO_LIVES_MAX = 4;

/**
 * Chosen slots a replica keeps below a snapshot by default (half a snapshot
 * interval, at most this many), so slightly lagging peers catch up without it.
 */
export const KEEP_SLOTS_MAX = 100;

/** Client sources (address:port) the daemon's rate limiter tracks at once. */
export const RATE_LIMITED_SOURCES_MAX = 10_000;

/** (Drop reason, source) pairs whose last log line the daemon remembers at once. */
export const DROP_LOG_KEYS_MAX = 1_000;

/** Client requests whose latency the metrics time at once (oldest forgotten first). */
export const TIMED_REQUESTS_MAX = 10_000;

/** Bytes of order-log lines held in memory while the file cannot be written. */
export const ORDER_LOG_PENDING_BYTES_MAX = 64 * 1024 * 1024;

/** Smallest server id. */
export const SID_MIN = 0;

/**
 * Largest server id. Ballots pack (round, sid) as round * SID_LIMIT + sid
 * (lib/core/ballot.ts), so a sid must stay below SID_LIMIT or two ballots collide.
 */
export const SID_MAX = 255;

/**
 * Alpha of the membership window: a configuration applied at slot i governs
 * slots from i + ALPHA_SLOTS on. A leader proposes at most this far beyond its
 * applied prefix, so it is also a pipelining bound (above any window in use).
 * A protocol constant: every node of a cluster must use the same.
 */
export const ALPHA_SLOTS = 256;

/** Servers in one cluster: each needs its own sid. */
export const SERVERS_MAX = 255;

/** The limits whose relations limitViolations checks. */
export interface LimitValues {
  datagramBytesMax: number;
  payloadBytesMax: number;
  cborArrayItemsMax: number;
  recordBytesMax: number;
  opBytesMax: number;
  keyBytesMax: number;
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
  check(l.opBytesMax < l.datagramBytesMax, 'OP_BYTES_MAX < DATAGRAM_BYTES_MAX');
  // The config bounds valueBytesMax by PAYLOAD_BYTES_MAX and a `limits` command
  // by OP_BYTES_MAX: every value a config admits must be a valid `limits` value.
  check(l.payloadBytesMax <= l.opBytesMax, 'PAYLOAD_BYTES_MAX <= OP_BYTES_MAX');
  // An operation holds its key.
  check(l.keyBytesMax < l.opBytesMax, 'KEY_BYTES_MAX < OP_BYTES_MAX');
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
  opBytesMax: OP_BYTES_MAX,
  keyBytesMax: KEY_BYTES_MAX,
  batchOpsMax: BATCH_OPS_MAX,
  sidMin: SID_MIN,
  sidMax: SID_MAX,
  sidLimit: SID_LIMIT,
  serversMax: SERVERS_MAX,
});

const broken = limitViolations(LIMITS);
if (broken.length > 0) throw new Error(`lib/limits.ts: broken: ${broken.join('; ')}`);
