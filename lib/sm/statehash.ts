import { hash as sha } from 'node:crypto';
import type { Cmd, CmdResult, StateDigest } from '../core/types';

/** Recent (slot, hash) pairs kept, so that peers a little behind or ahead can be compared. */
export const STATE_HASH_RING = 1024;

/** Every this many slots the order log carries the rolling hash on a line of its own. */
export const ORDER_LOG_HASH_EVERY = 1000;

/** h(0): the hash of the empty log, the same on every node. */
export const GENESIS_HASH: Uint8Array = new Uint8Array(32);

/** Hex of bytes (for log lines and events). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

/** Where the previous hash ends in the bytes each step hashes (h(slot-1) comes first). */
const PREV_END = 32;

/** Bytes of a command's header in the hashed encoding: cid, seq, op length, shape, value and err lengths. */
const HEAD_BYTES = 8 + 8 + 4 + 1 + 4 + 4;

/**
 * Writes the bytes of one command and its result that the hashes cover into
 * `buf` at `at` (which must have room: see commandBytesMax): cid, seq, the
 * command's bytes and the result's fields, each length-prefixed (no two
 * different (command, result) pairs give the same bytes). Returns the end.
 */
export function writeCommand(s: Scratch, at: number, c: Cmd, r: CmdResult): number {
  const { buf, view } = s;
  const value = r.value === undefined || r.value === null ? null : r.value;
  view.setFloat64(at, c.cid);
  view.setFloat64(at + 8, c.seq);
  view.setUint32(at + 16, c.op.length);
  // ok, value present, value null, err present: the result's shape.
  view.setUint8(
    at + 20,
    (r.ok ? 1 : 0) |
      (r.value !== undefined ? 2 : 0) |
      (r.value === null ? 4 : 0) |
      (r.err !== undefined ? 8 : 0),
  );
  let end = at + HEAD_BYTES;
  buf.set(c.op, end);
  end += c.op.length;
  const vlen = value === null ? 0 : buf.write(value, end, 'utf8');
  view.setUint32(at + 21, vlen);
  end += vlen;
  const elen = r.err === undefined ? 0 : buf.write(r.err, end, 'utf8');
  view.setUint32(at + 25, elen);
  return end + elen;
}

/**
 * Where a slot's bytes are written: the buffer and a big-endian view of the
 * same memory (DataView writes compile to a few instructions; Buffer's
 * write*BE methods check their arguments on every call).
 */
export interface Scratch {
  buf: Buffer;
  view: DataView;
}

function scratch(bytes: number): Scratch {
  const buf = Buffer.allocUnsafeSlow(bytes);
  return { buf, view: new DataView(buf.buffer, buf.byteOffset, buf.length) };
}

/** Room writeCommand needs at most (a UTF-16 unit takes at most 3 UTF-8 bytes). */
export function commandBytesMax(c: Cmd, r: CmdResult): number {
  return HEAD_BYTES + c.op.length + 3 * ((r.value?.length ?? 0) + (r.err?.length ?? 0));
}

/**
 * Versions of the order-log line digest. Version 1 (FNV-1a, a byte at a time)
 * is what builds before versions wrote, as " [16 hex digits]"; version 2
 * (murmur3-style, 4 bytes at a time: 71 ns for a bench command of 105 bytes
 * where version 1 takes 119, scripts/bench-hash-micro.js) is written as
 * " [v2:16 hex digits]". A line's digest depends on that line's
 * command and result only (no chain), so each node writes the version its
 * build writes, and paxos-logcmp compares the digests of two lines only when
 * their versions are equal (others by their readable text, and says so).
 * The rolling state hash (SHA-256, below) has one version, unchanged.
 */
export type LineDigestVersion = 1 | 2;

/** The line digest version this build writes. */
export const LINE_DIGEST_VERSION: LineDigestVersion = 2;

/** Every line digest version this build can make (the micro-benchmark and tests make each). */
export const LINE_DIGEST_VERSIONS: readonly LineDigestVersion[] = [1, 2];

