import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Decoder, Encoder } from 'cbor-x';
import { CLUSTER_ID_RE } from './io/config';
import { DirLock } from './io/dirlock';
import { writeFileAtomic } from './io/recordlog';
import { DurableStore } from './io/storage';
import { BACKUPS_PINNED_MAX } from './limits';
import { KvStateMachine, withoutMembership } from './sm/kv';
import { hex } from './sm/statehash';
import { SNAPSHOT_CHUNK_BYTES, type SnapshotReply } from './wire/client';

/*
 * Backup and restore (issue 13): a snapshot file taken from a running cluster
 * (`paxos-client snapshot save`), and a data directory seeded from one
 * (`paxosd restore`).
 *
 * File format, version 1 (all integers little-endian):
 *   0-7    magic "PXBACKUP"
 *   8-11   u32 format version (1)
 *   12-15  u32 header length H
 *   16     CBOR header [clusterId, slot, hash|null, dataBytes, sid, savedAtMs]
 *   16+H   the state machine's snapshot (dataBytes bytes; lib/sm/kv.ts format)
 *   end-32 SHA-256 of every byte before it
 * The checksum covers the whole file, so a truncated or damaged file is refused.
 */

const MAGIC = Buffer.from('PXBACKUP', 'latin1');
const FORMAT_VERSION = 1;
const PREFIX_BYTES = 16;
const CHECKSUM_BYTES = 32;
/** A header is a few scalars; anything larger is not this format. */
const HEADER_BYTES_MAX = 4096;

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

/** What a snapshot save brought back (lib/client.ts snapshotSave). */
export interface SavedSnapshot {
  /** The state machine's snapshot bytes. */
  data: Buffer;
  /** Every slot up to this one is in it, and none above. */
  slot: number;
  /** The rolling state hash after `slot` (null: the node's chain is unknown). */
  hash: Buffer | null;
  /** The node that served it. */
  sid: number;
}

/** A backup file's contents (decodeBackupFile). */
export interface BackupFile extends SavedSnapshot {
  /** The cluster it was taken from. */
  clusterId: string;
  savedAtMs: number;
  /** SHA-256 of the whole file but its checksum (names the file in a derived cluster id). */
  checksum: Buffer;
}

/** Why a backup file cannot be written, read or restored. */
export class BackupError extends Error {
  constructor(
    /**
     * corrupt: the file is truncated, damaged or not a backup; not_empty: the
     * data directory holds something; io: a file-system call failed (the
     * message names it); bad_id: not a valid cluster id.
     */
    readonly code: 'corrupt' | 'not_empty' | 'io' | 'bad_id',
    message: string,
  ) {
    super(message);
  }
}

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The bytes of a backup file holding `s`, taken from cluster `clusterId`. */
export function encodeBackupFile(s: SavedSnapshot, clusterId: string, savedAtMs: number): Buffer {
  const header = encoder.encode([clusterId, s.slot, s.hash, s.data.length, s.sid, savedAtMs]);
  const prefix = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32LE(FORMAT_VERSION, 8);
  prefix.writeUInt32LE(header.length, 12);
  const body = Buffer.concat([prefix, header, s.data]);
  return Buffer.concat([body, sha256(body)]);
}

/**
 * Write a backup file atomically: FILE.tmp, fdatasync, rename over FILE, fsync
 * the directory (lib/io/recordlog.ts writeFileAtomic). A crash at any point
 * leaves the old FILE (or none), never a part of the new one. Throws
 * BackupError 'io' naming the step that failed (e.g. ENOSPC).
 */
export function writeBackupFile(file: string, bytes: Uint8Array, sync = true): void {
  try {
    writeFileAtomic(path.resolve(file), bytes, sync);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new BackupError('io', `cannot write ${file}: ${code}: ${(e as Error).message}`);
  }
}

/**
 * Read and check a backup file: its length, its checksum, its header and that
 * its snapshot loads into a state machine whose state hash is the header's.
 * Throws BackupError 'corrupt' saying what is wrong, 'io' if it cannot be read.
 */
