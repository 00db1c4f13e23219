/**
 * Fault-injection helpers for the durability tests: WAL file surgery, config
 * rewrites, running one paxosd under a wrapper (strace), tmpfs mounts, an
 * overwriting load with a final-state check, and an offline replay of a data
 * directory. Every wait is bounded; everything started here is killed in the
 * test's teardown.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PaxosClient, PaxosClientError } from '../../lib/client';
import { Prng } from '../../lib/core/prng';
import { Replica } from '../../lib/core/replica';
import { replicaOptions } from '../../lib/daemon';
import { loadNodeConfig } from '../../lib/io/config';
import { crc32c } from '../../lib/io/crc32c';
import { RECORD_HEADER_BYTES, segmentLayout } from '../../lib/io/recordlog';
import { DurableStore } from '../../lib/io/storage';
import { KvStateMachine } from '../../lib/sm/kv';
import {
  BIN,
  recordPut,
  ROOT,
  sleep,
  summarizeLoad,
  withTimeout,
  type Cluster,
  type LoadResult,
  type OpRecord,
  type TapLike,
} from './cluster';

// ---------------------------------------------------------------------------
// Environment

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Under CI (CI=true) a missing tool or permission is a failure, not a skip. */
export const IN_CI = process.env.CI === 'true';

/**
 * The `skip` option for a test that needs something this machine may lack
 * (`why` names it, or false when all is there). Locally the test is skipped
 * with that reason; under CI=true a failing assertion is added to `t` as well,
 * so a CI run cannot pass by quietly doing less.
 */
export function requireOrSkip(
  t: { fail(message: string): unknown },
  what: string,
  why: string | false,
): string | false {
  if (why !== false && IN_CI) t.fail(`${what}: ${why} (required under CI=true)`);
  return why;
}

/** Absolute path of an executable on $PATH, or null. */
export function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const p = r.status === 0 ? r.stdout.trim() : '';
  return p !== '' ? p : null;
}

/**
 * `strace -f [--seccomp-bpf] -qq -o OUT ...extra`: the prefix that runs a
 * command with syscall tracing or fault injection. With seccomp-bpf only the
 * traced syscalls stop the process (cheap). Without `out` nothing is written;
 * with it every traced call is logged with its wall-clock time (-ttt).
 */
export function straceWrapper(
  extra: string[],
  opts: { seccomp?: boolean; out?: string } = {},
): string[] {
  const strace = which('strace');
  if (!strace) throw new Error('strace not found');
  return [
    strace,
    '-f',
    ...(opts.seccomp === false ? [] : ['--seccomp-bpf']),
    '-qq',
    ...(opts.out ? ['-ttt', '-o', opts.out] : ['-o', '/dev/null']),
    ...extra,
  ];
}

/** Whether `straceWrapper(extra, {seccomp}) true` runs here (ptrace and seccomp may be forbidden). */
export function straceWorks(extra: string[], seccomp = true): boolean {
  if (!which('strace')) return false;
  const argv = straceWrapper(extra, { seccomp });
  return spawnSync(argv[0], [...argv.slice(1), 'true']).status === 0;
}

/** A small seeded PRNG (mulberry32) so a failing run can be repeated. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// Data directories and WAL files

export function dataDirOf(c: Cluster, sid: number): string {
  return path.join(c.dataDir, String(sid));
}

/** WAL segment files of a data directory, oldest first. */
export function walSegments(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^wal-\d{16}\.log$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Sum of the sizes of every regular file under `dir` (recursively). */
export function dirBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += dirBytes(p);
    else if (e.isFile()) n += fs.statSync(p).size;
  }
  return n;
}

export interface WalFrame {
  /** Offset of the frame header in the file. */
  offset: number;
  /** Payload length. */
  len: number;
  /** The stored crc32c matches the payload. */
  crcOk: boolean;
}

/**
 * The frames of a WAL segment as laid out on disk (after its header: [u32 len][u32 crc^salt][payload]),
 * followed by length only; `rest` is what is left after the last whole frame.
 */
