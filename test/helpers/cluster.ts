/**
 * End-to-end test harness: runs a real paxosd cluster as child processes on
 * 127.0.0.1 with free ports, a private temp directory and fast timing.
 *
 * Every wait in here is bounded (count and wall time); a failure to start names
 * the node and shows its stderr. Each child's stderr goes to
 * <tmp>/stderr<SID>.log and the tail of every such file is printed when the test
 * fails. Set PAXOS_E2E_KEEP=1 to keep the temp directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PaxosClient, PaxosClientError, type ClientOptions, type OpResult } from '../../lib/client';

/** Repository root (this file runs as dist/test/helpers/cluster.js). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BIN = {
  paxosd: path.join(ROOT, 'bin', 'paxosd'),
  client: path.join(ROOT, 'bin', 'paxos-client'),
  logcmp: path.join(ROOT, 'bin', 'paxos-logcmp'),
};

/** The parts of a tap Test the harness uses. */
export interface TapLike {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
  passing(): boolean;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `p`, or null after `ms` (the timer is cleared, so it never keeps the process alive). */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<null>((r) => {
      timer = setTimeout(() => r(null), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Poll `fn` every `everyMs` until it returns a value other than undefined/false,
 * for at most `timeoutMs`. Throws (naming `what`) on timeout.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let i = 0; i < 100_000; i++) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) break;
    await sleep(everyMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`,
  );
}

/**
 * `count` distinct free UDP ports on 127.0.0.1: every socket stays bound until
 * all ports are known, so no port is handed out twice.
 */
export async function freeUdpPorts(count: number): Promise<number[]> {
  const socks: dgram.Socket[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const s = dgram.createSocket('udp4');
      socks.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, '127.0.0.1', () => resolve());
      });
      ports.push(s.address().port);
    }
    if (new Set(ports).size !== ports.length) throw new Error(`duplicate ports ${ports.join()}`);
    return ports;
  } finally {
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

export interface NodeStatus {
  sid: number;
  role: string;
  voter: boolean;
  ballot: string;
  leader: number | null;
  chosen: number;
  applied: number;
  base: number;
}

export interface ClusterOptions {
  /** Number of nodes (SIDs 0..n-1). */
  n: number;
  /** Extra `limits` fields for the config. */
  limits?: Record<string, number>;
  /** Extra `timing` fields (defaults: tickMs 10, heartbeatTicks 5, electionTicks 30). */
  timing?: Record<string, number>;
  /** storage.sync (default true). */
  sync?: boolean;
  /** Wait this long for each ready line (default 15 s). */
  readyTimeoutMs?: number;
  /** Client timeout for clients made by client() (default 5000 ms). */
  clientTimeoutMs?: number;
  /** Prefix of the temp directory name. */
  name?: string;
}

interface NodeProc {
  sid: number;
  child: ChildProcess;
  /** Set when we signalled it to die (so the exit is expected). */
  killedByUs: boolean;
  stopped: boolean;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  readyLine: string | null;
}

interface ServerEntry {
  sid: number;
  host: string;
  peerPort: number;
  clientPort: number;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave daemons behind if the test process dies without its teardown.
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

export class Cluster {
  readonly dir: string;
  readonly configFile: string;
  readonly clientConfigFile: string;
  readonly dataDir: string;
  readonly logDir: string;
  readonly sids: number[];
  servers: ServerEntry[] = [];
  clusterId: string;
  private readonly procs = new Map<number, NodeProc>();
  /** Exits we did not cause, e.g. a crash: [sid, code, signal]. */
  readonly unexpected: string[] = [];
  private readonly clients: PaxosClient[] = [];
  private admin: PaxosClient | null = null;
  private cleaned = false;

  private constructor(
    readonly t: TapLike,
    readonly opts: ClusterOptions,
  ) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${opts.name ?? 'paxos-e2e'}-`));
    this.configFile = path.join(this.dir, 'paxos.config.json');
    this.clientConfigFile = path.join(this.dir, 'client.config.json');
    this.dataDir = path.join(this.dir, 'data');
    this.logDir = path.join(this.dir, 'logs');
    this.sids = Array.from({ length: opts.n }, (_, i) => i);
    this.clusterId = `e2e-${process.pid}-${path.basename(this.dir).slice(-6)}`.replace(
      /[^A-Za-z0-9._-]/g,
      '_',
    );
    installExitHook();
    t.teardown(() => this.cleanup());
  }

  /** Create the temp dir and config, start all nodes with --init, wait until all are ready. */
  static async start(t: TapLike, opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(t, opts);
    // A free port can be taken by someone else between our probe and the
    // daemon's bind: then start over with fresh ports (bounded).
    for (let attempt = 1; ; attempt++) {
      await c.writeConfigs();
      try {
        await Promise.all(c.sids.map((sid) => c.spawnNode(sid, true)));
        return c;
      } catch (e) {
        const bind = /cannot bind|EADDRINUSE/.test(String(e));
        await Promise.all(c.sids.map((sid) => c.kill(sid).catch(() => undefined)));
        if (!bind || attempt >= 3) {
          await c.cleanup();
          throw e;
        }
        fs.rmSync(c.dataDir, { recursive: true, force: true });
        fs.rmSync(c.logDir, { recursive: true, force: true });
      }
    }
  }

  private async writeConfigs(): Promise<void> {
    const ports = await freeUdpPorts(2 * this.opts.n);
    this.servers = this.sids.map((sid) => ({
      sid,
      host: '127.0.0.1',
      peerPort: ports[2 * sid],
      clientPort: ports[2 * sid + 1],
    }));
    const config = {
      clusterId: this.clusterId,
      servers: this.servers,
      timing: { tickMs: 10, heartbeatTicks: 5, electionTicks: 30, ...this.opts.timing },
      limits: { ...this.opts.limits },
      storage: { sync: this.opts.sync ?? true },
      dataDir: this.dataDir,
      logDir: this.logDir,
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2) + '\n');
    const cc = this.clientConfig();
    fs.writeFileSync(
      this.clientConfigFile,
      JSON.stringify(
        {
          servers: cc.servers,
          timeoutMs: cc.timeoutMs,
          retryMs: cc.retryMs,
          clusterId: cc.clusterId,
        },
        null,
        2,
      ) + '\n',
    );
  }

  stderrFile(sid: number): string {
    return path.join(this.dir, `stderr${sid}.log`);
  }

  stderrOf(sid: number, tailBytes = 4096): string {
    try {
      const text = fs.readFileSync(this.stderrFile(sid), 'utf8');
      return text.length > tailBytes ? '…' + text.slice(-tailBytes) : text;
    } catch {
      return '';
    }
  }

  orderLogFile(sid: number): string {
    return path.join(this.logDir, `learned_ops${sid}.log`);
  }

  /** Order logs of the given nodes (default: all) that exist. */
  orderLogFiles(sids: number[] = this.sids): string[] {
    return sids.map((s) => this.orderLogFile(s)).filter((f) => fs.existsSync(f));
  }

  isRunning(sid: number): boolean {
    const p = this.procs.get(sid);
    return !!p && p.exit === null && !p.stopped;
  }

  running(): number[] {
    return this.sids.filter((s) => this.isRunning(s));
  }

  private spawnNode(sid: number, init: boolean): Promise<void> {
    const args = [BIN.paxosd, '--config', this.configFile, '--sid', String(sid)];
    if (init) args.push('--init');
    const errFd = fs.openSync(this.stderrFile(sid), 'a');
    fs.writeSync(errFd, `=== ${new Date().toISOString()} paxosd ${args.slice(1).join(' ')}\n`);
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', errFd],
      env: { ...process.env, PAXOS_SID: '' },
    });
    fs.closeSync(errFd);
    live.add(child);
    let resolveExit!: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
    const proc: NodeProc = {
      sid,
      child,
      killedByUs: false,
      stopped: false,
      exited: new Promise((r) => (resolveExit = r)),
      exit: null,
      readyLine: null,
    };
    this.procs.set(sid, proc);
    child.on('exit', (code, signal) => {
      live.delete(child);
      proc.exit = { code, signal };
      if (!proc.killedByUs && !this.cleaned && proc.readyLine !== null)
        this.unexpected.push(`sid ${sid} exited (code ${code}, signal ${signal})`);
      resolveExit(proc.exit);
    });
    const timeoutMs = this.opts.readyTimeoutMs ?? 15_000;
    return new Promise<void>((resolve, reject) => {
      let out = '';
      let settled = false;
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(
          new Error(
            `paxosd sid ${sid}: ${why}\n--- stderr (${this.stderrFile(sid)}):\n${this.stderrOf(sid)}`,
          ),
        );
      };
      const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => {
        out += d;
        if (out.length > 65536) out = out.slice(-65536);
        const m = /^paxosd sid=(\d+) ready .*$/m.exec(out);
        if (m && !settled) {
          settled = true;
          clearTimeout(timer);
          proc.readyLine = m[0];
          if (Number(m[1]) !== sid) reject(new Error(`sid ${sid} printed ${m[0]}`));
          else resolve();
        }
      });
      child.on('error', (e) => fail(`spawn failed: ${e.message}`));
      // Give stderr a moment to reach the file before reporting.
      child.on('exit', (code, signal) =>
        setTimeout(() => fail(`exited before ready (code ${code}, signal ${signal})`), 50),
      );
    });
  }

  /** Send a signal (default SIGKILL); for terminating signals wait (bounded) for the exit. */
  async kill(sid: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.procs.get(sid);
    if (!p || p.exit) return;
    p.killedByUs = true;
    p.child.kill(signal);
    if (p.stopped && signal !== 'SIGKILL') p.child.kill('SIGCONT');
    const r = await withTimeout(p.exited, 5000);
    if (r === null) {
      p.child.kill('SIGKILL');
      await withTimeout(p.exited, 5000);
    }
    p.stopped = false;
  }

  /** SIGSTOP: the process freezes (its sockets stay bound, datagrams queue up). */
  stop(sid: number): void {
    const p = this.procs.get(sid);
    if (!p || p.exit) throw new Error(`sid ${sid} is not running`);
    p.child.kill('SIGSTOP');
    p.stopped = true;
  }

  cont(sid: number): void {
    const p = this.procs.get(sid);
    if (!p || p.exit) throw new Error(`sid ${sid} is not running`);
    p.child.kill('SIGCONT');
    p.stopped = false;
  }

  /** Start a node again without --init, on the same data dir (kills it first if running). */
  async restart(sid: number): Promise<void> {
    await this.kill(sid);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.spawnNode(sid, false);
      } catch (e) {
        // Our port may be briefly taken by someone's ephemeral socket.
        if (!/cannot bind|EADDRINUSE/.test(String(e)) || attempt >= 5) throw e;
        await sleep(200);
      }
    }
  }

  /** Options for `new PaxosClient(...)` addressing every node. */
  clientConfig(extra: Partial<ClientOptions> = {}): ClientOptions {
    return {
      servers: this.servers.map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort })),
      timeoutMs: this.opts.clientTimeoutMs ?? 5000,
      retryMs: 20,
      clusterId: this.clusterId,
      ...extra,
    };
  }

  /** A client closed automatically at cleanup. */
  client(extra: Partial<ClientOptions> = {}): PaxosClient {
    const c = new PaxosClient(this.clientConfig(extra));
    this.clients.push(c);
    return c;
  }

  /** Status of one node, or null if it does not answer within timeoutMs. */
  async status(sid: number, timeoutMs = 300): Promise<NodeStatus | null> {
    if (!this.admin) this.admin = this.client();
    const s = await this.admin.status(sid, timeoutMs);
    return s ? (s as unknown as NodeStatus) : null;
  }

  /** Status of every node currently running (not killed, not stopped). */
  async statuses(sids: number[] = this.running()): Promise<NodeStatus[]> {
    const rows = await Promise.all(sids.map((s) => this.status(s)));
    return rows.filter((r): r is NodeStatus => r !== null);
  }

  /**
   * Wait until exactly one running node reports itself leader and every other
   * running node names it. Returns its SID.
   */
  async waitLeader(timeoutMs = 10_000, exclude: number[] = []): Promise<number> {
    return waitFor(
      'a single agreed leader',
      async () => {
        const sids = this.running().filter((s) => !exclude.includes(s));
        const rows = await this.statuses(sids);
        if (rows.length !== sids.length) return undefined;
        const leaders = rows.filter((r) => r.role === 'leader');
        if (leaders.length !== 1) return undefined;
        const l = leaders[0].sid;
        return rows.every((r) => r.leader === l) ? l : undefined;
      },
      timeoutMs,
    );
  }

  /** Wait until a write goes through (bounded); returns the SID that answered. */
  async waitWritable(timeoutMs = 10_000): Promise<number> {
    const c = this.client({ timeoutMs: Math.min(2000, timeoutMs) });
    const s = c.session();
    let i = 0;
    return waitFor(
      'a successful write',
      async () => {
        const r = await s.put(`__probe-${i++}`, 'x');
        return r.ok ? r.sid : undefined;
      },
      timeoutMs,
      20,
    );
  }

  /**
   * Wait until every node in `sids` has applied the same slot, which is at least
   * `atLeast`, and the value is stable for two polls. Returns that slot.
   */
  async waitSameApplied(sids: number[], timeoutMs: number, atLeast = 0): Promise<number> {
    let prev = -1;
    return waitFor(
      `nodes ${sids.join(',')} to apply the same slot (>= ${atLeast})`,
      async () => {
        const rows = await this.statuses(sids);
        if (rows.length !== sids.length) return undefined;
        const a = rows[0].applied;
        const same = rows.every((r) => r.applied === a && r.chosen === a) && a >= atLeast;
        if (!same) {
          prev = -1;
          return undefined;
        }
        if (a !== prev) {
          prev = a;
          return undefined;
        }
        return a;
      },
      timeoutMs,
      100,
    );
  }

  /** Exits we did not cause (crashes). */
  unexpectedExits(): string[] {
    return [...this.unexpected];
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const c of this.clients) c.close();
    await Promise.all(
      [...this.procs.values()].map(async (p) => {
        if (p.exit) return;
        p.killedByUs = true;
        p.child.kill('SIGKILL');
        await withTimeout(p.exited, 5000);
      }),
    );
    if (!this.t.passing() || this.unexpected.length > 0) {
      for (const sid of this.sids)
        this.t.comment(
          `--- stderr of sid ${sid} (${this.stderrFile(sid)}):\n${this.stderrOf(sid)}`,
        );
      if (this.unexpected.length) this.t.comment(`unexpected exits: ${this.unexpected.join('; ')}`);
    }
    if (process.env.PAXOS_E2E_KEEP) this.t.comment(`kept ${this.dir}`);
    else fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Concurrent load

