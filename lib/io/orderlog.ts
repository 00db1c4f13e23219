import * as path from 'node:path';
import { ORDER_LOG_PENDING_BYTES_MAX } from '../limits';
import { fsyncDirectory, mkdirDurable, nodeFs, type Fsys } from './fsys';

/** One line of an order log, as paxos-logcmp and the restart rule read it. */
export type OrderLine =
  /**
   * "SLOT.INDEX CID:SEQ TEXT [DIGEST]": `text` is what is readable (without the
   * digest); `digest` (16 hex digits over the whole command and its result) is
   * absent on lines written before digests existed, and on no-ops.
   * `digestVersion` says how it was made (lib/sm/statehash.ts: lineDigestOf):
   * 1 for a bare "[DIGEST]", N for "[vN:DIGEST]". Digests of different versions
   * say nothing about each other.
   */
  | {
      kind: 'command';
      slot: number;
      index: number;
      text: string;
      digest?: string;
      digestVersion?: number;
    }
  /** "# state hash at slot N: HEX": the rolling state hash after applying slot N. */
  | { kind: 'hash'; slot: number; hash: string }
  /** "# snapshot installed through slot N" / "# lines missing through slot N": slots <= N may be absent. */
  | { kind: 'gap'; slot: number }
  | { kind: 'comment' };

const COMMAND_RE = /^(\d+)\.(\d+) (.*?)(?: \[(?:v([1-9]\d{0,8}):)?([0-9a-f]{16})\])?$/;
const HASH_RE = /^# state hash at slot (\d+): ([0-9a-f]{64})$/;
const GAP_RE = /^# (?:snapshot installed|lines missing) through slot (\d+)\b/;

/** Parse one line (without its "\n"); null if it is not a line this writer produces. */
export function parseOrderLine(line: string): OrderLine | null {
  if (line.includes('\0')) return null;
  const m = COMMAND_RE.exec(line);
  if (m) {
    const c: OrderLine = { kind: 'command', slot: Number(m[1]), index: Number(m[2]), text: m[3] };
    if (m[5] !== undefined) {
      c.digest = m[5];
      c.digestVersion = m[4] === undefined ? 1 : Number(m[4]);
    }
    return c;
  }
  const h = HASH_RE.exec(line);
  if (h) return { kind: 'hash', slot: Number(h[1]), hash: h[2] };
  const g = GAP_RE.exec(line);
  if (g) return { kind: 'gap', slot: Number(g[1]) };
  if (line.startsWith('#')) return { kind: 'comment' };
  return null;
}

/**
 * Where the restart rule cuts an order log and the slot it resumes after. It
 * reads only the tail, `tail` being the last bytes of a file of `size` bytes.
 * Returns null when the decision needs bytes before `tail` (unless tail is the
 * whole file).
 *
 * The rule: a partial last line (no "\n": a torn write, or a zero-extended tail
 * after a power loss) and any unreadable complete line at the end are cut; then
 * the lines of the last slot are cut too, because a power loss can tear a
 * slot's buffer exactly at a line end and nothing tells a whole slot from a
 * torn one. That slot is applied again after the restart (recovery re-applies
 * every slot above the snapshot) or, if the snapshot covers it, the daemon
 * writes a gap marker. A gap marker ends a slot and is kept; so does a state
 * hash line, the last line of its slot's buffer (that slot is whole).
 */
export function orderLogCut(tail: Buffer, size: number): { cut: number; lastSlot: number } | null {
  const base = size - tail.length;
  const whole = base === 0;
  let end = tail.lastIndexOf(10) + 1; // tail[0, end) holds complete lines
  let cut = -1;
  let cutSlot = -1;
  while (end > 0) {
    const start = end >= 2 ? tail.lastIndexOf(10, end - 2) + 1 : 0;
    if (start === 0 && !whole) return null;
    const line = parseOrderLine(tail.toString('utf8', start, end - 1));
    if (cut < 0) {
      // Cutting: unreadable debris and the lines of the last slot.
      const cutting =
        line === null || (line.kind === 'command' && (cutSlot < 0 || line.slot === cutSlot));
      if (cutting) {
        if (line?.kind === 'command') cutSlot = line.slot;
        end = start;
        continue;
      }
      cut = base + end;
    }
    // Resuming after the last slot still in the file (or a gap marker).
    if (line?.kind === 'command' || line?.kind === 'gap' || line?.kind === 'hash')
      return { cut, lastSlot: line.slot };
    end = start; // another comment: keep it, look further back
  }
  if (!whole && end === 0 && tail.length > 0) return null;
  return { cut: cut < 0 ? 0 : cut, lastSlot: 0 };
}

interface Chunk {
  /** Slot whose lines (or gap marker) this is; the marker advances past it once written. */
  slot: number;
  buf: Buffer;
}

/**
 * The human-readable order log (logs/learned_ops<SID>.log): one line per applied
 * command, "slot.index client:seq operation", identical on every node. It is
 * appended, never read for recovery; at start the restart rule (orderLogCut)
 * cuts a torn tail and the last slot, so that every slot is in the file whole,
 * exactly once (or covered by a gap marker).
 *
 * Lines are written whole slots at a time, one buffer per flush; a short write
 * continues where it stopped, and a failed write (disk full) keeps the rest in
 * memory and retries at the next flush, so the file is always a prefix of the
 * intended text. `lastSlot` advances only over slots whose bytes were written.
 * It is not fsynced: it is for people; after a power loss the restart rule
 * repairs its tail and the daemon marks slots it will not apply again.
 */
