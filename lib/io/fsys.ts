/**
 * The file-system calls the storage layer makes, behind one small interface so
 * that tests can run the real storage code on a simulated disk that loses what
 * a power cut loses (lib/io/fsmodel.ts). The default, `nodeFs`, is node:fs.
 *
 * Crash model the storage code is written against (POSIX, as ext4/xfs behave):
 * a file's data survives a power loss only as of its last fsync/fdatasync, and a
 * directory entry (a created file or directory, a rename, an unlink) only after
 * the directory itself was fsynced.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';

/** Open modes used by paxosd (node:fs flag strings). */
export type OpenFlags = 'r' | 'r+' | 'w' | 'wx' | 'wx+' | 'a';

/** The node:fs subset the storage layer uses (one real implementation, one simulated disk). */
export interface Fsys {
  openSync(file: string, flags: OpenFlags, mode?: number): number;
  closeSync(fd: number): void;
  /** `position` null appends (fds opened with 'a'); returns the bytes written (may be short). */
  writeSync(
    fd: number,
    buf: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): number;
  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  /** Current size of an open file. */
  fsizeSync(fd: number): number;
  /** Size of a file by name. */
  sizeSync(file: string): number;
  readFileSync(file: string): Buffer;
  fsyncSync(fd: number): void;
  fdatasyncSync(fd: number): void;
  /** fdatasync off the event loop; `done(null)` once the data is durable. */
  fdatasync(fd: number, done: (err: NodeJS.ErrnoException | null) => void): void;
  ftruncateSync(fd: number, length: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(file: string): void;
  /** Create one directory (not recursive); throws EEXIST if it exists. */
  mkdirSync(dir: string): void;
  readdirSync(dir: string): string[];
  existsSync(file: string): boolean;
}

/** node:fs. Every call goes through the module object, so tests may still patch node:fs. */
export const nodeFs: Fsys = {
  openSync: (file, flags, mode) => fs.openSync(file, flags, mode),
  closeSync: (fd) => fs.closeSync(fd),
  writeSync: (fd, buf, offset, length, position) => fs.writeSync(fd, buf, offset, length, position),
  readSync: (fd, buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
  fsizeSync: (fd) => fs.fstatSync(fd).size,
  sizeSync: (file) => fs.statSync(file).size,
  readFileSync: (file) => fs.readFileSync(file),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  fdatasyncSync: (fd) => fs.fdatasyncSync(fd),
  fdatasync: (fd, done) => fs.fdatasync(fd, done),
  ftruncateSync: (fd, length) => fs.ftruncateSync(fd, length),
  renameSync: (from, to) => fs.renameSync(from, to),
  unlinkSync: (file) => fs.unlinkSync(file),
  mkdirSync: (dir) => {
    fs.mkdirSync(dir);
  },
  readdirSync: (dir) => fs.readdirSync(dir),
  existsSync: (file) => fs.existsSync(file),
};

function errnoOf(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : '';
}

/**
 * fsync a directory so that creations, renames and unlinks in it survive a
 * power loss. EINVAL/ENOTSUP mean the file system cannot sync directories at
 * all (a capability answer, not an I/O failure) and are ignored. Other errors
 * are thrown as they come (callers wrap them).
 */
export function fsyncDirectory(fsys: Fsys, dir: string): void {
  const fd = fsys.openSync(dir, 'r');
  try {
    fsys.fsyncSync(fd);
  } catch (err) {
    const c = errnoOf(err);
    if (c !== 'EINVAL' && c !== 'ENOTSUP') throw err;
  } finally {
    try {
      fsys.closeSync(fd);
    } catch {
      // read-only descriptor; nothing to lose
    }
  }
}

/**
 * `mkdir -p` that makes every directory it creates durable: each new directory's
 * entry is synced in its parent before the next level (or anything inside) is
 * created. Returns true if it created `dir`.
 */
export function mkdirDurable(fsys: Fsys, dir: string, sync: boolean): boolean {
  const abs = path.resolve(dir);
  if (fsys.existsSync(abs)) return false;
  const parent = path.dirname(abs);
  if (parent !== abs) mkdirDurable(fsys, parent, sync);
  try {
    fsys.mkdirSync(abs);
  } catch (err) {
    if (errnoOf(err) === 'EEXIST') return false;
    throw err;
  }
  if (sync) fsyncDirectory(fsys, parent);
  return true;
}

/**
 * Make `dir`'s own entry durable, and its parents' entries up to the root: a
 * directory that an earlier run created (and was killed before syncing) must not
 * vanish in a power loss after this run acknowledged data stored in it. A parent
 * this process may not open for reading (EACCES/EPERM) above `dir`'s own parent
 * was not created by paxosd and is left alone.
 */
export function syncDirectoryChain(fsys: Fsys, dir: string): void {
  const abs = path.resolve(dir);
  fsyncDirectory(fsys, abs);
  let d = abs;
  for (let depth = 0; depth < 4096; depth++) {
    const parent = path.dirname(d);
    if (parent === d) return;
    try {
      fsyncDirectory(fsys, parent);
    } catch (err) {
      const c = errnoOf(err);
      if (d === abs || (c !== 'EACCES' && c !== 'EPERM')) throw err;
    }
    d = parent;
  }
}

/** Write all of `buf`, looping over short writes; `position` null appends. */
export function writeAll(fsys: Fsys, fd: number, buf: Uint8Array, position: number | null): void {
  let off = 0;
  while (off < buf.length) {
    const n = fsys.writeSync(
      fd,
      buf,
      off,
      buf.length - off,
      position === null ? null : position + off,
    );
    if (n <= 0) {
      throw Object.assign(new Error(`write returned ${n} after ${off} of ${buf.length} bytes`), {
        code: 'EIO',
      });
    }
    off += n;
  }
}
