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
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  PaxosClient,
  PaxosClientError,
  type ClientOptions,
  type OpResult,
  type Session,
} from '../../lib/client';
import { freeUdpPorts } from '../../lib/bench/cluster';
import type { HistoryEvent } from '../../lib/check/linearizability';
import { loadKeyring } from '../../lib/io/keys';
import { launchNode, PAXOSD_BIN, waitReady } from '../../lib/launch';
import type { Keyring } from '../../lib/wire/envelope';

/** Repository root (this file runs as dist/test/helpers/cluster.js). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BIN = {
  paxosd: PAXOSD_BIN,
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

// Shared with paxos-bench's local cluster.
export { freeUdpPorts };

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
  /**
   * Contents of the peer key file (one or two 64-hex-digit keys, one per line).
   * Each node gets its own copy (<dir>/peer<SID>.key, see setKeyFile) and its own
   * config file naming it.
   */
  keyFile?: string;
  /**
   * Contents of the client key file: the nodes' `clientKeyFile` and the
   * `clientKeyFile` of the client config; clients made by client() use it too.
   */
  clientKeyFile?: string;
  /** Extra environment variables for the daemons (e.g. DEBUG=paxos:drop). */
  env?: Record<string, string>;
  /**
   * Route every peer link through ports the test owns: node i addresses node j
   * at 127.0.0.1:relayPort(i, j) instead of j's own peer port. The test must
   * bind those ports and forward (see relayPort). Each node gets its own config.
   */
  peerRelay?: boolean;
  /**
   * Run every node as `wrapper... node bin/paxosd ...` (e.g. strace injecting a
   * slow fdatasync) in its own process group; signals go to the whole group.
   */
  wrapper?: string[];
  /** Extra paxosd arguments for node `sid` (e.g. --metrics HOST:PORT). */
  nodeArgs?: (sid: number) => string[];
  /**
   * Sids marked `"spare": true` in the config (not in the bootstrap
   * configuration; see `paxos-client member add`). start() does not start
   * them: start one with restart(sid) (no --init), as an operator would.
   */
  spares?: number[];
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
/** Children started in their own process group (ClusterOptions.wrapper). */
const groups = new WeakSet<ChildProcess>();