export class OrderLog {
  private fd: number;
  /** Highest slot whose lines are all written to the file. */
  lastSlot: number;
  /** Highest slot handed to write() or snapshotInstalled() (>= lastSlot). */
  private queuedSlot: number;
  private pending: Chunk[] = [];
  private pendingBytes = 0;
  /** Bytes of pending[0] already in the file (after a short or failed write). */
  private writtenOfFirst = 0;

  constructor(
    readonly file: string,
    private readonly fsys: Fsys = nodeFs,
    /** Bound on unwritten lines kept in memory (tests make it small). */
    private readonly pendingBytesMax = ORDER_LOG_PENDING_BYTES_MAX,
  ) {
    const dir = path.dirname(file);
    mkdirDurable(fsys, dir, true);
    const existed = fsys.existsSync(file);
    this.fd = fsys.openSync(file, 'a');
    if (!existed) fsyncDirectory(fsys, dir);
    const { cut, lastSlot } = OrderLog.restartPoint(fsys, file);
    if (cut < fsys.fsizeSync(this.fd)) {
      fsys.ftruncateSync(this.fd, cut);
      // Else the cut bytes may come back after a power loss, in front of new lines.
      fsys.fsyncSync(this.fd);
    }
    this.lastSlot = this.queuedSlot = lastSlot;
  }

  static fileFor(logDir: string, sid: number): string {
    return path.join(logDir, `learned_ops${sid}.log`);
  }

  /** The restart rule applied to `file` (reading its tail, more if needed). */
  static restartPoint(fsys: Fsys, file: string): { cut: number; lastSlot: number } {
    let fd: number;
    try {
      fd = fsys.openSync(file, 'r');
    } catch {
      return { cut: 0, lastSlot: 0 };
    }
    try {
      const size = fsys.fsizeSync(fd);
      for (let n = Math.min(size, 64 * 1024); ; n = Math.min(size, n * 4)) {
        const buf = Buffer.alloc(n);
        fsys.readSync(fd, buf, 0, n, size - n);
        const r = orderLogCut(buf, size);
        if (r) return r;
      }
    } finally {
      fsys.closeSync(fd);
    }
  }

  /** Highest slot the restart rule would resume after (0 for a missing file). */
  static lastSlotIn(file: string, fsys: Fsys = nodeFs): number {
    return OrderLog.restartPoint(fsys, file).lastSlot;
  }

  /**
   * Queue the lines of one slot (skipped if that slot is already written or
   * queued); flush() writes them. `_out` is ignored (kept for old callers).
   */
  write(slot: number, lines: string[], _out?: string[]): void {
    if (slot <= this.queuedSlot) return;
    this.queuedSlot = slot;
    this.push({ slot, buf: Buffer.from(lines.length === 0 ? '' : lines.join('\n') + '\n') });
  }

  /** Mark that slots through `slot` were installed from a snapshot (not applied here). */
  snapshotInstalled(slot: number): void {
    if (slot <= this.queuedSlot) return;
    this.queuedSlot = slot;
    this.push({
      slot,
      buf: Buffer.from(
        `# snapshot installed through slot ${slot}: earlier lines may be missing from this log\n`,
      ),
    });
    try {
      this.flush();
    } catch {
      // Kept pending; the next flush() retries and reports.
    }
  }

  private push(c: Chunk): void {
    this.pending.push(c);
    this.pendingBytes += c.buf.length;
  }

  /**
   * Write every queued slot (one buffer). On an error the unwritten rest stays
   * queued for the next flush and the error is thrown. `_out` is ignored.
   */
  flush(_out?: string[]): void {
    if (this.pending.length === 0) return;
    const all = Buffer.concat(this.pending.map((c) => c.buf));
    let off = this.writtenOfFirst;
    try {
      while (off < all.length) {
        const n = this.fsys.writeSync(this.fd, all, off, all.length - off, null);
        if (n <= 0)
          throw Object.assign(new Error(`order log write returned ${n}`), { code: 'EIO' });
        off += n;
      }
    } finally {
      this.consume(off);
    }
  }

  /** Drop the chunks wholly within the first `off` bytes of pending; bound what is left. */
  private consume(off: number): void {
    let at = 0;
    let k = 0;
    while (k < this.pending.length && at + this.pending[k].buf.length <= off) {
      at += this.pending[k].buf.length;
      this.lastSlot = this.pending[k].slot;
      k++;
    }
    this.pending.splice(0, k);
    this.pendingBytes = this.pending.reduce((n, c) => n + c.buf.length, 0);
    this.writtenOfFirst = off - at;
    if (this.pendingBytes <= this.pendingBytesMax) return;
    // The file cannot take the lines for long: keep the slot already begun in
    // the file (so it ends whole), replace the rest by one gap marker.
    const keep = this.writtenOfFirst > 0 ? this.pending.slice(0, 1) : [];
    const through = this.pending[this.pending.length - 1].slot;
    this.pending = keep;
    this.pendingBytes = 0;
    for (const c of keep) this.pendingBytes += c.buf.length;
    this.push({
      slot: through,
      buf: Buffer.from(
        `# lines missing through slot ${through}: the order log could not be written\n`,
      ),
    });
  }

  close(): void {
    this.fsys.closeSync(this.fd);
  }
}