export interface LoadOptions {
  /** Concurrent sessions. */
  sessions: number;
  /** Stop after this many operations in total (issued). */
  totalOps?: number;
  /** Hard deadline. */
  durationMs: number;
  /** Key prefix (keys are `<prefix>c<k>-<i>`). */
  prefix?: string;
  /** Pad values to this many bytes. */
  valueBytes?: number;
}

export interface OpRecord {
  key: string;
  value: string;
  session: number;
  startAt: number;
  endAt: number;
  outcome: 'ack' | 'unknown' | 'refused' | 'error';
  /** Server that answered (acks and refusals). */
  sid?: number;
  attempts?: number;
  err?: string;
}

export interface LoadResult {
  records: OpRecord[];
  acked: OpRecord[];
  /** Timed out: may or may not have taken effect (not a failure). */
  unknown: OpRecord[];
  /** Refused or an unexpected error: these are failures. */
  failed: OpRecord[];
  startedAt: number;
  endedAt: number;
  elapsedMs: number;
  ackPerSec: number;
}

export interface Load {
  /** Ask every session to stop after its current operation. */
  stop(): void;
  done: Promise<LoadResult>;
  /** Live view of the records so far. */
  records: OpRecord[];
  acks(): number;
}

/**
 * K sessions, each putting unique keys one after another until `totalOps` are
 * issued, the deadline passes or stop() is called. Bounded: at most totalOps (or
 * one per ms of duration per session) operations, each bounded by the client's
 * timeout.
 */