/**
 * A command's version-1 order-log digest over buf[from, to): 64 bits (two
 * 32-bit FNV-1a lanes with different primes, then a murmur3 finalizer each),
 * as 16 hex digits. Not cryptographic: it finds accidental differences
 * between logs line by line; the periodic state-hash lines (SHA-256) are the
 * strong check. A SHA-256 per command would cost more than applying the
 * command.
 */
export function lineDigest(buf: Uint8Array, from: number, to: number): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = from; i < to; i++) {
    const x = buf[i];
    a = Math.imul(a ^ x, 0x01000193);
    b = Math.imul(b ^ x, 0x5bd1e995);
  }
  return hex64(fmix(a), fmix(b ^ a));
}

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/**
 * A command's version-2 order-log digest over the bytes [from, to) of `view`:
 * 64 bits, as 16 hex digits, computed 4 bytes at a time. With n = to - from,
 * k_i the i-th little-endian 32-bit word (the last one, if n is not a
 * multiple of 4, padded with zero bytes; no word when n = 0 is a multiple):
 *   lane a (murmur3's x86_32 constants), from a = 0x811c9dc5 ^ n:
 *     a = rotl(a ^ (rotl(k_i * 0xcc9e2d51, 15) * 0x1b873593), 13) * 5 + 0xe6546b64
 *   lane b (other constants and rotations), from b = 0x9747b28c ^ n:
 *     b = rotl(b ^ (rotl(k_i * 0x85ebca6b, 17) * 0xc2b2ae35), 15) * 9 + 0x38495ab5
 * for each whole word; a partial last word only enters each lane by the xor
 * (as in murmur3's tail); all arithmetic mod 2^32. The digest is fmix(a),
 * fmix(b ^ a) (murmur3's finalizer), hex, big-endian. Both lanes read every
 * word, so a difference anywhere changes both. Not cryptographic, like
 * version 1; test/statehash.test.ts recomputes it from this definition.
 */
export function lineDigestV2(view: DataView, from: number, to: number): string {
  const n = to - from;
  let a = 0x811c9dc5 ^ n;
  let b = 0x9747b28c ^ n;
  let i = from;
  for (; i + 4 <= to; i += 4) {
    const k = view.getUint32(i, true);
    a =
      (Math.imul(rotl(a ^ Math.imul(rotl(Math.imul(k, 0xcc9e2d51), 15), 0x1b873593), 13), 5) +
        0xe6546b64) |
      0;
    b =
      (Math.imul(rotl(b ^ Math.imul(rotl(Math.imul(k, 0x85ebca6b), 17), 0xc2b2ae35), 15), 9) +
        0x38495ab5) |
      0;
  }
  if (i < to) {
    let k = 0;
    for (let s = 0; i < to; i++, s += 8) k |= view.getUint8(i) << s;
    a ^= Math.imul(rotl(Math.imul(k, 0xcc9e2d51), 15), 0x1b873593);
    b ^= Math.imul(rotl(Math.imul(k, 0x85ebca6b), 17), 0xc2b2ae35);
  }
  return hex64(fmix(a), fmix(b ^ a));
}

/**
 * What a line shows between its brackets for a digest of this version:
 * version 1 bare (as before versions), any later one after "vN:".
 */
export function lineDigestOf(
  version: LineDigestVersion,
): (s: Scratch, from: number, to: number) => string {
  return version === 1
    ? (s, from, to) => lineDigest(s.buf, from, to)
    : (s, from, to) => 'v2:' + lineDigestV2(s.view, from, to);
}

/** Char codes of the hex digits. */
const HEX = Array.from('0123456789abcdef', (c) => c.charCodeAt(0));

/**
 * 16 hex digits of two 32-bit lanes: one flat string from one call, once per
 * command (concatenating two-digit strings made seven strings, six of them
 * garbage at once, and cost about 35 ns more per line).
 */
