import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import createDebug from 'debug';
import { Prng } from './core/prng';
import { Replica, type ReplicaOptions, type ReplicaStatus } from './core/replica';
import { isDivergenceEvent } from './core/statecheck';
import type { AppliedEntry, CmdResult, Member, Msg, Outbound, Ready } from './core/types';
import type { NodeConfig, ServerAddr } from './io/config';
import { DirLock } from './io/dirlock';
import { OrderLog } from './io/orderlog';
import { StorageError } from './io/recordlog';
import { DurableStore, type OpenedStore } from './io/storage';
import { NodeMetrics, serveMetrics } from './metrics';
import { BackupServer } from './backup';
import { ClientFront } from './front';
import { DROP_LOG_KEYS_MAX, RATE_LIMITED_SOURCES_MAX } from './limits';
import { isOpError, KvStateMachine, parseCommand, type MemberOp } from './sm/kv';
import { describeMembers } from './sm/membership';
import { hex } from './sm/statehash';
import {
  AddressTokens,
  AMPLIFICATION_FACTOR,
  BATCH_OPS_MAX,
  decodeRequest,
  encodeReply,
  resultBytes,
  resultReplyBytesMax,
  type ClientReply,
  type ClientRequest,
  type RequestRef,
  TOKEN_BUCKET_MS,
  type TransferCode,
} from './wire/client';
import {
  clusterTag,
  HEADER_BYTES,
  Kind,
  Keyring,
  NO_KEYS,
  open,
  seal,
  TAG_BYTES,
} from './wire/envelope';
import { decodePeerBody, encodePeerBody } from './wire/peer';

const debugPeer = createDebug('paxos:peer');
const debugClient = createDebug('paxos:client');
const debugDrop = createDebug('paxos:drop');
const debugNode = createDebug('paxos:node');
const debugDisk = createDebug('paxos:disk');

export interface NodeOptions {
  config: NodeConfig;
  sid: number;
  /** Default: <config.dataDir>/<sid>. */
  dataDir?: string;
  /** Default: config.logDir. */
  logDir?: string;
  /** Bootstrap a new cluster: a node with an empty data directory may vote at once. */
  init?: boolean;
  /** Override config.storage.sync (benchmarks compare both). */
  sync?: boolean;
  peerKeys?: Keyring;
  clientKeys?: Keyring;
  /**
   * Where progress lines go, with their level. Default: stderr, each line
   * prefixed with an ISO timestamp, the level and the sid.
   */
  log?: (line: string, level: LogLevel) => void;
  /** Called once if the node stops itself (disk failure). Default: log only. */
  onFatal?: (err: Error) => void;
  /**
   * Called once after the node stopped itself because the log removed it from
   * the configuration and the new one governs (see checkRemoved). Default: log only.
   */
  onRemoved?: () => void;
  /** Seed of the core's PRNG (election jitter). Default: derived from sid and time. */
  seed?: number;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics (off when absent). */
  metrics?: { host: string; port: number };
}

export type LogLevel = 'INFO' | 'WARN' | 'ERROR';

export type LogFormat = 'text' | 'json';

/**
 * One log line. text: `2026-01-02T03:04:05.678Z INFO sid=0 message`; json (for
 * log shippers): `{"ts":"2026-01-02T03:04:05.678Z","level":"INFO","sid":0,"msg":"message"}`.
 */
export function formatLogLine(
  sid: number,
  level: LogLevel,
  line: string,
  at = new Date(),
  format: LogFormat = 'text',
): string {
  if (format === 'json') return JSON.stringify({ ts: at.toISOString(), level, sid, msg: line });
  return `${at.toISOString()} ${level} sid=${sid} ${line}`;
}

function stderrLog(sid: number): (line: string, level: LogLevel) => void {
  return (line, level) => process.stderr.write(formatLogLine(sid, level, line) + '\n');
}

/** Drop reasons an operator can fix (a config or key mistake): logged, rate-limited. */
const OPERATOR_DROPS = new Set([
  'wrong_cluster',
  'missing_tag',
  'bad_tag',
  'bad_version',
  'wrong_source',
]);

/** At most one log line per drop reason and source address per this many ms. */
const DROP_LOG_EVERY_MS = 10_000;

/**
 * How long a transfer-leader request's result is kept, by nonce: well past the
 * client's timeout (its polls hear it, even after this node follows), and as long
 * as the address token that let the request start can still be valid (it lives
 * at most 2 buckets), so a replay of it with that token, from that address, is
 * answered from here and never starts a second hand-off.
 */
const TRANSFER_RESULT_KEEP_MS = 2 * TOKEN_BUCKET_MS;

/**
 * Transfer-leader results kept at most (memory bound). Only a request that starts
 * a hand-off adds one (a valid token, and the client key if set; one hand-off at
 * a time), so an operator never comes near it in TRANSFER_RESULT_KEEP_MS. When
 * full, the oldest goes first: its client has had the longest to hear it, and its
 * token is the nearest to expiry (a replay of an evicted request can start at most
 * one more hand-off, until its token expires).
 */
const TRANSFER_RESULTS_MAX = 256;

/** Socket buffers (each way, both ports): a burst of a full window of datagrams is not lost. */
const SOCKET_BUFFER_BYTES = 8 << 20;

/** A prime: nodes started in the same millisecond still draw different PRNG seeds. */
const SEED_SID_MULTIPLIER = 7919;

/** Client waiters are swept for expiry every this many ticks. */
const EXPIRE_WAITERS_EVERY_TICKS = 100;

/** A client waiter whose request was lost with a leader change is forgotten after this long. */
const WAITER_EXPIRY_MS = 30_000;

/** A rate-limit bucket idle this long is full again, so it may be dropped when the table is full. */
const BUCKET_IDLE_MS = 1_000;

/** A result's label in the replies-by-outcome metric (a small, fixed set). */
function outcomeOf(r: CmdResult): string {
  if (r.ok) return 'ok';
  return r.err === 'session_expired' ? 'session_expired' : 'failed';
}

/** Counters an operator (and the tests) can read. */
export interface NodeCounters {
  peerIn: number;
  peerOut: number;
  clientIn: number;
  clientOut: number;
  dropped: Record<string, number>;
  syncs: number;
  recordsSynced: number;
  /** Histogram of records per sync: index = floor(log2(records)). */
  groupCommit: number[];
  flushes: number;
  /** Client requests whose answer was held back by the anti-amplification limit. */
  clientHeldBack: number;
  /** Validate replies sent (each carries an address token). */
  tokensIssued: number;
  /** Requests whose token was wrong, for another address or expired. */
  tokensRefused: number;
}

/** The replica settings a node config gives (everything but PRNG, state machine and trace). */
export function replicaOptions(
  cfg: NodeConfig,
  sid: number,
): Omit<ReplicaOptions, 'prng' | 'sm' | 'trace'> {
  const t = cfg.timing;
  const l = cfg.limits;
  return {
    sid,
    // The config files' servers (alike on every node): not what a joined node
    // learned from the log (see ServerAddr.fromLog).
    sids: cfg.servers.filter((s) => !s.fromLog).map((s) => s.sid),
    members: bootstrapMembers(cfg),
    heartbeatTicks: t.heartbeatTicks,
    electionTicks: t.electionTicks,
    retransmitTicks: t.retransmitTicks,
    retransmitMaxTicks: t.retransmitMaxTicks,
    windowSlots: l.windowSlots,
    batchBytesMax: l.batchBytesMax,
    pendingMax: l.pendingMax,
    catchupBytesMax: l.catchupBytesMax,
    snapshotEverySlots: cfg.storage.snapshotEverySlots,
    snapshotEveryBytes: cfg.storage.snapshotEveryBytes,
  };
}