export function readBackupFile(file: string): BackupFile {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new BackupError('io', `cannot read ${file}: ${(e as Error).message}`);
  }
  const bad = (what: string): BackupError =>
    new BackupError('corrupt', `${file}: ${what}; refusing to restore it`);
  if (buf.length < PREFIX_BYTES + CHECKSUM_BYTES || !buf.subarray(0, 8).equals(MAGIC))
    throw bad(`not a paxosd backup file (${buf.length} bytes, no PXBACKUP header)`);
  if (buf.readUInt32LE(8) !== FORMAT_VERSION)
    throw bad(`backup format ${buf.readUInt32LE(8)}, this build reads ${FORMAT_VERSION}`);
  const headerBytes = buf.readUInt32LE(12);
  if (headerBytes > HEADER_BYTES_MAX || PREFIX_BYTES + headerBytes + CHECKSUM_BYTES > buf.length)
    throw bad(`truncated or damaged header (${headerBytes} header bytes in ${buf.length})`);
  let h: unknown;
  try {
    h = decoder.decode(buf.subarray(PREFIX_BYTES, PREFIX_BYTES + headerBytes));
  } catch {
    throw bad('damaged header');
  }
  const a = Array.isArray(h) ? (h as unknown[]) : [];
  const uint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  const hashOk = a[2] === null || (Buffer.isBuffer(a[2]) && a[2].length === 32);
  if (a.length !== 6 || typeof a[0] !== 'string' || !uint(a[1]) || !hashOk || !uint(a[3]))
    throw bad('damaged header');
  const dataAt = PREFIX_BYTES + headerBytes;
  const expected = dataAt + (a[3] as number) + CHECKSUM_BYTES;
  if (buf.length !== expected)
    throw bad(
      buf.length < expected
        ? `truncated: ${buf.length} bytes, the header says ${expected}`
        : `${buf.length - expected} bytes after the end the header gives`,
    );
  const checksum = sha256(buf.subarray(0, buf.length - CHECKSUM_BYTES));
  if (!checksum.equals(buf.subarray(buf.length - CHECKSUM_BYTES)))
    throw bad('checksum mismatch (the file is damaged)');
  const out: BackupFile = {
    clusterId: a[0],
    slot: a[1] as number,
    hash: a[2] as Buffer | null,
    data: buf.subarray(dataAt, dataAt + (a[3] as number)),
    sid: uint(a[4]) ? a[4] : -1,
    savedAtMs: uint(a[5]) ? a[5] : 0,
    checksum,
  };
  checkSnapshot(out, bad);
  return out;
}

/** The snapshot must load, and carry the slot and hash the header names. */
function checkSnapshot(f: BackupFile, bad: (what: string) => BackupError): void {
  const sm = new KvStateMachine();
  try {
    sm.restore(f.data);
  } catch (e) {
    throw bad(`the snapshot does not load: ${(e as Error).message}`);
  }
  const d = sm.digest();
  if (f.hash === null) return;
  if (!d || d.slot !== f.slot || !Buffer.from(d.hash).equals(f.hash))
    throw bad(
      `the snapshot's state hash (${d ? `slot ${d.slot} ${hex(d.hash)}` : 'none'}) is not the header's (slot ${f.slot} ${hex(f.hash)})`,
    );
}

/**
 * The cluster id a restore gives by default: the source's with `-r` and 8 hex
 * digits of the file's checksum. Not the source's (so the old and the new
 * cluster drop each other's datagrams and refuse each other's data
 * directories), and the same for every node restored from one file.
 */
export function restoredClusterId(f: BackupFile): string {
  const tail = `-r${f.checksum.subarray(0, 4).toString('hex')}`;
  return f.clusterId.replace(/-r[0-9a-f]{8}$/, '').slice(0, 64 - tail.length) + tail;
}

/** What restoreDataDir did. */
export interface Restored {
  dataDir: string;
  slot: number;
  hash: Buffer | null;
  clusterId: string;
  sourceClusterId: string;
  bytes: number;
}

/**
 * Seed an empty data directory from a backup file, through the storage layer's
 * own snapshot path (DurableStore.saveSnapshot: the snapshot file, then a WAL
 * segment whose checkpoint holds the snapshot record and a voter record, as a
 * node started with --init writes), and record the cluster id the directory
 * belongs to. The node then starts at the snapshot's slot, a voter of a new
 * cluster: run it once per node with the same file and cluster id.
 */