/** Signal a node: its whole process group when it runs under a wrapper. */
function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (groups.has(child) && child.pid) {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  } else child.kill(signal);
}
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave daemons behind if the test process dies without its teardown.
  process.on('exit', () => {
    for (const c of live) {
      try {
        if (groups.has(c) && c.pid) process.kill(-c.pid, 'SIGKILL');
        else c.kill('SIGKILL');
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
  servers: (ServerEntry & { spare?: boolean })[] = [];
  clusterId: string;
  private readonly procs = new Map<number, NodeProc>();
  /** Exits we did not cause, e.g. a crash: [sid, code, signal]. */
  readonly unexpected: string[] = [];
  private readonly clients: PaxosClient[] = [];
  private admin: PaxosClient | null = null;
  private cleaned = false;
  /** `${from}>${to}` -> the port `from` sends to for `to` (peerRelay only). */
  private readonly relayPorts = new Map<string, number>();
  private clientKeyring: Keyring | undefined;

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
        const spares = opts.spares ?? [];
        await Promise.all(
          c.sids.filter((s) => !spares.includes(s)).map((sid) => c.spawnNode(sid, true)),
        );
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
    const n = this.opts.n;
    const relayCount = this.opts.peerRelay ? n * (n - 1) : 0;
    const ports = await freeUdpPorts(2 * n + relayCount);
    this.servers = this.sids.map((sid) => ({
      sid,
      host: '127.0.0.1',
      peerPort: ports[2 * sid],
      clientPort: ports[2 * sid + 1],
      ...(this.opts.spares?.includes(sid) ? { spare: true } : {}),
    }));
    this.relayPorts.clear();
    let next = 2 * n;
    if (this.opts.peerRelay)
      for (const from of this.sids)
        for (const to of this.sids)
          if (from !== to) this.relayPorts.set(`${from}>${to}`, ports[next++]);
    const config: Record<string, unknown> = {
      clusterId: this.clusterId,
      servers: this.servers,
      timing: { tickMs: 10, heartbeatTicks: 5, electionTicks: 30, ...this.opts.timing },
      limits: { ...this.opts.limits },
      storage: { sync: this.opts.sync ?? true },
      dataDir: this.dataDir,
      logDir: this.logDir,
    };
    if (this.opts.clientKeyFile !== undefined) {
      const f = path.join(this.dir, 'client.key');
      fs.writeFileSync(f, this.opts.clientKeyFile, { mode: 0o600 });
      config.clientKeyFile = f;
      this.clientKeyring = loadKeyring(f, this.configFile, 'clientKeyFile');
    }
    if (this.opts.keyFile !== undefined) config.keyFile = this.keyFileOf(0);
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2) + '\n');
    if (this.perNodeConfig())
      for (const sid of this.sids) {
        const own: Record<string, unknown> = { ...config };
        if (this.opts.keyFile !== undefined) {
          fs.writeFileSync(this.keyFileOf(sid), this.opts.keyFile, { mode: 0o600 });
          own.keyFile = this.keyFileOf(sid);
        }
        if (this.opts.peerRelay)
          own.servers = this.servers.map((s) =>
            s.sid === sid ? s : { ...s, peerPort: this.relayPort(sid, s.sid) },
          );
        fs.writeFileSync(this.nodeConfigFile(sid), JSON.stringify(own, null, 2) + '\n');
      }
    const cc = this.clientConfig();
    const clientFile: Record<string, unknown> = {
      servers: cc.servers,
      timeoutMs: cc.timeoutMs,
      retryMs: cc.retryMs,
      clusterId: cc.clusterId,
    };
    if (config.clientKeyFile) clientFile.clientKeyFile = config.clientKeyFile;
    fs.writeFileSync(this.clientConfigFile, JSON.stringify(clientFile, null, 2) + '\n');
  }

  private perNodeConfig(): boolean {
    return this.opts.keyFile !== undefined || !!this.opts.peerRelay;
  }

  /** The config file node `sid` runs with (its own one with keyFile or peerRelay). */
  nodeConfigFile(sid: number): string {
    return this.perNodeConfig() ? path.join(this.dir, `paxos.config.${sid}.json`) : this.configFile;
  }

  /** Node `sid`'s peer key file (keyFile option). */
  keyFileOf(sid: number): string {
    return path.join(this.dir, `peer${sid}.key`);
  }

  /** Rewrite node `sid`'s peer key file; it takes effect when the node (re)starts. */
  setKeyFile(sid: number, contents: string): void {
    if (this.opts.keyFile === undefined) throw new Error('the cluster was started without keyFile');
    fs.writeFileSync(this.keyFileOf(sid), contents, { mode: 0o600 });
  }

  /** With peerRelay: the port node `from` sends to when it addresses node `to`. */
  relayPort(from: number, to: number): number {
    const p = this.relayPorts.get(`${from}>${to}`);
    if (p === undefined) throw new Error(`no relay port ${from}>${to} (peerRelay not set?)`);
    return p;
  }

  /** The keys clients made by client() use (clientKeyFile option), if any. */
  clientKeys(): Keyring | undefined {
    return this.clientKeyring;
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

  /**
   * Drop reasons counted from a node's stderr: needs `env: { DEBUG: 'paxos:drop' }`
   * (the daemon logs one "paxos:drop <reason> <detail>" line per dropped datagram).
   */
  dropCounts(sid: number): Record<string, number> {
    const out: Record<string, number> = Object.create(null);
    let text = '';
    try {
      text = fs.readFileSync(this.stderrFile(sid), 'utf8');
    } catch {
      return out;
    }
    for (const m of text.matchAll(/paxos:drop (\S+)/g)) out[m[1]] = (out[m[1]] ?? 0) + 1;
    return out;
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

  private async spawnNode(sid: number, init: boolean): Promise<void> {
    const args = ['--config', this.nodeConfigFile(sid), '--sid', String(sid)];
    if (init) args.push('--init');
    args.push(...(this.opts.nodeArgs?.(sid) ?? []));
    const errFd = fs.openSync(this.stderrFile(sid), 'a');
    fs.writeSync(errFd, `=== ${new Date().toISOString()} paxosd ${args.join(' ')}\n`);
    const wrapper = this.opts.wrapper ?? [];
    const child = launchNode({
      args,
      wrapper,
      cwd: ROOT,
      stderr: errFd,
      env: { ...process.env, PAXOS_SID: '', ...this.opts.env },
      detached: wrapper.length > 0,
    });
    fs.closeSync(errFd);
    live.add(child);
    if (wrapper.length > 0) groups.add(child);
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
    try {
      // 50 ms after an early exit: its stderr reaches the file before we show it.
      proc.readyLine = await waitReady(child, sid, this.opts.readyTimeoutMs ?? 15_000, 50);
    } catch (e) {
      throw new Error(
        `paxosd sid ${sid}: ${(e as Error).message}\n--- stderr (${this.stderrFile(sid)}):\n${this.stderrOf(sid)}`,
      );
    }
  }

  /** Send a signal (default SIGKILL); for terminating signals wait (bounded) for the exit. */
  async kill(sid: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.procs.get(sid);
    if (!p || p.exit) return;
    p.killedByUs = true;
    signalChild(p.child, signal);
    if (p.stopped && signal !== 'SIGKILL') signalChild(p.child, 'SIGCONT');
    const r = await withTimeout(p.exited, 5000);
    if (r === null) {
      signalChild(p.child, 'SIGKILL');
      await withTimeout(p.exited, 5000);
    }
    p.stopped = false;
  }

  /** SIGSTOP: the process freezes (its sockets stay bound, datagrams queue up). */
  stop(sid: number): void {
    const p = this.procs.get(sid);
    if (!p || p.exit) throw new Error(`sid ${sid} is not running`);
    signalChild(p.child, 'SIGSTOP');
    p.stopped = true;
  }

  cont(sid: number): void {
    const p = this.procs.get(sid);
    if (!p || p.exit) throw new Error(`sid ${sid} is not running`);
    signalChild(p.child, 'SIGCONT');
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

  /** Options for `new PaxosClient(...)` addressing every node (with the client keys, if any). */
  clientConfig(extra: Partial<ClientOptions> = {}): ClientOptions {
    const keys = this.clientKeyring ? { keys: this.clientKeyring } : {};
    return {
      servers: this.servers.map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort })),
      timeoutMs: this.opts.clientTimeoutMs ?? 5000,
      retryMs: 20,
      clusterId: this.clusterId,
      ...keys,
      ...extra,
    };
  }

  /** OS process id of a running node (e.g. for /proc/<pid>/status). */
  pidOf(sid: number): number | undefined {
    const p = this.procs.get(sid);
    return p && !p.exit ? p.child.pid : undefined;
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
        signalChild(p.child, 'SIGKILL');
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

/** One recorded put: fills in the record's outcome. 'closed' if the client was closed. */
export async function recordPut(session: Session, rec: OpRecord): Promise<'closed' | null> {
  try {
    const r: OpResult = await session.put(rec.key, rec.value);
    rec.sid = r.sid;
    rec.attempts = r.attempts;
    if (r.ok) {
      rec.outcome = 'ack';
    } else {
      rec.outcome = 'refused';
      rec.err = r.err;
    }
  } catch (e) {
    if (e instanceof PaxosClientError && e.code === 'unknown') rec.outcome = 'unknown';
    rec.err = (e as Error).message;
    if (e instanceof PaxosClientError && e.code === 'closed') return 'closed';
  } finally {
    rec.endAt = Date.now();
  }
  return null;
}

/** The result of a finished load: records split by outcome, and the rate. */
export function summarizeLoad(records: OpRecord[], startedAt: number): LoadResult {
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
    records,
    acks: () => acks,
  };
}

export interface HistoryLoadOptions {
  /** Concurrent sessions. */
  sessions: number;
  /** Hard deadline. */
  durationMs: number;
  /** Shared keys the sessions contend on (default 16). */
  keys?: number;
  /** Key prefix (keys are `<prefix>k<n>`; default 'h/'). */
  prefix?: string;
  /** Stop after this many operations in total (issued). */
  totalOps?: number;
  /** Pause between a session's operations (default 0; keeps per-key histories small). */
  pauseMs?: number;
  /** Only gets (e.g. probing a node for stale reads next to another load). */
  readsOnly?: boolean;
  /** Prefix of written values (keeps them unique next to another load; default ''). */
  valuePrefix?: string;
}

export interface HistoryLoadResult {
  /** For checkLinearizable (times are performance.now() ms). */
  history: HistoryEvent[];
  acked: number;
  /** Timed out: outcome unknown (in the history as 'unknown'). */
  unknown: number;
  /** Answered with an error (refused, stale, ...): in the history as 'unknown'. */
  failed: number;
  failures: string[];
  /** performance.now() of every definite answer, in order (to see gaps). */
  ackTimes: number[];
  elapsedMs: number;
}

export interface HistoryLoad {
  stop(): void;
  done: Promise<HistoryLoadResult>;
  /** Definite answers so far. */
  acks(): number;
}

/**
 * K sessions running a random mix of put (60%), get, cas and del on a few shared
 * keys and recording a history for the linearizability checker. Every put
 * writes a value unique in the run. Bounded by durationMs and totalOps.
 */
export function startHistoryLoad(client: PaxosClient, opts: HistoryLoadOptions): HistoryLoad {
  const history: HistoryEvent[] = [];
  const ackTimes: number[] = [];
  const failures: string[] = [];
  const started = performance.now();
  const deadline = Date.now() + opts.durationMs;
  const keys = opts.keys ?? 16;
  const prefix = opts.prefix ?? 'h/';
  const total = opts.totalOps ?? Number.MAX_SAFE_INTEGER;
  let issued = 0;
  let stopped = false;
  let acked = 0;
  let unknown = 0;
  let failed = 0;
  // Last value seen per key (so that some cas operations succeed).
  const seen = new Map<string, string | null>();

  const one = async (k: number): Promise<void> => {
    const session = client.session();
    for (let i = 0; i < opts.durationMs + 1; i++) {
      if (stopped || issued >= total || Date.now() >= deadline) return;
      issued++;
      const key = `${prefix}k${Math.floor(Math.random() * keys)}`;
      const value = `${opts.valuePrefix ?? ''}s${k}-${i}`;
      const r = opts.readsOnly ? 0.7 : Math.random();
      let op: HistoryEvent['op'];
      if (r < 0.6) op = { kind: 'put', key, value };
      else if (r < 0.8) op = { kind: 'get', key };
      else if (r < 0.95) op = { kind: 'cas', key, expected: seen.get(key) ?? null, value };
      else op = { kind: 'del', key };
      const ev: HistoryEvent = {
        client: k,
        call: performance.now(),
        ret: null,
        op,
        result: 'unknown',
      };
      history.push(ev);
      try {
        const res = await session.run(op);
        ev.ret = performance.now();
        if (res.err !== undefined) {
          failed++;
          if (failures.length < 20) failures.push(`${op.kind} ${key}: ${res.err}`);
          ev.ret = null;
        } else {
          acked++;
          ackTimes.push(ev.ret);
          if (op.kind === 'get') {
            ev.result = { ok: res.ok, value: res.value ?? null };
            seen.set(key, res.value ?? null);
          } else if (op.kind === 'cas' && !res.ok) {
            ev.result = { ok: false, value: res.value ?? null };
            seen.set(key, res.value ?? null);
          } else {
            ev.result = { ok: res.ok };
            if (op.kind === 'put' || op.kind === 'cas') seen.set(key, value);
            if (op.kind === 'del') seen.set(key, null);
          }
        }
      } catch (e) {
        if (e instanceof PaxosClientError && e.code === 'closed') stopped = true;
        else if (e instanceof PaxosClientError && e.code === 'unknown') unknown++;
        else {
          failed++;
          if (failures.length < 20) failures.push(`${op.kind} ${key}: ${(e as Error).message}`);
        }
      }
      if (opts.pauseMs) await sleep(opts.pauseMs);
    }
  };

  const done = Promise.all(Array.from({ length: opts.sessions }, (_, k) => one(k))).then(() => ({
    history,
    acked,
    unknown,
    failed,
    failures,
    ackTimes: ackTimes.sort((a, b) => a - b),
    elapsedMs: performance.now() - started,
  }));
  return {
    stop: () => {
      stopped = true;
    },
    done,
    acks: () => acked,
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
