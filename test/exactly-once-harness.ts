// In-process cluster and a client-side UDP proxy for the exactly-once tests.
// Written against the package's public classes (PaxosNode, PaxosClient), the
// envelope and the order-log text only, so that the same tests also run
// against an older build (the regression evidence in the report).
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PaxosClient } from '../lib/client';
import { Prng } from '../lib/core/prng';
import { PaxosNode } from '../lib/daemon';
import { clientConfigFromNode, parseNodeConfig, type NodeConfig } from '../lib/io/config';
import { decodeOp } from '../lib/sm/kv';
import { decodeRequest } from '../lib/wire/client';
import { clusterTag, Keyring, Kind, NO_KEYS, open } from '../lib/wire/envelope';
import { freeUdpPorts, sleep } from './helpers/cluster';

export interface InProcOptions {
  n: number;
  name: string;
  /** Limits per sid (the config file of each node may differ). */
  limits: (sid: number) => Record<string, number>;
  clientKey?: Buffer;
}

/** A cluster of PaxosNodes in this process, each with its own config object. */
export class InProcCluster {
  readonly nodes = new Map<number, PaxosNode>();
  readonly logs = new Map<number, string[]>();
  readonly configs: NodeConfig[] = [];
  readonly clientKeys: Keyring;

  private constructor(
    readonly dir: string,
    readonly opts: InProcOptions,
  ) {
    this.clientKeys = opts.clientKey ? new Keyring([opts.clientKey]) : NO_KEYS;
  }

