import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { DurableRecord } from '../lib/core/types';
import { crc32c } from '../lib/io/crc32c';
import { decodeRecord, encodeRecord } from '../lib/io/storage';
import {
  RecordLog,
  StorageError,
  RECORD_BYTES_MAX,
  RECORD_HEADER_BYTES,
  SEGMENT_HEADER_BYTES,
  encodeFrames,
  writeFileAtomic,
  writeFileChecked,
  readFileChecked,
} from '../lib/io/recordlog';

const SEG1 = 'wal-0000000000000001.log';
const SEG2 = 'wal-0000000000000002.log';

function payload(i: number): Buffer {
  return Buffer.from(`record-${i}:${'x'.repeat((i * 7) % 61)}`);
}

function payloads(from: number, n: number): Buffer[] {
  return Array.from({ length: n }, (_, k) => payload(from + k));
}

/** Byte offset of record `i` in a segment written by RecordLog holding `list`. */
function offsetOf(list: Buffer[], i: number): number {
  let off = SEGMENT_HEADER_BYTES;
  for (let k = 0; k < i; k++) off += RECORD_HEADER_BYTES + list[k].length;
  return off;
}

function flipByte(file: string, offset: number): void {
  const buf = fs.readFileSync(file);
  buf[offset] ^= 0x40;
  fs.writeFileSync(file, buf);
}

interface Asserts {
  ok(value: unknown, message: string): unknown;
  fail(message: string): unknown;
}

function storageErr(t: Asserts, fn: () => unknown): StorageError {
  try {
    fn();
  } catch (err) {
    t.ok(err instanceof StorageError, 'throws StorageError');
    return err as StorageError;
  }
  t.fail('expected a StorageError');
  throw new Error('unreachable');
}

/**
 * The real fs module object (the `import * as fs` namespace is a read-only view),
 * so tests can monkey-patch the calls the record log makes.
 */
const mutableFs: { -readonly [K in keyof typeof fs]: (typeof fs)[K] } = require('node:fs');

/** Write a dir with two segments by crashing a rotate() after the new segment is durable. */
function twoSegmentDir(dir: string, first: Buffer[], head: Buffer[]): void {
  const { log } = RecordLog.open(dir, { sync: true });
  log.append(first);
  const realUnlink = mutableFs.unlinkSync;
  mutableFs.unlinkSync = () => {
    throw Object.assign(new Error('simulated crash'), { code: 'EIO' });
  };
  try {
    log.rotate(head);
  } catch {
    // expected
  } finally {
    mutableFs.unlinkSync = realUnlink;
  }
  log.close();
}

t.test('crc32c', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  t.equal(crc32c(Buffer.alloc(0)), 0);
  t.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
  t.equal(crc32c(Buffer.from('xx123456789yy'), 2, 11), 0xe3069283, 'sub-range');
  // slicing-by-8 agrees with a bytewise reference at all alignments/lengths
  const ref = (b: Uint8Array): number => {
    let c = ~0;
    for (const x of b) {
      c ^= x;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return ~c >>> 0;
  };
  const data = randomBytes(300);
  for (let s = 0; s < 9; s++) {
    for (let e = s; e <= 300; e += 13) {
      if (crc32c(data, s, e) !== ref(data.subarray(s, e))) t.fail(`mismatch ${s}..${e}`);
    }
  }
  t.throws(() => crc32c(data, 5, 301), RangeError);
});

t.test('round trip many records across reopen', async (t) => {
  const dir = path.join(t.testdir(), 'data', '0');
  const all: Buffer[] = [];
  {
    const r = RecordLog.open(dir, { sync: true });
    t.same(r.records, []);
    t.equal(r.tornBytes, 0);
    t.same(fs.readdirSync(dir), [SEG1]);
    let n = 0;
    let calls = 0;
    for (let batch = 1; n < 1000; batch = (batch % 17) + 1) {
      const ps = payloads(n, batch);
      r.log.append(ps);
      all.push(...ps);
      n += batch;
      calls++;
    }
    r.log.append([]); // no-op
    t.equal(r.log.appendCalls, calls);
    t.equal(r.log.recordsWritten, all.length);
    t.equal(r.log.syncs, calls);
    const bytes = all.reduce((s, p) => s + RECORD_HEADER_BYTES + p.length, 0);
    t.equal(r.log.bytesWritten, bytes);
    t.equal(r.log.sizeBytes(), SEGMENT_HEADER_BYTES + bytes);
    t.equal(fs.statSync(path.join(dir, SEG1)).size, SEGMENT_HEADER_BYTES + bytes);
    r.log.close();
    r.log.close(); // idempotent
    t.equal(storageErr(t, () => r.log.append([payload(0)])).code, 'ECLOSED');
  }
  {
    const r = RecordLog.open(dir, { sync: false });
    t.equal(r.records.length, all.length);
    t.same(r.records, all);
    t.equal(r.tornBytes, 0);
    const big = randomBytes(100_000);
    r.log.append([big]);
    all.push(big);
    t.equal(r.log.syncs, 0, 'sync:false never syncs');
    r.log.close();
  }
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, all);
  r.log.close();
});

