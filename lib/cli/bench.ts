import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import minimist from 'minimist';
import { PaxosClient, PaxosClientError, type Session } from '../client';
import { ConfigError, loadClientConfig, type ClientConfig } from '../io/config';
import { loadKeyring, writeKeyFile } from '../io/keys';

/*
 * paxos-bench: a closed-loop load generator for paxosd.
 *
 * Each logical client (a Session: its own cid/seq stream) has exactly one
 * operation outstanding and sends the next one as soon as the answer arrives.
 * Logical clients share sockets: one PaxosClient per CLIENTS_PER_SOCKET sessions.
 * Latency is measured per operation with performance.now() (send to answer,
 * retries included). Only operations that complete inside the measurement
 * window count; the warm-up before it is discarded.
 */

const USAGE = `usage: paxos-bench [options]

Starts a local 3-node paxosd cluster in a temporary directory (or uses a running
one with --target-config), runs closed-loop clients and prints throughput,
latency percentiles, errors and CPU use per client count.

  --op get|put|mix       operation (default put; mix = 50% get, 50% put)
  --clients 1,16,64      logical client counts to run, one after another
  --duration S           measured seconds per client count (default 5)
  --warmup S             discarded seconds before each measurement (default 1)
  --value-bytes N        value size (default 64)
  --key-bytes N          key size (default 12)
  --keys N               key space (default 1000; get/mix preload every key)
  --json                 print one JSON document on stdout (no progress lines)
  --svg FILE             also write a latency-percentile plot (SVG) to FILE
  --no-sync              start the nodes with --no-sync (no fdatasync; compare only)
  --hmac                 give the local cluster a peer key (HMAC-SHA256 on every peer datagram)
  --target-config FILE   use a running cluster (client config, e.g. conf/client.config.json)
  --failover             SIGKILL the leader under load 5 times (restarting it each time)
                         and report the time until the next committed write
  --catchup [N]          SIGSTOP a follower, write N ops (default 100000), SIGCONT
                         it and measure how fast it catches up with the leader
  --catchup-clients N    logical clients writing during --catchup (default 128)
  --no-sweep             skip the throughput sweep (with --failover / --catchup)
  --node-arg=ARG         extra node.js flag for the spawned daemons (repeatable),
                         e.g. --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof
  --keep                 keep the temporary cluster directory

exit codes: 0 done, 1 the cluster failed or the bench could not run, 2 usage error`;

const CLIENTS_PER_SOCKET = 16;
const REPO = path.resolve(__dirname, '..', '..', '..');
const PAXOSD = path.join(REPO, 'bin', 'paxosd');

type OpKind = 'get' | 'put' | 'mix';

class UsageError extends Error {}

interface Options {
  op: OpKind;
  clients: number[];
  durationS: number;
  warmupS: number;
  valueBytes: number;
  keyBytes: number;
  keys: number;
  json: boolean;
  svg: string | null;
  sync: boolean;
  /** Local cluster with a peer key file: every peer datagram HMAC-SHA256 signed. */
  hmac: boolean;
  targetConfig: string | null;
  failover: boolean;
  failoverRounds: number;
  catchup: number | null;
  catchupClients: number;
  sweep: boolean;
  nodeArgs: string[];
  keep: boolean;
}

function parseOptions(args: string[]): Options | null {
  const argv = minimist(args, {
    string: [
      'op',
      'clients',
      'duration',
      'warmup',
      'value-bytes',
      'key-bytes',
      'keys',
      'svg',
      'target-config',
      'catchup-clients',
      'node-arg',
      'failover-rounds',
    ],
    boolean: ['json', 'sync', 'failover', 'sweep', 'keep', 'help', 'hmac'],
    default: { op: 'put', clients: '1,16,64', duration: '5', warmup: '1', sync: true, sweep: true },
    unknown: (a) => {
      if (a.startsWith('-') && !/^--catchup(=|$)/.test(a))
        throw new UsageError(`unknown option ${a}`);
      return true;
    },
  });
  if (argv.help) return null;
  const num = (name: string, v: unknown, min: number, int = true): number => {
    const n = Number(v);
    if (
      typeof v === 'boolean' ||
      v === '' ||
      !Number.isFinite(n) ||
      n < min ||
      (int && !Number.isInteger(n))
    )
      throw new UsageError(
        `--${name} must be ${int ? 'an integer' : 'a number'} >= ${min}, got ${String(v)}`,
      );
    return n;
  };
  const op = String(argv.op);
  if (op !== 'get' && op !== 'put' && op !== 'mix')
    throw new UsageError(`--op must be get, put or mix, got ${op}`);
  const clients = String(argv.clients)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => num('clients', s, 1));
  const keys = num('keys', argv.keys ?? 1000, 1);
  const keyBytes = num('key-bytes', argv['key-bytes'] ?? 12, 1);
  if (String(keys - 1).length + 1 > keyBytes)
    throw new UsageError(`--key-bytes ${keyBytes} is too small for ${keys} keys`);
  // minimist leaves "--catchup" (no value) as true and "--catchup 5000" as "5000";
  // a bare "--catchup" followed by another option is also true.
  let catchup: number | null = null;
  if (argv.catchup !== undefined && argv.catchup !== false) {
    if (argv.catchup === true || argv.catchup === 'true') catchup = 100_000;
    else catchup = num('catchup', argv.catchup, 1);
  }
  const nodeArgs = ([] as unknown[]).concat(argv['node-arg'] ?? []).map(String);
  if (argv._.length > 0) throw new UsageError(`unexpected argument ${String(argv._[0])}`);
  const o: Options = {
    op,
    clients,
    durationS: num('duration', argv.duration, 0.01, false),
    warmupS: num('warmup', argv.warmup, 0, false),
    valueBytes: num('value-bytes', argv['value-bytes'] ?? 64, 0),
    keyBytes,
    keys,
    json: argv.json === true,
    svg: argv.svg ? String(argv.svg) : null,
    sync: argv.sync !== false,
    hmac: argv.hmac === true,
    targetConfig: argv['target-config'] ? String(argv['target-config']) : null,
    failover: argv.failover === true,
    failoverRounds: num('failover-rounds', argv['failover-rounds'] ?? 5, 1),
    catchup,
    catchupClients: num('catchup-clients', argv['catchup-clients'] ?? 128, 1),
    sweep: argv.sweep !== false,
    nodeArgs,
    keep: argv.keep === true,
  };
  if (o.sweep && clients.length === 0) throw new UsageError('--clients needs at least one count');
  if (o.targetConfig && (o.failover || o.catchup !== null))
    throw new UsageError('--failover and --catchup need the local cluster (no --target-config)');
  if (o.targetConfig && (!o.sync || o.nodeArgs.length > 0))
    throw new UsageError('--no-sync and --node-arg only apply to the local cluster');
  return o;
}