/**
 * The bootstrap configuration a node config gives: every server not marked
 * spare, as a voter. Only what slot 0 holds: the log's member commands change
 * it from there, alike on every node, so every node's config file must give the
 * same one (it is not recorded in the log).
 */
export function bootstrapMembers(cfg: NodeConfig): Member[] {
  return cfg.servers.filter((s) => !s.spare).map((s) => ({ sid: s.sid, voter: true }));
}

/** Bytes of results packed into one reply datagram (below DATAGRAM_BYTES_MAX). */
const REPLY_BATCH_BYTES = 48_000;

/**
 * Where a client answer goes, and how many bytes it may take: AMPLIFICATION_FACTOR
 * times its share of the request datagram, or Infinity for a validated address.
 */
interface ReplyTo {
  address: string;
  port: number;
  allowanceBytes: number;
}

/** A result waiting for the end of the turn, with the bytes its answer may take. */
interface BoxedResult {
  cid: number;
  seq: number;
  result: CmdResult;
  allowanceBytes: number;
}

/**
 * A paxosd node: UDP sockets, tick timer, durable store and order log wrapped
 * around the pure Replica. The loop is: datagram -> replica.step; then once per
 * event-loop turn, ready(): persist (one fdatasync) -> snapshot -> send -> reply.
 */
export class PaxosNode {
  readonly replica: Replica;
  readonly sm: KvStateMachine;
  readonly counters: NodeCounters = {
    peerIn: 0,
    peerOut: 0,
    clientIn: 0,
    clientOut: 0,
    dropped: Object.create(null) as Record<string, number>,
    syncs: 0,
    recordsSynced: 0,
    groupCommit: [],
    flushes: 0,
    clientHeldBack: 0,
    tokensIssued: 0,
    tokensRefused: 0,
  };
  /** What only the metrics endpoint needs (the rest is in `counters` and `status`). */
  readonly metrics = new NodeMetrics();
  private metricsServer: http.Server | null = null;
  readonly self: ServerAddr;
  private readonly peerSock: dgram.Socket;
  private readonly clientSock: dgram.Socket;
  private readonly byAddr = new Map<string, number>();
  private readonly addrOf = new Map<number, ServerAddr>();
  /** The configuration (by slot) the address book last took addresses from. */
  private addressesFrom = -1;
  private readonly cluster: number;
  private readonly peerKeys: Keyring;
  private readonly clientKeys: Keyring;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  /** The client-request rules (shared with the simulator): admission, submit, waiters. */
  private readonly front: ClientFront<ReplyTo>;
  /** Results waiting for the end of the turn, by client address:port. */
  private readonly replyBox = new Map<
    string,
    { address: string; port: number; items: BoxedResult[] }
  >();
  /** Address tokens under this process's own random secret (stateless validation). */
  private readonly tokens = new AddressTokens(randomBytes(32));
  /** The sealed 'auth' error sent to unauthenticated clients (built once). */
  private authReply: Buffer | null = null;
  /** Outputs waiting for the sync of generation `gen` (FIFO). */
  private readonly pipeline: { gen: number; messages: Outbound[] }[] = [];
  /** Bumped by each write that must be durable before what follows it is released. */
  private writeGen = 0;
  /** Generation of the last mustSync record: a sync is due up to it. */
  private mustSyncGen = 0;
  private syncedGen = 0;
  private syncing = false;
  private unsyncedRecords = 0;
  /**
   * End of the WAL as of the last completed sync of this process (null before
   * the first one, or with syncs off). Everything this node has vouched for lies
   * before it: a power loss can cost only what follows (tests cut there).
   */
  private walSynced: { segment: string; offset: number } | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private flushScheduled = false;
  private stopped = false;
  private fatal: Error | null = null;
  private readonly log: (line: string, level?: LogLevel) => void;
  /** Held for the life of the node: one process per data directory. */
  private lock: DirLock | null = null;
  /** When each (reason, source) drop was last logged, for the rate limit. */
  private readonly dropLogged = new Map<string, number>();
  /** Resolved when the running fdatasync completes (stop waits for it). */
  private syncWaiters: (() => void)[] = [];
  private clock = 0;
  private limitsNoted = false;
  /** Set once checkRemoved found this node removed: it is stopping. */
  private removed = false;
  /** The hand-off a leader asked to remove itself runs first (see onMemberOp). */
  private selfRemoval: { state: 'running' | 'failed'; at: number } | null = null;
  /** The transfer-leader request being served (one at a time). */
  private transferRunning: { nonce: number; to: number } | null = null;
  /**
   * How each transfer-leader request ended, by nonce, for its retransmissions
   * (the client polls until it hears it) and replays: kept for
   * TRANSFER_RESULT_KEEP_MS, at most TRANSFER_RESULTS_MAX (in insertion order:
   * oldest first).
   */
  private readonly transferDone = new Map<
    number,
    { code: TransferCode; message: string; at: number }
  >();
  /** Snapshot saves being served (paxos-client snapshot save): pinned snapshots. */
  private readonly backups: BackupServer<ReplyTo>;

  private constructor(
    readonly opts: NodeOptions,
    readonly store: DurableStore,
    readonly orderLog: OrderLog,
    readonly dataDir: string,
  ) {
    const cfg = opts.config;
    const out = opts.log ?? stderrLog(opts.sid);
    this.log = (l, level = 'INFO') => out(l, level);
    this.cluster = clusterTag(cfg.clusterId);
    this.peerKeys = opts.peerKeys ?? NO_KEYS;
    this.clientKeys = opts.clientKeys ?? NO_KEYS;
    for (const s of cfg.servers) {
      this.byAddr.set(`${s.host}:${s.peerPort}`, s.sid);
      this.addrOf.set(s.sid, s);
    }
    this.self = this.addrOf.get(opts.sid)!;
    // No limits from the config: the cluster's are recorded in the log (see onOp).
    this.sm = new KvStateMachine();
    this.replica = new Replica({
      ...replicaOptions(cfg, opts.sid),
      prng: new Prng(opts.seed ?? (opts.sid * SEED_SID_MULTIPLIER + Date.now()) >>> 0),
      sm: this.sm,
      trace: debugNode.enabled ? (line) => debugNode(line) : undefined,
    });
    this.front = new ClientFront({
      replica: this.replica,
      sm: this.sm,
      localLimits: cfg.limits,
    });
    this.backups = new BackupServer<ReplyTo>({
      barrier: (ready) => {
        const r = this.front.barrier(ready, this.clock);
        this.scheduleFlush();
        return r;
      },
      capture: () => {
        const d = this.sm.digest();
        const slot = this.replica.applied;
        // The state hash follows every applied slot (a snapshot restores both).
        if (d && d.slot !== slot) throw new Error(`state hash at ${d.slot}, applied ${slot}`);
        return { slot, hash: d?.hash ?? null, data: this.sm.snapshot() };
      },
      send: (to, r) => this.reply(to, r),
      nowMs: () => Date.now(),
      randomId: () => randomBytes(4).readUInt32LE(0),
      log: (line) => this.log(`sid ${this.opts.sid}: ${line}`),
    });
    const buffers = { recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES };
    this.peerSock = dgram.createSocket({ type: 'udp4', ...buffers });
    this.clientSock = dgram.createSocket({ type: 'udp4', ...buffers });
  }

