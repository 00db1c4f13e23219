/**
 * Durable write-ahead record log for paxosd.
 *
 * The log stores opaque, non-empty payload Buffers (the caller CBOR-encodes
 * them). A log directory holds segment files named
 * `wal-<16-digit zero-padded number>.log`; records are replayed segment by
 * segment in numeric order. A segment starts with a 16-byte header holding a
 * random salt (segmentHeader), then each record is framed as
 *
 *     [u32le payloadLength][u32le crc32c(payload) XOR salt][payload]
 *
 * (Segments written before headers existed have none and salt 0.)
 *
 * Payload lengths are 1..RECORD_BYTES_MAX. A length of 0 is never written, so a
 * run of zero bytes (e.g. a preallocated / partially written tail) can never
 * parse as a valid record.
 *
 * What blocks the event loop and what does not: every call here is synchronous
 * (open, append, write, rotate, close, and the checked/atomic file helpers)
 * except syncAsync, whose fdatasync runs on the libuv thread pool. append() of a
 * batch costs one write + one fdatasync (group commit), both blocking. The
 * daemon instead pipelines: write() now (blocking, but only into the page
 * cache), then syncAsync(), so the event loop keeps receiving while the disk
 * works; what depends on the batch is released only when that sync completes.
 *
 * Failure policy: after ANY I/O error (write, fsync, ...) the RecordLog marks
 * itself failed and every later call throws. A failed fsync is never retried:
 * after a failed fsync the kernel may have dropped the dirty pages and a retry
 * can "succeed" without the data being durable (the PostgreSQL fsync lesson).
 * The only safe reaction is to crash and recover from what is on disk.
 */

import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { crc32c } from './crc32c';
import {
  fsyncDirectory,
  mkdirDurable,
  nodeFs,
  syncDirectoryChain,
  writeAll,
  type Fsys,
} from './fsys';
import { RECORD_BYTES_MAX } from '../limits';

// Re-exported for the log's users; defined, with its reason, in lib/limits.ts.
export { RECORD_BYTES_MAX };

/** Size of a record frame header: u32le length + u32le crc32c. */
export const RECORD_HEADER_BYTES = 8;

const SEGMENT_RE = /^wal-(\d{16})\.log$/;
const SEGMENT_DIGITS = 16;

/**
 * Error raised by the storage layer. `code` is one of:
 * - 'ECORRUPT': bad checksum / impossible length / truncated record where a
 *   torn tail is not an acceptable explanation (see RecordLog.open), or a
 *   corrupt checked file (readFileChecked);
 * - 'ESYNC': a failed fsync/fdatasync (the errno is in `sysCode`);
 * - 'ECLOSED': the log was closed;
 * - otherwise the underlying errno code of the failed fs call ('EIO',
 *   'ENOSPC', 'EBADF', 'ENOENT', ...).
 */
export class StorageError extends Error {
  /** 'ECORRUPT', 'ESYNC', 'ECLOSED' or an errno code (see above). */
  code: string;
  /** The file the failed operation was about, if any. */
  file?: string;
  /** Byte offset in `file` of the bad record or failed write, if known. */
  offset?: number;
  /** errno code of the underlying fs error, if any (e.g. 'EIO' for an 'ESYNC'). */
  sysCode?: string;

