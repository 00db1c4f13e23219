/**
 * An exclusive lock on a data directory, held for the life of the process that
 * runs a node on it. Two processes on one directory would both open (and may
 * cut the "torn" tail of) the same WAL: the second could destroy records the
 * first has acknowledged. The lock is taken before anything in the directory
 * is read.
 *
 * Node has no flock(2). The scheme: a file LOCK holding the holder's pid, its
 * process start time (Linux /proc, to tell a reused pid from the holder) and
 * host name.
 * - The content is written and fsynced in a private file first, then link(2)ed
 *   to LOCK: link fails with EEXIST atomically (like O_EXCL), and LOCK never
 *   exists without its complete content. Then the directory is fsynced.
 * - If LOCK exists and its holder is alive (kill(pid, 0) and same start time),
 *   the start fails with the holder's pid. A lock of a dead process (a crash, a
 *   SIGKILL, a power loss) is stale: it is renamed away (only one of several
 *   racing takers can rename the same file) and, if what was renamed is still
 *   the stale lock that was judged, removed and replaced; otherwise it is put
 *   back and the start fails.
 * - A lock written on another host (a shared file system) cannot be checked
 *   from here: it is refused, with the file to remove by hand.
 * This protects processes on one host; it does not replace one node per
 * directory across hosts.
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fsyncDirectory, mkdirDurable, nodeFs } from './fsys';
import { StorageError } from './recordlog';

/** The lock file's name in the data directory (tests and messages name it too). */
export const LOCK_FILE = 'LOCK';

interface Holder {
  pid: number;
  /** /proc/<pid>/stat start time (clock ticks after boot), or null if unknown. */
  start: string | null;
  host: string;
}

/** The data directory is in use (or its lock cannot be judged). */
export class DirLockError extends Error {
  constructor(
    message: string,
    readonly dir: string,
    readonly holder: number | null,
  ) {
    super(message);
    this.name = 'DirLockError';
  }
}

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? '';
}

/** Start time of a process (field 22 of /proc/<pid>/stat), or null where /proc is absent. */
function startTimeOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function parseHolder(text: string): Holder | null {
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    if (!Number.isSafeInteger(h.pid) || (h.pid as number) <= 0 || typeof h.host !== 'string')
      return null;
    return {
      pid: h.pid as number,
      start: typeof h.start === 'string' ? h.start : null,
      host: h.host,
    };
  } catch {
    return null;
  }
}

/** True if `h` still runs on this host (a reused pid has another start time). */
function alive(h: Holder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    // EPERM: it exists but belongs to another user.
    if (errno(e) !== 'EPERM') return false;
  }
  // A zombie (killed, not yet reaped: in a container whose init does not reap,
  // maybe never) holds no files and runs no code: it holds no lock either.
  if (stateOf(h.pid) === 'Z') return false;
  if (h.start === null) return true;
  const now = startTimeOf(h.pid);
  return now === null || now === h.start;
}

/** Process state letter (field 3 of /proc/<pid>/stat: R, S, D, Z...), or null if unknown. */
function stateOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? null;
  } catch {
    return null;
  }
}

function sameHolder(a: Holder | null, b: Holder | null): boolean {
  return !!a && !!b && a.pid === b.pid && a.start === b.start && a.host === b.host;
}

function readHolder(file: string): Holder | null | 'gone' {
  try {
    return parseHolder(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if (errno(e) === 'ENOENT') return 'gone';
    throw e;
  }
}

/** A held lock on one data directory (see the scheme above); release() gives it up. */
export class DirLock {
  private released = false;

  private constructor(
    readonly dir: string,
    readonly file: string,
  ) {}

  /**
   * Take the lock on `dir` (created durably if missing). `log` hears about a
   * stale lock taken over. Throws DirLockError if another live process holds
   * it, StorageError if the file system fails.
   */
  static acquire(dir: string, sync: boolean, log: (line: string) => void): DirLock {
    try {
      return DirLock.take(dir, sync, log);
    } catch (e) {
      if (e instanceof DirLockError || e instanceof StorageError) throw e;
      const code = errno(e) || 'EIO';
      throw new StorageError(
        code,
        `${dir}: cannot take the data directory lock: ${(e as Error).message}`,
        {
          file: path.join(dir, LOCK_FILE),
          sysCode: code,
          cause: e,
        },
      );
    }
  }

  private static take(dir: string, sync: boolean, log: (line: string) => void): DirLock {
    mkdirDurable(nodeFs, dir, sync);
    const file = path.join(dir, LOCK_FILE);
    const me: Holder = { pid: process.pid, start: startTimeOf(process.pid), host: os.hostname() };
    const mine = path.join(dir, `${LOCK_FILE}.new-${process.pid}`);
    const fd = fs.openSync(mine, 'w', 0o644);
    try {
      fs.writeSync(fd, JSON.stringify(me) + '\n');
      if (sync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      // Bounded: each round either links, or renames a stale lock away.
      for (let round = 0; round < 3; round++) {
        try {
          fs.linkSync(mine, file);
          if (sync) fsyncDirectory(nodeFs, dir);
          return new DirLock(dir, file);
        } catch (e) {
          if (errno(e) !== 'EEXIST') throw e;
        }
        const h = readHolder(file);
        if (h === 'gone') continue;
        if (h === null)
          throw new DirLockError(
            `data directory ${dir} is locked by ${file}, whose content is not a paxosd lock; remove it if no paxosd runs on ${dir}`,
            dir,
            null,
          );
        if (h.host !== me.host)
          throw new DirLockError(
            `data directory ${dir} is locked by pid ${h.pid} on host ${h.host} (not this host: cannot check it); remove ${file} if that node is not running`,
            dir,
            h.pid,
          );
        if (h.pid === me.pid || alive(h))
          throw new DirLockError(
            `data directory ${dir} is in use by pid ${h.pid}${h.pid === me.pid ? ' (this process)' : ''} (lock ${file}); one node per data directory`,
            dir,
            h.pid,
          );
        const aside = path.join(dir, `${LOCK_FILE}.stale-${process.pid}`);
        try {
          fs.renameSync(file, aside);
        } catch (e) {
          if (errno(e) === 'ENOENT') continue; // another taker moved it first
          throw e;
        }
        const moved = readHolder(aside);
        if (moved !== 'gone' && !sameHolder(moved, h)) {
          // A racing taker's fresh lock was moved: put it back and give way.
          try {
            fs.linkSync(aside, file);
          } finally {
            fs.unlinkSync(aside);
          }
          const pid = moved === null ? null : moved.pid;
          throw new DirLockError(
            `data directory ${dir} is in use by pid ${pid ?? '?'} (it took over a stale lock at the same time)`,
            dir,
            pid,
          );
        }
        fs.unlinkSync(aside);
        log(`took over the stale lock of pid ${h.pid} (not running) on ${dir}`);
      }
      throw new DirLockError(`data directory ${dir}: cannot take the lock ${file}`, dir, null);
    } finally {
      try {
        fs.unlinkSync(mine);
      } catch {
        // already gone
      }
    }
  }

  /** Give the lock up (only if it is still ours). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const h = readHolder(this.file);
    if (h !== 'gone' && h !== null && h.pid === process.pid) fs.unlinkSync(this.file);
  }
}