  /** Open the data directory, recover, bind both ports, start ticking. */
  static async start(opts: NodeOptions): Promise<PaxosNode> {
    const cfg = opts.config;
    const self = cfg.servers.find((s) => s.sid === opts.sid);
    if (!self) throw new Error(`sid ${opts.sid} is not in ${cfg.file}`);
    const dataDir = opts.dataDir ?? path.join(cfg.dataDir, String(opts.sid));
    const sync = opts.sync ?? cfg.storage.sync;
    // The lock comes before anything in the directory is read: opening the WAL
    // may cut its tail, which would damage a running node's log.
    const log = opts.log ?? stderrLog(opts.sid);
    const lock = DirLock.acquire(dataDir, sync, (l) => log(`sid ${opts.sid}: ${l}`, 'WARN'));
    let node: PaxosNode;
    let opened: OpenedStore;
    try {
      opened = DurableStore.open(dataDir, sync, undefined, cfg.clusterId);
      let orderLog: OrderLog;
      try {
        orderLog = new OrderLog(OrderLog.fileFor(opts.logDir ?? cfg.logDir, opts.sid));
      } catch (e) {
        opened.store.close();
        throw e;
      }
      node = new PaxosNode(opts, opened.store, orderLog, dataDir);
    } catch (e) {
      lock.release();
      throw e;
    }
    node.lock = lock;
    try {
      await node.recover(opened);
    } catch (e) {
      await node.stop(); // closes the sockets and the store, releases the lock
      throw e;
    }
    return node;
  }

  /** After the lock and the open: replay, bind both ports, start ticking. */
  private async recover(opened: OpenedStore): Promise<void> {
    const sid = this.opts.sid;
    if (opened.tornBytes > 0)
      this.log(
        `sid ${sid}: cut a torn record of ${opened.tornBytes} bytes at the end of the log`,
        'WARN',
      );
    this.replica.restore(opened.snapshot, opened.records);
    // A crash after saving a snapshot but before writing its slots to the order
    // log leaves the order log behind the snapshot; those slots are never applied
    // again, so mark the gap as a snapshot install does.
    if (opened.snapshot && opened.snapshot.slot > this.orderLog.lastSlot)
      this.orderLog.snapshotInstalled(opened.snapshot.slot);
    if (opened.fresh) {
      if (this.opts.init) this.replica.bootstrap();
      else
        this.log(
          `sid ${sid}: empty data directory ${this.dataDir}: joining as a non-voter until it is safe (Paxos Made Live rule); use --init only when creating a new cluster`,
        );
    }
    this.noteLimits();
    this.noteBootstrapDiffers();
    this.learnAddresses();
    await this.bind();
    if (this.opts.metrics) {
      const { host, port } = this.opts.metrics;
      this.metricsServer = await serveMetrics(host, port, () =>
        this.metrics.render({
          sid: this.opts.sid,
          status: () => this.status(),
          counters: this.counters,
        }),
      );
      this.log(`sid ${this.opts.sid}: metrics at http://${host}:${port}/metrics`);
    }
    this.handle(this.replica.ready());
    this.ticker = setInterval(() => this.onTick(), this.opts.config.timing.tickMs);
  }

  private bind(): Promise<void> {
    const bindOne = (sock: dgram.Socket, port: number): Promise<void> =>
      new Promise((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(port, this.self.host, () => {
          sock.off('error', reject);
          sock.on('error', (e) =>
            this.log(`sid ${this.opts.sid}: socket error: ${e.message}`, 'WARN'),
          );
          resolve();
        });
      });
    this.peerSock.on('message', (buf, rinfo) => this.onPeer(buf, rinfo));
    this.clientSock.on('message', (buf, rinfo) => this.onClient(buf, rinfo));
    return Promise.all([
      bindOne(this.peerSock, this.self.peerPort),
      bindOne(this.clientSock, this.self.clientPort),
    ]).then(() => undefined);
  }

  /**
   * Graceful hand-off (SIGTERM on the leader, transfer-leader): ask `to` (default:
   * the best caught-up voter) to take over, and wait until it leads, at most two
   * election timeouts. The node keeps serving meanwhile; with `linger` (SIGTERM)
   * it redirects clients for two heartbeats more. Returns what happened.
   */
  async handOff(
    to?: number,
    linger = true,
  ): Promise<{ ok: boolean; code: TransferCode; message: string }> {
    const r = this.replica;
    if (r.role !== 'leader') return { ok: false, code: 'not_leader', message: 'not the leader' };
    const target = to ?? r.handoffTarget();
    if (target === null)
      return {
        ok: false,
        code: 'not_voter',
        message: 'no voter in two-way contact to hand off to',
      };
    if (!this.addrOf.has(target))
      return {
        ok: false,
        code: 'unknown_sid',
        message: `sid ${target} is not a member (members: ${[...this.addrOf.keys()].join(', ')})`,
      };
    if (target === this.opts.sid)
      return { ok: true, code: 'ok', message: `sid ${target} leads already` };
    // Membership and role are checked above: what the core can still refuse is
    // a target that does not vote or that the leader has no two-way contact with.
    const err = r.transferLeadership(target);
    if (err) return { ok: false, code: 'not_voter', message: err };
    this.scheduleFlush();
    const { tickMs, electionTicks } = this.opts.config.timing;
    const started = Date.now();
    const limitMs = 2 * electionTicks * tickMs;
    const handedOver = (): boolean => r.role === 'follower' && r.leader === target;
    while (!this.stopped && !handedOver()) {
      if (Date.now() - started > limitMs)
        return {
          ok: false,
          code: 'handoff_timeout',
          message: `sid ${target} did not take over within ${limitMs} ms (not caught up, or cut off); sid ${r.leader ?? '?'} leads`,
        };
      await new Promise((res) => setTimeout(res, tickMs));
    }
    const took = Date.now() - started;
    // Linger two heartbeat periods, redirecting: clients that still send here
    // learn the new leader instead of waiting out a retry timer.
    if (linger)
      await new Promise((res) =>
        setTimeout(res, 2 * this.opts.config.timing.heartbeatTicks * tickMs),
      );
    return { ok: true, code: 'ok', message: `handed leadership to ${target} in ${took} ms` };
  }

  /** The line printed when the node is ready. */
  readyLine(): string {
    const s = this.self;
    return `paxosd sid=${s.sid} ready peer=${s.host}:${s.peerPort} client=${s.host}:${s.clientPort} data=${this.dataDir} orderlog=${this.orderLog.file} voter=${this.replica.voter}`;
  }

