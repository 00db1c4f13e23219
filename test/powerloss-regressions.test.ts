/**
 * One regression test per proven file failure (issue 9 failures 6 and 9, issue
 * 16 items 7-11), each named after the rule it checks. Most run the real
 * storage code on the simulated disk of lib/io/fsmodel.ts; the torn-tail and
 * order-log tears also run on the real file system.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import type { DurableRecord } from '../lib/core/types';
import { FsModel, PowerCut, STRICT_LOSS, type LossChoice } from '../lib/io/fsmodel';
import type { Fsys } from '../lib/io/fsys';
import { writeKeyFile } from '../lib/io/keys';
import { OrderLog } from '../lib/io/orderlog';
import {
  encodeFrames,
  RecordLog,
  RECORD_HEADER_BYTES,
  type RecordLogOpenResult,
} from '../lib/io/recordlog';
import { DurableStore, encodeRecord } from '../lib/io/storage';
import { compareLogTexts } from '../lib/logcmp';

const DIR = '/var/lib/paxos/data/1';
const b = (s: string): Buffer => Buffer.from(s);
const strs = (rs: Buffer[]): string[] => rs.map((r) => r.toString());

/** Directory changes kept, half of every unsynced append kept and the rest zero-filled. */
const TORN_ZEROS: LossChoice = {
  dirChanges: (_d, n) => n,
  fileTail: (_f, _s, extra) => ({ kept: extra >> 1, zeros: extra - (extra >> 1) }),
};

/** Index of the first step of a full run whose description matches `re` (after `after`). */
function stepIndex(trace: string[], re: RegExp, after = 0): number {
  for (let i = after; i < trace.length; i++) if (re.test(trace[i])) return i;
  throw new Error(`no step matches ${re}: ${trace.join('; ')}`);
}

function runCut(m: FsModel, steps: number, fn: () => void): void {
  m.cutAfter(steps);
  try {
    fn();
  } catch (e) {
    if (!(e instanceof PowerCut) && !m.isCut) throw e;
  }
  if (!m.isCut) throw new Error(`the run ended before step ${steps + 1}`);
}

function tmpDir(t: { teardown(fn: () => void): void }, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `paxos-${name}-`));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test(
  'replayed records are durable before open returns (issue 9 #6: ack of replayed, unsynced state after a kill)',
  async (t) => {
    const m = new FsModel();
    const { log } = RecordLog.open(DIR, { sync: true, fs: m });
    log.append([b('promise 1')]);
    log.write([b('promise 2')]); // not synced: the kill comes first
    m.crash();
    const a = RecordLog.open(DIR, { sync: true, fs: m });
    t.same(
      strs(a.records),
      ['promise 1', 'promise 2'],
      'the kill kept the page cache: both replay',
    );
    // The node may now answer a re-sent prepare at ballot 2 without writing anything.
    a.log.close();
    m.powerLoss(STRICT_LOSS);
    const c = RecordLog.open(DIR, { sync: true, fs: m });
    t.same(
      strs(c.records),
      ['promise 1', 'promise 2'],
      'the replayed promise survives a power loss',
    );
  },
);

t.test(
  'rotate syncs the old segment first: a power loss in rotation leaves a log that opens (issue 9 #9)',
  async (t) => {
    const workload = (m: FsModel): void => {
      const { log } = RecordLog.open(DIR, { sync: true, fs: m });
      log.append([b('p1')]);
      log.write([b('p2, written but not yet synced when the snapshot came')]);
      log.rotate([b('head')]);
    };
    const full = new FsModel();
    workload(full);
    // Cut after the new segment and the directory are durable, before the unlink.
    const cut = stepIndex(full.trace, /^unlink /);
    const m = new FsModel();
    runCut(m, cut, () => workload(m));
    m.powerLoss(TORN_ZEROS);
    const r = RecordLog.open(DIR, { sync: true, fs: m });
    t.same(
      strs(r.records),
      ['p1', 'p2, written but not yet synced when the snapshot came', 'head'],
      'it opens: old segment whole, then the checkpoint',
    );
  },
);

