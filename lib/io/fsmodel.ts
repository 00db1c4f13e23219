/**
 * A simulated disk for tests: an Fsys (lib/io/fsys.ts) that keeps, per file, the
 * data written and the data synced, and per directory the entries as they are
 * and as they were when the directory was last fsynced, with the changes since
 * then in order. `powerLoss()` rebuilds the tree from what a power cut keeps:
 *
 * - a directory's entries as of its last fsync, plus a prefix of the later
 *   creations/renames/unlinks (journaled file systems commit metadata in order;
 *   `strict` keeps none of them, `kill` all of them);
 * - a file's data as of its last fsync/fdatasync, plus, for an unsynced append,
 *   some prefix of the appended bytes, optionally followed by zeros up to the
 *   written length (a size update that reached the disk before the data did).
 *
 * A process kill keeps everything (the page cache survives): `crash()`.
 *
 * `cutAfter(n)` lets n more mutating steps happen; the next one (and every call
 * after it) throws PowerCut without changing anything, which is how a test stops
 * a run "between any two file-system steps".
 */

import * as path from 'node:path';
import type { Fsys, OpenFlags } from './fsys';

/** Thrown by every call once the simulated power is cut. */
export class PowerCut extends Error {
  constructor(op: string) {
    super(`power cut (at ${op})`);
    this.name = 'PowerCut';
  }
}

interface FileNode {
  kind: 'file';
  data: Buffer;
  synced: Buffer;
}

interface DirNode {
  kind: 'dir';
  entries: Map<string, Node>;
  durable: Map<string, Node>;
  /** Changes since the last fsync, oldest first (node null = removed). */
  pending: { name: string; node: Node | null }[];
}

type Node = FileNode | DirNode;

interface OpenFile {
  node: Node;
  file: string;
  read: boolean;
  write: boolean;
  append: boolean;
}

/** What survives a power cut, decided per directory and per file. */
export interface LossChoice {
  /** How many of `pending` directory changes survive (0..pending). */
  dirChanges(dir: string, pending: number): number;
  /**
   * For an unsynced append of `extra` bytes after `synced` bytes: how many of
   * them survive and how many zero bytes follow them (kept + zeros <= extra).
   * For any other unsynced change (a truncation): kept = extra keeps the new
   * data, anything else the synced data.
   */
  fileTail(file: string, synced: number, extra: number): { kept: number; zeros: number };
}

/** Only synced data and synced directory entries survive. */
export const STRICT_LOSS: LossChoice = {
  dirChanges: () => 0,
  fileTail: () => ({ kept: 0, zeros: 0 }),
};

/** Everything written survives (what a process kill leaves). */
export const KEEP_ALL: LossChoice = {
  dirChanges: (_d, n) => n,
  fileTail: (_f, _s, extra) => ({ kept: extra, zeros: 0 }),
};

/** Random choices from a seeded generator in [0, 1). */
export function randomLoss(rand: () => number): LossChoice {
  return {
    dirChanges: (_d, n) => Math.floor(rand() * (n + 1)),
    fileTail: (_f, _s, extra) => {
      const kept = Math.floor(rand() * (extra + 1));
      const zeros = rand() < 0.5 ? extra - kept : 0;
      return { kept, zeros };
    },
  };
}