  status(): ReplicaStatus & {
    dataBytes: number;
    sessionsMax: number | null;
    valueBytesMax: number | null;
    limitsMismatch: string | null;
    drops: string;
  } {
    const l = this.sm.limits;
    return {
      ...this.replica.status(),
      dataBytes: this.store.sizeBytes(),
      sessionsMax: l?.sessionsMax ?? null,
      valueBytesMax: l?.valueBytesMax ?? null,
      limitsMismatch: this.limitsMismatch(),
      drops: this.dropSummary(),
    };
  }

  /** Dropped datagrams by reason, `reason=count` separated by spaces ('' if none). */
  dropSummary(): string {
    return Object.entries(this.counters.dropped)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
  }

  /**
   * Where this node's config file disagrees with the cluster's limits (recorded
   * in the log; they decide, the file does not), or null.
   */
  limitsMismatch(): string | null {
    const cluster = this.sm.limits;
    if (!cluster) return null;
    const local = this.opts.config.limits;
    const diffs: string[] = [];
    for (const k of ['sessionsMax', 'valueBytesMax'] as const)
      if (local[k] !== cluster[k]) diffs.push(`${k} ${local[k]} (cluster: ${cluster[k]})`);
    return diffs.length === 0 ? null : `config file ${diffs.join(', ')}`;
  }

  /**
   * At start: say if the live configuration (from the log and snapshot) is not
   * the config file's bootstrap one. Normal after a member change: the live one
   * holds; the file's spare marks only say what slot 0 held.
   */
  private noteBootstrapDiffers(): void {
    const live = this.replica.configuration;
    const boot = describeMembers(bootstrapMembers(this.opts.config));
    const now = describeMembers(live.members);
    if (live.slot === 0 && boot === now) return;
    this.log(
      `sid ${this.opts.sid}: the live configuration (slot ${live.slot}: ${now}) is not the config file's bootstrap one (${boot}); the live one holds (config files are bootstrap input: keep their spare marks as they were when the cluster was created)`,
    );
  }

  /**
   * Addresses from the log: a member whose `member add` gave an address is
   * reached there (it may be in no config file: paxosd --join), and the log's
   * address wins over a config file's (a sid removed and added again at a new
   * address). Peers' datagrams are taken only from their owner's address
   * (onPeer), so a new member is heard from the tick its change is applied.
   */
  private learnAddresses(): void {
    const cs = this.sm.configurations();
    const newest = cs[cs.length - 1];
    if (!newest || newest.slot === this.addressesFrom) return;
    this.addressesFrom = newest.slot;
    for (const c of cs)
      for (const m of c.members) {
        if (!m.addr || m.sid === this.opts.sid) continue;
        const old = this.addrOf.get(m.sid);
        const a = m.addr;
        if (
          old &&
          old.host === a.host &&
          old.peerPort === a.peerPort &&
          old.clientPort === a.clientPort
        )
          continue;
        if (old && this.byAddr.get(`${old.host}:${old.peerPort}`) === m.sid)
          this.byAddr.delete(`${old.host}:${old.peerPort}`);
        this.addrOf.set(m.sid, { sid: m.sid, ...a, spare: old?.spare });
        this.byAddr.set(`${a.host}:${a.peerPort}`, m.sid);
        this.log(
          `sid ${this.opts.sid}: sid ${m.sid} is at ${a.host} (peer port ${a.peerPort}, client port ${a.clientPort}) by the log (configuration of slot ${c.slot})${old ? `, was ${old.host}:${old.peerPort}` : ''}`,
        );
      }
  }

  /**
   * Stop for good once the log removed this node and the new configuration is
   * settled (Replica.mayLeave). Not at once when the change is applied at slot
   * j: slots j+1 .. j+alpha-1 are still decided by the old configuration, which
   * counts this node; leaving early takes a vote from them (removing one of two
   * voters, the other alone could never choose them, and the change would never
   * come into force). Nor when only this node knows them chosen: a majority of
   * the new configuration must know them for good, or after a lost commit or a
   * power loss they would need this node's vote again. A node never in a kept
   * configuration (a spare not yet added) is not removed: it waits for its
   * `member add`.
   */
  private checkRemoved(): void {
    if (this.stopped || this.removed) return;
    const r = this.replica;
    if (!r.mayLeave()) return;
    const live = r.configuration;
    const self = this.opts.sid;
    const from = r.governsFrom(live);
    this.removed = true;
    this.log(
      `sid ${self}: removed from the configuration (member change at slot ${live.slot}, governing from slot ${from}: ${describeMembers(live.members)}); applied ${r.applied}, and a majority of the new configuration's voters know every slot before ${from} chosen for good; exiting`,
    );
    void this.stop().then(() => this.opts.onRemoved?.());
  }

  /** Say once, when the cluster's limits become known here, if the config file disagrees. */
  private noteLimits(): void {
    const l = this.sm.limits;
    if (!l || this.limitsNoted) return;
    this.limitsNoted = true;
    const m = this.limitsMismatch();
    if (m)
      this.log(
        `sid ${this.opts.sid}: limits differ from the cluster's: ${m}; the cluster's limits apply (recorded in the log when it was created)`,
        'WARN',
      );
  }

  /**
   * Stop: no more input or output, then close the store once a running
   * fdatasync has completed (closing its descriptor under it would turn a clean
   * stop into a failed sync), then give up the data directory's lock.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    const metricsServer = this.metricsServer;
    if (metricsServer) await new Promise<void>((r) => metricsServer.close(() => r()));
    await Promise.all([
      new Promise<void>((r) => this.peerSock.close(() => r())),
      new Promise<void>((r) => this.clientSock.close(() => r())),
    ]).catch(() => undefined);
    if (this.syncing) await new Promise<void>((r) => this.syncWaiters.push(r));
    try {
      this.store.close();
      this.orderLog.close();
    } catch {
      // already closed after a fatal error
    }
    this.lock?.release();
  }

  private drop(reason: string, detail?: string, from?: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    debugDrop('%s %s', reason, detail ?? '');
    const why = reason.slice(reason.indexOf('_') + 1);
    if (from !== undefined && OPERATOR_DROPS.has(why)) this.logDrop(reason, why, from);
  }

  /**
   * Say, at most once per DROP_LOG_EVERY_MS per reason and source address, why
   * datagrams an operator can fix were dropped (a flood costs one line).
   */
  private logDrop(reason: string, why: string, from: string): void {
    const key = `${reason} ${from}`;
    const now = Date.now();
    const last = this.dropLogged.get(key);
    if (last !== undefined && now - last < DROP_LOG_EVERY_MS) return;
    if (this.dropLogged.size >= DROP_LOG_KEYS_MAX) this.dropLogged.clear();
    this.dropLogged.set(key, now);
    const side = reason.startsWith('peer_') ? 'peer' : 'client';
    const text: Record<string, string> = {
      wrong_cluster: `wrong cluster (its cluster id is not "${this.opts.config.clusterId}")`,
      missing_tag: `missing HMAC (this node has a ${side} key; the sender has none)`,
      bad_tag: `bad HMAC (the sender's ${side} key differs)`,
      bad_version: 'wire version mismatch',
      wrong_source: 'unknown sender (not the configured address of that sid)',
    };
    this.log(
      `sid ${this.opts.sid}: dropping ${side} datagrams from ${from}: ${text[why] ?? why} (${this.counters.dropped[reason]} so far; logged at most every ${DROP_LOG_EVERY_MS / 1000} s)`,
      'WARN',
    );
  }