function hex64(x: number, y: number): string {
  return String.fromCharCode(
    HEX[x >>> 28],
    HEX[(x >>> 24) & 15],
    HEX[(x >>> 20) & 15],
    HEX[(x >>> 16) & 15],
    HEX[(x >>> 12) & 15],
    HEX[(x >>> 8) & 15],
    HEX[(x >>> 4) & 15],
    HEX[x & 15],
    HEX[y >>> 28],
    HEX[(y >>> 24) & 15],
    HEX[(y >>> 20) & 15],
    HEX[(y >>> 16) & 15],
    HEX[(y >>> 12) & 15],
    HEX[(y >>> 8) & 15],
    HEX[(y >>> 4) & 15],
    HEX[y & 15],
  );
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Bytes as a latin1 string, one char per byte (how StateHash holds hashes). */
function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
}

const GENESIS_HASH_TEXT = latin1(GENESIS_HASH);

/** Slots whose SHA-256 may wait, and bytes they may hold (see StateHash.settle). */
export const STATE_HASH_PENDING_SLOTS = 16;
const PENDING_BYTES = 64 * 1024;

/**
 * The rolling state hash: h(slot) = SHA-256(h(slot-1) || slot || digest of
 * each command and its result), over every applied slot in slot order. Two
 * replicas that applied the same commands with the same results have the same
 * h(slot); any difference at or before a slot changes it for good. `hash` is
 * null when the chain is unknown (restored from a snapshot written before the
 * hash existed): then nothing is reported or compared.
 *
 * Each slot's bytes are written (and its line digests made) when it is
 * applied; its SHA-256 waits until a hash is asked for (a heartbeat, a
 * comparison, the order log's periodic line, a snapshot) or
 * STATE_HASH_PENDING_SLOTS slots wait, and the waiting ones are then hashed
 * back to back. The hashes are the same; the cost is not: between two applies
 * a node does everything else, which evicts the hash's code and data from the
 * caches, and one SHA-256 per apply cost 15-18 us of CPU per slot under the
 * bench (0.44-0.53 us per command), 3.4 us when the calls follow each other.
 */
export class StateHash {
  /** The last applied slot (its hash may be pending). */
  slot = 0;
  /**
   * h(hashed) as a 32-character latin1 string (one char per byte): crypto.hash
   * returns that without allocating a buffer, and writes it back in one call;
   * callers get bytes (digest, hashAt), made only when a heartbeat or a
   * comparison needs them.
   */
  private h: string | null = GENESIS_HASH_TEXT;
  private readonly ringSlot = new Array<number>(STATE_HASH_RING).fill(-1);
  private readonly ringHash = new Array<string | null>(STATE_HASH_RING).fill(null);
  /**
   * The bytes of the slots whose hash is pending, one after the other, each
   * with PREV_END bytes of room in front for h(slot-1); reused once settled.
   */
  private scratch = scratch(PENDING_BYTES);
  /** Pending slots (applied, not hashed yet) and where each one's bytes are. */
  private readonly pendingSlot: number[] = [];
  private readonly pendingFrom: number[] = [];
  private readonly pendingTo: number[] = [];
  private pendingEnd = 0;
  /** Makes the line digest of the version this StateHash writes. */
  private readonly line: (s: Scratch, from: number, to: number) => string;

  /** `lineVersion`: the order-log line digests step returns (the state hash is the same). */
  constructor(readonly lineVersion: LineDigestVersion = LINE_DIGEST_VERSION) {
    this.line = lineDigestOf(lineVersion);
  }