t.test(
  'a new data directory is durable before anything is stored in it (issue 16 #7)',
  async (t) => {
    const m = new FsModel();
    const o = DurableStore.open(DIR, true, m);
    t.ok(o.fresh, 'a new node');
    o.store.append([{ t: 'voter' }, { t: 'promise', ballot: 3 }]);
    o.store.close();
    m.powerLoss(STRICT_LOSS);
    const again = DurableStore.open(DIR, true, m);
    t.notOk(again.fresh, 'after a power loss it is not a new node (npm start would pass --init)');
    t.same(again.records, [{ t: 'voter' }, { t: 'promise', ballot: 3 }], 'and keeps its records');

    // A run killed after creating the directory but before syncing its entry: the
    // next run finds the directory and must make it durable too.
    const full = new FsModel();
    DurableStore.open(DIR, true, full).store.close();
    const k = new FsModel();
    runCut(k, stepIndex(full.trace, /^fsync \/var\/lib\/paxos\/data$/), () =>
      DurableStore.open(DIR, true, k),
    );
    k.crash();
    const second = DurableStore.open(DIR, true, k);
    second.store.append([{ t: 'voter' }]);
    second.store.close();
    k.powerLoss(STRICT_LOSS);
    t.same(
      DurableStore.open(DIR, true, k).records,
      [{ t: 'voter' }],
      'nor after a kill and a restart',
    );
  },
);

t.test(
  'a segment left by a kill inside rotate is made durable by the next open (issue 16 #8)',
  async (t) => {
    const workload = (m: FsModel): void => {
      const { log } = RecordLog.open(DIR, { sync: true, fs: m });
      log.append([b('p1')]);
      log.rotate([b('head')]);
    };
    const full = new FsModel();
    workload(full);
    const created = stepIndex(full.trace, /^create .*wal-0000000000000002\.log$/);
    const dirSync = stepIndex(full.trace, /^fsync \/var\/lib\/paxos\/data\/1$/, created);
    const m = new FsModel();
    runCut(m, dirSync, () => workload(m)); // killed before the directory sync
    m.crash();
    const a = RecordLog.open(DIR, { sync: true, fs: m });
    t.same(strs(a.records), ['p1', 'head'], 'the restarted node replays both segments');
    a.log.append([b('acknowledged after the restart')]);
    a.log.close();
    m.powerLoss(STRICT_LOSS);
    const c = RecordLog.open(DIR, { sync: true, fs: m });
    t.same(
      strs(c.records),
      ['p1', 'head', 'acknowledged after the restart'],
      'what it acknowledged in that segment survives a power loss',
    );
  },
);

/** A client command whose bytes hold a valid frame (a client chooses its values). */
const INNER = encodeFrames([b('{"a record that was never written":1}')]);

function frameShapedAccept(): DurableRecord {
  const inner = INNER;
  const op = Buffer.concat([b('put k '), inner, b(' and more of the value after it')]);
  return { t: 'accept', slot: 9, ballot: 4, value: [{ cid: 1, seq: 1, op }] };
}

/**
 * Write `good` then `evil` (a record holding a valid frame) as a segment, tear
 * `evil` just after its embedded frame (cut, or zero-filled), open. `legacy`
 * writes an old header-less, unsalted segment by hand.
 */
function openTornFrameShaped(dir: string, legacy: boolean, zeroFill: boolean): RecordLogOpenResult {
  const good = encodeRecord({ t: 'promise', ballot: 4 });
  const evil = encodeRecord(frameShapedAccept());
  const file = path.join(dir, 'wal-0000000000000001.log');
  fs.rmSync(dir, { recursive: true, force: true });
  if (legacy) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(file, encodeFrames([good, evil]));
  } else {
    const { log } = RecordLog.open(dir, { sync: true });
    log.append([good]);
    log.append([evil]);
    log.close();
  }
  const whole = fs.readFileSync(file);
  const evilAt = whole.length - RECORD_HEADER_BYTES - evil.length;
  const innerEnd = evilAt + RECORD_HEADER_BYTES + evil.indexOf(INNER) + INNER.length;
  if (zeroFill) fs.writeFileSync(file, Buffer.from(whole).fill(0, innerEnd + 2));
  else fs.writeFileSync(file, whole.subarray(0, innerEnd + 2));
  return RecordLog.open(dir, { sync: true });
}

