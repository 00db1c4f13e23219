/**
 * Power-loss sweep: the real storage code (RecordLog, DurableStore, OrderLog)
 * runs a workload of start, write, sync, snapshot and rotation on the simulated
 * disk of lib/io/fsmodel.ts, and the power is cut before EVERY file-system step
 * in turn, with several choices of what the disk kept (only synced data; all of
 * it, as after a process kill; random prefixes of unsynced appends and
 * directory changes; torn appends with zero-filled tails). After each cut the
 * real open code must start, keep every acknowledged record, and return nothing
 * that was never written; what it returns must itself survive a second power
 * loss (open syncs what it replays). Recovery itself is cut at every step too.
 * The order log is checked the same way against a reference with paxos-logcmp.
 */
import t from 'tap';
import type { DurableRecord } from '../lib/core/types';
import {
  FsModel,
  KEEP_ALL,
  PowerCut,
  randomLoss,
  STRICT_LOSS,
  type LossChoice,
} from '../lib/io/fsmodel';
import { OrderLog } from '../lib/io/orderlog';
import { RecordLog, encodeFrames } from '../lib/io/recordlog';
import { DurableStore, encodeRecord } from '../lib/io/storage';
import { compareLogTexts, parseOrderLog } from '../lib/logcmp';
import { rng } from './helpers/faults';

/** Torn appends: half of each unsynced append kept, the rest zero-filled; directory changes kept. */
const TORN_ZEROS: LossChoice = {
  dirChanges: (_d, n) => n,
  fileTail: (_f, _s, extra) => ({ kept: extra >> 1, zeros: extra - (extra >> 1) }),
};

type Crash = [string, (m: FsModel) => void];

const loss =
  (choice: LossChoice) =>
  (m: FsModel): void =>
    m.powerLoss(choice);

/** A process kill keeps the page cache: written data and directory changes stay, unsynced. */
const KILL: Crash = ['kill', (m) => m.crash()];

/** What may happen at a cut: power losses of several kinds, or a kill. */
function crashes(k: number): Crash[] {
  return [
    ['strict', loss(STRICT_LOSS)],
    KILL,
    ['all-kept', loss(KEEP_ALL)],
    ['torn+zeros', loss(TORN_ZEROS)],
    ['random-a', loss(randomLoss(rng(1000 + k)))],
    ['random-b', loss(randomLoss(rng(2000 + k)))],
  ];
}

function isCut(m: FsModel, e: unknown): boolean {
  if (m.isCut) return true;
  throw e;
}

function syncLog(log: { syncAsync(cb: (e: Error | null) => void): void }): Promise<void> {
  return new Promise((resolve, reject) => log.syncAsync((e) => (e ? reject(e) : resolve())));
}

// --------------------------------------------------------------------------
// RecordLog: what was acknowledged, epoch by epoch (an epoch starts at a rotation)

interface Epoch {
  /** Checkpoint payloads written by the rotation that started the epoch. */
  heads: string[];
  /** Payloads acknowledged (append returned, or a later sync completed). */
  acked: string[];
}

interface LogRun {
  /** Every payload handed to the log, in order (heads at their rotation). */
  order: string[];
  epochs: Epoch[];
  /** Epochs whose rotation returned (epoch 0 has none). */
  completed: number;
}

/** A value shaped like a frame: a client may store exactly these bytes. */
const FRAME_SHAPED = Buffer.concat([
  Buffer.from('v='),
  encodeFrames([Buffer.from('a record that was never written')]),
  Buffer.from('.end'),
]).toString('latin1');

const LOG_DIR = '/srv/paxos/data/1';

async function logWorkload(m: FsModel, run: LogRun): Promise<void> {
  const enc = (p: string): Buffer => Buffer.from(p, 'latin1');
  const { log } = RecordLog.open(LOG_DIR, { sync: true, fs: m });
  let epoch = run.epochs[0];
  let unacked: string[] = [];
  const write = (ps: string[]): void => {
    run.order.push(...ps);
    log.write(ps.map(enc));
    unacked.push(...ps);
  };
  const append = (ps: string[]): void => {
    run.order.push(...ps);
    log.append(ps.map(enc));
    epoch.acked.push(...unacked, ...ps);
    unacked = [];
  };
  const sync = async (): Promise<void> => {
    const now = unacked;
    unacked = [];
    await syncLog(log);
    epoch.acked.push(...now);
  };
  const rotate = (heads: string[]): void => {
    run.order.push(...heads);
    const next: Epoch = { heads, acked: [] };
    run.epochs.push(next);
    log.rotate(heads.map(enc));
    run.completed = run.epochs.length - 1;
    epoch = next;
    unacked = [];
  };
  append(['p1', 'p2']);
  write(['p3']);
  await sync();
  write(['p4']);
  rotate(['h1a', 'h1b']);
  append([`p5 ${FRAME_SHAPED}`]);
  write(['p6']);
  write([`p7 ${FRAME_SHAPED}`]);
  await sync();
  write(['p8']);
  rotate(['h2a']);
  append(['p9']);
  write(['p10']);
  log.close();
}