t.test('payload validation does not fail the log', async (t) => {
  const dir = t.testdir();
  const { log } = RecordLog.open(dir, { sync: false });
  t.throws(() => log.append([payload(1), Buffer.alloc(0)]), RangeError);
  t.throws(() => log.append([Buffer.alloc(RECORD_BYTES_MAX + 1)]), RangeError);
  t.equal(log.sizeBytes(), SEGMENT_HEADER_BYTES, 'nothing of the rejected batch was written');
  const max = Buffer.alloc(RECORD_BYTES_MAX, 7);
  log.append([max]);
  log.close();
  const r = RecordLog.open(dir, { sync: false });
  t.equal(r.records.length, 1);
  t.ok(r.records[0].equals(max));
  r.log.close();
});

t.test('rotate and reopen', async (t) => {
  const dir = t.testdir();
  const r = RecordLog.open(dir, { sync: true });
  r.log.append(payloads(0, 50));
  const head = [Buffer.from('checkpoint-a'), Buffer.from('checkpoint-b')];
  r.log.rotate(head);
  t.equal(r.log.rotations, 1);
  t.same(fs.readdirSync(dir), [SEG2], 'older segments deleted');
  r.log.append(payloads(100, 3));
  t.equal(r.log.sizeBytes(), fs.statSync(path.join(dir, SEG2)).size);
  t.same(r.log.segmentFiles(), [path.join(dir, SEG2)]);
  r.log.close();

  const r2 = RecordLog.open(dir, { sync: true });
  t.same(r2.records, [...head, ...payloads(100, 3)]);
  r2.log.rotate([]); // empty checkpoint is allowed
  r2.log.append([payload(7)]);
  r2.log.rotate([Buffer.from('c2')]);
  r2.log.append([payload(8)]);
  r2.log.close();
  t.same(fs.readdirSync(dir), ['wal-0000000000000004.log']);
  const r3 = RecordLog.open(dir, { sync: true });
  t.same(r3.records, [Buffer.from('c2'), payload(8)]);
  r3.log.close();
});

t.test('crash during rotate: replay sees old segments then the new one', async (t) => {
  const dir = t.testdir();
  twoSegmentDir(dir, payloads(0, 5), [Buffer.from('head')]);
  t.same(fs.readdirSync(dir).sort(), [SEG1, SEG2]);
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, [...payloads(0, 5), Buffer.from('head')]);
  t.equal(
    r.log.sizeBytes(),
    offsetOf(payloads(0, 5), 5) + SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 4,
  );
  r.log.append([payload(9)]);
  r.log.rotate([Buffer.from('head2')]);
  t.same(fs.readdirSync(dir), ['wal-0000000000000003.log']);
  r.log.close();
});

t.test('torn tail: last record truncated by a few bytes', async (t) => {
  const dir = t.testdir();
  const list = payloads(0, 10);
  const file = path.join(dir, SEG1);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(list.slice(0, 4));
    log.append(list.slice(4));
    log.close();
  }
  const size = fs.statSync(file).size;
  fs.truncateSync(file, size - 3);
  {
    const r = RecordLog.open(dir, { sync: true });
    t.same(r.records, list.slice(0, 9), 'earlier records intact');
    t.equal(r.tornBytes, RECORD_HEADER_BYTES + list[9].length - 3);
    t.equal(fs.statSync(file).size, offsetOf(list, 9), 'file truncated to last good record');
    r.log.append(payloads(100, 2));
    r.log.close();
  }
  const r = RecordLog.open(dir, { sync: true });
  t.same(
    r.records,
    [...list.slice(0, 9), ...payloads(100, 2)],
    'appends after reopen are readable',
  );
  t.equal(r.tornBytes, 0);
  r.log.close();
});

