import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32c } from '../io/crc32c';
import { DATAGRAM_BYTES_MAX, DATAGRAM_HEADROOM_BYTES } from '../limits';

/**
 * Every datagram, peer or client, starts with this fixed header:
 *   0-1 magic "PX" | 2 version | 3 kind | 4-7 cluster tag (crc32c of the cluster id)
 *   8 flags (bit 0: an HMAC-SHA256 tag follows) | 9 reserved (0)
 *   [10-41 tag]    | CBOR body
 * The tag covers the 10 header bytes and the body. It is checked before the body
 * is decoded, so unauthenticated bytes never reach the CBOR decoder.
 */
export const HEADER_BYTES = 10;
/** HMAC-SHA256 output. */
export const TAG_BYTES = 32;
/** A node drops a datagram of another version ('bad_version'): no mixed-version cluster. */
export const WIRE_VERSION = 1;
// Re-exported for the envelope's users; defined, with its reason, in lib/limits.ts.
export { DATAGRAM_BYTES_MAX };

// The envelope must fit in the room a datagram keeps besides its payload.
if (HEADER_BYTES + TAG_BYTES >= DATAGRAM_HEADROOM_BYTES) {
  throw new Error('lib/wire/envelope.ts: HEADER_BYTES + TAG_BYTES >= DATAGRAM_HEADROOM_BYTES');
}

/**
 * What the body is. Checked before decoding so that a peer message can never be
 * taken for a client request (or a reply reflected back as one).
 */
export const enum Kind {
  Peer = 1,
  ClientRequest = 2,
  ClientReply = 3,
}

const FLAG_TAG = 1;

/**
 * The 4-byte id of a cluster in every header, so that a datagram for another
 * cluster (a misconfigured node or client) is dropped before decoding. A guard
 * against mistakes, not attackers: that is the HMAC's job.
 */
export function clusterTag(clusterId: string): number {
  return crc32c(Buffer.from(clusterId, 'utf8'));
}

/**
 * Keys for HMAC. Sends with the first; accepts any (two during a rotation).
 * An empty key list means "no authentication" (tests and the insecure mode).
 */
export class Keyring {
  constructor(readonly keys: Buffer[]) {}
  get enabled(): boolean {
    return this.keys.length > 0;
  }
}

/** No authentication (tests and the insecure mode). */
export const NO_KEYS = new Keyring([]);

function mac(key: Buffer, header: Buffer, body: Uint8Array): Buffer {
  return createHmac('sha256', key).update(header).update(body).digest();
}

/**
 * The datagram for `body`: header, then (when `keys` is enabled) the tag made
 * with the first key. open() drops a datagram over DATAGRAM_BYTES_MAX, so
 * senders bound their bodies (lib/limits.ts).
 */
export function seal(kind: Kind, cluster: number, body: Uint8Array, keys: Keyring): Buffer {
  const tagged = keys.enabled;
  const out = Buffer.allocUnsafe(HEADER_BYTES + (tagged ? TAG_BYTES : 0) + body.length);
  out[0] = 0x50;
  out[1] = 0x58;
  out[2] = WIRE_VERSION;
  out[3] = kind;
  out.writeUInt32LE(cluster, 4);
  out[8] = tagged ? FLAG_TAG : 0;
  out[9] = 0;
  let at = HEADER_BYTES;
  if (tagged) {
    mac(keys.keys[0], out.subarray(0, HEADER_BYTES), body).copy(out, at);
    at += TAG_BYTES;
  }
  out.set(body, at);
  return out;
}

/** open()'s answer: the body, or a drop reason (a short snake_case word, counted in status). */
export type Opened = { body: Buffer } | { error: string };

/** Check header and tag; return the body bytes or why the datagram is dropped. */
export function open(buf: Buffer, kind: Kind, cluster: number, keys: Keyring): Opened {
  if (buf.length < HEADER_BYTES + 1) return { error: 'short' };
  if (buf.length > DATAGRAM_BYTES_MAX) return { error: 'oversized' };
  if (buf[0] !== 0x50 || buf[1] !== 0x58) return { error: 'bad_magic' };
  if (buf[2] !== WIRE_VERSION) return { error: 'bad_version' };
  if (buf[3] !== kind) return { error: 'wrong_kind' };
  if (buf.readUInt32LE(4) !== cluster) return { error: 'wrong_cluster' };
  const tagged = (buf[8] & FLAG_TAG) !== 0;
  if ((buf[8] & ~FLAG_TAG) !== 0 || buf[9] !== 0) return { error: 'bad_flags' };
  if (!keys.enabled) {
    if (tagged) return { error: 'unexpected_tag' };
    return { body: buf.subarray(HEADER_BYTES) };
  }
  if (!tagged) return { error: 'missing_tag' };
  if (buf.length < HEADER_BYTES + TAG_BYTES + 1) return { error: 'short' };
  const header = buf.subarray(0, HEADER_BYTES);
  const tag = buf.subarray(HEADER_BYTES, HEADER_BYTES + TAG_BYTES);
  const body = buf.subarray(HEADER_BYTES + TAG_BYTES);
  for (const key of keys.keys) if (timingSafeEqual(mac(key, header, body), tag)) return { body };
  return { error: 'bad_tag' };
}