export function restoreDataDir(
  file: string,
  dataDir: string,
  o: { clusterId?: string; sync?: boolean } = {},
): Restored {
  const f = readBackupFile(file);
  const clusterId = o.clusterId ?? restoredClusterId(f);
  if (!CLUSTER_ID_RE.test(clusterId))
    throw new BackupError('bad_id', `cluster id "${clusterId}": 1-64 characters of [A-Za-z0-9._-]`);
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(dataDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new BackupError('io', `cannot read ${dataDir}: ${(e as Error).message}`);
  }
  if (entries.length > 0)
    throw new BackupError(
      'not_empty',
      `data directory ${dataDir} is not empty (${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', ...' : ''}): restore seeds a new node's empty directory only`,
    );
  const sync = o.sync ?? true;
  try {
    const lock = DirLock.acquire(dataDir, sync, () => undefined);
    try {
      const opened = DurableStore.open(dataDir, sync, undefined, clusterId);
      try {
        // A new cluster: its members are its config file's, not the source's.
        opened.store.saveSnapshot(f.slot, withoutMembership(f.data), [
          { t: 'snapshot', slot: f.slot },
          { t: 'voter' },
        ]);
      } finally {
        opened.store.close();
      }
    } finally {
      lock.release();
    }
  } catch (e) {
    if (e instanceof BackupError) throw e;
    throw new BackupError('io', `cannot seed ${dataDir}: ${(e as Error).message}`);
  }
  return {
    dataDir,
    slot: f.slot,
    hash: f.hash,
    clusterId,
    sourceClusterId: f.clusterId,
    bytes: f.data.length,
  };
}

// ---------------------------------------------------------------------------
// The serving side (lib/daemon.ts): pinned snapshots for snapshot saves.

/** What a BackupServer needs from its node. */
export interface BackupHost<T> {
  /**
   * A read-index barrier (lib/front.ts ClientFront.barrier): `ready` runs once
   * every write acknowledged before the call is applied here. Null if queued.
   */
  barrier(ready: () => void): null | { t: 'redirect'; leader: number } | { t: 'busy' };
  /** The state machine's snapshot now, with the last applied slot and its hash. */
  capture(): { slot: number; hash: Uint8Array | null; data: Uint8Array };
  send(to: T, r: SnapshotReply): void;
  nowMs(): number;
  /** A random 32-bit id (a pinned snapshot's; not reused after a restart). */
  randomId(): number;
  log(line: string): void;
}

/** A snapshot save being served: its barrier, then its pinned snapshot. */
interface Save<T> {
  to: T;
  from: string;
  /** Last request (ms): idle saves are dropped after BACKUP_IDLE_MS. */
  at: number;
  /** When the last barrier was asked for (a retransmitted begin may ask again). */
  askedAt: number;
  pin: { id: number; slot: number; hash: Buffer | null; data: Uint8Array; digest: Buffer } | null;
}

/**
 * A pinned snapshot nobody asked a chunk of for this long is dropped (its
 * client died or gave up): the memory it holds is freed without its goodbye.
 */
export const BACKUP_IDLE_MS = 10_000;

/** A begin retransmitted this long after its barrier asks for another (the first may be lost with a leader change). */
const BARRIER_RETRY_MS = 1_000;

/**
 * Snapshot saves on one node: each begins with a read-index barrier, then pins
 * the state machine's snapshot (taken at that moment: at or above the read
 * index) and serves it in chunks until the client says it is done or it stays
 * idle for BACKUP_IDLE_MS. At most BACKUPS_PINNED_MAX saves at once, so the
 * memory they hold is bounded (each one copy of the state). Requests reach it
 * only from a validated address (a token or the client key: lib/daemon.ts), so
 * a forged source can pin nothing and is sent no chunk.
 */
export class BackupServer<T> {
  /** By the client's nonce. */
  private readonly saves = new Map<number, Save<T>>();
  /** Pinned id -> nonce. */
  private readonly byId = new Map<number, number>();

  constructor(private readonly host: BackupHost<T>) {}