export function walFrames(file: string): { frames: WalFrame[]; size: number; rest: number } {
  const buf = fs.readFileSync(file);
  const frames: WalFrame[] = [];
  const layout = segmentLayout(buf);
  if (typeof layout === 'string') throw new Error(`${file}: ${layout}`);
  let pos = layout.start;
  while (pos + RECORD_HEADER_BYTES <= buf.length) {
    const len = buf.readUInt32LE(pos);
    if (len === 0 || pos + RECORD_HEADER_BYTES + len > buf.length) break;
    const start = pos + RECORD_HEADER_BYTES;
    const crcOk =
      (crc32c(buf, start, start + len) ^ layout.salt) >>> 0 === buf.readUInt32LE(pos + 4);
    frames.push({ offset: pos, len, crcOk });
    pos += RECORD_HEADER_BYTES + len;
  }
  return { frames, size: buf.length, rest: buf.length - pos };
}

/** XOR one byte of a file in place; returns the old value. */
export function flipByte(file: string, offset: number, mask = 0xff): number {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    if (fs.readSync(fd, b, 0, 1, offset) !== 1) throw new Error(`${file}: no byte at ${offset}`);
    const old = b[0];
    b[0] = old ^ mask;
    fs.writeSync(fd, b, 0, 1, offset);
    return old;
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// Config

/**
 * Merge `storage` fields into the cluster's config file (the harness only sets
 * storage.sync). Takes effect for nodes started afterwards.
 */
export function patchStorageConfig(c: Cluster, storage: Record<string, unknown>): void {
  const cfg = JSON.parse(fs.readFileSync(c.configFile, 'utf8')) as Record<string, unknown>;
  cfg.storage = { ...(cfg.storage as Record<string, unknown>), ...storage };
  fs.writeFileSync(c.configFile, JSON.stringify(cfg, null, 2) + '\n');
}

/**
 * Restart every node (SIGKILL, then start without --init on the same data
 * directories), e.g. after patchStorageConfig. Nodes started with --init have
 * persisted their voter record, so they come back as voters.
 */
export async function restartAll(c: Cluster): Promise<void> {
  await Promise.all(c.sids.map((s) => c.kill(s, 'SIGKILL')));
  await Promise.all(c.sids.map((s) => c.restart(s)));
}

// ---------------------------------------------------------------------------
// A paxosd outside the harness (under a wrapper such as strace)

export interface WrappedNode {
  sid: number;
  child: ChildProcess;
  /** Resolves with the ready line, rejects if the process exits first or times out. */
  ready: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** SIGKILL the wrapper's whole process group (the node included); bounded wait. */
  kill(): Promise<void>;
}

/**
 * Start `paxosd --config <c.configFile> --sid <sid>` as `wrapper... node bin/paxosd ...`
 * in its own process group, stderr appended to the harness's stderr<SID>.log
 * (so the harness prints it when the test fails). Killed at teardown.
 */
export function spawnWrapped(
  t: TapLike,
  c: Cluster,
  sid: number,
  wrapper: string[],
  opts: { init?: boolean; readyTimeoutMs?: number } = {},
): WrappedNode {
  const args = [BIN.paxosd, '--config', c.configFile, '--sid', String(sid)];
  if (opts.init) args.push('--init');
  const argv = [...wrapper, process.execPath, ...args];
  const errFd = fs.openSync(c.stderrFile(sid), 'a');
  fs.writeSync(errFd, `=== ${new Date().toISOString()} ${argv.join(' ')}\n`);
  const child = spawn(argv[0], argv.slice(1), {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', errFd],
    env: { ...process.env, PAXOS_SID: '' },
    detached: true,
  });
  fs.closeSync(errFd);
  const killGroup = (): void => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const onExit = (): void => killGroup();
  process.on('exit', onExit);
  let resolveExit!: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
  const node: WrappedNode = {
    sid,
    child,
    exit: null,
    exited: new Promise((r) => (resolveExit = r)),
    ready: Promise.resolve(''),
    kill: async () => {
      killGroup();
      await withTimeout(node.exited, 5000);
    },
  };
  child.on('exit', (code, signal) => {
    node.exit = { code, signal };
    resolveExit(node.exit);
  });
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  node.ready = new Promise<string>((resolve, reject) => {
    let out = '';
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      reject(new Error(`sid ${sid} under ${wrapper[0]}: no ready line within ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      if (out.length > 65536) out = out.slice(-65536);
      const m = /^paxosd sid=(\d+) ready .*$/m.exec(out);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, sig) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`sid ${sid} under ${wrapper[0]} exited before ready (${code}, ${sig})`));
    });
  });
  node.ready.catch(() => undefined);
  t.teardown(async () => {
    await node.kill();
    process.off('exit', onExit);
  });
  return node;
}

// ---------------------------------------------------------------------------
// tmpfs

/** Mount a tmpfs of `size` (e.g. "3m") on `dir` (root only). Throws with mount's stderr. */
export function mountTmpfs(dir: string, size: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`mount -t tmpfs on ${dir} failed: ${r.stderr || r.error}`);
}

/** Unmount (lazily if busy); true when nothing is mounted there any more. */
export function umount(dir: string): boolean {
  const r = spawnSync('umount', [dir], { encoding: 'utf8' });
  if (r.status === 0) return true;
  const l = spawnSync('umount', ['-l', dir], { encoding: 'utf8' });
  return l.status === 0;
}

export function isMountPoint(dir: string): boolean {
  try {
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    const real = fs.realpathSync(dir);
    return mounts.split('\n').some((l) => l.split(' ')[1] === real);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Paced unique-key load (same records as the harness's startLoad)

/**
 * Like the harness's startLoad (unique keys `<prefix>c<k>-<i>`, results usable
 * with verifyReadable), but issuing at most `opsPerSec` operations per second
 * in total, so that a long run stays within `totalOps` while it lasts.
 */
export function startPacedLoad(
  client: PaxosClient,
  opts: {
    sessions: number;
    totalOps: number;
    durationMs: number;
    opsPerSec: number;
    prefix?: string;
  },
): { stop(): void; done: Promise<LoadResult>; acks(): number; issued(): number } {
  const records: OpRecord[] = [];
  const startedAt = Date.now();
  const deadline = startedAt + opts.durationMs;
  const prefix = opts.prefix ?? '';
  let issued = 0;
  let acks = 0;
  let stopped = false;
  const one = async (k: number): Promise<void> => {
    const session = client.session();
    for (let i = 0; i < opts.totalOps; i++) {
      // Pace: wait (in small steps) until the schedule allows one more operation.
      for (let w = 0; w < 10_000; w++) {
        if (stopped || Date.now() >= deadline) return;
        if (issued < ((Date.now() - startedAt) * opts.opsPerSec) / 1000 + opts.sessions) break;
        await sleep(10);
      }
      if (stopped || issued >= opts.totalOps || Date.now() >= deadline) return;
      issued++;
      const rec: OpRecord = {
        key: `${prefix}c${k}-${i}`,
        value: `v${k}-${i}-${startedAt}`,
        session: k,
        startAt: Date.now(),
        endAt: 0,
        outcome: 'error',
      };
      records.push(rec);
      if ((await recordPut(session, rec)) === 'closed') stopped = true;
      if (rec.outcome === 'ack') acks++;
    }
  };
  const done = Promise.all(Array.from({ length: opts.sessions }, (_, k) => one(k))).then(() => {
    return summarizeLoad(records, startedAt);
  });
  return {
    stop: () => {
      stopped = true;
    },
    done,
    acks: () => acks,
    issued: () => issued,
  };
}

// ---------------------------------------------------------------------------
// Overwriting load: each session writes its own small key set again and again

export interface OwOp {
  key: string;
  value: string;
  outcome: 'ack' | 'unknown' | 'refused' | 'error';
  err?: string;
  sid?: number;
}

export interface OwResult {
  ops: OwOp[];
  acked: number;
  unknown: number;
  failed: OwOp[];
  /** Sum of key + value bytes of every issued put (the client-side history). */
  bytesIssued: number;
  /** Same, acknowledged puts only. */
  bytesAcked: number;
  elapsedMs: number;
  ackPerSec: number;
  /** Per key: the values the final state may hold (last ack, or a later unknown). */
  expected: Map<string, { allowed: Set<string | null> }>;
}

export interface OwLoad {
  stop(): void;
  done: Promise<OwResult>;
  acks(): number;
  issued(): number;
}

/**
 * `sessions` sessions; session k puts keys `<prefix>s<k>-<i % keysPerSession>`
 * one after another until `totalOps` are issued, `durationMs` passes or stop().
 * A session's operations are sequential, so the final value of each key is the
 * value of its last acknowledged put, or of a later put whose outcome is
 * unknown (an unknown put cannot take effect after a later one of the same
 * session: the exactly-once table rejects it as stale).
 */
export function startOverwriteLoad(
  client: PaxosClient,
  opts: {
    sessions: number;
    totalOps: number;
    durationMs: number;
    keysPerSession: number;
    valueBytes: number;
    prefix?: string;
  },
): OwLoad {
  const ops: OwOp[] = [];
  const started = Date.now();
  const deadline = started + opts.durationMs;
  const prefix = opts.prefix ?? '';
  let issued = 0;
  let acks = 0;
  let stopped = false;
  const perSession: OwOp[][] = [];
  const one = async (k: number): Promise<void> => {
    const s = client.session();
    const mine: OwOp[] = [];
    perSession[k] = mine;
    for (let i = 0; i < opts.totalOps; i++) {
      if (stopped || issued >= opts.totalOps || Date.now() >= deadline) return;
      issued++;
      const key = `${prefix}s${k}-${i % opts.keysPerSession}`;
      let value = `${k}.${i}.`;
      if (value.length < opts.valueBytes) value += 'x'.repeat(opts.valueBytes - value.length);
      const op: OwOp = { key, value, outcome: 'error' };
      ops.push(op);
      mine.push(op);
      try {
        const r = await s.put(key, value);
        op.sid = r.sid;
        if (r.ok) {
          op.outcome = 'ack';
          acks++;
        } else {
          op.outcome = 'refused';
          op.err = r.err;
        }
      } catch (e) {
        if (e instanceof PaxosClientError && e.code === 'unknown') op.outcome = 'unknown';
        op.err = (e as Error).message;
        if (e instanceof PaxosClientError && e.code === 'closed') stopped = true;
      }
    }
  };
  const done = Promise.all(Array.from({ length: opts.sessions }, (_, k) => one(k))).then(() => {
    const elapsedMs = Date.now() - started;
    const expected = new Map<string, { allowed: Set<string | null> }>();
    for (const mine of perSession) {
      if (!mine) continue;
      const byKey = new Map<string, OwOp[]>();
      for (const op of mine) {
        let l = byKey.get(op.key);
        if (!l) byKey.set(op.key, (l = []));
        l.push(op);
      }
      for (const [key, l] of byKey) {
        let last = -1;
        for (let i = 0; i < l.length; i++) if (l[i].outcome === 'ack') last = i;
        const allowed = new Set<string | null>([last >= 0 ? l[last].value : null]);
        for (let i = last + 1; i < l.length; i++)
          if (l[i].outcome === 'unknown') allowed.add(l[i].value);
        expected.set(key, { allowed });
      }
    }
    let bytesIssued = 0;
    let bytesAcked = 0;
    for (const op of ops) {
      const b = Buffer.byteLength(op.key) + Buffer.byteLength(op.value);
      bytesIssued += b;
      if (op.outcome === 'ack') bytesAcked += b;
    }
    return {
      ops,
      acked: acks,
      unknown: ops.filter((o) => o.outcome === 'unknown').length,
      failed: ops.filter((o) => o.outcome === 'refused' || o.outcome === 'error'),
      bytesIssued,
      bytesAcked,
      elapsedMs,
      ackPerSec: elapsedMs > 0 ? (acks * 1000) / elapsedMs : 0,
      expected,
    };
  });
  return {
    stop: () => {
      stopped = true;
    },
    done,
    acks: () => acks,
    issued: () => issued,
  };
}

/** Read every key of an overwrite load back; the value must be one of the allowed ones. */
export async function verifyFinalValues(
  client: PaxosClient,
  expected: OwResult['expected'],
  concurrency = 16,
): Promise<{ checked: number; wrong: string[]; readErrors: string[] }> {
  const keys = [...expected.keys()];
  const out = { checked: 0, wrong: [] as string[], readErrors: [] as string[] };
  let next = 0;
  const worker = async (): Promise<void> => {
    const s = client.session();
    while (next < keys.length) {
      const key = keys[next++];
      try {
        const r = await s.get(key);
        if (!r.ok) {
          out.readErrors.push(`${key}: ${r.err}`);
          continue;
        }
        out.checked++;
        const got = r.value ?? null;
        const allowed = expected.get(key)!.allowed;
        if (!allowed.has(got))
          out.wrong.push(`${key}: read ${got}, expected one of ${[...allowed].join(' | ')}`);
      } catch (e) {
        out.readErrors.push(`${key}: ${(e as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  return out;
}

// ---------------------------------------------------------------------------
// Offline replay of a (stopped) node's data directory

export interface Replayed {
  /** Applied slot after recovery (snapshot + contiguous chosen prefix of the WAL). */
  applied: number;
  /** Slot of the snapshot file it started from (0 = none). */
  snapshotSlot: number;
  /** sha256 of the key-value state machine's snapshot encoding at `applied`. */
  stateHash: string;
  keys: number;
  walRecords: number;
}

/**
 * Recover a data directory the way paxosd does at start (DurableStore.open +
 * Replica.restore) and fingerprint the resulting state machine. Run only on a
 * directory no process is using: a torn tail would be cut (no sync).
 */
export function replayDataDir(configFile: string, sid: number, dir: string): Replayed {
  const cfg = loadNodeConfig(configFile);
  const opened = DurableStore.open(dir, false);
  try {
    // As the daemon: the cluster's limits come from the log, not from the config file.
    const sm = new KvStateMachine();
    const replica = new Replica({
      ...replicaOptions(cfg, sid),
      prng: new Prng(1),
      sm,
      // Never snapshot during the replay (it would not change the state anyway).
      snapshotEverySlots: 0x7fffffff,
      snapshotEveryBytes: undefined,
    });
    replica.restore(opened.snapshot, opened.records);
    return {
      applied: replica.applied,
      snapshotSlot: opened.snapshot?.slot ?? 0,
      stateHash: createHash('sha256').update(sm.snapshot()).digest('hex'),
      keys: sm.data.size,
      walRecords: opened.records.length,
    };
  } finally {
    opened.store.close();
  }
}

/** Lines of a file after the last `=== ` header (the current run of a node's stderr log). */
export function lastRun(text: string): string {
  const i = text.lastIndexOf('\n=== ');
  return i >= 0 ? text.slice(i + 1) : text;
}

/** Full stderr log of a node (the harness's stderr<SID>.log). */
export function stderrText(c: Cluster, sid: number): string {
  try {
    return fs.readFileSync(c.stderrFile(sid), 'utf8');
  } catch {
    return '';
  }
}

/** The last `n` lines of a file that start with a slot number ("slot.idx ..."). */
export function lastOrderLines(file: string, n: number): string[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out: string[] = [];
  for (let i = lines.length - 1; i >= 0 && out.length < n; i--)
    if (/^\d+\.\d+ /.test(lines[i])) out.unshift(lines[i]);
  return out;
}