// ---------------------------------------------------------------------------
// Small helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Log to stderr unless --json (then stdout is one JSON document and stderr stays quiet). */
let quiet = false;
function note(line: string): void {
  if (!quiet) process.stderr.write(line + '\n');
}

/** Warnings go to stderr even with --json. */
function warn(line: string): void {
  process.stderr.write(line + '\n');
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function fmtMs(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '-';
  if (ms < 1) return ms.toFixed(3);
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A growable array of doubles (latency samples in ms) without per-sample allocation. */
class Samples {
  private buf = new Float64Array(1 << 14);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const b = new Float64Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    this.buf[this.length++] = v;
  }
  clear(): void {
    this.length = 0;
  }
  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
}

/** Nearest-rank percentile of sorted samples. */
function pct(sorted: Float64Array, q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Upper bounds (ms) of the log-scale histogram buckets: 1, 1.5, 2, 3, 5, 7 per decade. */
const BUCKETS: number[] = (() => {
  const out: number[] = [];
  for (let e = -2; e <= 4; e++) for (const m of [1, 1.5, 2, 3, 5, 7]) out.push(m * 10 ** e);
  return out.map((v) => Number(v.toPrecision(3)));
})();

interface Bucket {
  leMs: number;
  count: number;
}

function histogram(sorted: Float64Array): Bucket[] {
  const counts = new Array<number>(BUCKETS.length + 1).fill(0);
  let b = 0;
  for (const v of sorted) {
    while (b < BUCKETS.length && v > BUCKETS[b]) b++;
    counts[b]++;
  }
  let lo = counts.findIndex((c) => c > 0);
  let hi = counts.length - 1 - [...counts].reverse().findIndex((c) => c > 0);
  if (lo < 0) return [];
  lo = Math.max(0, lo);
  hi = Math.min(counts.length - 1, hi);
  const out: Bucket[] = [];
  for (let i = lo; i <= hi; i++)
    out.push({ leMs: i < BUCKETS.length ? BUCKETS[i] : Infinity, count: counts[i] });
  return out;
}

// ---------------------------------------------------------------------------
// CPU accounting

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // not Linux or no getconf: 100 is the Linux default
}

/** CPU seconds the whole host spent busy (all cores; /proc/stat), or null. */
function hostBusyS(): number | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    const busy = f[0] + f[1] + f[2] + (f[5] ?? 0) + (f[6] ?? 0);
    return busy / clkTck;
  } catch {
    return null;
  }
}

/** utime+stime of a process in seconds, or null (not Linux, or it is gone). */
function procCpuS(pid: number): number | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (Number(f[11]) + Number(f[12])) / clkTck;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Disk probe: fdatasync latency next to the nodes' data (this disk's speed varies)

interface DiskProbe {
  syncs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
}