t.test('torn tail: partial header', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  {
    const { log } = RecordLog.open(dir, { sync: false });
    log.append(payloads(0, 3));
    log.close();
  }
  fs.appendFileSync(file, Buffer.from([0x11, 0x22, 0x33]));
  const r = RecordLog.open(dir, { sync: false });
  t.same(r.records, payloads(0, 3));
  t.equal(r.tornBytes, 3);
  r.log.close();
});

t.test('torn tail: trailing zero bytes are cut', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(payloads(0, 5));
    log.close();
  }
  const size = fs.statSync(file).size;
  fs.appendFileSync(file, Buffer.alloc(4096));
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, payloads(0, 5));
  t.equal(r.tornBytes, 4096);
  t.equal(fs.statSync(file).size, size);
  r.log.close();

  // A segment consisting only of zeros (e.g. a preallocated file) is all tail.
  const dir2 = t.testdir();
  fs.writeFileSync(path.join(dir2, SEG1), Buffer.alloc(100));
  const r2 = RecordLog.open(dir2, { sync: true });
  t.same(r2.records, []);
  t.equal(r2.tornBytes, 100);
  r2.log.close();
});

t.test('torn tail: garbage after the last good record', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(payloads(0, 5));
    log.close();
  }
  fs.appendFileSync(file, Buffer.alloc(777, 0xab));
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, payloads(0, 5));
  t.equal(r.tornBytes, 777);
  r.log.close();
});

t.test('flipped byte in a middle record payload -> ECORRUPT naming file and offset', async (t) => {
  const dir = path.join(t.testdir(), 'data', '0');
  const file = path.join(dir, SEG1);
  const list = payloads(0, 10);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(list);
    log.close();
  }
  const off = offsetOf(list, 4);
  flipByte(file, off + RECORD_HEADER_BYTES + 2);
  const before = fs.readFileSync(file);
  const err = storageErr(t, () => RecordLog.open(dir, { sync: true }));
  t.equal(err.code, 'ECORRUPT');
  t.equal(err.file, file);
  t.equal(err.offset, off);
  t.match(err.message, `${file}: bad checksum in record at offset ${off}`);
  t.match(err.message, 'the log is corrupt; refusing to start');
  t.ok(fs.readFileSync(file).equals(before), 'corrupt file left untouched');
});

t.test('flipped byte in a middle record length -> ECORRUPT', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  const list = payloads(0, 10);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(list);
    log.close();
  }
  const off = offsetOf(list, 3);
  flipByte(file, off + 3); // high byte of the length: impossible length
  const err = storageErr(t, () => RecordLog.open(dir, { sync: true }));
  t.equal(err.code, 'ECORRUPT');
  t.equal(err.offset, off);
  t.match(err.message, `offset ${off}`);
  t.match(err.message, file);

  // a small length change: frame still inside the file, bad checksum
  const dir2 = t.testdir();
  const file2 = path.join(dir2, SEG1);
  {
    const { log } = RecordLog.open(dir2, { sync: true });
    log.append(list);
    log.close();
  }
  flipByte(file2, offsetOf(list, 3)); // 0x40 into the low byte
  const err2 = storageErr(t, () => RecordLog.open(dir2, { sync: true }));
  t.equal(err2.code, 'ECORRUPT');
  t.equal(err2.offset, off);
});

/** Write `list` with one synced append into a new log in `dir`; returns the segment file. */
function logWith(dir: string, list: Buffer[]): string {
  const { log } = RecordLog.open(dir, { sync: true });
  log.append(list);
  log.close();
  return path.join(dir, SEG1);
}

t.test('a length field damaged to run past the end of the file -> ECORRUPT', async (t) => {
  // The salted checksums let the scan look inside what the bad length claims:
  // the records it would swallow are found and the damage is reported.
  const dir = t.testdir();
  const list = payloads(0, 10);
  const file = logWith(dir, list);
  const off = offsetOf(list, 3);
  flipByte(file, off + 2); // + 0x40 << 16: a possible length, far past the end
  const err = storageErr(t, () => RecordLog.open(dir, { sync: true }));
  t.equal(err.code, 'ECORRUPT');
  t.equal(err.offset, off);
  t.match(err.message, /truncated payload/);
});