export function startLoad(client: PaxosClient, opts: LoadOptions): Load {
  const records: OpRecord[] = [];
  const startedAt = Date.now();
  const deadline = startedAt + opts.durationMs;
  const total = opts.totalOps ?? Number.MAX_SAFE_INTEGER;
  const perSessionCap = opts.durationMs + 1;
  const prefix = opts.prefix ?? '';
  let issued = 0;
  let stopped = false;
  let acks = 0;
  const pad = (s: string): string =>
    opts.valueBytes && s.length < opts.valueBytes ? s + '.'.repeat(opts.valueBytes - s.length) : s;

  const one = async (k: number): Promise<void> => {
    const session = client.session();
    for (let i = 0; i < perSessionCap; i++) {
      if (stopped || issued >= total || Date.now() >= deadline) return;
      issued++;
      const key = `${prefix}c${k}-${i}`;
      const value = pad(`v${k}-${i}-${startedAt}`);
      const rec: OpRecord = {
        key,
        value,
        session: k,
        startAt: Date.now(),
        endAt: 0,
        outcome: 'error',
      };
      records.push(rec);
      try {
        const r: OpResult = await session.put(key, value);
        rec.sid = r.sid;
        rec.attempts = r.attempts;
        if (r.ok) {
          rec.outcome = 'ack';
          acks++;
        } else {
          rec.outcome = 'refused';
          rec.err = r.err;
        }
      } catch (e) {
        if (e instanceof PaxosClientError && e.code === 'unknown') rec.outcome = 'unknown';
        rec.err = (e as Error).message;
        if (e instanceof PaxosClientError && e.code === 'closed') stopped = true;
      }
      rec.endAt = Date.now();
    }
  };

  const done = Promise.all(Array.from({ length: opts.sessions }, (_, k) => one(k))).then(() => {
    const endedAt = Date.now();
    const acked = records.filter((r) => r.outcome === 'ack');
    const elapsedMs = endedAt - startedAt;
    return {
      records,
      acked,
      unknown: records.filter((r) => r.outcome === 'unknown'),
      failed: records.filter((r) => r.outcome === 'refused' || r.outcome === 'error'),
      startedAt,
      endedAt,
      elapsedMs,
      ackPerSec: elapsedMs > 0 ? (acked.length * 1000) / elapsedMs : 0,
    };
  });
  return {
    stop: () => {
      stopped = true;
    },
    done,
    records,
    acks: () => acks,
  };
}