/** Append 128 bytes + fdatasync up to 200 times (at most ~1.5 s) in `dir`. */
function probeDisk(dir: string): DiskProbe {
  const file = path.join(dir, `disk-probe-${process.pid}.bin`);
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(128, 0x61);
  const lat: number[] = [];
  const t0 = performance.now();
  try {
    for (let i = 0; i < 200 && performance.now() - t0 < 1500; i++) {
      const t = performance.now();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      lat.push(performance.now() - t);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  const sorted = Float64Array.from(lat).sort();
  const r3 = (v: number | null): number => Math.round((v ?? 0) * 1000) / 1000;
  return {
    syncs: lat.length,
    p50Ms: r3(pct(sorted, 0.5)),
    p90Ms: r3(pct(sorted, 0.9)),
    p99Ms: r3(pct(sorted, 0.99)),
  };
}

function fmtProbe(d: DiskProbe): string {
  return `p50 ${fmtMs(d.p50Ms)} ms, p90 ${fmtMs(d.p90Ms)} ms, p99 ${fmtMs(d.p99Ms)} ms (${d.syncs} syncs)`;
}

// ---------------------------------------------------------------------------
// The local cluster

interface NodeProc {
  sid: number;
  peerPort: number;
  clientPort: number;
  child: ChildProcess | null;
  pid: number | null;
  pids: number[];
  stderrTail: string[];
  expectedExit: boolean;
  stopped: boolean;
}

/** Ports that were free a moment ago: bind them all at once to port 0, then release. */
async function freeUdpPorts(n: number): Promise<number[]> {
  const socks: dgram.Socket[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = dgram.createSocket('udp4');
      socks.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, '127.0.0.1', () => resolve());
      });
    }
    return socks.map((s) => s.address().port);
  } finally {
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

class LocalCluster {
  readonly nodes: NodeProc[] = [];
  readonly clientConfig: ClientConfig;

  private constructor(
    readonly dir: string,
    readonly configFile: string,
    private readonly sync: boolean,
    private readonly nodeArgs: string[],
    ports: number[],
  ) {
    for (let sid = 0; sid < 3; sid++)
      this.nodes.push({
        sid,
        peerPort: ports[2 * sid],
        clientPort: ports[2 * sid + 1],
        child: null,
        pid: null,
        pids: [],
        stderrTail: [],
        expectedExit: false,
        stopped: false,
      });
    this.clientConfig = {
      file: configFile,
      leader: 0,
      servers: this.nodes.map((n) => ({ sid: n.sid, host: '127.0.0.1', clientPort: n.clientPort })),
      timeoutMs: 5000,
      retryMs: 20,
      clusterId: 'bench',
    };
  }

  static async create(sync: boolean, nodeArgs: string[], hmac = false): Promise<LocalCluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-bench-'));
    const ports = await freeUdpPorts(6);
    const configFile = path.join(dir, 'paxos.config.json');
    const c = new LocalCluster(dir, configFile, sync, nodeArgs, ports);
    const cfg = {
      clusterId: 'bench',
      servers: c.nodes.map((n) => ({
        sid: n.sid,
        host: '127.0.0.1',
        peerPort: n.peerPort,
        clientPort: n.clientPort,
      })),
      dataDir: path.join(dir, 'data'),
      logDir: path.join(dir, 'logs'),
      ...(hmac ? { keyFile: 'peer.key' } : {}),
    };
    if (hmac) writeKeyFile(path.join(dir, 'peer.key'));
    fs.writeFileSync(configFile, JSON.stringify(cfg, null, 2) + '\n');
    return c;
  }

  /** Start every node (new cluster: --init) and wait for their ready lines. */
  async start(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.startNode(n.sid, true)));
  }

  startNode(sid: number, init: boolean): Promise<void> {
    const n = this.nodes[sid];
    const args = [...this.nodeArgs, PAXOSD, '--config', this.configFile, '--sid', String(sid)];
    if (init) args.push('--init');
    if (!this.sync) args.push('--no-sync');
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: this.dir,
    });
    n.child = child;
    n.pid = child.pid ?? null;
    if (n.pid !== null) n.pids.push(n.pid);
    n.expectedExit = false;
    n.stopped = false;
    n.stderrTail = [];
    child.stderr!.setEncoding('utf8');
    let errBuf = '';
    child.stderr!.on('data', (d: string) => {
      errBuf += d;
      const lines = errBuf.split('\n');
      errBuf = lines.pop()!;
      n.stderrTail.push(...lines);
      if (n.stderrTail.length > 40) n.stderrTail.splice(0, n.stderrTail.length - 40);
    });
    return new Promise<void>((resolve, reject) => {
      let outBuf = '';
      let ready = false;
      const timer = setTimeout(() => {
        if (!ready)
          reject(new Error(`sid ${sid} printed no ready line within 20 s${this.tail(n)}`));
      }, 20_000);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => {
        outBuf += d;
        if (!ready && /paxosd sid=\d+ ready/.test(outBuf)) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
        if (outBuf.length > 4096) outBuf = outBuf.slice(-1024);
      });
      child.on('exit', (code, sig) => {
        if (n.child === child) {
          n.child = null;
          n.pid = null;
        }
        if (!ready) {
          clearTimeout(timer);
          reject(
            new Error(`sid ${sid} exited (${sig ?? code}) before it was ready${this.tail(n)}`),
          );
        } else if (!n.expectedExit) {
          warn(
            `paxos-bench: WARNING: sid ${sid} exited unexpectedly (${sig ?? code})${this.tail(n)}`,
          );
        }
      });
    });
  }

  private tail(n: NodeProc): string {
    return n.stderrTail.length ? `:\n  ${n.stderrTail.slice(-10).join('\n  ')}` : '';
  }

  signal(sid: number, sig: NodeJS.Signals): void {
    const n = this.nodes[sid];
    if (!n.child || n.pid === null) return;
    if (sig === 'SIGKILL' || sig === 'SIGTERM') n.expectedExit = true;
    if (sig === 'SIGSTOP') n.stopped = true;
    if (sig === 'SIGCONT') n.stopped = false;
    try {
      process.kill(n.pid, sig);
    } catch {
      // already gone
    }
  }

  /** SIGKILL a node and wait until it is gone. */
  async kill(sid: number): Promise<void> {
    const child = this.nodes[sid].child;
    if (!child) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    this.signal(sid, 'SIGKILL');
    await gone;
  }

  /** Graceful stop (SIGTERM, so --cpu-prof profiles get written), SIGKILL after 5 s. */
  async stop(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (n) => {
        const child = n.child;
        if (!child) return;
        const gone = new Promise<void>((r) => child.once('exit', () => r()));
        if (n.stopped) this.signal(n.sid, 'SIGCONT');
        this.signal(n.sid, 'SIGTERM');
        const t = setTimeout(() => this.signal(n.sid, 'SIGKILL'), 5000);
        await gone;
        clearTimeout(t);
      }),
    );
  }

  /** Synchronous last resort (process exit): kill whatever still runs. */
  killAllSync(): void {
    for (const n of this.nodes) {
      if (n.pid === null) continue;
      n.expectedExit = true;
      try {
        process.kill(n.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  removeDir(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Cluster status

interface NodeStatus {
  sid: number;
  role: string;
  leader: number | null;
  chosen: number;
  applied: number;
}

async function statusOf(
  ctl: PaxosClient,
  sid: number,
  timeoutMs = 300,
): Promise<NodeStatus | null> {
  const s = await ctl.status(sid, timeoutMs);
  if (!s) return null;
  return {
    sid,
    role: String(s.role),
    leader: typeof s.leader === 'number' ? s.leader : null,
    chosen: Number(s.chosen),
    applied: Number(s.applied),
  };
}

/** Wait until a leader is elected that every reachable node in `among` agrees on. */
async function waitForLeader(
  ctl: PaxosClient,
  sids: number[],
  timeoutMs = 20_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = (await Promise.all(sids.map((s) => statusOf(ctl, s)))).filter(
      (s): s is NodeStatus => s !== null,
    );
    const leaders = st.filter((s) => s.role === 'leader');
    if (
      leaders.length === 1 &&
      st.length * 2 > sids.length &&
      st.every((s) => s.leader === leaders[0].sid)
    )
      return leaders[0].sid;
    await sleep(50);
  }
  throw new Error(`no leader elected within ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------
// Load

interface Target {
  clientConfig: ClientConfig;
  keys?: ReturnType<typeof loadKeyring>;
  leader?: number;
}

interface Counts {
  ops: number;
  errors: number;
  unknown: number;
}

interface CpuMark {
  wall: number;
  self: NodeJS.CpuUsage;
  nodes: Map<number, number | null>;
  host: number | null;
  retries: number;
  redirects: number;
}

/**
 * Closed-loop load over `n` logical clients. Runs until stop(). Every completion
 * is offered to `onDone` (failover timing) and counted in the current window.
 */
class Load {
  readonly clients: PaxosClient[] = [];
  private readonly sessions: Session[] = [];
  private workers: Promise<void>[] = [];
  private stopping = false;
  /** Current measurement window: completions in [winStart, winEnd) count. */
  private winStart = Infinity;
  private winEnd = Infinity;
  readonly samples = new Samples();
  readonly window: Counts = { ops: 0, errors: 0, unknown: 0 };
  /** Since the last progress tick (any phase). */
  readonly tick: Counts = { ops: 0, errors: 0, unknown: 0 };
  readonly tickSamples = new Samples();
  readonly errorKinds = new Map<string, number>();
  onDone: ((ok: boolean, sid: number, at: number, latMs: number, isWrite: boolean) => void) | null =
    null;

  constructor(
    target: Target,
    readonly n: number,
    private readonly op: OpKind,
    private readonly keyNames: string[],
    private readonly valueBytes: number,
    private readonly collectTick: boolean,
  ) {
    const sockets = Math.ceil(n / CLIENTS_PER_SOCKET);
    for (let i = 0; i < sockets; i++)
      this.clients.push(
        PaxosClient.fromConfig(target.clientConfig, {
          keys: target.keys,
          leader: target.leader ?? target.clientConfig.leader,
        }),
      );
    for (let i = 0; i < n; i++) this.sessions.push(this.clients[i % sockets].session());
  }

  start(): void {
    this.workers = this.sessions.map((s, i) => this.worker(s, i));
  }

  /** Count only completions in [start, end) (performance.now() ms). */
  setWindow(start: number, end: number): void {
    this.winStart = start;
    this.winEnd = end;
    this.samples.clear();
    this.window.ops = this.window.errors = this.window.unknown = 0;
  }

  private value(i: number): string {
    // Printable, different per client, fixed size.
    const s = `v${i.toString(36)}-`;
    return s.repeat(Math.ceil(this.valueBytes / s.length) + 1).slice(0, this.valueBytes);
  }

  private async worker(session: Session, i: number): Promise<void> {
    const value = this.value(i);
    const keys = this.keyNames;
    let rnd = ((i + 1) * 2654435761) >>> 0 || 1;
    while (!this.stopping) {
      // xorshift32: cheap and good enough to pick keys and the mix.
      rnd ^= rnd << 13;
      rnd >>>= 0;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      rnd >>>= 0;
      const key = keys[rnd % keys.length];
      const isGet = this.op === 'get' || (this.op === 'mix' && (rnd & 0x100000) === 0);
      const t0 = performance.now();
      let ok = false;
      let unknown = false;
      let sid = -1;
      try {
        const r = isGet ? await session.get(key) : await session.put(key, value);
        ok = r.ok;
        sid = r.sid;
        if (!ok) this.noteError(r.err ?? 'refused');
      } catch (e) {
        if (e instanceof PaxosClientError && e.code === 'closed') return;
        unknown = true;
        this.noteError(e instanceof PaxosClientError ? 'timeout (outcome unknown)' : String(e));
      }
      const t1 = performance.now();
      const lat = t1 - t0;
      if (t1 >= this.winStart && t1 < this.winEnd) {
        if (ok) {
          this.window.ops++;
          this.samples.push(lat);
        } else if (unknown) this.window.unknown++;
        else this.window.errors++;
      }
      if (this.collectTick) {
        if (ok) {
          this.tick.ops++;
          this.tickSamples.push(lat);
        } else if (unknown) this.tick.unknown++;
        else this.tick.errors++;
      }
      if (this.onDone) this.onDone(ok, sid, t1, lat, !isGet);
    }
  }

  private noteError(kind: string): void {
    if (this.errorKinds.size < 20 || this.errorKinds.has(kind))
      this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }

  resetTick(): void {
    this.tick.ops = this.tick.errors = this.tick.unknown = 0;
    this.tickSamples.clear();
  }

  clientStats(): { retries: number; redirects: number } {
    let retries = 0;
    let redirects = 0;
    for (const c of this.clients) {
      retries += c.stats.retries;
      redirects += c.stats.redirects;
    }
    return { retries, redirects };
  }

  /** Stop sending; wait until every outstanding operation has its answer. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
    for (const c of this.clients) c.close();
  }
}

// ---------------------------------------------------------------------------
// One measured run

interface RunResult {
  clients: number;
  op: OpKind;
  durationS: number;
  ops: number;
  opsPerSec: number;
  latencyMs: {
    mean: number | null;
    p50: number | null;
    p90: number | null;
    p99: number | null;
    p999: number | null;
    max: number | null;
  };
  errors: number;
  unknown: number;
  redirects: number;
  retries: number;
  errorKinds: Record<string, number>;
  /** Leader (sid) before and after the run; they differ if an election happened. */
  leaderBefore: number | null;
  leaderAfter: number | null;
  cpu: {
    /** This load generator: % of one core over the measurement window. */
    loadgenPct: number;
    /**
     * Busy CPU of the whole host not accounted to the bench or (local) nodes, as % of
     * one core: other programs competing for the cores. null if unknown.
     */
    otherPct: number | null;
    nodes: { sid: number; pid: number | null; role: string; pct: number | null }[];
  };
  histogram: Bucket[];
  /** Percentile curve for the plot: [quantile, ms]. */
  curve: [number, number][];
}

interface Env {
  opts: Options;
  target: Target;
  cluster: LocalCluster | null;
  ctl: PaxosClient;
  keyNames: string[];
}

function cpuMark(env: Env, load: Load): CpuMark {
  const nodes = new Map<number, number | null>();
  if (env.cluster)
    for (const n of env.cluster.nodes) nodes.set(n.sid, n.pid === null ? null : procCpuS(n.pid));
  const s = load.clientStats();
  return {
    wall: performance.now(),
    self: process.cpuUsage(),
    host: hostBusyS(),
    nodes,
    retries: s.retries,
    redirects: s.redirects,
  };
}

async function currentLeader(env: Env): Promise<number | undefined> {
  const sids = env.target.clientConfig.servers.map((s) => s.sid);
  const st = await Promise.all(sids.map((s) => statusOf(env.ctl, s)));
  return st.find((s) => s?.role === 'leader')?.sid;
}

async function runOnce(env: Env, clients: number): Promise<RunResult> {
  const { opts } = env;
  const leader = await currentLeader(env);
  if (leader !== undefined) env.target.leader = leader;
  const load = new Load(env.target, clients, opts.op, env.keyNames, opts.valueBytes, !opts.json);
  const t0 = performance.now();
  const measureStart = t0 + opts.warmupS * 1000;
  const measureEnd = measureStart + opts.durationS * 1000;
  load.setWindow(measureStart, measureEnd);
  load.start();

  let startMark: CpuMark | null = null;
  let endMark: CpuMark | null = null;
  const progress = opts.json
    ? null
    : setInterval(() => {
        const now = performance.now();
        const phase =
          now < measureStart
            ? 'warm-up'
            : `${Math.min(opts.durationS, (now - measureStart) / 1000).toFixed(0)}/${opts.durationS}s`;
        const sorted = load.tickSamples.sorted();
        note(
          `  ${opts.op} clients=${clients} [${phase}] ${fmtInt(load.tick.ops)} ops/s  p50 ${fmtMs(pct(sorted, 0.5))} ms  p99 ${fmtMs(pct(sorted, 0.99))} ms  errors ${load.tick.errors}  unknown ${load.tick.unknown}`,
        );
        load.resetTick();
      }, 1000);
  await sleep(Math.max(0, measureStart - performance.now()));
  startMark = cpuMark(env, load);
  await sleep(Math.max(0, measureEnd - performance.now()));
  endMark = cpuMark(env, load);
  if (progress) clearInterval(progress);
  await load.stop();

  const wallS = (endMark.wall - startMark.wall) / 1000;
  const selfUs =
    endMark.self.user - startMark.self.user + (endMark.self.system - startMark.self.system);
  const roles = new Map<number, string>();
  if (env.cluster) {
    const st = await Promise.all(env.cluster.nodes.map((n) => statusOf(env.ctl, n.sid)));
    for (const s of st) if (s) roles.set(s.sid, s.role);
  }
  const nodes = env.cluster
    ? env.cluster.nodes.map((n) => {
        const a = startMark!.nodes.get(n.sid);
        const b = endMark!.nodes.get(n.sid);
        return {
          sid: n.sid,
          pid: n.pid,
          role: roles.get(n.sid) ?? '?',
          pct: a != null && b != null ? Math.round(((b - a) / wallS) * 1000) / 10 : null,
        };
      })
    : [];
  const sorted = load.samples.sorted();
  let sum = 0;
  for (const v of sorted) sum += v;
  const curve: [number, number][] = [];
  if (sorted.length > 0)
    for (let k = 0; k <= 40; k++) {
      // From the median (k=0: 0.5) to 1 - 10^-4.3 on a log(1/(1-q)) scale.
      const q = 1 - 0.5 * 10 ** (-k / 10);
      if (q * sorted.length > sorted.length - 0.5 && k > 0) break;
      curve.push([q, pct(sorted, q)!]);
    }
  const round3 = (v: number | null): number | null =>
    v === null ? null : Math.round(v * 1000) / 1000;
  return {
    clients,
    op: opts.op,
    durationS: Math.round(wallS * 1000) / 1000,
    ops: load.window.ops,
    opsPerSec: Math.round(load.window.ops / wallS),
    latencyMs: {
      mean: round3(sorted.length ? sum / sorted.length : null),
      p50: round3(pct(sorted, 0.5)),
      p90: round3(pct(sorted, 0.9)),
      p99: round3(pct(sorted, 0.99)),
      p999: round3(pct(sorted, 0.999)),
      max: round3(sorted.length ? sorted[sorted.length - 1] : null),
    },
    errors: load.window.errors,
    unknown: load.window.unknown,
    redirects: endMark.redirects - startMark.redirects,
    retries: endMark.retries - startMark.retries,
    errorKinds: Object.fromEntries(load.errorKinds),
    leaderBefore: leader ?? null,
    leaderAfter: (await currentLeader(env)) ?? null,
    cpu: {
      loadgenPct: Math.round((selfUs / 1e6 / wallS) * 1000) / 10,
      otherPct:
        startMark.host !== null && endMark.host !== null && nodes.every((n) => n.pct !== null)
          ? Math.max(
              0,
              Math.round(
                (((endMark.host - startMark.host) / wallS) * 100 -
                  (selfUs / 1e6 / wallS) * 100 -
                  nodes.reduce((a, n) => a + (n.pct ?? 0), 0)) *
                  10,
              ) / 10,
            )
          : null,
      nodes,
    },
    histogram: histogram(sorted),
    curve,
  };
}

/** Write every key once so that gets find values. */
async function preload(env: Env): Promise<void> {
  const clients: PaxosClient[] = [];
  const conc = 64;
  for (let i = 0; i < conc / CLIENTS_PER_SOCKET; i++)
    clients.push(
      PaxosClient.fromConfig(env.target.clientConfig, {
        keys: env.target.keys,
        leader: env.target.leader,
      }),
    );
  const value = 'p'.repeat(env.opts.valueBytes);
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: conc }, async (_, i) => {
      const s = clients[i % clients.length].session();
      while (next < env.keyNames.length) {
        const key = env.keyNames[next++];
        try {
          const r = await s.put(key, value);
          if (!r.ok) failed++;
        } catch {
          failed++;
        }
      }
    }),
  );
  for (const c of clients) c.close();
  if (failed > 0) warn(`paxos-bench: WARNING: ${failed} preload writes failed`);
}

// ---------------------------------------------------------------------------
// Failover and catch-up

interface FailoverRound {
  killed: number;
  newLeader: number | null;
  /** SIGKILL of the leader until the next write answered by another node. */
  gapMs: number | null;
  maxLatencyMs: number;
  /** Operations after the kill that ended without success (errors + unknown outcomes). */
  failed: number;
}

async function failover(env: Env): Promise<{
  clients: number;
  rounds: FailoverRound[];
  medianGapMs: number | null;
}> {
  const cluster = env.cluster!;
  const sids = cluster.nodes.map((n) => n.sid);
  const clients = Math.max(...env.opts.clients, 1);
  const rounds: FailoverRound[] = [];
  for (let round = 1; round <= env.opts.failoverRounds; round++) {
    const leader = await waitForLeader(env.ctl, sids);
    env.target.leader = leader;
    const load = new Load(env.target, clients, 'put', env.keyNames, env.opts.valueBytes, false);
    load.start();
    await sleep(1000);
    let killAt = Infinity;
    let gap: number | null = null;
    let maxLat = 0;
    let failed = 0;
    load.onDone = (ok, sid, at, lat, isWrite) => {
      if (at < killAt) return;
      if (lat > maxLat) maxLat = lat;
      if (!ok) failed++;
      if (gap === null && ok && isWrite && sid !== leader) gap = at - killAt;
    };
    killAt = performance.now();
    await cluster.kill(leader);
    const deadline = performance.now() + 30_000;
    while (gap === null && performance.now() < deadline) await sleep(5);
    await sleep(500);
    await load.stop();
    let newLeader: number | null = null;
    try {
      newLeader = await waitForLeader(
        env.ctl,
        sids.filter((s) => s !== leader),
        5000,
      );
    } catch {
      newLeader = null;
    }
    rounds.push({
      killed: leader,
      newLeader,
      gapMs: gap === null ? null : Math.round(gap * 10) / 10,
      maxLatencyMs: Math.round(maxLat * 10) / 10,
      failed,
    });
    note(
      `  failover ${round}/${env.opts.failoverRounds}: killed leader ${leader}; next write committed after ${gap === null ? 'NEVER (30 s)' : fmtMs(gap) + ' ms'} (new leader ${newLeader ?? '?'})`,
    );
    // Bring the node back (its data directory is intact: no --init) and let it catch up.
    await cluster.startNode(leader, false);
    await waitCaughtUp(env, leader, 60_000);
  }
  const gaps = rounds.map((r) => r.gapMs).filter((g): g is number => g !== null);
  return { clients, rounds, medianGapMs: median(gaps) };
}

/** Wait until `sid` has applied everything the leader had applied when we started waiting. */
async function waitCaughtUp(env: Env, sid: number, timeoutMs: number): Promise<number | null> {
  const sids = env.cluster!.nodes.map((n) => n.sid);
  const leader = await waitForLeader(env.ctl, sids);
  const ls = await statusOf(env.ctl, leader);
  const goal = ls?.applied ?? 0;
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const s = await statusOf(env.ctl, sid, 200);
    if (s && s.applied >= goal) return performance.now() - t0;
    await sleep(10);
  }
  return null;
}

async function catchup(env: Env): Promise<Record<string, unknown>> {
  const cluster = env.cluster!;
  const sids = cluster.nodes.map((n) => n.sid);
  const n = env.opts.catchup!;
  const leader = await waitForLeader(env.ctl, sids);
  env.target.leader = leader;
  const follower = sids.find((s) => s !== leader)!;
  const before = (await statusOf(env.ctl, follower))!;
  cluster.signal(follower, 'SIGSTOP');
  note(
    `  catch-up: SIGSTOP follower ${follower} (applied ${before.applied}); writing ${fmtInt(n)} ops`,
  );

  const load = new Load(
    env.target,
    env.opts.catchupClients,
    'put',
    env.keyNames,
    env.opts.valueBytes,
    false,
  );
  let written = 0;
  let unknown = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  load.onDone = (ok) => {
    if (ok) written++;
    else unknown++;
    if (written >= n) done();
  };
  const w0 = performance.now();
  load.start();
  const progress = setInterval(
    () => note(`  catch-up: ${fmtInt(written)}/${fmtInt(n)} written`),
    1000,
  );
  await finished;
  const writeS = (performance.now() - w0) / 1000;
  clearInterval(progress);
  await load.stop();

  const ls = (await statusOf(env.ctl, leader))!;
  const goal = ls.applied;
  const cpu0 = cluster.nodes[follower].pid ? procCpuS(cluster.nodes[follower].pid!) : null;
  const t0 = performance.now();
  cluster.signal(follower, 'SIGCONT');
  let caughtMs: number | null = null;
  let last = before.applied;
  let lastNote = t0;
  while (performance.now() - t0 < 120_000) {
    const s = await statusOf(env.ctl, follower, 200);
    if (s) last = s.applied;
    if (s && s.applied >= goal) {
      caughtMs = performance.now() - t0;
      break;
    }
    if (performance.now() - lastNote >= 1000) {
      lastNote = performance.now();
      note(`  catch-up: follower ${follower} applied ${last} of ${goal}`);
    }
    await sleep(5);
  }
  const cpu1 = cluster.nodes[follower].pid ? procCpuS(cluster.nodes[follower].pid!) : null;
  const cmds = written;
  const slots = goal - before.applied;
  const res = {
    follower,
    leader,
    commands: cmds,
    slotsBehind: slots,
    writeOpsPerSec: Math.round(cmds / writeS),
    writeUnknown: unknown,
    caughtUp: caughtMs !== null,
    catchupMs: caughtMs === null ? null : Math.round(caughtMs),
    commandsPerSec: caughtMs === null ? null : Math.round(cmds / (caughtMs / 1000)),
    slotsPerSec: caughtMs === null ? null : Math.round(slots / (caughtMs / 1000)),
    followerCpuPct:
      caughtMs !== null && cpu0 !== null && cpu1 !== null
        ? Math.round(((cpu1 - cpu0) / (caughtMs / 1000)) * 1000) / 10
        : null,
  };
  note(
    caughtMs === null
      ? `  catch-up: follower ${follower} did NOT catch up within 120 s (applied ${last} of ${goal})`
      : `  catch-up: follower ${follower} applied ${fmtInt(slots)} slots (${fmtInt(cmds)} commands) in ${fmtMs(caughtMs)} ms`,
  );
  return res;
}

// ---------------------------------------------------------------------------
// Output

function printTable(results: RunResult[], out: (s: string) => void): void {
  const head = [
    'clients',
    'ops/s',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    'errors',
    'unknown',
    'redirects',
    'retries',
    'bench CPU',
    'other CPU',
    'node CPU (*leader)',
  ];
  const rows = results.map((r) => [
    String(r.clients),
    fmtInt(r.opsPerSec),
    fmtMs(r.latencyMs.p50),
    fmtMs(r.latencyMs.p90),
    fmtMs(r.latencyMs.p99),
    fmtMs(r.latencyMs.p999),
    fmtMs(r.latencyMs.max),
    String(r.errors),
    String(r.unknown),
    String(r.redirects),
    String(r.retries),
    `${r.cpu.loadgenPct.toFixed(0)}%`,
    r.cpu.otherPct === null ? '?' : `${r.cpu.otherPct.toFixed(0)}%`,
    r.cpu.nodes.length
      ? r.cpu.nodes
          .map(
            (n) =>
              `${n.sid}${n.role === 'leader' ? '*' : ''}:${n.pct === null ? '?' : n.pct.toFixed(0) + '%'}`,
          )
          .join(' ')
      : 'n/a',
  ]);
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]): string =>
    r.map((v, c) => (c === r.length - 1 ? v : v.padStart(w[c]))).join('  ');
  out(line(head));
  for (const r of rows) out(line(r));
  const busy = Math.max(0, ...results.map((r) => r.cpu.otherPct ?? 0));
  if (busy >= 25)
    out(
      `WARNING: other processes used up to ${busy.toFixed(0)}% of a core during the runs: the figures are disturbed`,
    );
  for (const r of results)
    if (r.leaderBefore !== r.leaderAfter)
      out(
        `WARNING: clients=${r.clients}: the leader changed during the run (${r.leaderBefore ?? '?'} -> ${r.leaderAfter ?? '?'})`,
      );
  for (const r of results) {
    const kinds = Object.entries(r.errorKinds);
    if (kinds.length)
      out(`  clients=${r.clients} error kinds: ${kinds.map(([k, v]) => `${k} x${v}`).join(', ')}`);
  }
}

function printHistogram(r: RunResult, out: (s: string) => void): void {
  out(
    `latency histogram, ${r.op}, ${r.clients} client${r.clients === 1 ? '' : 's'} (${fmtInt(r.ops)} ops):`,
  );
  const max = Math.max(1, ...r.histogram.map((b) => b.count));
  let cum = 0;
  let prev = 0;
  for (const b of r.histogram) {
    cum += b.count;
    const label = b.leMs === Infinity ? `> ${fmtMs(prev)}` : `<= ${fmtMs(b.leMs)}`;
    prev = b.leMs;
    const bar = '#'.repeat(Math.round((b.count / max) * 50)) || (b.count > 0 ? '.' : '');
    out(
      `  ${label.padStart(10)} ms |${bar.padEnd(50)}| ${String(b.count).padStart(8)}  ${((cum / Math.max(1, r.ops)) * 100).toFixed(2).padStart(6)}%`,
    );
  }
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2'];

/** Latency by percentile (x: log of 1/(1-q), y: log ms), one line per client count. */
function svgPlot(results: RunResult[], title: string): string {
  const W = 760;
  const H = 440;
  const L = 70;
  const R = 150;
  const T = 40;
  const B = 60;
  const xs = (q: number): number => Math.log10(1 / (1 - q));
  const all = results.flatMap((r) => r.curve.map(([, ms]) => ms)).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.max(1e-3, Math.min(...all, 1))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, lo * 10)));
  const xmax = Math.max(3, ...results.flatMap((r) => r.curve.map(([q]) => xs(q))));
  const px = (q: number): number => L + ((xs(q) - xs(0.5)) / (xmax - xs(0.5))) * (W - L - R);
  const py = (ms: number): number =>
    T +
    (1 - (Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) *
      (H - T - B);
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let d = Math.log10(lo); d <= Math.log10(hi) + 1e-9; d++) {
    const y = py(10 ** d);
    parts.push(
      `<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${y + 4}" text-anchor="end">${10 ** d >= 1 ? 10 ** d : (10 ** d).toPrecision(1)}</text>`,
    );
  }
  for (const q of [0.5, 0.9, 0.99, 0.999, 0.9999]) {
    if (xs(q) > xmax + 1e-9) continue;
    const x = px(q);
    parts.push(
      `<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#ddd"/>`,
      `<text x="${x}" y="${H - B + 16}" text-anchor="middle">p${(q * 100).toString()}</text>`,
    );
  }
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 20}" text-anchor="middle">percentile</text>`,
    `<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">latency (ms, log scale)</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
  );
  results.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = r.curve.map(([q, ms]) => `${px(q).toFixed(1)},${py(ms).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>`);
    const y = T + 10 + i * 18;
    parts.push(
      `<line x1="${W - R + 12}" y1="${y}" x2="${W - R + 32}" y2="${y}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${W - R + 38}" y="${y + 4}">${r.clients} client${r.clients === 1 ? '' : 's'}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// ---------------------------------------------------------------------------
// Main

let activeCluster: LocalCluster | null = null;
let keepDir = false;

function emergencyCleanup(): void {
  if (!activeCluster) return;
  activeCluster.killAllSync();
  if (!keepDir) {
    try {
      activeCluster.removeDir();
    } catch {
      // best effort
    }
  }
  activeCluster = null;
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`paxos-bench: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  if (!opts) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  quiet = opts.json;
  keepDir = opts.keep;

  let target: Target;
  let cluster: LocalCluster | null = null;
  if (opts.targetConfig) {
    try {
      const cfg = loadClientConfig(opts.targetConfig);
      target = {
        clientConfig: cfg,
        keys: cfg.clientKeyFile
          ? loadKeyring(cfg.clientKeyFile, cfg.file, 'clientKeyFile')
          : undefined,
      };
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`paxos-bench: bad config: ${e.message}\n`);
        return 2;
      }
      throw e;
    }
  } else {
    cluster = await LocalCluster.create(opts.sync, opts.nodeArgs, opts.hmac);
    activeCluster = cluster;
    note(
      `paxos-bench: starting 3 paxosd nodes in ${cluster.dir}${opts.sync ? '' : ' (--no-sync)'}${opts.hmac ? ' (peer HMAC on)' : ''}`,
    );
    target = { clientConfig: cluster.clientConfig };
  }
  const ctl = PaxosClient.fromConfig(target.clientConfig, { keys: target.keys });
  const keyNames = Array.from(
    { length: opts.keys },
    (_, i) => 'k' + String(i).padStart(opts!.keyBytes - 1, '0'),
  );
  const env: Env = { opts, target, cluster, ctl, keyNames };
  const doc: Record<string, unknown> = {
    tool: 'paxos-bench',
    config: {
      op: opts.op,
      clients: opts.clients,
      durationS: opts.durationS,
      warmupS: opts.warmupS,
      valueBytes: opts.valueBytes,
      keyBytes: opts.keyBytes,
      keys: opts.keys,
      sync: opts.sync,
      target: opts.targetConfig ?? 'local 3-node cluster',
      clientsPerSocket: CLIENTS_PER_SOCKET,
    },
    host: { cpus: os.cpus().length, node: process.version, platform: process.platform },
  };
  let code = 0;
  try {
    if (cluster) {
      await cluster.start();
      doc.nodes = cluster.nodes.map((n) => ({ sid: n.sid, pid: n.pid }));
    }
    const leader = await waitForLeader(
      ctl,
      target.clientConfig.servers.map((s) => s.sid),
    );
    target.leader = leader;
    note(`paxos-bench: leader is sid ${leader}`);
    const results: RunResult[] = [];
    const disk: { before?: DiskProbe; after?: DiskProbe } = {};
    if (cluster) {
      disk.before = probeDisk(cluster.dir);
      doc.diskFdatasync = disk;
      note(`paxos-bench: disk write+fdatasync ${fmtProbe(disk.before)}`);
    }
    if (opts.sweep) {
      if (opts.op !== 'put') {
        note(`paxos-bench: preloading ${fmtInt(opts.keys)} keys`);
        await preload(env);
      }
      for (const c of opts.clients) {
        const r = await runOnce(env, c);
        results.push(r);
        note(
          `clients=${c}: ${fmtInt(r.opsPerSec)} ops/s  p50 ${fmtMs(r.latencyMs.p50)}  p99 ${fmtMs(r.latencyMs.p99)} ms`,
        );
        await sleep(200);
      }
    }
    if (cluster && opts.sweep) disk.after = probeDisk(cluster.dir);
    doc.results = results.map(({ curve: _curve, ...rest }) => rest);
    if (opts.failover) doc.failover = await failover(env);
    if (opts.catchup !== null) doc.catchup = await catchup(env);

    if (opts.svg && results.length > 0) {
      fs.writeFileSync(
        opts.svg,
        svgPlot(
          results,
          `paxosd ${opts.op} latency, ${opts.valueBytes}-byte values, ${opts.sync ? 'fdatasync on' : 'no sync'}`,
        ),
      );
      note(`paxos-bench: wrote ${opts.svg}`);
    }
    if (opts.json) {
      process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    } else {
      const out = (s: string): void => void process.stdout.write(s + '\n');
      out('');
      out(
        `paxos-bench: op=${opts.op}, ${opts.keyBytes}-byte keys, ${opts.valueBytes}-byte values, ` +
          `${opts.targetConfig ? `cluster ${opts.targetConfig}` : `local 3-node cluster, fdatasync ${opts.sync ? 'on' : 'OFF'}`}, ` +
          `warm-up ${opts.warmupS} s, ${opts.durationS} s per run, ${os.cpus().length} CPUs, node ${process.version}`,
      );
      if (disk.before)
        out(
          `disk (write+fdatasync in the data directory's file system): before ${fmtProbe(disk.before)}` +
            (disk.after ? `; after ${fmtProbe(disk.after)}` : ''),
        );
      if (results.length) {
        out(
          'CPU: % of one core over the measured window (bench = this load generator, other = ' +
            'every other process on the host; a high "other" means the figures are disturbed).',
        );
        printTable(results, out);
        for (const r of results) {
          out('');
          printHistogram(r, out);
        }
      }
      if (doc.failover) {
        const f = doc.failover as Awaited<ReturnType<typeof failover>>;
        out('');
        out(`failover (${f.clients} clients writing; SIGKILL of the leader, then restart):`);
        for (const r of f.rounds)
          out(
            `  killed ${r.killed} -> new leader ${r.newLeader ?? '?'}: next committed write after ${r.gapMs === null ? 'never' : fmtMs(r.gapMs) + ' ms'} (max latency ${fmtMs(r.maxLatencyMs)} ms, failed ops ${r.failed})`,
          );
        out(`  median: ${f.medianGapMs === null ? '-' : fmtMs(f.medianGapMs) + ' ms'}`);
      }
      if (doc.catchup) {
        const c = doc.catchup as Record<string, number | null | boolean>;
        out('');
        out(
          `catch-up: follower ${c.follower} stopped during ${fmtInt(c.commands as number)} writes ` +
            `(${fmtInt(c.writeOpsPerSec as number)} ops/s with it stopped), ${fmtInt(c.slotsBehind as number)} slots behind`,
        );
        out(
          c.caughtUp
            ? `  caught up in ${fmtMs(c.catchupMs as number)} ms: ${fmtInt(c.commandsPerSec as number)} commands/s, ${fmtInt(c.slotsPerSec as number)} slots/s (follower CPU ${c.followerCpuPct ?? '?'}%)`
            : '  did NOT catch up within 120 s',
        );
      }
    }
  } catch (e) {
    process.stderr.write(`paxos-bench: ${(e as Error).message}\n`);
    code = 1;
  } finally {
    ctl.close();
    if (cluster) {
      await cluster.stop();
      if (opts.keep) note(`paxos-bench: kept ${cluster.dir}`);
      else cluster.removeDir();
      activeCluster = null;
    }
  }
  return code;
}

process.on('exit', emergencyCleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.on(sig, () => {
    emergencyCleanup();
    process.exit(130);
  });

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`paxos-bench: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