t.test('segment header: torn in the last segment is a torn tail, elsewhere ECORRUPT', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  fs.writeFileSync(file, Buffer.from('PXWS\x01\x00\x00', 'latin1')); // header cut short
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, []);
  t.equal(r.tornBytes, 7);
  r.log.append([payload(1)]);
  r.log.close();
  const again = RecordLog.open(dir, { sync: true });
  t.same(again.records, [payload(1)], 'a fresh header was written and the log works');
  again.log.close();

  const dir2 = t.testdir();
  twoSegmentDir(dir2, payloads(0, 3), [Buffer.from('head')]);
  flipByte(path.join(dir2, SEG1), 9); // inside the salt
  const err = storageErr(t, () => RecordLog.open(dir2, { sync: true }));
  t.equal(err.code, 'ECORRUPT');
  t.match(err.message, /bad segment header checksum/);
});

t.test('flipped byte in the last record (nothing valid after) -> torn tail', async (t) => {
  // Deliberate: a damaged final record with nothing valid after it cannot be
  // told apart from a torn write of that record, so it is cut off.
  const dir = t.testdir();
  const file = path.join(dir, SEG1);
  const list = payloads(0, 10);
  {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append(list);
    log.close();
  }
  flipByte(file, offsetOf(list, 9) + RECORD_HEADER_BYTES + 1);
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, list.slice(0, 9));
  t.equal(r.tornBytes, RECORD_HEADER_BYTES + list[9].length);
  r.log.close();
});

t.test('corruption in a non-last segment -> ECORRUPT', async (t) => {
  const list = payloads(0, 6);
  // bad checksum in the final record of segment 1 (would be torn if it were last)
  {
    const dir = t.testdir();
    twoSegmentDir(dir, list, [Buffer.from('head')]);
    const file = path.join(dir, SEG1);
    const off = offsetOf(list, 5);
    flipByte(file, off + RECORD_HEADER_BYTES);
    const err = storageErr(t, () => RecordLog.open(dir, { sync: true }));
    t.equal(err.code, 'ECORRUPT');
    t.equal(err.file, file);
    t.match(err.message, `${file}: bad checksum in record at offset ${off}`);
  }
  // truncated non-last segment
  {
    const dir = t.testdir();
    twoSegmentDir(dir, list, [Buffer.from('head')]);
    const file = path.join(dir, SEG1);
    fs.truncateSync(file, fs.statSync(file).size - 2);
    const err = storageErr(t, () => RecordLog.open(dir, { sync: true }));
    t.equal(err.code, 'ECORRUPT');
    t.equal(err.offset, offsetOf(list, 5));
  }
  // trailing zeros in a non-last segment
  {
    const dir = t.testdir();
    twoSegmentDir(dir, list, [Buffer.from('head')]);
    fs.appendFileSync(path.join(dir, SEG1), Buffer.alloc(16));
    t.equal(storageErr(t, () => RecordLog.open(dir, { sync: true })).code, 'ECORRUPT');
  }
});

t.test('hand-made segments: ordering and frames', async (t) => {
  const dir = t.testdir();
  fs.writeFileSync(path.join(dir, 'wal-0000000000000010.log'), encodeFrames([payload(3)]));
  fs.writeFileSync(path.join(dir, 'wal-0000000000000009.log'), encodeFrames(payloads(1, 2)));
  fs.writeFileSync(path.join(dir, 'snapshot.bin'), 'ignored');
  const r = RecordLog.open(dir, { sync: true });
  t.same(r.records, payloads(1, 3));
  r.log.rotate([payload(0)]);
  t.same(fs.readdirSync(dir).sort(), ['snapshot.bin', 'wal-0000000000000011.log']);
  r.log.close();
});

