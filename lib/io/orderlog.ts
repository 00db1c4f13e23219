import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The human-readable order log (logs/learned_ops<SID>.log): one line per applied
 * command, "slot.index client:seq operation", identical on every node. It is
 * appended, never truncated, and never read for recovery; at start we only look
 * at its last line so that a restart does not write slots twice.
 */
export class OrderLog {
  private fd: number;
  /** Highest slot already in the file. */
  lastSlot: number;

  constructor(readonly file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.lastSlot = OrderLog.lastSlotIn(file);
    this.fd = fs.openSync(file, 'a');
    // A crash can leave half a line; start ours on a fresh one.
    const size = fs.fstatSync(this.fd).size;
    if (size > 0) {
      const last = Buffer.alloc(1);
      const rfd = fs.openSync(file, 'r');
      fs.readSync(rfd, last, 0, 1, size - 1);
      fs.closeSync(rfd);
      if (last[0] !== 10) fs.writeSync(this.fd, '\n');
    }
  }

  static fileFor(logDir: string, sid: number): string {
    return path.join(logDir, `learned_ops${sid}.log`);
  }

  static lastSlotIn(file: string): number {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return 0;
    }
    try {
      const size = fs.fstatSync(fd).size;
      const n = Math.min(size, 256 * 1024);
      const buf = Buffer.alloc(n);
      fs.readSync(fd, buf, 0, n, size - n);
      const lines = buf.toString('utf8').split('\n');
      for (let i = lines.length - 1; i >= 0; i--) {
        const m =
          /^(\d+)\.\d+ /.exec(lines[i]) ??
          /^# snapshot installed through slot (\d+)/.exec(lines[i]);
        // The last line may be cut short by a crash; a complete one ends with "\n".
        if (m && (i < lines.length - 1 || buf[buf.length - 1] === 10)) return Number(m[1]);
      }
      return 0;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Append lines of one slot (skipped if that slot is already in the file). */
  write(slot: number, lines: string[], out: string[]): void {
    if (slot <= this.lastSlot) return;
    this.lastSlot = slot;
    for (const l of lines) out.push(l);
  }

  flush(out: string[]): void {
    if (out.length === 0) return;
    fs.writeSync(this.fd, out.join('\n') + '\n');
  }

  snapshotInstalled(slot: number): void {
    if (slot <= this.lastSlot) return;
    this.lastSlot = slot;
    fs.writeSync(
      this.fd,
      `# snapshot installed through slot ${slot}: earlier lines may be missing from this log\n`,
    );
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