export interface ReadCheck {
  checked: number;
  /** Acked writes whose key reads back differently (lost or wrong). */
  mismatches: string[];
  /** Unknown writes that read back as something other than absent or the value. */
  badUnknown: string[];
  /** Reads that themselves failed (timeout or refusal). */
  readErrors: string[];
  /** Unknown writes that did take effect. */
  unknownApplied: number;
}

/**
 * Read back every acknowledged write (must hold the written value) and every
 * unknown one (absent or the written value), with `concurrency` sessions.
 */
export async function verifyReadable(
  client: PaxosClient,
  result: Pick<LoadResult, 'acked' | 'unknown'>,
  concurrency = 8,
): Promise<ReadCheck> {
  const todo = [...result.acked, ...result.unknown];
  const out: ReadCheck = {
    checked: 0,
    mismatches: [],
    badUnknown: [],
    readErrors: [],
    unknownApplied: 0,
  };
  let next = 0;
  const worker = async (): Promise<void> => {
    const s = client.session();
    while (next < todo.length) {
      const rec = todo[next++];
      let got: string | null | undefined;
      try {
        const r = await s.get(rec.key);
        if (!r.ok) {
          out.readErrors.push(`${rec.key}: ${r.err}`);
          continue;
        }
        got = r.value ?? null;
      } catch (e) {
        out.readErrors.push(`${rec.key}: ${(e as Error).message}`);
        continue;
      }
      out.checked++;
      if (rec.outcome === 'ack') {
        if (got !== rec.value) out.mismatches.push(`${rec.key}: wrote ${rec.value}, read ${got}`);
      } else if (got === rec.value) out.unknownApplied++;
      else if (got !== null) out.badUnknown.push(`${rec.key}: wrote ${rec.value}, read ${got}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  return out;
}

/** Files' contents, for byte comparison. */
export function readAll(files: string[]): Buffer[] {
  return files.map((f) => fs.readFileSync(f));
}

// ---------------------------------------------------------------------------
// Running the CLIs

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Run `node <script> ...args` from the repo root, optionally feeding `input` on
 * stdin; killed with SIGKILL after `timeoutMs` (then code is null).
 */
export function runBin(
  script: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PAXOS_SID: '' },
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15_000);
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}