  constructor(
    code: string,
    message: string,
    opts: { file?: string; offset?: number; sysCode?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StorageError';
    this.code = code;
    if (opts.file !== undefined) this.file = opts.file;
    if (opts.offset !== undefined) this.offset = opts.offset;
    if (opts.sysCode !== undefined) this.sysCode = opts.sysCode;
  }
}

function errnoOf(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' && c.length > 0 ? c : 'EIO';
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Wrap an fs error into a StorageError. StorageErrors pass through unchanged.
 * `code` overrides the errno-derived code (used for 'ESYNC').
 */
function wrapFsError(err: unknown, op: string, file: string, code?: string): StorageError {
  if (err instanceof StorageError) return err;
  const sysCode = errnoOf(err);
  return new StorageError(code ?? sysCode, `${file}: ${op} failed: ${messageOf(err)}`, {
    file,
    sysCode,
    cause: err,
  });
}

function corrupt(file: string, offset: number, what: string, extra = ''): StorageError {
  return new StorageError(
    'ECORRUPT',
    `${file}: ${what} in record at offset ${offset} (the log is corrupt; refusing to start)${extra}`,
    { file, offset },
  );
}

/**
 * fsync a directory (see fsyncDirectory); failures are 'ESYNC' (a failed open
 * of the directory keeps its errno code).
 */
function syncDir(fsys: Fsys, dir: string): void {
  try {
    fsyncDirectory(fsys, dir);
  } catch (err) {
    const opened = (err as { syscall?: string }).syscall !== 'open';
    throw wrapFsError(err, 'fsync directory', dir, opened ? 'ESYNC' : undefined);
  }
}

function closeQuietly(fsys: Fsys, fd: number): void {
  try {
    fsys.closeSync(fd);
  } catch {
    // already failing; the original error is the one to report
  }
}

function checkPayload(p: Uint8Array, i: number): void {
  if (!(p instanceof Uint8Array)) throw new TypeError(`record ${i} is not a Buffer`);
  if (p.length === 0) throw new RangeError(`record ${i} is empty (empty payloads are not allowed)`);
  if (p.length > RECORD_BYTES_MAX) {
    throw new RangeError(
      `record ${i} is ${p.length} bytes; the maximum is RECORD_BYTES_MAX = ${RECORD_BYTES_MAX}`,
    );
  }
}

/**
 * Frame payloads into one contiguous buffer of
 * `[u32le len][u32le crc32c(payload) ^ salt][payload]` records (`salt` is the
 * segment's, see segmentHeader; 0 gives the header-less format of old
 * segments). Throws RangeError for an empty or over-long payload.
 */
export function encodeFrames(payloads: readonly Uint8Array[], salt = 0): Buffer {
  let total = 0;
  for (let i = 0; i < payloads.length; i++) {
    checkPayload(payloads[i], i);
    total += RECORD_HEADER_BYTES + payloads[i].length;
  }
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  for (const p of payloads) {
    out.writeUInt32LE(p.length, pos);
    out.writeUInt32LE((crc32c(p) ^ salt) >>> 0, pos + 4);
    out.set(p, pos + RECORD_HEADER_BYTES);
    pos += RECORD_HEADER_BYTES + p.length;
  }
  return out;
}

/** Size of a segment header: u32le magic "PXWS", u32le version, u32le salt, u32le crc32c of those 12 bytes. */
export const SEGMENT_HEADER_BYTES = 16;
const SEGMENT_MAGIC = 0x53575850; // "PXWS"; as a length it would exceed RECORD_BYTES_MAX
const SEGMENT_VERSION = 1;

/**
 * The header a segment starts with. Its random salt is mixed into every
 * frame's checksum, so that only frames written into this segment by this log
 * check out: a client value holding bytes shaped like a frame (or a frame of
 * another segment) never does. That is what lets the torn-tail scan look at
 * every byte after a bad record without being fooled.
 */
export function segmentHeader(salt: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  h.writeUInt32LE(SEGMENT_MAGIC, 0);
  h.writeUInt32LE(SEGMENT_VERSION, 4);
  h.writeUInt32LE(salt >>> 0, 8);
  h.writeUInt32LE(crc32c(h, 0, 12), 12);
  return h;
}

/** A fresh salt: random and never 0 (0 means "no header", the old format). */
function newSalt(): number {
  return randomBytes(4).readUInt32LE(0) >>> 0 || 1;
}

/**
 * Where a segment's frames start and its salt: after a valid header, or at 0
 * with salt 0 for a segment without one (written before headers existed, or
 * empty, or whose header never reached the disk: no magic). A string describes
 * a damaged header.
 */
export function segmentLayout(buf: Buffer): { start: number; salt: number } | string {
  if (buf.length < 4 || buf.readUInt32LE(0) !== SEGMENT_MAGIC) return { start: 0, salt: 0 };
  if (buf.length < SEGMENT_HEADER_BYTES) return `truncated segment header (${buf.length} bytes)`;
  if (crc32c(buf, 0, 12) !== buf.readUInt32LE(12)) return 'bad segment header checksum';
  const version = buf.readUInt32LE(4);
  if (version !== SEGMENT_VERSION) return `unknown segment version ${version}`;
  const salt = buf.readUInt32LE(8);
  if (salt === 0) return 'segment header with salt 0';
  return { start: SEGMENT_HEADER_BYTES, salt };
}

/**
 * Check the frame at `pos`. `bad` is '' for a valid record (then `len` is its
 * payload length), otherwise a description of the defect.
 */
function checkFrame(buf: Buffer, pos: number, salt: number): { bad: string; len: number } {
  const size = buf.length;
  if (size - pos < RECORD_HEADER_BYTES) {
    return { bad: `truncated header (${size - pos} of ${RECORD_HEADER_BYTES} bytes)`, len: -1 };
  }
  const len = buf.readUInt32LE(pos);
  if (len === 0 || len > RECORD_BYTES_MAX) return { bad: `impossible length ${len}`, len };
  if (pos + RECORD_HEADER_BYTES + len > size) {
    return {
      bad: `truncated payload (length ${len}, only ${size - pos - RECORD_HEADER_BYTES} bytes left)`,
      len,
    };
  }
  const start = pos + RECORD_HEADER_BYTES;
  if ((crc32c(buf, start, start + len) ^ salt) >>> 0 !== buf.readUInt32LE(pos + 4)) {
    return { bad: 'bad checksum', len };
  }
  return { bad: '', len };
}

/** Offset of the first well-formed frame with a valid checksum at or after `from`, or -1. */
function findValidFrame(buf: Buffer, from: number, salt: number): number {
  const size = buf.length;
  for (let q = from; q + RECORD_HEADER_BYTES < size; q++) {
    const len = buf.readUInt32LE(q);
    if (len === 0 || len > RECORD_BYTES_MAX) continue;
    const start = q + RECORD_HEADER_BYTES;
    if (start + len > size) continue;
    if ((crc32c(buf, start, start + len) ^ salt) >>> 0 === buf.readUInt32LE(q + 4)) return q;
  }
  return -1;
}

/**
 * Where to look for valid records after the bad frame at `pos` (see
 * RecordLog.open), or -1 when there is nothing to look at. In a salted segment,
 * every byte after `pos`: a frame that checks out there was written by this log,
 * even inside what a damaged length field claims. In an old, unsalted segment a
 * client value may hold bytes shaped like a frame, so a header whose length is
 * possible bounds the record and the scan starts after it (a torn append, a
 * prefix of what was written maybe followed by zeros, never damages a header
 * while keeping what follows it).
 */
function scanStartAfterBadFrame(buf: Buffer, pos: number, len: number, salt: number): number {
  if (salt !== 0) return pos + 1;
  if (buf.length - pos < RECORD_HEADER_BYTES) return -1;
  if (len === 0 || len > RECORD_BYTES_MAX) return pos + 1;
  const end = pos + RECORD_HEADER_BYTES + len;
  return end >= buf.length ? -1 : end;
}

interface Segment {
  num: bigint;
  /** Mixed into every frame checksum (0: an old segment without a header). */
  salt: number;
  name: string;
  file: string;
  size: number;
}

function segmentName(num: bigint): string {
  return `wal-${num.toString().padStart(SEGMENT_DIGITS, '0')}.log`;
}

/** How RecordLog.open opens a log. */
export interface RecordLogOptions {
  /** fdatasync/fsync for durability. false = no syncs at all (tests, simulations). */
  sync: boolean;
  /** The file system (default node:fs; tests pass a simulated disk). */
  fs?: Fsys;
}

/** What RecordLog.open returns: the log, ready for appends, and what it replayed. */
export interface RecordLogOpenResult {
  log: RecordLog;
  /** All payloads of all segments, in order. */
  records: Buffer[];
  /** Bytes cut off the end of the last segment as a torn tail (0 if none). */
  tornBytes: number;
}

/** The segment files of `dir`, oldest first (the directory is created, durably, if missing). */
function listSegments(fsys: Fsys, dir: string, sync: boolean): string[] {
  try {
    // A new data directory is durable before anything is stored in it: else
    // a power loss can drop the whole directory and the node returns empty.
    mkdirDurable(fsys, dir, sync);
  } catch (err) {
    throw wrapFsError(err, 'mkdir', dir);
  }
  let names: string[];
  try {
    names = fsys.readdirSync(dir);
  } catch (err) {
    throw wrapFsError(err, 'readdir', dir);
  }
  // Fixed-width zero-padded names: lexical order == numeric order.
  return names.filter((n) => SEGMENT_RE.test(n)).sort();
}

/** One segment read back: its records appended to `records`; a torn tail only in the last. */
interface ReplayedSegment {
  segment: Segment;
  /** Offset where the torn tail starts (-1: none). */
  tornAt: number;
  tornBytes: number;
}

/**
 * Read segment `name` and append its records to `records`. A bad frame (or
 * header) is a torn tail in the last segment when no valid record follows it,
 * and corruption anywhere else (see RecordLog.open).
 */
function replaySegment(
  fsys: Fsys,
  dir: string,
  name: string,
  isLast: boolean,
  records: Buffer[],
): ReplayedSegment {
  const file = path.join(dir, name);
  let buf: Buffer;
  try {
    buf = fsys.readFileSync(file);
  } catch (err) {
    throw wrapFsError(err, 'read', file);
  }
  const num = BigInt((SEGMENT_RE.exec(name) as RegExpExecArray)[1]);
  const layout = segmentLayout(buf);
  if (typeof layout === 'string') {
    if (!isLast) {
      throw corrupt(file, 0, layout, '. This is not the last segment, so it cannot be torn.');
    }
    // The header is synced with (before) the first record acknowledged from
    // this segment, so a damaged one means nothing here was acknowledged.
    return { segment: { num, salt: 0, name, file, size: 0 }, tornAt: 0, tornBytes: buf.length };
  }
  const salt = layout.salt;
  let pos = layout.start;
  while (pos < buf.length) {
    const { bad, len } = checkFrame(buf, pos, salt);
    if (bad === '') {
      const start = pos + RECORD_HEADER_BYTES;
      records.push(Buffer.from(buf.subarray(start, start + len)));
      pos = start + len;
      continue;
    }
    if (!isLast) {
      throw corrupt(file, pos, bad, '. This is not the last segment, so it cannot be a torn tail.');
    }
    const from = scanStartAfterBadFrame(buf, pos, len, salt);
    const next = from < 0 ? -1 : findValidFrame(buf, from, salt);
    if (next >= 0) {
      throw corrupt(file, pos, bad, `. A valid record follows at offset ${next}.`);
    }
    const segment = { num, salt, name, file, size: pos };
    return { segment, tornAt: pos, tornBytes: buf.length - pos };
  }
  return { segment: { num, salt, name, file, size: buf.length }, tornAt: -1, tornBytes: 0 };
}

/** fsync each of `segments` (replayed ones, which may be only in the page cache). */
function syncSegments(fsys: Fsys, segments: Segment[]): void {
  for (const seg of segments) {
    let sfd = -1;
    try {
      sfd = fsys.openSync(seg.file, 'r');
      fsys.fsyncSync(sfd);
    } catch (err) {
      throw wrapFsError(err, 'fsync (replayed segment)', seg.file, sfd < 0 ? undefined : 'ESYNC');
    } finally {
      if (sfd >= 0) closeQuietly(fsys, sfd);
    }
  }
}

/**
 * Open the segment appends go to, for writing: the last one, its torn tail cut
 * off, or a new first one if there is none (added to `segments`). An empty one
 * gets a header and a salt. Returns its descriptor.
 */
function openTail(fsys: Fsys, dir: string, segments: Segment[], tornAt: number): number {
  let fd: number;
  if (segments.length === 0) {
    const name = segmentName(1n);
    const file = path.join(dir, name);
    try {
      fd = fsys.openSync(file, 'wx+');
    } catch (err) {
      throw wrapFsError(err, 'create', file);
    }
    segments.push({ num: 1n, salt: 0, name, file, size: 0 });
  } else {
    const last = segments[segments.length - 1];
    try {
      fd = fsys.openSync(last.file, 'r+');
    } catch (err) {
      throw wrapFsError(err, 'open', last.file);
    }
    if (tornAt >= 0) {
      try {
        fsys.ftruncateSync(fd, tornAt);
      } catch (err) {
        closeQuietly(fsys, fd);
        throw wrapFsError(err, 'ftruncate (cutting torn tail)', last.file);
      }
    }
  }
  const last = segments[segments.length - 1];
  if (last.size === 0) {
    // An empty segment (new, or all of it torn) gets a header and a salt.
    const salt = newSalt();
    try {
      writeAll(fsys, fd, segmentHeader(salt), 0);
    } catch (err) {
      closeQuietly(fsys, fd);
      throw wrapFsError(err, 'write of the segment header', last.file);
    }
    last.salt = salt;
    last.size = SEGMENT_HEADER_BYTES;
  }
  return fd;
}

/** fsync the open tail segment `fd` and the directory chain (closing fd on failure). */
function syncTail(fsys: Fsys, dir: string, fd: number, last: Segment): void {
  try {
    fsys.fsyncSync(fd);
  } catch (err) {
    closeQuietly(fsys, fd);
    throw wrapFsError(err, 'fsync (replayed segment)', last.file, 'ESYNC');
  }
  try {
    // Every segment's entry (and the directory's own, up the tree) is durable.
    syncDirectoryChain(fsys, dir);
  } catch (err) {
    closeQuietly(fsys, fd);
    throw wrapFsError(err, 'fsync directory', dir, 'ESYNC');
  }
}

/**
 * An open log directory: appends to its last segment, compacts by rotate(),
 * and fails permanently on the first I/O error (see the failure policy above).
 * Create one with RecordLog.open, which replays what is on disk first.
 */
export class RecordLog {
  /** The log directory. */
  readonly dir: string;
  /** Whether writes are synced (RecordLogOptions.sync). */
  readonly sync: boolean;

  private fd: number;
  /** Live segments, oldest first; the last one is the one appended to. */
  private segments: Segment[];
  private failure: StorageError | null = null;
  private closed = false;
  /** Asynchronous fdatasyncs still running; fds they use are closed only after. */
  private syncsInFlight = 0;
  private readonly closeAfterSync: number[] = [];

  private _appendCalls = 0;
  private _recordsWritten = 0;
  private _bytesWritten = 0;
  private _syncs = 0;
  private _rotations = 0;

  /** Number of append() calls that wrote something (one write + at most one sync each). */
  get appendCalls(): number {
    return this._appendCalls;
  }
  /** Records written by append() (recordsWritten / appendCalls = mean group-commit batch). */
  get recordsWritten(): number {
    return this._recordsWritten;
  }
  /** Bytes (frames included) written by append(). */
  get bytesWritten(): number {
    return this._bytesWritten;
  }
  /** fdatasync calls issued by append(). */
  get syncs(): number {
    return this._syncs;
  }
  /** Successful rotate() calls. */
  get rotations(): number {
    return this._rotations;
  }
  /** The error that failed the log, or null. Once set, every write throws. */
  get failed(): StorageError | null {
    return this.failure;
  }

  private constructor(
    dir: string,
    sync: boolean,
    fd: number,
    segments: Segment[],
    private readonly fsys: Fsys,
  ) {
    this.dir = dir;
    this.sync = sync;
    this.fd = fd;
    this.segments = segments;
  }

  /**
   * Open (creating `dir` if missing) and replay the log.
   *
   * Replay / torn-tail rule:
   * - Segments are read in numeric order; every record of every segment must
   *   be intact, except possibly a torn tail at the end of the LAST segment.
   * - When a frame at offset P of the last segment is invalid (truncated
   *   header, truncated payload, impossible length 0 or > RECORD_BYTES_MAX, or
   *   bad checksum), the bytes after P are scanned at every byte offset for a
   *   well-formed frame (sane length, fits in the file, checksum matching with
   *   the segment's salt). A client value may hold bytes shaped like a frame,
   *   but not one salted for this segment (see segmentHeader). In an old
   *   segment without a header (salt 0) the bad record's own extent (its
   *   header's length, when possible) is skipped instead.
   *   - If one is found, the damage is NOT at the tail: valid data follows it,
   *     so dropping it would silently lose acknowledged records. open() throws
   *     StorageError 'ECORRUPT' naming the file and offset P.
   *   - Otherwise everything from P to EOF (partial frame, zero fill, garbage)
   *     is a torn tail from an interrupted write: the file is truncated to P
   *     (ftruncate, then fsync when opts.sync) and `tornBytes` reports the
   *     number of bytes cut.
   *   Consequence (deliberate): a corrupted FINAL record with nothing valid
   *   after it is indistinguishable from a torn write of that record and is
   *   cut off as a torn tail. A record is only acknowledged after its
   *   fdatasync returns, and a crash during that append can legitimately
   *   leave exactly this state, so refusing to start here would turn every
   *   crash during a write into an outage.
   * - Any invalid frame in a non-last segment is 'ECORRUPT' (rotate() syncs a
   *   segment before the next one is created). A damaged segment header is
   *   'ECORRUPT' too, except in the last segment, where it means the segment
   *   was never synced: all of it is a torn tail.
   * - With opts.sync, every replayed segment, the directory and its parents
   *   are fsynced before open returns (what a killed process left in the page
   *   cache is replayed; it must be durable before anything depends on it).
   *
   * Segments are read whole into memory; rotate() keeps them small.
   */
  static open(dir: string, opts: RecordLogOptions): RecordLogOpenResult {
    const sync = opts.sync;
    const fsys = opts.fs ?? nodeFs;
    const names = listSegments(fsys, dir, sync);
    const segments: Segment[] = [];
    const records: Buffer[] = [];
    let tornBytes = 0;
    let tornAt = -1;
    for (let i = 0; i < names.length; i++) {
      const r = replaySegment(fsys, dir, names[i], i === names.length - 1, records);
      segments.push(r.segment);
      if (r.tornAt >= 0) ({ tornAt, tornBytes } = r);
    }
    // What we replay may be only in the page cache (a kill after a write, or
    // inside rotate() before its directory sync): make it durable before the
    // caller acts on it, or a later power loss takes back a promise or an
    // accepted value that was already answered (Paxos Made Simple: an acceptor
    // must remember what it promised and accepted, even across failures).
    if (sync) syncSegments(fsys, segments.slice(0, -1));
    const fd = openTail(fsys, dir, segments, tornAt);
    if (sync) syncTail(fsys, dir, fd, segments[segments.length - 1]);
    return { log: new RecordLog(dir, sync, fd, segments, fsys), records, tornBytes };
  }

  private get current(): Segment {
    return this.segments[this.segments.length - 1];
  }

  private checkWritable(): void {
    if (this.failure) {
      const f = this.failure;
      throw new StorageError(
        f.code,
        `${this.dir}: the record log failed earlier and refuses further writes: ${f.message}`,
        { file: f.file, offset: f.offset, sysCode: f.sysCode, cause: f },
      );
    }
    if (this.closed) throw new StorageError('ECLOSED', `${this.dir}: the record log is closed`);
  }

  /** Record a failure (the log is unusable from now on) and return it for throwing. */
  private fail(err: StorageError): StorageError {
    if (!this.failure) this.failure = err;
    return err;
  }

  /**
   * Append a batch of payloads durably (group commit): all frames go into one
   * buffer, one write loop, then one fdatasync (if opts.sync). When this
   * returns, every payload in the batch is on stable storage.
   *
   * Throws RangeError/TypeError (log stays usable) for an empty or over-long
   * payload, before any I/O. Any I/O error throws a StorageError and fails the
   * log permanently.
   */
  append(payloads: readonly Uint8Array[]): void {
    this.checkWritable();
    if (payloads.length === 0) return;
    const bytes = this.writeFrames(payloads);
    if (this.sync) {
      try {
        this.fsys.fdatasyncSync(this.fd);
      } catch (err) {
        throw this.fail(wrapFsError(err, 'fdatasync', this.current.file, 'ESYNC'));
      }
      this._syncs++;
    }
    this.count(payloads.length, bytes);
  }

  /**
   * Write a batch without syncing (pipelined group commit: the caller releases
   * what depends on it only after a later syncAsync() completes).
   */
  write(payloads: readonly Uint8Array[]): void {
    this.checkWritable();
    if (payloads.length === 0) return;
    this.count(payloads.length, this.writeFrames(payloads));
  }

  /** Frame and write a batch at the end of the current segment; returns its bytes. */
  private writeFrames(payloads: readonly Uint8Array[]): number {
    const seg = this.current;
    const frames = encodeFrames(payloads, seg.salt);
    try {
      writeAll(this.fsys, this.fd, frames, seg.size);
    } catch (err) {
      const e = wrapFsError(err, `write of ${frames.length} bytes at offset ${seg.size}`, seg.file);
      e.offset = seg.size;
      throw this.fail(e);
    }
    seg.size += frames.length;
    return frames.length;
  }

  private count(records: number, bytes: number): void {
    this._appendCalls++;
    this._recordsWritten += records;
    this._bytesWritten += bytes;
  }

  /**
   * fdatasync on the libuv thread pool, so the event loop keeps receiving while
   * the disk works. `done(null)` means every write() before this call is durable.
   * A failure fails the log permanently (never retried).
   */
  syncAsync(done: (err: StorageError | null) => void): void {
    try {
      this.checkWritable();
    } catch (e) {
      done(e as StorageError);
      return;
    }
    if (!this.sync) {
      done(null);
      return;
    }
    const file = this.current.file;
    this.syncsInFlight++;
    this.fsys.fdatasync(this.fd, (err) => {
      this.syncsInFlight--;
      if (this.syncsInFlight === 0)
        for (const fd of this.closeAfterSync.splice(0)) closeQuietly(this.fsys, fd);
      if (err) {
        done(this.fail(wrapFsError(err, 'fdatasync', file, 'ESYNC')));
        return;
      }
      if (this.failure) {
        done(this.failure);
        return;
      }
      this._syncs++;
      done(null);
    });
  }

  /**
   * Compaction. Sync the current segment, create the next one, write
   * `headPayloads` (the caller's checkpoint of live state) into it, fdatasync
   * it, fsync the directory, then delete all older segments and fsync the
   * directory again. Subsequent appends go to the new segment.
   *
   * A power loss at any step leaves a log that opens: the old segments are
   * whole and synced before the new one exists (only the LAST segment may
   * have a torn tail), and the new one is either absent, torn (cut at open)
   * or whole. Replay then returns old records followed by (part of) the
   * checkpoint, so the caller's records must be idempotent. Any error fails
   * the log permanently.
   */
  rotate(headPayloads: readonly Uint8Array[]): void {
    this.checkWritable();
    const fsys = this.fsys;
    const salt = newSalt();
    const frames = Buffer.concat([segmentHeader(salt), encodeFrames(headPayloads, salt)]);
    if (this.sync) {
      try {
        // Else a torn tail of this segment would sit in front of the new one.
        fsys.fdatasyncSync(this.fd);
      } catch (err) {
        throw this.fail(wrapFsError(err, 'fdatasync', this.current.file, 'ESYNC'));
      }
    }
    const num = this.current.num + 1n;
    const name = segmentName(num);
    const file = path.join(this.dir, name);
    let fd: number;
    try {
      fd = fsys.openSync(file, 'wx+');
    } catch (err) {
      throw this.fail(wrapFsError(err, 'create', file));
    }
    try {
      writeAll(fsys, fd, frames, 0);
    } catch (err) {
      closeQuietly(fsys, fd);
      throw this.fail(wrapFsError(err, `write of ${frames.length} bytes`, file));
    }
    if (this.sync) {
      try {
        fsys.fdatasyncSync(fd);
      } catch (err) {
        closeQuietly(fsys, fd);
        throw this.fail(wrapFsError(err, 'fdatasync', file, 'ESYNC'));
      }
      try {
        syncDir(fsys, this.dir);
      } catch (err) {
        closeQuietly(fsys, fd);
        throw this.fail(err as StorageError);
      }
    }
    // The new segment is durable: switch appends to it.
    const oldFd = this.fd;
    this.fd = fd;
    const old = this.segments;
    this.segments = [{ num, salt, name, file, size: frames.length }];
    if (this.syncsInFlight > 0) {
      // An asynchronous sync still uses it; closing now could let the fd number
      // be reused under that sync.
      this.closeAfterSync.push(oldFd);
    } else {
      try {
        fsys.closeSync(oldFd);
      } catch (err) {
        throw this.fail(wrapFsError(err, 'close', old[old.length - 1].file));
      }
    }
    for (let i = 0; i < old.length; i++) {
      try {
        fsys.unlinkSync(old[i].file);
      } catch (err) {
        // Keep the undeleted ones accounted for (sizeBytes) in front of the new one.
        this.segments = [...old.slice(i), ...this.segments];
        throw this.fail(wrapFsError(err, 'unlink', old[i].file));
      }
    }
    if (this.sync) {
      try {
        syncDir(fsys, this.dir);
      } catch (err) {
        throw this.fail(err as StorageError);
      }
    }
    this._rotations++;
  }

  /** Total bytes of all live segment files. */
  sizeBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  /** Paths of the live segment files, oldest first (the last one is appended to). */
  segmentFiles(): string[] {
    return this.segments.map((s) => s.file);
  }

  /**
   * Close the file descriptor. Idempotent. Does not sync: append() has
   * already synced everything it acknowledged, and what write() wrote is
   * acknowledged only by a completed syncAsync. Contract: no syncAsync may be
   * running (its fd would be closed under it and the number reused); the
   * daemon's stop waits for it first.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.fsys.closeSync(this.fd);
    } catch (err) {
      // A close error after a failure is expected (e.g. EBADF); otherwise report it.
      if (!this.failure) throw this.fail(wrapFsError(err, 'close', this.current.file));
    }
  }
}

/**
 * Atomically replace `file` with `data`: write `<file>.tmp`, fdatasync it,
 * rename over `file`, fsync the directory (syncs only when `sync`). Readers
 * see either the old or the new content, never a mix; when it returns (with
 * `sync`), the new content survives a power loss. Throws StorageError.
 */
export function writeFileAtomic(
  file: string,
  data: Uint8Array,
  sync: boolean,
  fsys: Fsys = nodeFs,
): void {
  const tmp = `${file}.tmp`;
  let fd: number;
  try {
    fd = fsys.openSync(tmp, 'w');
  } catch (err) {
    throw wrapFsError(err, 'create', tmp);
  }
  let ok = false;
  try {
    try {
      writeAll(fsys, fd, data, 0);
    } catch (err) {
      throw wrapFsError(err, `write of ${data.length} bytes`, tmp);
    }
    if (sync) {
      try {
        fsys.fdatasyncSync(fd);
      } catch (err) {
        throw wrapFsError(err, 'fdatasync', tmp, 'ESYNC');
      }
    }
    try {
      fsys.closeSync(fd);
    } catch (err) {
      throw wrapFsError(err, 'close', tmp);
    }
    fd = -1;
    try {
      fsys.renameSync(tmp, file);
    } catch (err) {
      throw wrapFsError(err, 'rename', `${tmp} -> ${file}`);
    }
    ok = true;
  } finally {
    if (!ok) {
      if (fd >= 0) closeQuietly(fsys, fd);
      try {
        fsys.unlinkSync(tmp);
      } catch {
        // already failing
      }
    }
  }
  if (sync) syncDir(fsys, path.dirname(file));
}

/** Magic of checked files ("PXCK"), then u32le length, u32le crc32c(data), data. */
const CHECKED_MAGIC = 0x4b435850;
const CHECKED_HEADER_BYTES = 12;

/**
 * Atomically write `data` wrapped in a header `[u32le magic "PXCK"]
 * [u32le length][u32le crc32c(data)]` (see writeFileAtomic).
 */
export function writeFileChecked(
  file: string,
  data: Uint8Array,
  sync: boolean,
  fsys: Fsys = nodeFs,
): void {
  const out = Buffer.allocUnsafe(CHECKED_HEADER_BYTES + data.length);
  out.writeUInt32LE(CHECKED_MAGIC, 0);
  out.writeUInt32LE(data.length, 4);
  out.writeUInt32LE(crc32c(data), 8);
  out.set(data, CHECKED_HEADER_BYTES);
  writeFileAtomic(file, out, sync, fsys);
}

/**
 * Read a file written by writeFileChecked and verify it. Throws StorageError
 * 'ECORRUPT' (naming the file) on a bad magic, length or checksum, or the
 * errno code (e.g. 'ENOENT') if it cannot be read.
 */
export function readFileChecked(file: string, fsys: Fsys = nodeFs): Buffer {
  let buf: Buffer;
  try {
    buf = fsys.readFileSync(file);
  } catch (err) {
    throw wrapFsError(err, 'read', file);
  }
  const bad = (what: string, offset: number): StorageError =>
    new StorageError('ECORRUPT', `${file}: ${what} (the file is corrupt)`, { file, offset });
  if (buf.length < CHECKED_HEADER_BYTES) {
    throw bad(`truncated header (${buf.length} of ${CHECKED_HEADER_BYTES} bytes)`, 0);
  }
  if (buf.readUInt32LE(0) !== CHECKED_MAGIC) throw bad('bad magic at offset 0', 0);
  const len = buf.readUInt32LE(4);
  if (len !== buf.length - CHECKED_HEADER_BYTES) {
    throw bad(
      `length ${len} in header does not match ${buf.length - CHECKED_HEADER_BYTES} bytes of data`,
      4,
    );
  }
  const data = buf.subarray(CHECKED_HEADER_BYTES);
  if (crc32c(data) !== buf.readUInt32LE(8)) {
    throw bad(`bad checksum of ${len} bytes of data at offset ${CHECKED_HEADER_BYTES}`, 8);
  }
  return data;
}