  static async start(opts: InProcOptions): Promise<InProcCluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${opts.name}-`));
    const c = new InProcCluster(dir, opts);
    const ports = await freeUdpPorts(2 * opts.n);
    const servers = Array.from({ length: opts.n }, (_, sid) => ({
      sid,
      host: '127.0.0.1',
      peerPort: ports[2 * sid],
      clientPort: ports[2 * sid + 1],
    }));
    for (let sid = 0; sid < opts.n; sid++)
      c.configs.push(
        parseNodeConfig(`inline-${sid}`, {
          clusterId: opts.name,
          servers,
          limits: opts.limits(sid),
          storage: { sync: false },
          dataDir: path.join(dir, 'data'),
          logDir: path.join(dir, 'logs'),
        }),
      );
    await Promise.all(c.configs.map((_, sid) => c.startNode(sid, true)));
    return c;
  }

  async startNode(sid: number, init: boolean): Promise<PaxosNode> {
    const lines = this.logs.get(sid) ?? [];
    this.logs.set(sid, lines);
    const node = await PaxosNode.start({
      config: this.configs[sid],
      sid,
      init,
      clientKeys: this.clientKeys,
      log: (l) => lines.push(l),
      seed: 1000 + sid,
    });
    this.nodes.set(sid, node);
    return node;
  }

  async stopNode(sid: number): Promise<void> {
    await this.nodes.get(sid)?.stop();
    this.nodes.delete(sid);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((s) => this.stopNode(s)));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  leader(): number | null {
    for (const [sid, n] of this.nodes) if (n.status().role === 'leader') return sid;
    return null;
  }

  async waitLeader(ms: number): Promise<number> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      const l = this.leader();
      if (l !== null) return l;
      await sleep(20);
    }
    throw new Error(`no leader within ${ms} ms`);
  }

  /** Wait until every running node applied the same slot (and it is >= `min`). */
  async waitSameApplied(ms: number, min = 0): Promise<number> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      const a = [...this.nodes.values()].map((n) => n.status().applied);
      if (a.every((x) => x === a[0]) && a[0] >= min) return a[0];
      await sleep(30);
    }
    throw new Error('nodes did not converge');
  }

  /** A client that talks to the servers directly (or to `ports` instead of theirs). */
  client(extra: { ports?: Map<number, number>; timeoutMs?: number; retryMs?: number } = {}) {
    const cfg = clientConfigFromNode(this.configs[0]);
    const servers = cfg.servers.map((s) => ({
      ...s,
      clientPort: extra.ports?.get(s.sid) ?? s.clientPort,
    }));
    return new PaxosClient({
      servers,
      leader: 0,
      timeoutMs: extra.timeoutMs ?? 5000,
      retryMs: extra.retryMs ?? 20,
      clusterId: cfg.clusterId,
      keys: this.clientKeys,
    });
  }

  orderLog(sid: number): string[] {
    const file = this.nodes.get(sid)?.orderLog.file;
    if (!file || !fs.existsSync(file)) return [];
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  }
}

/** One command line of an order log: "slot.i cid:seq text [digest]" (text without the digest). */
export interface OrderCommand {
  slot: number;
  cid: string;
  seq: number;
  text: string;
}

export function orderCommands(lines: string[]): OrderCommand[] {
  const out: OrderCommand[] = [];
  for (const l of lines) {
    const m = /^(\d+)\.\d+ (\d+):(\d+) (.*?)(?: \[(?:v\d+:)?[0-9a-f]{16}\])?$/.exec(l);
    if (m) out.push({ slot: Number(m[1]), cid: m[2], seq: Number(m[3]), text: m[4] });
  }
  return out;
}

/**
 * Commands that changed (or read) the data: not refused, not a cached answer,
 * not a registration or the cluster's limits.
 */
export function effects(lines: string[]): OrderCommand[] {
  return orderCommands(lines).filter(
    (c) =>
      !/^(stale|duplicate|session expired|register|limits|invalid)/.test(c.text) &&
      !c.text.endsWith('(retry)'),
  );
}

export type Verdict = 'pass' | 'drop' | 'hold';

/** What the proxy saw of a client request datagram. */
export interface SeenRequest {
  sid: number;
  buf: Buffer;
  ops: { cid: number; seq: number; kind: string }[];
  /** Send it (again) to the server now, as if from the same client. */
  send(): void;
}

export interface ProxyPolicy {
  /** Client -> server. Default pass. */
  up?(r: SeenRequest): Verdict;
  /** Server -> client. Default pass. */
  down?(sid: number, buf: Buffer, send: () => void): Verdict;
}

/**
 * A UDP proxy between clients and servers (one port per server, one upstream
 * socket per client address, like a NAT): every datagram passes through a
 * policy that may drop, hold or pass it, and the test may send any datagram it
 * saw again later. Requests are opened (with the client key, if any) only to
 * classify them; what is forwarded is the authentic bytes.
 */
export class ClientProxy {
  readonly ports = new Map<number, number>();
  private readonly front = new Map<number, dgram.Socket>();
  private readonly upstream = new Map<string, dgram.Socket>();
  readonly held: SeenRequest[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  closed = false;
  policy: ProxyPolicy = {};

  constructor(
    readonly c: InProcCluster,
    private readonly keys: Keyring,
  ) {}

  async start(): Promise<void> {
    for (const cfgServer of this.c.configs[0].servers) {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      sock.on('message', (buf, rinfo) => this.fromClient(cfgServer.sid, buf, rinfo));
      this.front.set(cfgServer.sid, sock);
      this.ports.set(cfgServer.sid, sock.address().port);
    }
  }

  later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  private classify(buf: Buffer): SeenRequest['ops'] {
    const opened = open(buf, Kind.ClientRequest, clusterTag(this.c.opts.name), this.keys);
    if ('error' in opened) return [];
    const req = decodeRequest(opened.body);
    if ('error' in req || (req.t !== 'op' && req.t !== 'ops')) return [];
    const list = req.t === 'op' ? [req] : req.ops;
    return list.map((o) => {
      const op = decodeOp(o.op, 1 << 20);
      return { cid: o.cid, seq: o.seq, kind: 'code' in op ? 'other' : op.kind };
    });
  }

  private fromClient(sid: number, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const key = `${sid}/${rinfo.address}:${rinfo.port}`;
    let up = this.upstream.get(key);
    if (!up) {
      up = dgram.createSocket('udp4');
      up.bind(0, '127.0.0.1');
      up.on('message', (reply) => {
        if (this.closed) return;
        const send = (): void => {
          if (!this.closed) this.front.get(sid)!.send(reply, rinfo.port, rinfo.address);
        };
        const v = this.policy.down?.(sid, reply, send) ?? 'pass';
        if (v === 'pass') send();
      });
      up.on('error', () => undefined);
      this.upstream.set(key, up);
    }
    const target = this.c.configs[0].servers.find((s) => s.sid === sid)!;
    const sock = up;
    const seen: SeenRequest = {
      sid,
      buf: Buffer.from(buf),
      ops: this.classify(buf),
      send: () => {
        if (!this.closed) sock.send(seen.buf, target.clientPort, '127.0.0.1');
      },
    };
    const v = this.policy.up?.(seen) ?? 'pass';
    if (v === 'pass') seen.send();
    else if (v === 'hold') this.held.push(seen);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.front.values()) s.close();
    for (const s of this.upstream.values()) s.close();
  }
}

/** A seeded policy: drop, delay (reorder) and duplicate datagrams in both directions. */
export function lossyPolicy(
  proxy: ClientProxy,
  seed: number,
  stats: Record<string, number>,
): ProxyPolicy {
  const prng = new Prng(seed);
  const bump = (k: string): void => {
    stats[k] = (stats[k] ?? 0) + 1;
  };
  const fate = (send: () => void, dir: string): Verdict => {
    if (prng.chance(0.08)) {
      bump(`${dir}Dropped`);
      return 'drop';
    }
    if (prng.chance(0.2)) {
      // A late copy: long after the client gave up on it or moved on.
      bump(`${dir}Duplicated`);
      proxy.later(prng.range(50, 800), send);
    }
    if (prng.chance(0.1)) {
      bump(`${dir}Delayed`);
      proxy.later(prng.range(1, 120), send);
      return 'drop';
    }
    return 'pass';
  };
  return {
    up: (r) => fate(r.send, 'up'),
    down: (_sid, _buf, send) => fate(send, 'down'),
  };
}
