import * as path from 'node:path';
import { Decoder, Encoder } from 'cbor-x';
import type { DurableRecord } from '../core/types';
import { encodeValue, value as decodeValue } from '../wire/peer';
import { fsyncDirectory, nodeFs, type Fsys } from './fsys';
import { readFileChecked, RecordLog, StorageError, writeFileChecked } from './recordlog';

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

const PROMISE = 1;
const ACCEPT = 2;
const CHOSEN = 3;
const LEARN = 4;
const VOTER = 5;
const SNAPSHOT = 6;
const INCARNATION = 7;
/** A reserved (not yet active) incarnation: counts for rejoins, never voids votes. */
const INCARNATION_RESERVED = 8;

/**
 * One durable record as a WAL payload: a CBOR array led by a numeric type code, so
 * that the format on disk does not depend on TypeScript field names. The codes
 * are part of the disk format: never renumber one.
 */
export function encodeRecord(r: DurableRecord): Buffer {
  switch (r.t) {
    case 'promise':
      return encoder.encode([PROMISE, r.ballot]);
    case 'accept':
      return encoder.encode([ACCEPT, r.slot, r.ballot, encodeValue(r.value)]);
    case 'chosen':
      return encoder.encode([CHOSEN, r.slot, r.ballot]);
    case 'learn':
      return encoder.encode([LEARN, r.slot, encodeValue(r.value)]);
    case 'voter':
      return encoder.encode([VOTER]);
    case 'snapshot':
      return encoder.encode([SNAPSHOT, r.slot]);
    case 'incarnation':
      return encoder.encode([r.reserve ? INCARNATION_RESERVED : INCARNATION, r.sid, r.inc]);
  }
}

/**
 * The inverse of encodeRecord. A payload that passed its checksum but does not
 * decode is corruption (or another program's file), not a torn write, so it
 * throws StorageError 'ECORRUPT' naming `where`: the node refuses to start
 * rather than replay a guess.
 */
export function decodeRecord(buf: Buffer, where: string): DurableRecord {
  const a = decoder.decode(buf) as unknown[];
  const bad = (): never => {
    throw new StorageError('ECORRUPT', `${where}: record does not decode as a paxosd record`);
  };
  if (!Array.isArray(a)) bad();
  const n = (i: number): number => (Number.isSafeInteger(a[i]) ? (a[i] as number) : bad());
  switch (a[0]) {
    case PROMISE:
      return { t: 'promise', ballot: n(1) };
    case ACCEPT:
      return { t: 'accept', slot: n(1), ballot: n(2), value: decodeValue(a[3]) };
    case CHOSEN:
      return { t: 'chosen', slot: n(1), ballot: n(2) };
    case LEARN:
      return { t: 'learn', slot: n(1), value: decodeValue(a[2]) };
    case VOTER:
      return { t: 'voter' };
    case SNAPSHOT:
      return { t: 'snapshot', slot: n(1) };
    case INCARNATION:
      return { t: 'incarnation', sid: n(1), inc: n(2) };
    case INCARNATION_RESERVED:
      return { t: 'incarnation', sid: n(1), inc: n(2), reserve: true };
    default:
      return bad();
  }
}

const SNAP_RE = /^snap-(\d{16})\.bin$/;

/**
 * The file naming the cluster a data directory belongs to (its cluster id,
 * written with writeFileChecked). Written at the first open that knows the id;
 * a directory of an older build has none and opens as before, and gets one.
 */
export const CLUSTER_FILE = 'CLUSTER';

/** A data directory recorded as another cluster's: the node must not use it. */
export class ClusterMismatchError extends Error {
  constructor(
    readonly dir: string,
    /** The id the directory records. */
    readonly recorded: string,
    /** The id the node was started with. */
    readonly configured: string,
  ) {
    super(
      `data directory ${dir} belongs to cluster "${recorded}" (its ${CLUSTER_FILE} file), not to cluster "${configured}" (the config's clusterId); refusing to start: use that cluster's config, or another data directory`,
    );
  }
}

/**
 * Check, then (if absent) record, the cluster id `dir` belongs to. The check
 * comes before anything in the directory is read or changed (opening the WAL
 * may cut a torn tail): another cluster's directory is left as it was.
 */
function checkClusterId(dir: string, clusterId: string, fsys: Fsys): void {
  const file = path.join(dir, CLUSTER_FILE);
  if (!fsys.existsSync(file)) return;
  const recorded = readFileChecked(file, fsys).toString('utf8');
  if (recorded !== clusterId) throw new ClusterMismatchError(dir, recorded, clusterId);
}

function snapName(slot: number): string {
  return `snap-${String(slot).padStart(16, '0')}.bin`;
}