function isSubsequence(sub: string[], of: string[]): boolean {
  let i = 0;
  for (const x of of) if (i < sub.length && sub[i] === x) i++;
  return i === sub.length;
}

/** What the reopened log must hold, or why it does not. */
function checkLog(got: string[], run: LogRun): string | null {
  if (new Set(got).size !== got.length) return `a record is replayed twice: ${got.join(' ')}`;
  if (!isSubsequence(got, run.order))
    return `records out of write order or never written: ${got.join(' ')}`;
  const has = (ps: string[]): boolean => ps.every((p) => got.includes(p));
  const cur = run.epochs[run.completed];
  if (has(cur.heads) && has(cur.acked)) return null;
  // A rotation that did not return may already have replaced the old state.
  const next = run.epochs[run.completed + 1];
  if (next && next.heads.length > 0 && has(next.heads)) return null;
  const lost = [...cur.heads, ...cur.acked].filter((p) => !got.includes(p));
  return `acknowledged records lost: ${lost.map((p) => p.slice(0, 3)).join(' ')}`;
}

function reopen(m: FsModel): string[] {
  const { log, records } = RecordLog.open(LOG_DIR, { sync: true, fs: m });
  log.close();
  return records.map((b) => b.toString('latin1'));
}

/**
 * Recovery of the log: open, check what it returned; what open returned must
 * survive a power loss right after it (nothing more written), and so must a
 * record acknowledged after it.
 */
let afterSeq = 0;

function recoverLog(m: FsModel, run: LogRun): string[] {
  const out: string[] = [];
  const { log, records } = RecordLog.open(LOG_DIR, { sync: true, fs: m });
  const got = records.map((b) => b.toString('latin1'));
  // Records an earlier (cut) recovery appended are not part of the workload.
  const bad = checkLog(
    got.filter((p) => !p.startsWith('after-')),
    run,
  );
  if (bad) out.push(bad);
  const branch = m.clone();
  branch.powerLoss(STRICT_LOSS);
  const kept = reopen(branch);
  if (JSON.stringify(kept) !== JSON.stringify(got))
    out.push(
      `open returned ${got.length} records, a power loss right after it left ${kept.length}`,
    );
  const after = `after-${++afterSeq}`;
  log.append([Buffer.from(after)]);
  log.close();
  const acked = m.clone();
  acked.powerLoss(STRICT_LOSS);
  const again = reopen(acked);
  if (JSON.stringify(again) !== JSON.stringify([...got, after]))
    out.push(`after open + ack + power loss: ${again.length} records, expected ${got.length + 1}`);
  return out;
}

interface Sweep {
  steps: number;
  cuts: number;
  recoveryCuts: number;
  failures: string[];
  ms: number;
}

/**
 * Run `workload` once to count its file-system steps; then, for every step k,
 * run it again with the power cut before step k, crash it in each way of
 * crashes(k), and recover: first with the recovery itself cut at each of its
 * steps (then a strict power loss or a kill, and a full recovery), then
 * uncut. `recover` returns the problems it finds (and throws PowerCut when cut).
 */
async function sweep<R>(
  workload: (m: FsModel, run: R) => Promise<void>,
  fresh: () => R,
  recover: (m: FsModel, run: R) => string[],
): Promise<Sweep> {
  const started = Date.now();
  const full = new FsModel();
  await workload(full, fresh());
  const res: Sweep = { steps: full.steps, cuts: 0, recoveryCuts: 0, failures: [], ms: 0 };
  const attempt = (m: FsModel, run: R, where: string): void => {
    try {
      for (const p of recover(m, run)) res.failures.push(`${where}: ${p}`);
    } catch (e) {
      res.failures.push(`${where}: ${e}`);
    }
  };
  for (let k = 0; k <= full.steps; k++) {
    for (const [name, crash] of crashes(k)) {
      const m = new FsModel();
      m.cutAfter(k);
      const run = fresh();
      try {
        await workload(m, run);
      } catch (e) {
        isCut(m, e);
      }
      crash(m);
      res.cuts++;
      const where = `cut before step ${k + 1} (${full.trace[k] ?? 'end'}), ${name}`;
      for (let j = 0; j < 1000; j++) {
        const r = m.clone();
        r.cutAfter(j);
        try {
          recover(r, run);
          break; // recovery takes fewer steps
        } catch (e) {
          isCut(r, e);
        }
        for (const [rname, rcrash] of [['strict', loss(STRICT_LOSS)], KILL] as Crash[]) {
          const x = r.clone();
          rcrash(x);
          res.recoveryCuts++;
          attempt(x, run, `${where}; recovery cut before its step ${j + 1}, ${rname}`);
        }
      }
      attempt(m, run, where);
    }
  }
  res.ms = Date.now() - started;
  return res;
}

