import * as fs from 'node:fs';
import * as path from 'node:path';
import { Decoder, Encoder } from 'cbor-x';
import type { DurableRecord } from '../core/types';
import { encodeValue, value as decodeValue } from '../wire/peer';
import { readFileChecked, RecordLog, StorageError, writeFileChecked } from './recordlog';

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

const PROMISE = 1;
const ACCEPT = 2;
const CHOSEN = 3;
const LEARN = 4;
const VOTER = 5;
const SNAPSHOT = 6;

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
  }
}

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
    default:
      return bad();
  }
}

const SNAP_RE = /^snap-(\d{16})\.bin$/;

function snapName(slot: number): string {
  return `snap-${String(slot).padStart(16, '0')}.bin`;
}

export interface OpenedStore {
  store: DurableStore;
  snapshot: { slot: number; data: Uint8Array } | null;
  records: DurableRecord[];
  /** Nothing was on disk: a new node, or one whose disk was lost. */
  fresh: boolean;
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
  ) {}

  static open(dir: string, sync: boolean): OpenedStore {
    fs.mkdirSync(dir, { recursive: true });
    const snaps = fs
      .readdirSync(dir)
      .filter((f) => SNAP_RE.test(f))
      .sort();
    let snapshot: OpenedStore['snapshot'] = null;
    if (snaps.length > 0) {
      const file = snaps[snaps.length - 1];
      const slot = Number(SNAP_RE.exec(file)![1]);
      snapshot = { slot, data: readFileChecked(path.join(dir, file)) };
    }
    const { log, records: raw, tornBytes } = RecordLog.open(dir, { sync });
    const records = raw.map((b, i) => decodeRecord(b, `${dir}: record ${i}`));
    const store = new DurableStore(dir, log, sync);
    return { store, snapshot, records, fresh: !snapshot && records.length === 0, tornBytes };
  }

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
   * snapshots. A crash in between leaves either the old or the new state whole.
   */
  saveSnapshot(slot: number, data: Uint8Array, checkpoint: DurableRecord[]): void {
    const name = snapName(slot);
    writeFileChecked(path.join(this.dir, name), data, this.sync);
    this.log.rotate(checkpoint.map(encodeRecord));
    for (const f of fs.readdirSync(this.dir))
      if (SNAP_RE.test(f) && f !== name) fs.rmSync(path.join(this.dir, f), { force: true });
  }

  sizeBytes(): number {
    let n = 0;
    for (const f of fs.readdirSync(this.dir)) {
      try {
        n += fs.statSync(path.join(this.dir, f)).size;
      } catch {
        // removed concurrently
      }
    }
    return n;
  }

  close(): void {
    this.log.close();
  }
}