  /** Saves being served now (status, tests). */
  get size(): number {
    return this.saves.size;
  }

  /** A begin request (or its retransmission). */
  begin(to: T, from: string, nonce: number): void {
    const now = this.host.nowMs();
    this.sweep(now);
    const s = this.saves.get(nonce);
    if (s) {
      s.to = to;
      if (s.pin) {
        s.at = now;
        return this.sendInfo(nonce, s);
      }
      if (now - s.askedAt >= BARRIER_RETRY_MS) this.ask(nonce, s, now);
      return;
    }
    if (this.saves.size >= BACKUPS_PINNED_MAX)
      return this.refuse(
        to,
        nonce,
        'busy',
        -1,
        `${this.saves.size} snapshot saves are running (at most ${BACKUPS_PINNED_MAX})`,
      );
    const fresh: Save<T> = { to, from, at: now, askedAt: now, pin: null };
    this.saves.set(nonce, fresh);
    this.ask(nonce, fresh, now);
  }

  private ask(nonce: number, s: Save<T>, now: number): void {
    s.askedAt = now;
    const r = this.host.barrier(() => this.pin(nonce));
    if (!r) return;
    this.saves.delete(nonce);
    if (r.t === 'redirect') this.refuse(s.to, nonce, 'not_leader', r.leader, 'not the leader');
    else this.refuse(s.to, nonce, 'busy', -1, 'too many reads pending');
  }

  /** The barrier passed: take and pin the snapshot now, and say so. */
  private pin(nonce: number): void {
    const s = this.saves.get(nonce);
    if (!s || s.pin) return;
    const c = this.host.capture();
    let id = this.host.randomId();
    while (id === 0 || this.byId.has(id)) id = (id + 1) >>> 0;
    const hash = c.hash === null ? null : Buffer.from(c.hash);
    s.pin = { id, slot: c.slot, hash, data: c.data, digest: sha256(c.data) };
    s.at = this.host.nowMs();
    this.byId.set(id, nonce);
    this.host.log(
      `snapshot save from ${s.from}: pinned the state at slot ${c.slot} (${c.data.length} bytes, state hash ${hash ? hex(hash) : 'unknown'})`,
    );
    this.sendInfo(nonce, s);
  }

  private sendInfo(nonce: number, s: Save<T>): void {
    const p = s.pin!;
    this.host.send(s.to, {
      t: 'snapinfo',
      nonce,
      id: p.id,
      slot: p.slot,
      hash: p.hash,
      bytes: p.data.length,
      digest: p.digest,
    });
  }

  /** A chunk request; offset = the snapshot's size ends the save (unpins it). */
  chunk(to: T, nonce: number, id: number, offset: number): void {
    const now = this.host.nowMs();
    this.sweep(now);
    const n = this.byId.get(id);
    const s = n === undefined ? undefined : this.saves.get(n);
    if (!s?.pin || offset > s.pin.data.length)
      return this.refuse(
        to,
        nonce,
        'expired',
        -1,
        `no snapshot ${id} pinned here (idle over ${BACKUP_IDLE_MS / 1000} s, or the node restarted)`,
      );
    s.at = now;
    const data = s.pin.data;
    if (offset === data.length) this.forget(n!, s);
    const end = Math.min(data.length, offset + SNAPSHOT_CHUNK_BYTES);
    const bytes = Buffer.from(data.buffer, data.byteOffset + offset, end - offset);
    this.host.send(to, { t: 'snapchunk', nonce, id, offset, data: bytes });
  }

  /** Drop saves idle for BACKUP_IDLE_MS (called on requests and from the node's timer). */
  sweep(now: number): void {
    for (const [n, s] of this.saves) if (now - s.at > BACKUP_IDLE_MS) this.forget(n, s);
  }

  private forget(nonce: number, s: Save<T>): void {
    this.saves.delete(nonce);
    if (s.pin) this.byId.delete(s.pin.id);
  }

  private refuse(
    to: T,
    nonce: number,
    code: 'not_leader' | 'busy' | 'expired',
    leader: number,
    message: string,
  ): void {
    this.host.send(to, { t: 'snaperr', nonce, code, leader, message });
  }
}