t.test('power-loss sweep: RecordLog (write, sync, rotation) cut at every step', async (t) => {
  const fresh = (): LogRun => ({ order: [], epochs: [{ heads: [], acked: [] }], completed: 0 });
  const r = await sweep(logWorkload, fresh, recoverLog);
  t.ok(r.steps >= 30, `the workload takes ${r.steps} file-system steps`);
  t.same(
    r.failures.slice(0, 10),
    [],
    `no failure in ${r.cuts} cuts and ${r.recoveryCuts} recovery cuts`,
  );
  t.comment(
    `RecordLog sweep: ${r.steps} steps, ${r.cuts} cuts (${crashes(0).length} per step), ${r.recoveryCuts} cuts during recovery, ${r.ms} ms`,
  );
});

// --------------------------------------------------------------------------
// DurableStore (WAL + snapshots) and the order log together, as the daemon uses them

const DATA = '/srv/paxos/data/1';
const ORDER = OrderLog.fileFor('/srv/paxos/logs', 1);
const SLOTS = 14;

function linesOf(slot: number): string[] {
  const n = 1 + (slot % 3);
  return Array.from({ length: n }, (_, i) => `${slot}.${i} c${i}:${slot} put k${slot}-${i} v${i}`);
}

const REFERENCE = Array.from({ length: SLOTS }, (_, i) => linesOf(i + 1).join('\n') + '\n').join(
  '',
);

function accept(slot: number): DurableRecord {
  return { t: 'accept', slot, ballot: 7, value: [] };
}

interface StoreRun {
  snapshots: Map<number, string>;
  /** Last snapshot whose saveSnapshot returned, and what was acknowledged after it. */
  ackedSnap: number;
  acked: DurableRecord[];
  /** A snapshot being saved when the power went: it may have replaced the state. */
  pendingSnap: { slot: number; checkpoint: DurableRecord[] } | null;
}

async function storeWorkload(m: FsModel, run: StoreRun): Promise<void> {
  const { store } = DurableStore.open(DATA, true, m);
  const ol = new OrderLog(ORDER, m);
  let unacked: DurableRecord[] = [];
  store.write([{ t: 'voter' }, { t: 'promise', ballot: 7 }]);
  unacked.push({ t: 'voter' }, { t: 'promise', ballot: 7 });
  for (let slot = 1; slot <= SLOTS; slot++) {
    store.write([accept(slot)]);
    unacked.push(accept(slot));
    if (slot % 2 === 0) {
      const now = unacked;
      unacked = [];
      await syncLog(store);
      run.acked.push(...now);
    }
    ol.write(slot, linesOf(slot));
    if (slot % 3 !== 1) ol.flush();
    if (slot === 5 || slot === 11) {
      const checkpoint: DurableRecord[] = [
        { t: 'snapshot', slot },
        { t: 'voter' },
        { t: 'promise', ballot: 7 },
      ];
      const data = `state through ${slot}`;
      run.snapshots.set(slot, data);
      run.pendingSnap = { slot, checkpoint };
      store.saveSnapshot(slot, Buffer.from(data), checkpoint);
      run.pendingSnap = null;
      run.ackedSnap = slot;
      run.acked = [...checkpoint];
      unacked = [];
    }
  }
  ol.flush();
  ol.close();
  store.close();
}

function key(r: DurableRecord): string {
  return encodeRecord(r).toString('hex');
}

/**
 * Recover as the daemon does (PaxosNode.start): open the store, open the order
 * log, mark a snapshot gap, then apply every slot above the snapshot again.
 * Returns the problems found.
 */