function err(code: string, op: string, file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${op} '${file}'`), { code, syscall: op, path: file });
}

/** The simulated disk described above; its Fsys methods behave as node:fs's do. */
export class FsModel implements Fsys {
  private root: DirNode = FsModel.dir();
  private fds = new Map<number, OpenFile>();
  private nextFd = 3;
  private dead = false;
  /** Mutating steps still allowed before the cut (Infinity = no cut planned). */
  private budget = Infinity;
  /** Mutating steps done since construction (or the last resetSteps). */
  steps = 0;
  /** Description of each mutating step (for failure messages). */
  readonly trace: string[] = [];

  private static dir(): DirNode {
    return { kind: 'dir', entries: new Map(), durable: new Map(), pending: [] };
  }

  /** Allow `n` more mutating steps; the next one cuts the power. */
  cutAfter(n: number): void {
    this.budget = n;
  }

  get isCut(): boolean {
    return this.dead;
  }

  private step(what: string): void {
    if (this.dead) throw new PowerCut(what);
    if (this.budget <= 0) {
      this.dead = true;
      throw new PowerCut(what);
    }
    this.budget--;
    this.steps++;
    this.trace.push(what);
  }

  private alive(what: string): void {
    if (this.dead) throw new PowerCut(what);
  }

  private lookup(file: string): { parent: DirNode | null; name: string; node: Node | undefined } {
    const abs = path.resolve(file);
    if (abs === '/') return { parent: null, name: '/', node: this.root };
    const parts = abs.split('/').filter((p) => p.length > 0);
    let d: DirNode = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const n = d.entries.get(parts[i]);
      if (!n) throw err('ENOENT', 'lookup', file);
      if (n.kind !== 'dir') throw err('ENOTDIR', 'lookup', file);
      d = n;
    }
    const name = parts[parts.length - 1];
    return { parent: d, name, node: d.entries.get(name) };
  }

  private link(d: DirNode, name: string, node: Node | null): void {
    if (node) d.entries.set(name, node);
    else d.entries.delete(name);
    d.pending.push({ name, node });
  }

  private fdOf(fd: number, op: string): OpenFile {
    const f = this.fds.get(fd);
    if (!f) throw err('EBADF', op, String(fd));
    return f;
  }

  private fileOf(fd: number, op: string): { f: OpenFile; node: FileNode } {
    const f = this.fdOf(fd, op);
    if (f.node.kind !== 'file') throw err('EISDIR', op, f.file);
    return { f, node: f.node };
  }

  // ------------------------------------------------------------------ Fsys

  openSync(file: string, flags: OpenFlags): number {
    this.alive(`open ${file}`);
    const { parent, name, node } = this.lookup(file);
    const create = flags === 'w' || flags === 'wx' || flags === 'wx+' || flags === 'a';
    const excl = flags === 'wx' || flags === 'wx+';
    let n = node;
    if (n && excl) throw err('EEXIST', 'open', file);
    if (!n) {
      if (!create || !parent) throw err('ENOENT', 'open', file);
      this.step(`create ${file}`);
      n = { kind: 'file', data: Buffer.alloc(0), synced: Buffer.alloc(0) };
      this.link(parent, name, n);
    } else if (flags === 'w') {
      if (n.kind !== 'file') throw err('EISDIR', 'open', file);
      this.step(`truncate ${file}`);
      n.data = Buffer.alloc(0);
    }
    if (n.kind === 'dir' && flags !== 'r') throw err('EISDIR', 'open', file);
    const fd = this.nextFd++;
    this.fds.set(fd, {
      node: n,
      file: path.resolve(file),
      read: flags === 'r' || flags === 'r+' || flags === 'wx+',
      write: flags !== 'r',
      append: flags === 'a',
    });
    return fd;
  }

  closeSync(fd: number): void {
    this.alive('close');
    this.fdOf(fd, 'close');
    this.fds.delete(fd);
  }

  writeSync(
    fd: number,
    buf: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): number {
    const { f, node } = this.fileOf(fd, 'write');
    if (!f.write) throw err('EBADF', 'write', f.file);
    this.step(`write ${length} bytes to ${f.file}`);
    const at = f.append || position === null ? node.data.length : position;
    const end = at + length;
    let data = node.data;
    if (end > data.length) {
      const grown = Buffer.alloc(end);
      data.copy(grown, 0, 0, data.length);
      data = grown;
    } else {
      data = Buffer.from(data);
    }
    data.set(buf.subarray(offset, offset + length), at);
    node.data = data;
    return length;
  }

  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
    this.alive('read');
    const { f, node } = this.fileOf(fd, 'read');
    if (!f.read) throw err('EBADF', 'read', f.file);
    const n = Math.max(0, Math.min(length, node.data.length - position));
    buf.set(node.data.subarray(position, position + n), offset);
    return n;
  }

  fsizeSync(fd: number): number {
    this.alive('fstat');
    return this.fileOf(fd, 'fstat').node.data.length;
  }

  sizeSync(file: string): number {
    this.alive('stat');
    const { node } = this.lookup(file);
    if (!node) throw err('ENOENT', 'stat', file);
    return node.kind === 'file' ? node.data.length : 4096;
  }

  readFileSync(file: string): Buffer {
    this.alive('read');
    const { node } = this.lookup(file);
    if (!node) throw err('ENOENT', 'open', file);
    if (node.kind !== 'file') throw err('EISDIR', 'read', file);
    return Buffer.from(node.data);
  }

  fsyncSync(fd: number): void {
    const f = this.fdOf(fd, 'fsync');
    this.step(`fsync ${f.file}`);
    if (f.node.kind === 'file') f.node.synced = Buffer.from(f.node.data);
    else {
      f.node.durable = new Map(f.node.entries);
      f.node.pending = [];
    }
  }

  fdatasyncSync(fd: number): void {
    this.fsyncSync(fd);
  }

  /** Syncs at once (a cut here fails the call); the callback runs on a later microtask. */
  fdatasync(fd: number, done: (err: NodeJS.ErrnoException | null) => void): void {
    let e: NodeJS.ErrnoException | null = null;
    try {
      this.fsyncSync(fd);
    } catch (x) {
      if (x instanceof PowerCut) throw x;
      e = x as NodeJS.ErrnoException;
    }
    queueMicrotask(() => done(e));
  }

  ftruncateSync(fd: number, length: number): void {
    const { f, node } = this.fileOf(fd, 'ftruncate');
    if (!f.write) throw err('EBADF', 'ftruncate', f.file);
    this.step(`ftruncate ${f.file} to ${length}`);
    const data = Buffer.alloc(length);
    node.data.copy(data, 0, 0, Math.min(length, node.data.length));
    node.data = data;
  }

  renameSync(from: string, to: string): void {
    this.alive('rename');
    const a = this.lookup(from);
    const b = this.lookup(to);
    if (!a.node || !a.parent) throw err('ENOENT', 'rename', from);
    if (!b.parent) throw err('EBUSY', 'rename', to);
    this.step(`rename ${from} -> ${to}`);
    const n = a.node;
    this.link(a.parent, a.name, null);
    this.link(b.parent, b.name, n);
  }

  unlinkSync(file: string): void {
    this.alive('unlink');
    const { parent, name, node } = this.lookup(file);
    if (!node || !parent) throw err('ENOENT', 'unlink', file);
    if (node.kind === 'dir') throw err('EISDIR', 'unlink', file);
    this.step(`unlink ${file}`);
    this.link(parent, name, null);
  }

  mkdirSync(dir: string): void {
    this.alive('mkdir');
    const { parent, name, node } = this.lookup(dir);
    if (node) throw err('EEXIST', 'mkdir', dir);
    if (!parent) throw err('EEXIST', 'mkdir', dir);
    this.step(`mkdir ${dir}`);
    this.link(parent, name, FsModel.dir());
  }

  readdirSync(dir: string): string[] {
    this.alive('readdir');
    const { node } = this.lookup(dir);
    if (!node) throw err('ENOENT', 'scandir', dir);
    if (node.kind !== 'dir') throw err('ENOTDIR', 'scandir', dir);
    return [...node.entries.keys()].sort();
  }

  existsSync(file: string): boolean {
    this.alive('exists');
    try {
      return this.lookup(file).node !== undefined;
    } catch {
      return false;
    }
  }

  // ------------------------------------------------------------- crashes

  /** A process kill: open files are closed, everything written stays. */
  crash(): void {
    this.fds.clear();
    this.dead = false;
    this.budget = Infinity;
  }

  /**
   * A power loss: rebuild the tree from what `choice` lets survive, then power
   * comes back (every file is as synced as it now is).
   */
  powerLoss(choice: LossChoice = STRICT_LOSS): void {
    const seen = new Map<Node, Node>();
    const rebuild = (n: Node, where: string): Node => {
      const done = seen.get(n);
      if (done) return done;
      if (n.kind === 'file') {
        const f: FileNode = {
          kind: 'file',
          data: survivingData(n, where, choice),
          synced: n.synced,
        };
        f.synced = f.data;
        seen.set(n, f);
        return f;
      }
      const d = FsModel.dir();
      seen.set(n, d);
      const kept = new Map(n.durable);
      const k = n.pending.length === 0 ? 0 : choice.dirChanges(where, n.pending.length);
      for (const c of n.pending.slice(0, k)) {
        if (c.node) kept.set(c.name, c.node);
        else kept.delete(c.name);
      }
      for (const [name, child] of [...kept].sort((x, y) => (x[0] < y[0] ? -1 : 1))) {
        const c = rebuild(child, path.join(where, name));
        d.entries.set(name, c);
        d.durable.set(name, c);
      }
      return d;
    };
    this.root = rebuild(this.root, '/') as DirNode;
    this.fds.clear();
    this.dead = false;
    this.budget = Infinity;
  }

  /** A deep copy (to branch several power losses from one state). */
  clone(): FsModel {
    const m = new FsModel();
    const seen = new Map<Node, Node>();
    const copy = (n: Node): Node => {
      const done = seen.get(n);
      if (done) return done;
      if (n.kind === 'file') {
        const f: FileNode = { kind: 'file', data: n.data, synced: n.synced };
        seen.set(n, f);
        return f;
      }
      const d = FsModel.dir();
      seen.set(n, d);
      for (const [k, v] of n.entries) d.entries.set(k, copy(v));
      for (const [k, v] of n.durable) d.durable.set(k, copy(v));
      d.pending = n.pending.map((p) => ({ name: p.name, node: p.node ? copy(p.node) : null }));
      return d;
    };
    m.root = copy(this.root) as DirNode;
    m.dead = this.dead;
    return m;
  }

  /** Test helpers: write a file directly (durable at once), read one, or list a tree. */
  putFile(file: string, data: Uint8Array): void {
    const saved = this.budget;
    this.budget = Infinity;
    const parts = path
      .resolve(file)
      .split('/')
      .filter((p) => p.length > 0);
    let d = this.root;
    for (const p of parts.slice(0, -1)) {
      let n = d.entries.get(p);
      if (!n) {
        n = FsModel.dir();
        d.entries.set(p, n);
        d.durable.set(p, n);
      }
      if (n.kind !== 'dir') throw err('ENOTDIR', 'put', file);
      d = n;
    }
    const buf = Buffer.from(data);
    const f: FileNode = { kind: 'file', data: buf, synced: buf };
    d.entries.set(parts[parts.length - 1], f);
    d.durable.set(parts[parts.length - 1], f);
    this.budget = saved;
  }

  /** Every file under `dir` with its size (for messages). */
  list(dir = '/'): string[] {
    const out: string[] = [];
    const walk = (n: Node, where: string): void => {
      if (n.kind === 'file')
        out.push(`${where} (${n.data.length} bytes, ${n.synced.length} synced)`);
      else for (const [k, v] of n.entries) walk(v, path.join(where, k));
    };
    const { node } = this.lookup(dir);
    if (node) walk(node, path.resolve(dir));
    return out;
  }
}

function survivingData(n: FileNode, where: string, choice: LossChoice): Buffer {
  const { data, synced } = n;
  if (data.equals(synced)) return synced;
  const appended = data.length > synced.length && data.subarray(0, synced.length).equals(synced);
  if (appended) {
    const extra = data.length - synced.length;
    const { kept, zeros } = choice.fileTail(where, synced.length, extra);
    const k = Math.max(0, Math.min(kept, extra));
    const z = Math.max(0, Math.min(zeros, extra - k));
    return Buffer.concat([data.subarray(0, synced.length + k), Buffer.alloc(z)]);
  }
  const { kept } = choice.fileTail(where, synced.length, data.length);
  return kept >= data.length ? data : synced;
}