  /**
   * Record one applied slot (its SHA-256 over the previous hash, the slot and
   * every command's bytes comes in settle); returns each command's line digest,
   * as its order-log line shows it between brackets (see lineDigestOf).
   */
  step(slot: number, cmds: Cmd[], results: CmdResult[]): string[] {
    let need = PREV_END + 12;
    for (let i = 0; i < cmds.length; i++) need += commandBytesMax(cmds[i], results[i]);
    if (this.pendingEnd + need > this.scratch.buf.length) {
      this.settle();
      if (need > this.scratch.buf.length)
        this.scratch = scratch(Math.max(need, 2 * this.scratch.buf.length));
    }
    const { view } = this.scratch;
    const from = this.pendingEnd;
    view.setFloat64(from + PREV_END, slot);
    view.setUint32(from + PREV_END + 8, cmds.length);
    let at = from + PREV_END + 12;
    const digests: string[] = new Array(cmds.length);
    for (let i = 0; i < cmds.length; i++) {
      const end = writeCommand(this.scratch, at, cmds[i], results[i]);
      digests[i] = this.line(this.scratch, at, end);
      at = end;
    }
    this.slot = slot;
    // While the chain is unknown there is nothing to chain onto: digests only.
    if (this.h !== null) {
      this.pendingSlot.push(slot);
      this.pendingFrom.push(from);
      this.pendingTo.push(at);
      this.pendingEnd = at;
      if (this.pendingSlot.length >= STATE_HASH_PENDING_SLOTS) this.settle();
    }
    return digests;
  }

  /**
   * Hash the pending slots in order, each over the previous hash (put in front
   * of its bytes: one native call per slot, not a Hash object and three calls),
   * with a latin1 ('binary') result: 'buffer' costs a slow lookup of the
   * encoding and an allocation.
   */
  private settle(): void {
    const n = this.pendingSlot.length;
    if (n === 0) return;
    const { buf } = this.scratch;
    let h = this.h!;
    for (let k = 0; k < n; k++) {
      const from = this.pendingFrom[k];
      buf.write(h, from, PREV_END, 'latin1');
      h = sha('sha256', buf.subarray(from, this.pendingTo[k]), 'binary');
      this.remember(this.pendingSlot[k], h);
    }
    this.h = h;
    this.dropPending();
  }

  private dropPending(): void {
    this.pendingSlot.length = 0;
    this.pendingFrom.length = 0;
    this.pendingTo.length = 0;
    this.pendingEnd = 0;
  }

  /** h(slot) of the last applied slot, or null while the chain is unknown. */
  get hash(): Uint8Array | null {
    this.settle();
    return this.h === null ? null : Buffer.from(this.h, 'latin1');
  }

  /** The latest (slot, hash), or null while the chain is unknown. */
  digest(): StateDigest | null {
    this.settle();
    return this.h === null ? null : { slot: this.slot, hash: Buffer.from(this.h, 'latin1') };
  }

  /**
   * h(slot) if it is among the recent ones kept. Settles only when `slot` is
   * still waiting: a peer's report of a slot already hashed here (the usual
   * case: peers report the slot they last applied) costs no SHA-256 call, and
   * the waiting slots are hashed later in a larger batch.
   */
  hashAt(slot: number): Uint8Array | undefined {
    if (this.pendingSlot.length > 0 && slot >= this.pendingSlot[0]) this.settle();
    const i = slot % STATE_HASH_RING;
    const h = this.ringSlot[i] === slot ? this.ringHash[i] : null;
    return h === null ? undefined : Buffer.from(h, 'latin1');
  }

  /**
   * While the chain is unknown (restored from a snapshot without a hash), take
   * a peer's hash of our last applied slot: from there on the chain is the
   * cluster's. Returns whether it was taken.
   */
  adopt(slot: number, hash: Uint8Array): boolean {
    if (this.h !== null || slot !== this.slot) return false;
    this.h = latin1(hash);
    this.remember(this.slot, this.h);
    return true;
  }

  /** Start over at `slot` (a snapshot restored): the recent hashes before it are gone. */
  reset(slot: number, hash: Uint8Array | null): void {
    this.dropPending();
    this.ringSlot.fill(-1);
    this.ringHash.fill(null);
    this.slot = slot;
    this.h = hash === null ? null : latin1(hash);
    if (this.h !== null) this.remember(slot, this.h);
  }

  private remember(slot: number, h: string): void {
    const i = slot % STATE_HASH_RING;
    this.ringSlot[i] = slot;
    this.ringHash[i] = h;
  }
}

/** An order-log line without its digest suffix (" [16 hex digits]", " [vN:16 hex digits]"), if it has one. */
export function withoutDigest(line: string): string {
  return line.replace(/ \[(?:v[1-9]\d*:)?[0-9a-f]{16}\]$/, '');
}