function recoverStore(m: FsModel, run: StoreRun): string[] {
  const out: string[] = [];
  const opened = DurableStore.open(DATA, true, m);
  const branch = m.clone();
  branch.powerLoss(STRICT_LOSS);
  const kept = DurableStore.open(DATA, true, branch);
  if (
    JSON.stringify(kept.records.map(key)) !== JSON.stringify(opened.records.map(key)) ||
    kept.snapshot?.slot !== opened.snapshot?.slot
  )
    out.push(`what open returned did not survive a power loss right after it`);
  kept.store.close();
  const snap = opened.snapshot;
  const got = new Set(opened.records.map(key));
  const has = (rs: DurableRecord[]): boolean => rs.every((r) => got.has(key(r)));
  if (snap && run.snapshots.get(snap.slot) !== Buffer.from(snap.data).toString())
    out.push(`snapshot ${snap.slot} does not hold what was written`);
  const slot = snap?.slot ?? 0;
  const replaced =
    run.pendingSnap && slot === run.pendingSnap.slot && has(run.pendingSnap.checkpoint);
  if (!replaced) {
    if (slot < run.ackedSnap) out.push(`snapshot ${run.ackedSnap} lost (found ${slot})`);
    else if (!has(run.acked))
      out.push(
        `acknowledged records lost: ${run.acked
          .filter((r) => !got.has(key(r)))
          .map((r) => JSON.stringify(r))
          .join(' ')}`,
      );
  }
  const ol = new OrderLog(ORDER, m);
  if (snap && snap.slot > ol.lastSlot) ol.snapshotInstalled(snap.slot);
  for (let s = slot + 1; s <= SLOTS; s++) ol.write(s, linesOf(s));
  ol.flush();
  ol.close();
  opened.store.close();
  const text = m.readFileSync(ORDER).toString('utf8');
  const cmp = compareLogTexts([
    { file: 'reference', text: REFERENCE },
    { file: ORDER, text },
  ]);
  if (!cmp.ok) out.push(`order log: ${cmp.message}`);
  // After the last gap marker every slot is there whole, once.
  const nl = text.lastIndexOf('\n# ');
  const gapAt = nl >= 0 ? nl + 1 : text.startsWith('# ') ? 0 : -1;
  const after = gapAt < 0 ? text : text.slice(text.indexOf('\n', gapAt) + 1);
  const p = parseOrderLog(ORDER, after);
  if (typeof p === 'string') out.push(`order log: ${p}`);
  else if (p.order.length > 0) {
    const first = Number(p.order[0].split('.')[0]);
    const want = REFERENCE.slice(REFERENCE.indexOf(`${first}.0 `));
    if (after !== want)
      out.push(`order log after its last gap marker is not slots ${first}..${SLOTS} whole`);
  } else if (after !== '') out.push(`order log ends with ${JSON.stringify(after.slice(0, 40))}`);
  return out;
}

t.test(
  'power-loss sweep: DurableStore (snapshots) and the order log cut at every step',
  async (t) => {
    const fresh = (): StoreRun => ({
      snapshots: new Map(),
      ackedSnap: 0,
      acked: [],
      pendingSnap: null,
    });
    const r = await sweep(storeWorkload, fresh, recoverStore);
    t.ok(r.steps >= 60, `the workload takes ${r.steps} file-system steps`);
    t.same(
      r.failures.slice(0, 10),
      [],
      `no failure in ${r.cuts} cuts and ${r.recoveryCuts} recovery cuts`,
    );
    t.comment(
      `DurableStore + order log sweep: ${r.steps} steps, ${r.cuts} cuts (${crashes(0).length} per step), ${r.recoveryCuts} cuts during recovery, ${r.ms} ms`,
    );
  },
);

t.test('the model itself: power loss keeps only synced data and synced entries', async (t) => {
  const m = new FsModel();
  m.putFile('/d/keep', Buffer.from('x'));
  const fd = m.openSync('/d/new', 'wx+');
  m.writeSync(fd, Buffer.from('abc'), 0, 3, 0);
  m.fsyncSync(fd);
  m.closeSync(fd);
  const c = m.clone();
  m.powerLoss(STRICT_LOSS);
  t.notOk(m.existsSync('/d/new'), 'a synced file whose entry was not synced is gone');
  t.ok(m.existsSync('/d/keep'), 'a durable file stays');
  c.powerLoss(KEEP_ALL);
  t.equal(c.readFileSync('/d/new').toString(), 'abc', 'a kill keeps it');
  const z = new FsModel();
  z.putFile('/f', Buffer.from('12'));
  const zf = z.openSync('/f', 'r+');
  z.writeSync(zf, Buffer.from('3456'), 0, 4, 2);
  z.powerLoss(TORN_ZEROS);
  t.same(
    [...z.readFileSync('/f')],
    [49, 50, 51, 52, 0, 0],
    'a torn append: half kept, zero-filled',
  );
  const cut = new FsModel();
  cut.cutAfter(1);
  cut.mkdirSync('/a');
  t.throws(() => cut.mkdirSync('/b'), PowerCut, 'the step after the budget cuts the power');
  t.throws(() => cut.readdirSync('/'), PowerCut, 'and every call after it fails');
});