t.test(
  'a frame-shaped client value does not turn a torn tail into corruption (issue 16 #9)',
  async (t) => {
    const base = tmpDir(t, 'frameval');
    t.ok(encodeRecord(frameShapedAccept()).indexOf(INNER) > 0, 'the record holds a valid frame');
    const good = encodeRecord({ t: 'promise', ballot: 4 });
    for (const legacy of [false, true]) {
      for (const zeroFill of [false, true]) {
        const what = `${legacy ? 'old unsalted segment' : 'segment'}, torn by ${zeroFill ? 'a zero-filled tail' : 'truncation'} just after the embedded frame`;
        const o = openTornFrameShaped(path.join(base, `${legacy}-${zeroFill}`), legacy, zeroFill);
        o.log.close();
        t.same(o.records, [good], `${what}: a torn tail, the node starts`);
        t.ok(o.tornBytes > 0, `${what}: the torn record is cut`);
      }
    }
  },
);

// ---------------------------------------------------------------------------
// The order log (issue 16 #10)

function slotLines(slot: number): string[] {
  return Array.from({ length: 3 }, (_, i) => `${slot}.${i} c${i}:${slot} put k${slot} v${i}`);
}
function slotText(from: number, to: number): string {
  let s = '';
  for (let slot = from; slot <= to; slot++) s += slotLines(slot).join('\n') + '\n';
  return s;
}

/** Restart an order log as the daemon does and apply slots from..to again. */
function restartAndReplay(file: string, from: number, to: number, fsys?: Fsys): OrderLog {
  const ol = new OrderLog(file, fsys);
  for (let s = from; s <= to; s++) ol.write(s, slotLines(s));
  ol.flush();
  ol.close();
  return ol;
}

t.test('order log restart rule: whole slots, each once (issue 16 #10)', async (t) => {
  const dir = tmpDir(t, 'orderlog');
  const file = path.join(dir, 'learned_ops1.log');
  const want = slotText(1, 4);

  // A tear at a line end inside slot 3: the slot is cut and written again whole.
  fs.writeFileSync(file, slotText(1, 2) + slotLines(3)[0] + '\n');
  t.equal(OrderLog.lastSlotIn(file), 2, 'a slot torn at a line end does not count');
  restartAndReplay(file, 1, 4);
  t.equal(
    fs.readFileSync(file, 'utf8'),
    want,
    'torn at a line end: every line of slot 3 is there once',
  );

  // A tear inside the first line of slot 3: never written twice.
  fs.writeFileSync(file, slotText(1, 2) + slotLines(3)[0].slice(0, 9));
  restartAndReplay(file, 1, 4);
  t.equal(fs.readFileSync(file, 'utf8'), want, 'torn inside a line: the slot is written once');

  // A zero-filled tail larger than any fixed window read at start.
  fs.writeFileSync(file, Buffer.concat([b(slotText(1, 2)), Buffer.alloc(300 * 1024)]));
  t.equal(OrderLog.lastSlotIn(file), 1, 'a zero-filled tail: resume after the last whole slot');
  restartAndReplay(file, 2, 4);
  t.equal(fs.readFileSync(file, 'utf8'), want, 'zero-filled tail: cut, nothing written twice');
});

/** An Fsys whose writes to `file` take at most `most` bytes, and fail once with ENOSPC. */
function stingyWrites(m: FsModel, most: number, enospcAt: number): Fsys & { failed: boolean } {
  let written = 0;
  const f = Object.create(m) as FsModel & { failed: boolean };
  f.failed = false;
  f.writeSync = (fd, buf, off, len, pos) => {
    if (!f.failed && written >= enospcAt) {
      f.failed = true;
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    }
    const n = m.writeSync(fd, buf, off, Math.min(len, most), pos);
    written += n;
    return n;
  };
  return f;
}

t.test(
  'order log: short writes continue, a failed write keeps the slot marker back (issue 16 #10)',
  async (t) => {
    const m = new FsModel();
    const file = '/logs/learned_ops1.log';
    const fsys = stingyWrites(m, 7, 100);
    const ol = new OrderLog(file, fsys);
    for (let s = 1; s <= 3; s++) ol.write(s, slotLines(s));
    t.throws(() => ol.flush(), /ENOSPC/, 'the disk is full part-way');
    t.ok(ol.lastSlot < 3, `the slot marker stays at the last slot written whole (${ol.lastSlot})`);
    const partial = m.readFileSync(file).toString();
    t.ok(slotText(1, 3).startsWith(partial), 'the file is a prefix of the intended text');
    ol.write(3, slotLines(3)); // the daemon applies each slot once; a repeat is ignored
    ol.write(4, slotLines(4));
    ol.flush();
    t.equal(
      m.readFileSync(file).toString(),
      slotText(1, 4),
      'the next flush completes it, in order',
    );
    t.equal(ol.lastSlot, 4);
    ol.close();
  },
);