  private onTick(): void {
    if (this.stopped) return;
    this.clock++;
    this.replica.tick();
    this.learnAddresses();
    this.checkRemoved();
    if (this.stopped) return;
    if (this.clock % EXPIRE_WAITERS_EVERY_TICKS === 0) {
      this.expireWaiters();
      this.backups.sweep(Date.now());
    }
    this.scheduleFlush();
  }

  private onPeer(buf: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.stopped) return;
    this.counters.peerIn++;
    const opened = open(buf, Kind.Peer, this.cluster, this.peerKeys);
    if ('error' in opened)
      return this.drop(
        `peer_${opened.error}`,
        `${rinfo.address}:${rinfo.port}`,
        `${rinfo.address}:${rinfo.port}`,
      );
    const d = decodePeerBody(opened.body);
    if ('error' in d) return this.drop(`peer_${d.error}`, `${rinfo.address}:${rinfo.port}`);
    // The claimed sender must be the configured owner of the source address.
    if (this.byAddr.get(`${rinfo.address}:${rinfo.port}`) !== d.from || d.from === this.opts.sid)
      return this.drop(
        'peer_wrong_source',
        `${d.from} from ${rinfo.address}:${rinfo.port}`,
        `${rinfo.address}:${rinfo.port} (claims sid ${d.from})`,
      );
    debugPeer('%d <- %d %s', this.opts.sid, d.from, d.msg.t);
    this.replica.step(d.from, d.msg);
    this.scheduleFlush();
  }

  /**
   * A client datagram that did not open (dropped): tell a client with the wrong
   * key or cluster id why, in no more bytes than it sent (the auth reply carries
   * its own 32-byte tag: 67 bytes in all). The wrong-cluster reply is sealed with
   * the sender's cluster tag, so that its client can open it.
   */
  private refuseUnopened(buf: Buffer, rinfo: dgram.RemoteInfo, error: string): void {
    // Client ports are ephemeral: one log line per source address.
    this.drop(`client_${error}`, `${rinfo.address}:${rinfo.port}`, rinfo.address);
    const out =
      error === 'missing_tag' || error === 'bad_tag'
        ? (this.authReply ??= seal(
            Kind.ClientReply,
            this.cluster,
            encodeReply({ t: 'error', cid: 0, seq: 0, code: 'auth', message: 'unauthenticated' }),
            this.clientKeys,
          ))
        : error === 'wrong_cluster'
          ? seal(
              Kind.ClientReply,
              buf.readUInt32LE(4),
              encodeReply({ t: 'error', cid: 0, seq: 0, code: 'wrong_cluster', message: '' }),
              this.clientKeys,
            )
          : null;
    if (out && buf.length >= out.length) {
      this.counters.clientOut++;
      this.clientSock.send(out, rinfo.port, rinfo.address);
    }
  }

  /** What a status request is answered: this node's status and counters, as scalars. */
  private statusRow(): Record<string, string | number | boolean | null> {
    const s = this.status();
    const digest = this.sm.digest();
    const cfg = this.replica.configuration;
    return {
      sid: s.sid,
      role: s.role,
      voter: s.voter,
      ballot: s.ballot,
      leader: s.leader,
      chosen: s.chosen,
      applied: s.applied,
      base: s.base,
      // The newest configuration applied: its members ("0 1 2 +3", a learner
      // after a plus), the slot its change was applied at (0: bootstrap) and the
      // first slot it governs; member says what this node is in it.
      configuration: describeMembers(cfg.members),
      configurationSlot: cfg.slot,
      // What paxosd --join needs: the bootstrap configuration (config files'
      // non-spare servers) and every address this node knows ("sid=host:peer:client").
      bootstrap: describeMembers(bootstrapMembers(this.opts.config)),
      configServers: this.opts.config.servers
        .filter((s) => !s.fromLog)
        .map((s) => s.sid)
        .join(' '),
      servers: [...this.addrOf.values()]
        .sort((a, b) => a.sid - b.sid)
        .map((a) => `${a.sid}=${a.host}:${a.peerPort}:${a.clientPort}`)
        .join(' '),
      configurationFrom: this.replica.governsFrom(cfg),
      member: cfg.members.find((m) => m.sid === s.sid)?.voter
        ? 'voter'
        : cfg.members.some((m) => m.sid === s.sid)
          ? 'learner'
          : 'none',
      dataBytes: s.dataBytes,
      // Group commit: records made durable per fdatasync = recordsSynced / syncs.
      syncs: this.counters.syncs,
      recordsSynced: this.counters.recordsSynced,
      walSyncedSegment: this.walSynced?.segment ?? null,
      walSyncedOffset: this.walSynced?.offset ?? null,
      sessionsMax: s.sessionsMax,
      valueBytesMax: s.valueBytesMax,
      limitsMismatch: s.limitsMismatch,
      drops: s.drops,
      clientHeldBack: this.counters.clientHeldBack,
      tokensIssued: this.counters.tokensIssued,
      tokensRefused: this.counters.tokensRefused,
      diverged: s.diverged,
      divergedPeers: s.divergedPeers,
      // The rolling state hash after slot hashSlot (the last applied; null: unknown).
      hashSlot: digest?.slot ?? null,
      hash: digest ? hex(digest.hash) : null,
      // The same list under its first name (it lists any peer, not only
      // followers): kept so that `status --json` consumers keep working.
      followersDiverged: s.divergedPeers,
    };
  }

  private onClient(buf: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.stopped) return;
    this.counters.clientIn++;
    if (!this.admit(rinfo))
      return this.drop('client_rate_limited', `${rinfo.address}:${rinfo.port}`);
    const opened = open(buf, Kind.ClientRequest, this.cluster, this.clientKeys);
    if ('error' in opened) return this.refuseUnopened(buf, rinfo, opened.error);
    const req = decodeRequest(opened.body);
    if ('error' in req) return this.drop(`client_${req.error}`, `${rinfo.address}:${rinfo.port}`);
    if (req.t === 'transfer') return this.onTransfer(req, buf.length, rinfo);
    // An authenticated request, or one with a valid token, comes from an address
    // that receives our datagrams; any other may carry a forged source (the
    // victim of an amplification attack), so its answers are capped.
    let validated = this.clientKeys.enabled;
    if (!validated && req.token) {
      validated = this.tokens.check(req.token, rinfo.address, rinfo.port);
      if (!validated) this.counters.tokensRefused++;
    }
    const share = req.t === 'ops' ? req.ops.length : 1;
    const to: ReplyTo = {
      address: rinfo.address,
      port: rinfo.port,
      allowanceBytes: validated
        ? Infinity
        : Math.floor((AMPLIFICATION_FACTOR * buf.length) / share),
    };
    if (req.t === 'status')
      return this.reply(to, { t: 'status', nonce: req.nonce, status: this.statusRow() });
    // Fail-stop: a node whose state hash differs from its leader's (or, as
    // leader, from a majority's) answers no client: better unavailable than wrong.
    if (this.replica.stateCheck.self)
      return this.drop('client_diverged', `${rinfo.address}:${rinfo.port}`);
    if (req.t === 'snapshot' || req.t === 'chunk') {
      // A snapshot save pins memory and sends large chunks: only to an address
      // that proved it receives our datagrams (QUIC's Retry): a forged source
      // gets the small validate reply and pins nothing.
      if (!validated) return this.holdBack(to, [], req.nonce);
      const from = `${rinfo.address}:${rinfo.port}`;
      if (req.t === 'snapshot') this.backups.begin(to, from, req.nonce);
      else this.backups.chunk(to, req.nonce, req.id, req.offset);
      return;
    }
    if (req.t === 'ops') {
      // A batch costs the sender one token per operation.
      if (!this.charge(rinfo, req.ops.length - 1))
        return this.drop('client_rate_limited', `${rinfo.address}:${rinfo.port}`);
      for (const o of req.ops) this.onOp(to, o.cid, o.seq, o.op);
      return;
    }
    this.onOp(to, req.cid, req.seq, req.op);
  }

  /**
   * transfer-leader (an operator's request, authenticated like a put): hand
   * leadership to `req.to`. Every request datagram gets one answer at once, never
   * larger than it (padded for that): in_progress while the hand-off runs, then
   * how it ended. The client polls the same node until it hears the end; it must
   * not wander to the next node on silence, where the new leader would answer
   * "leads already" and the hand-off's report would be lost (CI flake at
   * 9d4a913: the hand-off outlasted the 20 ms retry). One answer per datagram,
   * each no larger: a forged source draws no more than it sent.
   */
  private onTransfer(
    req: Extract<ClientRequest, { t: 'transfer' }>,
    requestBytes: number,
    rinfo: dgram.RemoteInfo,
  ): void {
    const from = `${rinfo.address}:${rinfo.port}`;
    // Fail-stop, as for every other client request (see onClient).
    if (this.replica.stateCheck.self) return this.drop('client_diverged', from);
    const answer = (code: TransferCode, message: string): void => {
      if (this.stopped) return;
      const r = {
        t: 'transfer',
        nonce: req.nonce,
        code,
        leader: this.replica.leader ?? -1,
      } as const;
      // Shorten the message if need be; the code alone always fits a padded request.
      let out = seal(
        Kind.ClientReply,
        this.cluster,
        encodeReply({ ...r, message }),
        this.clientKeys,
      );
      if (out.length > requestBytes) {
        const cut = message.slice(0, Math.max(0, message.length - (out.length - requestBytes)));
        out = seal(
          Kind.ClientReply,
          this.cluster,
          encodeReply({ ...r, message: cut }),
          this.clientKeys,
        );
      }
      if (out.length > requestBytes) return this.drop('client_amplification', from);
      this.counters.clientOut++;
      this.clientSock.send(out, rinfo.port, rinfo.address);
    };
    // The three answers below need no token: each is one answer, no larger than
    // the request, and starts nothing.
    // A request that ended is answered from its own result (checked before the
    // role: after a hand-off this node follows, and the poll must still hear it);
    // a replay of it within the token's life is answered the same: one hand-off
    // per request.
    const done = this.transferResult(req.nonce);
    if (done) return answer(done.code, done.message);
    const running = this.transferRunning;
    if (running)
      return answer(
        'in_progress',
        running.nonce === req.nonce
          ? `handing leadership to sid ${running.to}`
          : `a hand-off to sid ${running.to} is running`,
      );
    if (this.replica.role !== 'leader')
      return answer('not_leader', `sid ${this.opts.sid} is not the leader`);
    // Only a datagram with a valid token starts a hand-off, client key or not:
    // the key says who asks, the token that the datagram comes from the address
    // that asks now, within minutes (QUIC's Retry), so a recording replayed later
    // or from another address moves nothing. Without one: the validate reply
    // (request 0:nonce in the client library), smaller than the request.
    if (!req.token || !this.tokens.check(req.token, rinfo.address, rinfo.port)) {
      if (req.token) this.counters.tokensRefused++;
      const to = { address: rinfo.address, port: rinfo.port, allowanceBytes: requestBytes };
      return this.holdBack(to, [{ cid: 0, seq: req.nonce }], null);
    }
    this.transferRunning = { nonce: req.nonce, to: req.to };
    void this.handOff(req.to, false).then((h) => {
      this.transferRunning = null;
      this.keepTransferResult(req.nonce, { code: h.code, message: h.message, at: Date.now() });
      this.log(`sid ${this.opts.sid}: transfer-leader from ${from}: ${h.message}`);
    });
    // Even a refusal is recorded a microtask later (handOff is async): the next poll hears it.
    answer('in_progress', `handing leadership to sid ${req.to}`);
  }

  /** The kept result of transfer-leader request `nonce`, if it ended within TRANSFER_RESULT_KEEP_MS. */
  private transferResult(nonce: number): { code: TransferCode; message: string } | null {
    const done = this.transferDone.get(nonce);
    return done && Date.now() - done.at <= TRANSFER_RESULT_KEEP_MS ? done : null;
  }

  /** Keep a transfer-leader result: expired ones go, then the oldest while full. */
  private keepTransferResult(
    nonce: number,
    result: { code: TransferCode; message: string; at: number },
  ): void {
    for (const [n, r] of this.transferDone) {
      if (
        result.at - r.at <= TRANSFER_RESULT_KEEP_MS &&
        this.transferDone.size < TRANSFER_RESULTS_MAX
      )
        break;
      this.transferDone.delete(n);
    }
    this.transferDone.delete(nonce);
    this.transferDone.set(nonce, result);
  }

  private onOp(to: ReplyTo, cid: number, seq: number, op: Buffer): void {
    this.metrics.requestIn(`${cid}:${seq}`, Date.now());
    const parsed = parseCommand(op);
    if (!isOpError(parsed) && parsed.kind === 'member') {
      const answered = this.onMemberOp(to, cid, seq, parsed);
      if (answered) return;
    }
    const r = this.front.request(to, cid, seq, op, this.clock);
    debugClient('%d: %d:%d -> %s', this.opts.sid, cid, seq, r?.t ?? 'queued');
    if (r) this.reply(to, r);
    else this.scheduleFlush();
  }

  /**
   * A membership change, before the front submits it. Like transfer-leader, it
   * comes only from an authenticated client (client key set: every datagram is)
   * or with a valid address token (QUIC's Retry: the validate reply, which the
   * client library answers at once), never from a forged source. A leader asked
   * to remove itself hands leadership to the best caught-up voter first and
   * answers busy meanwhile: the client retries, the new leader proposes the
   * change, and the write pause is a hand-off's round trip instead of an
   * election timeout (the core steps a removed leader down at once). If the
   * hand-off fails, the change is proposed here (the core steps down). True if
   * answered here.
   */
  private onMemberOp(to: ReplyTo, cid: number, seq: number, op: MemberOp): boolean {
    if (to.allowanceBytes !== Infinity) {
      this.holdBack(to, [{ cid, seq }], null);
      return true;
    }
    const r = this.replica;
    if (op.action !== 'remove' || op.sid !== this.opts.sid || r.role !== 'leader') return false;
    const sr = this.selfRemoval;
    const { tickMs, electionTicks } = this.opts.config.timing;
    // A failed hand-off is not tried again for an election timeout: propose it here.
    if (sr?.state === 'failed' && Date.now() - sr.at <= electionTicks * tickMs) return false;
    if (sr?.state !== 'running') {
      this.selfRemoval = { state: 'running', at: Date.now() };
      void this.handOff(undefined, false).then((h) => {
        this.log(`sid ${this.opts.sid}: hand-off before removing this node: ${h.message}`);
        this.selfRemoval = h.ok ? null : { state: 'failed', at: Date.now() };
      });
    }
    this.reply(to, {
      t: 'error',
      cid,
      seq,
      code: 'busy',
      message: 'handing leadership over before removing this node',
    });
    return true;
  }

  /**
   * Per-source token bucket on the client port: a flood costs the flooder its
   * own requests, not everyone else's. The table is bounded too.
   */
  private admit(rinfo: dgram.RemoteInfo): boolean {
    return this.charge(rinfo, 1);
  }

  private charge(rinfo: dgram.RemoteInfo, cost: number): boolean {
    if (cost <= 0) return true;
    const rate = this.opts.config.limits.clientRatePerSource;
    const key = `${rinfo.address}:${rinfo.port}`;
    const now = Date.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= RATE_LIMITED_SOURCES_MAX) {
        for (const [k, v] of this.buckets) if (now - v.at > BUCKET_IDLE_MS) this.buckets.delete(k);
        if (this.buckets.size >= RATE_LIMITED_SOURCES_MAX) this.buckets.clear();
      }
      b = { tokens: rate, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) * rate) / 1000);
    b.at = now;
    if (b.tokens < cost) return false;
    b.tokens -= cost;
    return true;
  }

  /** Queue a result; all results of one turn to one client socket share datagrams. */
  private queueResult(to: ReplyTo, cid: number, seq: number, result: CmdResult): void {
    this.metrics.replyOut(`${cid}:${seq}`, outcomeOf(result), Date.now());
    const key = `${to.address}:${to.port}`;
    let box = this.replyBox.get(key);
    if (!box) this.replyBox.set(key, (box = { address: to.address, port: to.port, items: [] }));
    box.items.push({ cid, seq, result, allowanceBytes: to.allowanceBytes });
  }

  /** Bytes of the datagram that carries `body` (or a body of that many bytes). */
  private sealedBytes(body: Uint8Array | number): number {
    const n = typeof body === 'number' ? body : body.length;
    return HEADER_BYTES + (this.clientKeys.enabled ? TAG_BYTES : 0) + n;
  }

  /** True if the result's own reply datagram fits its allowance. */
  private fits(item: BoxedResult): boolean {
    if (item.allowanceBytes === Infinity) return true;
    // Encode only when the bounds cannot decide (a string takes at least its length).
    if (this.sealedBytes(resultReplyBytesMax(item.result)) <= item.allowanceBytes) return true;
    if (item.result.value && item.result.value.length >= item.allowanceBytes) return false;
    const body = encodeReply({ t: 'result', cid: item.cid, seq: item.seq, result: item.result });
    return this.sealedBytes(body) <= item.allowanceBytes;
  }

  private flushReplies(): void {
    for (const box of this.replyBox.values()) {
      const send: BoxedResult[] = [];
      const held: BoxedResult[] = [];
      for (const item of box.items) (this.fits(item) ? send : held).push(item);
      let i = 0;
      while (i < send.length) {
        const batch: BoxedResult[] = [];
        let bytes = 0;
        let allowanceBytes = 0;
        while (i < send.length) {
          const size = resultBytes(send[i].result);
          if (batch.length > 0 && bytes + size > REPLY_BATCH_BYTES) break;
          allowanceBytes += send[i].allowanceBytes;
          batch.push(send[i++]);
          bytes += size;
        }
        // Each result fits its own allowance alone, and a batch takes fewer bytes
        // than its results one per datagram, so the batch fits their sum.
        const results = batch.map(({ cid, seq, result }) => ({ cid, seq, result }));
        this.reply(
          { address: box.address, port: box.port, allowanceBytes },
          results.length === 1 ? { t: 'result', ...results[0] } : { t: 'results', results },
        );
      }
      for (let at = 0; at < held.length; at += BATCH_OPS_MAX) {
        const chunk = held.slice(at, at + BATCH_OPS_MAX);
        const allowanceBytes = chunk.reduce((n, x) => n + x.allowanceBytes, 0);
        this.holdBack({ address: box.address, port: box.port, allowanceBytes }, chunk, null);
      }
    }
    this.replyBox.clear();
  }

  /**
   * The one way out of the client port (but the fixed-size auth refusal): an
   * answer larger than its allowance is held back, and the client gets a token
   * instead, with which it asks again (QUIC's Retry, RFC 9000 s.8.1.2).
   */
  private reply(to: ReplyTo, r: ClientReply): void {
    if (this.replica.stateCheck.self && r.t !== 'status') return; // fail-stop (see onClient)
    if (r.t === 'result' || r.t === 'redirect' || r.t === 'error')
      this.metrics.replyOut(
        `${r.cid}:${r.seq}`,
        r.t === 'result' ? outcomeOf(r.result) : r.t === 'error' ? r.code : r.t,
        Date.now(),
      );
    const out = seal(Kind.ClientReply, this.cluster, encodeReply(r), this.clientKeys);
    if (out.length <= to.allowanceBytes) {
      this.counters.clientOut++;
      this.clientSock.send(out, to.port, to.address);
      return;
    }
    switch (r.t) {
      case 'status':
      case 'snapinfo': // (a snapshot save is served to validated addresses only)
      case 'snapchunk':
      case 'snaperr':
        return this.holdBack(to, [], r.nonce);
      case 'results':
        return this.holdBack(to, r.results, null);
      case 'validate':
      case 'transfer': // sent by onTransfer, never larger than its request
        return this.drop('client_amplification', `${to.address}:${to.port}`);
      default:
        return this.holdBack(to, [r], null);
    }
  }

  /** Answer held-back requests with a validate reply (a token), if even that fits. */
  private holdBack(to: ReplyTo, ops: RequestRef[], nonce: number | null): void {
    this.counters.clientHeldBack += Math.max(1, ops.length);
    const r: ClientReply = {
      t: 'validate',
      sid: this.opts.sid,
      token: this.tokens.issue(to.address, to.port),
      ops: ops.map(({ cid, seq }) => ({ cid, seq })),
      nonce,
    };
    const out = seal(Kind.ClientReply, this.cluster, encodeReply(r), this.clientKeys);
    // Only a request shaped to be tiny gets here (a real client's fits): silence.
    if (out.length > to.allowanceBytes)
      return this.drop('client_amplification', `${to.address}:${to.port}`);
    this.counters.tokensIssued++;
    this.counters.clientOut++;
    this.clientSock.send(out, to.port, to.address);
  }

  /** Waiters whose request was lost with a leader change: the client retries anyway. */
  private expireWaiters(): void {
    this.front.expire(this.clock - Math.ceil(WAITER_EXPIRY_MS / this.opts.config.timing.tickMs));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.stopped) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.stopped) return;
    this.counters.flushes++;
    this.flushTurn();
    this.flushReplies();
  }

  private flushTurn(): void {
    // Messages to ourselves go back into the replica (on release); loop until quiet.
    for (let round = 0; round < 64 && !this.stopped; round++) {
      const rd = this.replica.ready();
      if (
        rd.persist.length === 0 &&
        rd.messages.length === 0 &&
        rd.applied.length === 0 &&
        rd.events.length === 0 &&
        rd.reads.length === 0 &&
        !rd.snapshot
      )
        return;
      this.handle(rd);
    }
    this.scheduleFlush();
  }

  /**
   * Pipelined group commit. Records are written at once; everything that may
   * depend on them (messages, client answers) waits in FIFO order until an
   * fdatasync that covers them completes. While one sync runs on the thread
   * pool, the loop keeps receiving, and the next sync covers all that piled up.
   * Records whose loss is harmless (chosen markers, learned values: peers can
   * tell us again) ride along without asking for a sync of their own.
   */
  private handle(rd: Ready): void {
    if (this.fatal) return;
    try {
      if (rd.persist.length > 0) {
        this.store.write(rd.persist);
        this.unsyncedRecords += rd.persist.length;
        // Every record gets a generation: a sync message waits for all records
        // handed out before it (Outbound.sync), chosen markers and learned values
        // included. Only mustSync records ask for a sync on their own.
        this.writeGen++;
        if (rd.mustSync) this.mustSyncGen = this.writeGen;
      }
      if (rd.snapshot) {
        const s = rd.snapshot;
        // Rotation syncs the new segment, whose checkpoint holds all live state:
        // every record written so far is durable after it.
        this.store.saveSnapshot(s.slot, s.data, s.checkpoint);
        this.syncedGen = this.writeGen;
        this.walSynced = this.walEnd();
        this.unsyncedRecords = 0;
        if (s.installed) this.orderLog.snapshotInstalled(s.slot);
        this.log(
          `sid ${this.opts.sid}: snapshot at slot ${s.slot} (${s.data.length} bytes) ${s.installed ? 'installed from a peer' : 'taken'}`,
        );
      }
    } catch (e) {
      this.die(e as Error);
      return;
    }
    // The replica's driver contract (Outbound.sync): messages that vouch for this
    // node's durable state wait for the sync; proposals, commits, catch-up,
    // heartbeats and client answers (chosen means a majority already synced) go now.
    const now: Outbound[] = [];
    const gated: Outbound[] = [];
    for (const o of rd.messages) (o.sync ? gated : now).push(o);
    if (gated.length > 0) this.pipeline.push({ gen: this.writeGen, messages: gated });
    this.metrics.appliedSlots += rd.applied.length;
    this.metrics.observeRole(this.replica.role, this.replica.leader);
    if (this.emit(now, rd.applied, rd.events, rd.reads)) this.scheduleFlush();
    this.release();
    this.kickSync();
  }

  private kickSync(): void {
    const due = Math.max(this.mustSyncGen, this.pipeline.at(-1)?.gen ?? 0);
    if (this.syncing || this.fatal || this.syncedGen >= due) return;
    this.syncing = true;
    const target = this.writeGen;
    const records = this.unsyncedRecords;
    this.unsyncedRecords = 0;
    const end = this.walEnd();
    this.store.syncAsync((err) => {
      this.syncing = false;
      for (const w of this.syncWaiters.splice(0)) w();
      if (this.stopped && !this.fatal) return;
      if (err) return this.die(err);
      // A rotation meanwhile synced more than this (and the segment is gone).
      if (end && end.segment === path.basename(this.store.log.segmentFiles().at(-1) ?? ''))
        this.walSynced = end;
      this.counters.syncs++;
      this.counters.recordsSynced += records;
      const b = Math.floor(Math.log2(Math.max(1, records)));
      this.counters.groupCommit[b] = (this.counters.groupCommit[b] ?? 0) + 1;
      debugDisk('%d: synced %d records', this.opts.sid, records);
      if (target > this.syncedGen) this.syncedGen = target;
      this.release();
      this.kickSync();
      this.scheduleFlush();
    });
  }

  /** Current end of the WAL (what a sync started now covers); null with syncs off. */
  private walEnd(): { segment: string; offset: number } | null {
    if (!this.store.log.sync) return null;
    const files = this.store.log.segmentFiles();
    const file = files[files.length - 1];
    try {
      return { segment: path.basename(file), offset: fs.statSync(file).size };
    } catch {
      return null; // only a status field: never a reason to stop
    }
  }

  /** Send, deliver and answer everything whose records are durable, in order. */
  private release(): void {
    let delivered = false;
    while (this.pipeline.length > 0 && this.pipeline[0].gen <= this.syncedGen && !this.fatal) {
      const { messages } = this.pipeline.shift()!;
      delivered = this.emit(messages, [], []) || delivered;
    }
    if (delivered) this.scheduleFlush();
  }

  /** Send -> deliver to self -> order log and client answers. True if anything came back to us. */
  private emit(
    messages: Outbound[],
    applied: AppliedEntry[],
    events: string[],
    reads: number[] = [],
  ): boolean {
    if (this.stopped) return false;
    const self: Msg[] = [];
    let lastMsg: Msg | null = null;
    let lastBuf: Buffer | null = null;
    for (const { to, msg } of messages) {
      if (to === this.opts.sid) {
        self.push(msg);
        continue;
      }
      const addr = this.addrOf.get(to);
      if (!addr) continue;
      // Broadcasts share one message object: encode (and MAC) it once.
      if (msg !== lastMsg) {
        lastMsg = msg;
        lastBuf = seal(Kind.Peer, this.cluster, encodePeerBody(this.opts.sid, msg), this.peerKeys);
      }
      this.counters.peerOut++;
      this.peerSock.send(lastBuf!, addr.peerPort, addr.host);
    }
    if (applied.length > 0) {
      const lines: string[] = [];
      for (const a of applied) this.orderLog.write(a.slot, a.lines, lines);
      try {
        this.orderLog.flush(lines);
      } catch (e) {
        this.log(`sid ${this.opts.sid}: cannot write the order log: ${(e as Error).message}`);
      }
    }
    if (applied.length > 0) this.noteLimits();
    // Answers after the order log: what a client was told is in it.
    this.front.answers(applied, reads, (to, x) => this.queueResult(to, x.cid, x.seq, x.result));
    for (const e of events) this.log(e, isDivergenceEvent(e) ? 'ERROR' : 'INFO');
    for (const m of self) this.replica.step(this.opts.sid, m);
    return self.length > 0;
  }

  /**
   * A disk failure stops the node: after a failed write or fsync nothing more is
   * sent or acknowledged (the data may not be on disk), and we never retry.
   */
  private die(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    const code = err instanceof StorageError ? err.code : 'EIO';
    this.log(
      `sid ${this.opts.sid}: FATAL storage failure (${code}): ${err.message}; stopping without acknowledging anything more`,
      'ERROR',
    );
    void this.stop();
    this.opts.onFatal?.(err);
  }
}