t.test('failed fdatasync fails the log for good', async (t) => {
  const dir = t.testdir();
  const { log } = RecordLog.open(dir, { sync: true });
  log.append([payload(1)]);
  const real = mutableFs.fdatasyncSync;
  let calls = 0;
  mutableFs.fdatasyncSync = () => {
    calls++;
    throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  };
  let err: StorageError;
  try {
    err = storageErr(t, () => log.append([payload(2)]));
  } finally {
    mutableFs.fdatasyncSync = real;
  }
  t.equal(err.code, 'ESYNC');
  t.equal(err.sysCode, 'EIO');
  t.match(err.message, path.join(dir, SEG1));
  t.equal(log.failed, err);
  // fsync works again, but the log must never retry or write again
  const size = fs.statSync(path.join(dir, SEG1)).size;
  for (let i = 0; i < 3; i++) {
    const again = storageErr(t, () => log.append([payload(3)]));
    t.equal(again.code, 'ESYNC');
  }
  t.equal(storageErr(t, () => log.rotate([payload(4)])).code, 'ESYNC');
  t.equal(calls, 1, 'fdatasync never retried');
  t.equal(fs.statSync(path.join(dir, SEG1)).size, size, 'nothing written after the failure');
  t.same(fs.readdirSync(dir), [SEG1]);
  t.equal(log.appendCalls, 1);
  log.close();
});

t.test('failed write (fd closed under the log) fails the log for good', async (t) => {
  const dir = t.testdir();
  const { log } = RecordLog.open(dir, { sync: false });
  log.append([payload(1)]);
  const fd = (log as unknown as { fd: number }).fd;
  fs.closeSync(fd);
  const err = storageErr(t, () => log.append([payload(2)]));
  t.equal(err.code, 'EBADF');
  t.equal(err.offset, SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + payload(1).length);
  t.equal(storageErr(t, () => log.append([payload(3)])).code, 'EBADF');
  t.equal(storageErr(t, () => log.append([])).code, 'EBADF');
  // do not call log.close(): the fd number may have been reused by now
  const r = RecordLog.open(dir, { sync: false });
  t.same(r.records, [payload(1)]);
  r.log.close();
});

t.test('writeFileAtomic and checked files', async (t) => {
  const dir = t.testdir();
  const plain = path.join(dir, 'plain.bin');
  writeFileAtomic(plain, Buffer.from('v1'), true);
  writeFileAtomic(plain, Buffer.from('version 2'), true);
  t.equal(fs.readFileSync(plain, 'utf8'), 'version 2');
  t.same(fs.readdirSync(dir), ['plain.bin'], 'no tmp file left behind');

  const snap = path.join(dir, 'snapshot');
  const data = randomBytes(5000);
  writeFileChecked(snap, data, true);
  t.ok(readFileChecked(snap).equals(data));
  writeFileChecked(snap, Buffer.alloc(0), false);
  t.equal(readFileChecked(snap).length, 0);
  writeFileChecked(snap, data, true);

  flipByte(snap, 12 + 4321);
  const err = storageErr(t, () => readFileChecked(snap));
  t.equal(err.code, 'ECORRUPT');
  t.equal(err.file, snap);
  t.match(err.message, snap);

  writeFileChecked(snap, data, true);
  fs.truncateSync(snap, 100);
  t.equal(storageErr(t, () => readFileChecked(snap)).code, 'ECORRUPT');
  fs.writeFileSync(snap, 'junk');
  t.equal(storageErr(t, () => readFileChecked(snap)).code, 'ECORRUPT');
  fs.writeFileSync(snap, Buffer.alloc(64));
  t.equal(storageErr(t, () => readFileChecked(snap)).code, 'ECORRUPT');
  t.equal(storageErr(t, () => readFileChecked(path.join(dir, 'missing'))).code, 'ENOENT');
  t.equal(
    storageErr(t, () => writeFileAtomic(path.join(dir, 'no', 'such', 'f'), data, true)).code,
    'ENOENT',
  );
});

t.test('durable record codec: every record kind round-trips', async (t) => {
  const all: DurableRecord[] = [
    { t: 'promise', ballot: 17 },
    { t: 'accept', slot: 3, ballot: 17, value: [{ cid: 9, seq: 2, op: Buffer.from('op') }] },
    { t: 'chosen', slot: 3, ballot: 17 },
    { t: 'learn', slot: 4, value: [] },
    { t: 'voter' },
    { t: 'snapshot', slot: 2 },
    { t: 'incarnation', sid: 2, inc: 5 },
  ];
  const kinds = new Set(all.map((r) => r.t));
  t.equal(kinds.size, all.length, 'one of each kind');
  for (const r of all)
    t.same(decodeRecord(encodeRecord(r), 'test'), r, `${r.t} decodes to what was encoded`);
});