t.test(
  'order log: a disk full for long keeps memory bounded and marks the lost slots',
  async (t) => {
    const m = new FsModel();
    const file = '/logs/learned_ops1.log';
    let full = false;
    const fsys = Object.create(m) as FsModel;
    fsys.writeSync = (fd, buf, off, len, pos) => {
      if (full)
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return m.writeSync(fd, buf, off, Math.min(len, 50), pos); // short writes too
    };
    const ol = new OrderLog(file, fsys, 1000);
    ol.write(1, slotLines(1));
    ol.flush();
    full = true;
    for (let s = 2; s <= 40; s++) {
      ol.write(s, slotLines(s));
      t.throws(() => ol.flush(), /ENOSPC/);
    }
    t.equal(ol.lastSlot, 1, 'nothing more was written');
    full = false;
    ol.write(41, slotLines(41));
    ol.flush();
    ol.close();
    const text = m.readFileSync(file).toString();
    t.match(
      text,
      /^# lines missing through slot \d+: the order log could not be written$/m,
      'a gap marker',
    );
    const cmp = compareLogTexts([
      { file: 'reference', text: slotText(1, 41) },
      { file, text },
    ]);
    t.ok(cmp.ok, `paxos-logcmp accepts it: ${cmp.message}`);
    t.ok(text.endsWith(slotText(41, 41)), 'and the log goes on with whole slots');
    t.equal(
      OrderLog.lastSlotIn(file, m),
      40,
      'a restart cuts the last slot (41) and resumes after 40',
    );
  },
);

t.test('paxos-logcmp tolerates only a torn last line (issue 16 #10)', async (t) => {
  const ref = { file: 'a', text: slotText(1, 4) };
  const torn = { file: 'b', text: slotText(1, 3) + slotLines(4)[0].slice(0, 6) };
  t.ok(compareLogTexts([ref, torn]).ok, 'a partial last line is fine');
  const tornAtLineEnd = { file: 'c', text: slotText(1, 3) + slotLines(4)[0] + '\n' };
  t.ok(compareLogTexts([ref, tornAtLineEnd]).ok, 'the last slot cut at a line end is a prefix');
  const garbage = { file: 'd', text: slotText(1, 2) + 'x\0\0\n' + slotText(3, 4) };
  const g = compareLogTexts([ref, garbage]);
  t.notOk(g.ok, 'a bad line in the middle is reported');
  t.match(g.message, /d:7: unreadable line/);
  const lost = { file: 'e', text: slotText(1, 2) + slotLines(3)[0] + '\n' + slotText(4, 4) };
  const l = compareLogTexts([ref, lost]);
  t.notOk(l.ok, 'a slot missing lines before a later slot is reported');
  t.match(l.message, /slot 3: e has 1 lines, a has 3/);
  const twice = {
    file: 'f',
    text: slotText(1, 2) + slotLines(3)[0].slice(0, 5) + '\n' + slotText(3, 4),
  };
  t.notOk(compareLogTexts([ref, twice]).ok, 'a torn line left in the middle is reported');
});

t.test('key files are durable when keygen returns (issue 16 #11)', async (t) => {
  const m = new FsModel();
  m.putFile('/etc/paxos/README', b('keys live here\n'));
  writeKeyFile('/etc/paxos/peer.key', m);
  const key = m.readFileSync('/etc/paxos/peer.key').toString();
  t.match(key, /^[0-9a-f]{64}\n$/, 'one key');
  m.powerLoss(STRICT_LOSS);
  t.equal(m.readFileSync('/etc/paxos/peer.key').toString(), key, 'the key survives a power loss');
  t.throws(() => writeKeyFile('/etc/paxos/peer.key', m), { code: 'EEXIST' }, 'never overwritten');
});