/** What DurableStore.open read back: replay `snapshot`, then `records`, in order. */
export interface OpenedStore {
  store: DurableStore;
  /** The latest snapshot, or null; `records` may still hold entries below its slot. */
  snapshot: { slot: number; data: Uint8Array } | null;
  records: DurableRecord[];
  /** Nothing was on disk: a new node, or one whose disk was lost. */
  fresh: boolean;
  /** Bytes of a torn final record cut off at open (see RecordLog.open); 0 if none. */
  tornBytes: number;
}

/**
 * A node's data directory: the write-ahead record log (group-committed, one
 * fdatasync per append call) and the latest state-machine snapshot. The order
 * logs in logs/ are not part of it: recovery never reads them.
 */
export class DurableStore {
  private constructor(
    readonly dir: string,
    readonly log: RecordLog,
    private readonly sync: boolean,
    private readonly fsys: Fsys,
  ) {}

  /**
   * Open (creating it durably if missing) a data directory and read it back.
   * With `sync`, everything returned is durable when this returns (see
   * RecordLog.open), so nothing replayed from a killed run's page cache can be
   * acknowledged before it is on disk. With `clusterId`, the directory must
   * belong to that cluster (ClusterMismatchError) and is recorded as its.
   */
  static open(dir: string, sync: boolean, fsys: Fsys = nodeFs, clusterId?: string): OpenedStore {
    if (clusterId !== undefined) checkClusterId(dir, clusterId, fsys);
    // RecordLog.open creates the directory and syncs its entry in the parent.
    const { log, records: raw, tornBytes } = RecordLog.open(dir, { sync, fs: fsys });
    let snapshot: OpenedStore['snapshot'] = null;
    try {
      const names = fsys.readdirSync(dir);
      // Leftovers of a crash inside writeFileAtomic; never read.
      let removed = false;
      for (const f of names) {
        if (!f.endsWith('.tmp')) continue;
        fsys.unlinkSync(path.join(dir, f));
        removed = true;
      }
      if (removed && sync) fsyncDirectory(fsys, dir);
      const idFile = path.join(dir, CLUSTER_FILE);
      if (clusterId !== undefined && !fsys.existsSync(idFile))
        writeFileChecked(idFile, Buffer.from(clusterId, 'utf8'), sync, fsys);
      const snaps = names.filter((f) => SNAP_RE.test(f)).sort();
      if (snaps.length > 0) {
        const file = snaps[snaps.length - 1];
        const slot = Number(SNAP_RE.exec(file)![1]);
        snapshot = { slot, data: readFileChecked(path.join(dir, file), fsys) };
      }
    } catch (e) {
      log.close();
      throw e;
    }
    const records = raw.map((b, i) => decodeRecord(b, `${dir}: record ${i}`));
    const store = new DurableStore(dir, log, sync, fsys);
    return { store, snapshot, records, fresh: !snapshot && records.length === 0, tornBytes };
  }

  /** Write and fdatasync (one group commit); when it returns, `records` are durable. */
  append(records: DurableRecord[]): void {
    if (records.length === 0) return;
    this.log.append(records.map(encodeRecord));
  }

  /** Write without syncing; see syncAsync. */
  write(records: DurableRecord[]): void {
    if (records.length === 0) return;
    this.log.write(records.map(encodeRecord));
  }

  /** Make every write() so far durable, off the event loop. */
  syncAsync(done: (err: StorageError | null) => void): void {
    this.log.syncAsync(done);
  }

  /**
   * Write the snapshot file, then start a new WAL segment holding `checkpoint`
   * (the live state above the snapshot) and drop the older segments and
   * snapshots. A power loss at any step leaves either the old or the new state
   * whole: the snapshot file is durable (synced, renamed, directory synced)
   * before the rotation that makes the old segments unnecessary. When it
   * returns, every record written before it is durable (rotate syncs the old
   * segment first).
   */
  saveSnapshot(slot: number, data: Uint8Array, checkpoint: DurableRecord[]): void {
    const name = snapName(slot);
    writeFileChecked(path.join(this.dir, name), data, this.sync, this.fsys);
    this.log.rotate(checkpoint.map(encodeRecord));
    let removed = false;
    for (const f of this.fsys.readdirSync(this.dir)) {
      if (!SNAP_RE.test(f) || f === name) continue;
      try {
        this.fsys.unlinkSync(path.join(this.dir, f));
        removed = true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    if (removed && this.sync) fsyncDirectory(this.fsys, this.dir);
  }

  /** Bytes on disk in the data directory (WAL, snapshot, leftovers), for status. */
  sizeBytes(): number {
    let n = 0;
    for (const f of this.fsys.readdirSync(this.dir)) {
      try {
        n += this.fsys.sizeSync(path.join(this.dir, f));
      } catch {
        // removed concurrently
      }
    }
    return n;
  }

  /** Closes the WAL; no syncAsync may be running (see RecordLog.close). */
  close(): void {
    this.log.close();
  }
}
