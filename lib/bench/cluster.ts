import type { ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { PaxosClient } from '../client';
import {
  DEFAULT_CLIENT_RETRY_MS,
  DEFAULT_CLIENT_TIMEOUT_MS,
  type ClientConfig,
} from '../io/config';
import { writeKeyFile } from '../io/keys';
import { eachLine, launchNode, waitReady } from '../launch';
import { warn } from './log';

// The bench's own local 3-node cluster (child processes) and how to ask a cluster for its leader.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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

export class LocalCluster {
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
      timeoutMs: DEFAULT_CLIENT_TIMEOUT_MS,
      retryMs: DEFAULT_CLIENT_RETRY_MS,
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

  async startNode(sid: number, init: boolean): Promise<void> {
    const n = this.nodes[sid];
    const args = ['--config', this.configFile, '--sid', String(sid)];
    if (init) args.push('--init');
    if (!this.sync) args.push('--no-sync');
    const child = launchNode({ args, nodeFlags: this.nodeArgs, cwd: this.dir });
    n.child = child;
    n.pid = child.pid ?? null;
    if (n.pid !== null) n.pids.push(n.pid);
    n.expectedExit = false;
    n.stopped = false;
    n.stderrTail = [];
    child.stderr!.setEncoding('utf8');
    eachLine(child.stderr, (line) => {
      n.stderrTail.push(line);
      if (n.stderrTail.length > 40) n.stderrTail.splice(0, n.stderrTail.length - 40);
    });
    let ready = false;
    child.on('exit', (code, sig) => {
      if (n.child === child) {
        n.child = null;
        n.pid = null;
      }
      if (ready && !n.expectedExit)
        warn(
          `paxos-bench: WARNING: sid ${sid} exited unexpectedly (${sig ?? code})${this.tail(n)}`,
        );
    });
    try {
      await waitReady(child, sid, 20_000);
      ready = true;
    } catch (e) {
      throw new Error(`sid ${sid}: ${(e as Error).message}${this.tail(n)}`);
    }
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

export interface NodeStatus {
  sid: number;
  role: string;
  leader: number | null;
  chosen: number;
  applied: number;
}

export async function statusOf(
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
export async function waitForLeader(
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
