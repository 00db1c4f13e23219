import { createHash, randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import createDebug from 'debug';
import type { CmdResult, MemberAddr } from './core/types';
import type { ClientConfig, ClientServerAddr } from './io/config';
import {
  encodeMember,
  encodeOp,
  encodeOutcome,
  encodeRegister,
  REGISTER_NONCE_MIN,
  type KvOp,
  type MemberOp,
  type Outcome,
  type SysOp,
} from './sm/kv';

/** An `outcome` query (asked in a session like a write; see PaxosClient.outcome). */
type OutcomeQuery = Extract<SysOp, { kind: 'outcome' }>;

/** What a session sends through the log: a key-value operation, an outcome query, a member change. */
type SessionOp = KvOp | OutcomeQuery | MemberOp;

/** What PaxosClient.members answers: the newest configuration a node applied. */
export interface MembersReport {
  /** The node that answered (the leader when one is known). */
  sid: number;
  /** Who leads, as that node knows it (null: unknown). */
  leader: number | null;
  /** Members in sid order. */
  members: { sid: number; voter: boolean }[];
  /** The slot its change was applied at (0: the bootstrap configuration). */
  slot: number;
  /** The first slot it governs. */
  from: number;
  /** Addresses the answering node knows: sid -> "host:peerPort:clientPort". */
  addresses: Map<number, string>;
}

/** "0 1 2 +3" (status field configuration) as members; null if malformed. */
export function parseMembers(text: string): { sid: number; voter: boolean }[] | null {
  const out: { sid: number; voter: boolean }[] = [];
  for (const w of text.split(' ').filter((x) => x !== '')) {
    const m = /^(\+?)(\d{1,3})$/.exec(w);
    if (!m) return null;
    out.push({ sid: Number(m[2]), voter: m[1] === '' });
  }
  return out;
}

/** Status field servers ("sid=host:peer:client ...") as sid -> "host:peer:client". */
function parseAddresses(raw: unknown): Map<number, string> {
  const out = new Map<number, string>();
  if (typeof raw !== 'string') return out;
  for (const w of raw.split(' ')) {
    const m = /^(\d{1,3})=(\S+)$/.exec(w);
    if (m) out.set(Number(m[1]), m[2]);
  }
  return out;
}

/** What PaxosClient.outcome answers about a request `cid:seq`. */
export type OutcomeReport = Outcome & { request: string };
import {
  BATCH_OPS_MAX,
  decodeReply,
  encodeRequest,
  type ClientReply,
  type ClientRequest,
  type OpRequest,
  type SnapshotReply,
  type TransferCode,
} from './wire/client';
import { OP_BYTES_MAX, SNAPSHOT_SAVE_BYTES_MAX } from './limits';
import { clusterTag, Kind, Keyring, NO_KEYS, open, seal } from './wire/envelope';

const debug = createDebug('paxos:clientlib');

/** Why an operation did not get a definite answer. */
export class PaxosClientError extends Error {
  constructor(
    /**
     * 'unknown': a write may or may not have taken effect (no answer in time, or
     * an answer such as session_expired that cannot prove it never ran); look it
     * up by `request` (cid:seq) in the order logs. Also used, with notSent, when
     * no session could be opened in time (then the write was never sent).
     * 'closed': the client was closed.
     */
    readonly code: 'unknown' | 'closed',
    message: string,
    /** The request as `cid:seq`, the name it has in the order logs (writes). */
    readonly request?: string,
    /** True when the operation itself was never sent (it certainly did not run). */
    readonly notSent = false,
    /** The servers this operation was sent to, and what each said (see ServerHeard). */
    readonly servers: ServerHeard[] = [],
  ) {
    super(message);
  }
}

/**
 * One server an operation that got no answer was sent to: how often, and what
 * it said meanwhile. `said` holds answers that did not end the operation
 * ('redirect', 'busy', 'validate', 'not_leader', 'in_progress') and refusals of
 * datagrams it could not read ('wrong_cluster'; 'auth': it holds another client
 * key, or one where this client has none). Empty: it said nothing.
 */
export interface ServerHeard {
  sid: number;
  address: string;
  sent: number;
  said: string[];
}

/** Answers that are not an answer to the request itself: the server refused to read it. */
const REFUSALS: ReadonlySet<string> = new Set(['wrong_cluster', 'auth']);

/**
 * `0/3 answered, 2 said wrong_cluster, 1 silent (sid 0 127.0.0.1:7100 x3: wrong_cluster; ...)`:
 * which servers an operation went to and what each said.
 */
export function describeHeard(heard: ServerHeard[], configured: number): string {
  const answered = heard.filter((h) => h.said.some((w) => !REFUSALS.has(w))).length;
  const refusedBy = new Map<string, number>();
  for (const h of heard)
    for (const w of h.said) if (REFUSALS.has(w)) refusedBy.set(w, (refusedBy.get(w) ?? 0) + 1);
  const silent = heard.filter((h) => h.said.length === 0).length;
  const parts = [`${answered}/${heard.length} answered`];
  for (const [w, n] of refusedBy) parts.push(`${n} said ${w}`);
  if (silent > 0) parts.push(`${silent} silent`);
  if (heard.length < configured) parts.push(`${configured - heard.length} not tried`);
  const each = heard
    .map((h) => `sid ${h.sid} ${h.address} x${h.sent}: ${h.said.join(', ') || 'no answer'}`)
    .join('; ');
  return `${parts.join(', ')} (${each})`;
}

export interface OpResult extends CmdResult {
  /** The request as `cid:seq` (the name a write has in the order logs). */
  request: string;
  /** Server that answered. */
  sid: number;
  /** Transmissions it took (1 = first try). */
  attempts: number;
  redirects: number;
  /** transfer-leader only: how it ended, and who leads as far as the answering node knows (-1: unknown). */
  transfer?: { code: TransferCode; leader: number; message: string };
}

/** What PaxosClient.transferLeader answers. */
export interface TransferReport {
  /** 'ok': `leader` leads now (it may have led already). */
  code: TransferCode;
  ok: boolean;
  /** Who leads, as the answering node knows it (-1: unknown). */
  leader: number;
  message: string;
  /** The node that answered. */
  sid: number;
  attempts: number;
  redirects: number;
}

/** What PaxosClient.snapshotSave brings back: a consistent snapshot of the cluster's state. */
export interface SnapshotSaveResult {
  /** The state machine's snapshot (lib/sm/kv.ts format). */
  data: Buffer;
  /** It holds every slot up to this one (at or above a read index taken when the save began). */
  slot: number;
  /** The rolling state hash after `slot` (null: the serving node's chain is unknown). */
  hash: Buffer | null;
  /** The node that served it (the leader when the save began). */
  sid: number;
  /** Request datagrams sent (begin, chunks, retransmissions). */
  requests: number;
}

/** Options of PaxosClient.snapshotSave. */
export interface SnapshotSaveOptions {
  /** Refuse (code 'too_large') a snapshot larger than this. Default SNAPSHOT_SAVE_BYTES_MAX. */
  maxBytes?: number;
}

/** Why a snapshot save failed. */
export class SnapshotSaveError extends Error {
  constructor(
    /**
     * no_answer: no server answered in time (`servers` says what each said);
     * too_large: above maxBytes; expired: the serving node dropped the save
     * (idle, or it restarted); corrupt: the bytes received do not match the
     * digest the node announced; closed: the client was closed.
     */
    readonly code: 'no_answer' | 'too_large' | 'expired' | 'corrupt' | 'closed',
    message: string,
    readonly servers: ServerHeard[] = [],
  ) {
    super(message);
  }
}

export interface ClientOptions {
  servers: ClientServerAddr[];
  /** SID to try first (the leader hint). */
  leader?: number;
  /** Give up (outcome unknown) after this long. */
  timeoutMs: number;
  /** First retransmit after this long; doubles up to 4x. */
  retryMs: number;
  clusterId?: string;
  keys?: Keyring;
  /** How datagrams go out and come in. Default: a UDP socket (node:dgram). */
  transport?: ClientTransport;
  /** Time and timers. Default: Date.now and the event loop's timers. */
  timers?: ClientTimers;
  /** 32 random bits (nonces). Default: node:crypto. The simulator passes its seeded PRNG. */
  randomU32?: () => number;
}

/** The client's datagram service (a UDP socket, or the simulator's network). */
export interface ClientTransport {
  send(datagram: Buffer, server: ClientServerAddr): void;
  /** Every datagram received goes to `onDatagram`, with its source when known. */
  listen(onDatagram: (datagram: Buffer, from?: { address: string; port: number }) => void): void;
  close(): void;
}

/** The client's clock: milliseconds, timers, and "after this turn". */
export interface ClientTimers {
  now(): number;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Run `fn` once the current turn is over (requests of one turn share a datagram). */
  defer(fn: () => void): void;
}

/** A UDP socket on an ephemeral port that does not keep the process alive. */
export function udpTransport(): ClientTransport {
  const sock = dgram.createSocket({
    type: 'udp4',
    recvBufferSize: 8 << 20,
    sendBufferSize: 8 << 20,
  });
  sock.on('error', (e) => debug('socket error %s', e.message));
  sock.bind(0, '0.0.0.0');
  sock.unref();
  return {
    send: (buf, s) =>
      sock.send(buf, s.clientPort, s.host, (err) => {
        if (err) debug('send to %s:%d failed: %s', s.host, s.clientPort, err.message);
      }),
    listen: (fn) => sock.on('message', (buf, rinfo) => fn(buf, rinfo)),
    close: () => sock.close(),
  };
}

/** The event loop's clock and timers. */
export const realTimers: ClientTimers = {
  now: () => Date.now(),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  defer: (fn) => setImmediate(fn),
};

function cryptoU32(): number {
  return randomBytes(4).readUInt32LE(0);
}

/** How an operation ends: an error (outcome unknown, closed) or a result. */
export type Done = (err: Error | null, r?: OpResult) => void;

/**
 * What a request is: a write runs at most once and its outcome may be unknown;
 * a read and a session registration change no data, so they may run again.
 */
type RequestKind = 'write' | 'read' | 'register' | 'transfer';

interface Pending {
  /** Writes use the session's (cid, seq); reads the client's read stream; registers a nonce. */
  cid: number;
  seq: number;
  op: Uint8Array;
  kind: RequestKind;
  /** Called when the cluster answers session_expired. */
  onExpired?: () => void;
  target: number; // index into servers
  sentAt: number;
  deadline: number;
  backoffMs: number;
  /** The leader answered busy: retry it after the base interval (it is alive, only full). */
  busy?: boolean;
  attempts: number;
  redirects: number;
  /** Validate replies answered at once (bounded: a token that keeps failing waits for the timer). */
  validations: number;
  /** When it was first sent (client clock): refusals since then count as its answers. */
  startedAt: number;
  /** Sends by server index. */
  sentTo: Map<number, number>;
  /** Answers that did not end it, by server index (see ServerHeard). */
  said: Map<number, Set<string>>;
  /** transfer only: the sid asked to lead. */
  transferTo?: number;
  done: Done;
}

/**
 * A logical client: its own (session id, sequence) stream, one operation at a
 * time, so the cluster's exactly-once table can answer a retry with the first
 * answer. The session id is handed out by the cluster (a `register` through the
 * log) before the first write, and again after the cluster says the session
 * expired. Many sessions share one PaxosClient (one socket).
 */
export class Session {
  /** The session id the cluster gave us, or null before registering (or after it expired). */
  cid: number | null = null;
  seq = 0;
  /** Operations waiting for the one in flight. */
  private readonly queue: { op: SessionOp; done: Done }[] = [];
  private busy = false;

  constructor(private readonly client: PaxosClient) {}

  put(key: string, value: string): Promise<OpResult> {
    return this.run({ kind: 'put', key, value });
  }
  get(key: string): Promise<OpResult> {
    return this.run({ kind: 'get', key });
  }
  del(key: string): Promise<OpResult> {
    return this.run({ kind: 'del', key });
  }
  cas(key: string, expected: string | null, value: string): Promise<OpResult> {
    return this.run({ kind: 'cas', key, expected, value });
  }

  run(op: KvOp): Promise<OpResult> {
    return new Promise((resolve, reject) =>
      this.submit(op, (err, r) => (err ? reject(err) : resolve(r!))),
    );
  }

  /**
   * Operations of one session run strictly one after another; `done` is called
   * once, synchronously from the event that ends the operation (the simulator
   * drives the client this way, without promises).
   */
  submit(op: SessionOp, done: Done): void {
    this.queue.push({ op, done });
    if (!this.busy) this.next();
  }

  private next(): void {
    const item = this.queue.shift();
    if (!item) return;
    this.busy = true;
    this.client.send(this, item.op, (err, r) => {
      this.busy = false;
      item.done(err, r);
      if (!this.busy) this.next();
    });
  }
}

/**
 * The client library: UDP requests matched by (cid, seq), retransmitted with
 * backoff, redirected to the leader a follower names, and failing over through
 * the configured server list until the deadline. A timed-out write is reported
 * as PaxosClientError('unknown'), never as failed.
 */
export class PaxosClient {
  private readonly transport: ClientTransport;
  private readonly timers: ClientTimers;
  private readonly randomU32: () => number;
  private readonly servers: ClientServerAddr[];
  private readonly indexOf = new Map<number, number>();
  private readonly pending = new Map<string, Pending>();
  private readonly statusWaiters = new Map<number, (s: Record<string, unknown>) => void>();
  /** Re-send a status or snapshot request held back by a node's anti-amplification limit, by nonce. */
  private readonly statusResend = new Map<number, () => void>();
  /** Snapshot saves in progress, by nonce: where their replies go (with the server index). */
  private readonly snapshotWaiters = new Map<number, (r: SnapshotReply, idx?: number) => void>();
  /**
   * The address token each server (by index) gave us, sent with every request
   * to it until it answers with a new one: it lifts the server's limit on how
   * much it may send an address that never proved it receives (RFC 9000 s.8).
   */
  private readonly tokens: (Buffer | undefined)[] = [];
  private preferred = 0;
  private readonly outbox = new Map<number, OpRequest[]>();
  private outboxScheduled = false;
  private readonly readCid: number;
  private readSeq = 0;
  private timer: unknown = null;
  private closed = false;
  private readonly cluster: number;
  private readonly keys: Keyring;
  private readonly defaultSession: Session;
  readonly stats = { sent: 0, retries: 0, redirects: 0, replies: 0, dropped: 0, validations: 0 };
  /** Envelope-level refusals the servers sent, by code ('auth', 'wrong_cluster'). */
  readonly refusals: Record<string, number> = Object.create(null) as Record<string, number>;
  /** Server index by `host:clientPort` (where a datagram came from). */
  private readonly byAddress = new Map<string, number>();
  /** By server index: refusal -> when it last said it (client clock). */
  private readonly refusedAt: Map<string, number>[] = [];

  constructor(readonly opts: ClientOptions) {
    if (opts.servers.length === 0) throw new Error('no servers configured');
    // A copy: servers a redirect names are added to it (learnServer).
    this.servers = [...opts.servers];
    opts.servers.forEach((s, i) => {
      this.indexOf.set(s.sid, i);
      this.byAddress.set(`${s.host}:${s.clientPort}`, i);
      this.refusedAt.push(new Map());
    });
    if (opts.leader !== undefined && this.indexOf.has(opts.leader))
      this.preferred = this.indexOf.get(opts.leader)!;
    this.cluster = clusterTag(opts.clusterId ?? 'local');
    this.keys = opts.keys ?? NO_KEYS;
    this.timers = opts.timers ?? realTimers;
    this.randomU32 = opts.randomU32 ?? cryptoU32;
    this.readCid = this.randomNonce();
    this.transport = opts.transport ?? udpTransport();
    this.transport.listen((buf, from) => this.onMessage(buf, from));
    this.defaultSession = new Session(this);
  }

  /** 52 random bits above REGISTER_NONCE_MIN: collisions between clients are negligible. */
  private randomNonce(): number {
    const hi = this.randomU32() & 0xfffff;
    return REGISTER_NONCE_MIN + hi * 2 ** 32 + (this.randomU32() >>> 0);
  }

  /** Try `sid` first from now on (it is believed to lead). */
  preferServer(sid: number): void {
    const idx = this.indexOf.get(sid);
    if (idx !== undefined) this.preferred = idx;
  }

  static fromConfig(cfg: ClientConfig, extra: Partial<ClientOptions> = {}): PaxosClient {
    return new PaxosClient({
      servers: cfg.servers,
      leader: cfg.leader,
      timeoutMs: cfg.timeoutMs,
      retryMs: cfg.retryMs,
      clusterId: cfg.clusterId,
      ...extra,
    });
  }

  session(): Session {
    return new Session(this);
  }

  put(key: string, value: string): Promise<OpResult> {
    return this.defaultSession.put(key, value);
  }
  get(key: string): Promise<OpResult> {
    return this.defaultSession.get(key);
  }
  del(key: string): Promise<OpResult> {
    return this.defaultSession.del(key);
  }
  cas(key: string, expected: string | null, value: string): Promise<OpResult> {
    return this.defaultSession.cas(key, expected, value);
  }

  /**
   * Was request `cid:seq` (as an OUTCOME UNKNOWN error names it) applied, and
   * what was its first answer? Asked through the log from a new session, so the
   * answer is linearizable, and final: a request found `not_applied` can no
   * longer run (the cluster refuses its late copies). `unknown` when the
   * exactly-once table no longer remembers it (it keeps each session's last
   * request only; an evicted session's are gone). Rejects with
   * PaxosClientError('unknown') if the query itself gets no answer in time.
   */
  outcome(request: string): Promise<OutcomeReport> {
    const m = /^(\d+):(\d+)$/.exec(request);
    if (!m) return Promise.reject(new Error(`not a request id (CID:SEQ): ${request}`));
    const q: OutcomeQuery = { kind: 'outcome', cid: Number(m[1]), seq: Number(m[2]) };
    return new Promise((resolve, reject) =>
      this.session().submit(q, (err, r) => {
        if (err) return reject(err);
        if (!r!.ok) return reject(new Error(`the outcome query was refused: ${r!.err}`));
        resolve({ request, ...(JSON.parse(r!.value!) as Outcome) });
      }),
    );
  }

  /**
   * A membership change through the log (paxos-client member add|promote|remove):
   * `add` makes `sid` a learner (`addr`: where it listens, carried by the log to
   * every node; needed for a sid the config files do not list), `promote` a learner a voter, `remove` drops a
   * member. Resolves with the state machine's answer: ok with "configuration of
   * slot J governs from slot J+alpha", or err "member: WHY" (not in the servers
   * list, a member already, not a member, a voter already, the last voter, one
   * change at a time). Sent in a new session like a write (exactly once); the
   * servers take it only from an authenticated or validated client. Rejects
   * with PaxosClientError('unknown') if no answer came in time (the change may
   * or may not be in the log: `member list` tells).
   */
  member(action: MemberOp['action'], sid: number, addr?: MemberAddr): Promise<OpResult> {
    if (!Number.isSafeInteger(sid) || sid < 0)
      return Promise.reject(new Error(`not a sid: ${sid}`));
    const op: MemberOp = { kind: 'member', action, sid };
    if (addr) op.addr = addr;
    return new Promise((resolve, reject) =>
      this.session().submit(op, (err, r) => (err ? reject(err) : resolve(r!))),
    );
  }

  /**
   * The configuration as the leader applied it (the first node that answers
   * status names the leader; the leader is asked then), or null if no node
   * answered within `timeoutMs` each. A follower's may be a few slots behind.
   */
  async members(timeoutMs = 500): Promise<MembersReport | null> {
    const order = [...this.servers.keys()].map(
      (k) => this.servers[(k + this.preferred) % this.servers.length].sid,
    );
    for (const sid of order) {
      let st = await this.status(sid, timeoutMs);
      if (!st) continue;
      let from = sid;
      const leader = typeof st.leader === 'number' ? st.leader : null;
      if (leader !== null && leader !== sid) {
        const ls = await this.status(leader, timeoutMs);
        if (ls) {
          st = ls;
          from = leader;
        }
      }
      const members = parseMembers(String(st.configuration ?? ''));
      if (!members || typeof st.configurationSlot !== 'number') continue;
      return {
        sid: from,
        leader: typeof st.leader === 'number' ? st.leader : null,
        members,
        slot: st.configurationSlot,
        from: Number(st.configurationFrom),
        addresses: parseAddresses(st.servers),
      };
    }
    return null;
  }

  /**
   * Wait until the configuration applied at `slot` is in force on every one of
   * its voters: each reports it and has applied every slot before the first one
   * it governs (`from`). Until then a campaign still needs a majority of the
   * outgoing configuration too (it governs the window's slots), so losing
   * outgoing voters could stall the cluster; after it, a majority of the new
   * configuration is enough. Resolves with the voters that are not there yet
   * (empty: in force everywhere) once in force or after `timeoutMs`.
   */
  async memberInForce(
    slot: number,
    timeoutMs: number,
  ): Promise<{ from: number; lagging: { sid: number; applied: number | null }[] }> {
    const deadline = this.timers.now() + timeoutMs;
    let from = 0;
    let lagging: { sid: number; applied: number | null }[] = [];
    let asker: PaxosClient = this;
    try {
      for (;;) {
        const m = await this.members();
        if (m && m.slot >= slot) {
          from = m.from;
          // Voters the client config does not list (added through the log) are
          // asked at the address the log gave them.
          const extra = [...m.addresses]
            .filter(([sid]) => !this.indexOf.has(sid))
            .map(([sid, a]) => ({
              sid,
              host: a.split(':')[0],
              clientPort: Number(a.split(':')[2]),
            }));
          if (extra.length > 0 && asker === this)
            asker = new PaxosClient({ ...this.opts, servers: [...this.servers, ...extra] });
          lagging = [];
          for (const v of m.members.filter((x) => x.voter)) {
            const st = await asker.status(v.sid, 300);
            const applied = st && typeof st.applied === 'number' ? st.applied : null;
            const seen = st && typeof st.configurationSlot === 'number' ? st.configurationSlot : -1;
            if (applied === null || applied < m.from - 1 || seen < m.slot)
              lagging.push({ sid: v.sid, applied });
          }
          if (lagging.length === 0) return { from, lagging };
        }
        if (this.timers.now() >= deadline) return { from, lagging };
        await new Promise<void>((r) => this.timers.setTimeout(() => r(), 50));
      }
    } finally {
      if (asker !== this) asker.close();
    }
  }

  /**
   * Ask the leader to hand leadership to `sid` (etcd's move-leader), and wait
   * until it did or refused: code 'ok' (sid leads now, or led already),
   * 'unknown_sid', 'not_voter', 'handoff_timeout' (sid did not take over in
   * time: not caught up, or cut off; the leader leads on). Sent to the leader
   * hint first; a follower redirects. Rejects with PaxosClientError('unknown')
   * if no answer came in time (leadership may or may not have moved).
   */
  transferLeader(sid: number): Promise<TransferReport> {
    if (!Number.isSafeInteger(sid) || sid < 0)
      return Promise.reject(new Error(`not a sid: ${sid}`));
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new PaxosClientError('closed', 'client is closed'));
      const deadline = this.timers.now() + this.opts.timeoutMs;
      // Request 0:nonce: cid 0 is no session's, and 0:0 (refusals) is never used.
      const nonce = 1 + (this.randomU32() >>> 1);
      this.request(
        0,
        nonce,
        new Uint8Array(0),
        'transfer',
        deadline,
        (err, r) => {
          if (err) return reject(err);
          const t = r!.transfer!;
          resolve({
            ...t,
            ok: t.code === 'ok',
            sid: r!.sid,
            attempts: r!.attempts,
            redirects: r!.redirects,
          });
        },
        undefined,
        sid,
      );
    });
  }

  /** @internal used by Session */
  send(session: Session, op: SessionOp, done: Done): void {
    if (this.closed) return done(new PaxosClientError('closed', 'client is closed'));
    const opBytes =
      op.kind === 'outcome'
        ? encodeOutcome(op.cid, op.seq)
        : op.kind === 'member'
          ? encodeMember(op.action, op.sid, op.addr)
          : encodeOp(op);
    // A request that cannot fit in one datagram certainly never ran: say so now.
    if (opBytes.length > OP_BYTES_MAX)
      return done(null, {
        ok: false,
        err: `too_large: the operation is ${opBytes.length} bytes; the limit is ${OP_BYTES_MAX} bytes per request`,
        request: '',
        sid: -1,
        attempts: 0,
        redirects: 0,
      });
    const deadline = this.timers.now() + this.opts.timeoutMs;
    // Reads are answered by the leader's read index and never enter the log, so
    // they use the client's own read stream, not the session's sequence.
    if (op.kind === 'get')
      return this.request(this.readCid, ++this.readSeq, opBytes, 'read', deadline, done);
    const write = (): void => {
      const cid = session.cid!;
      const seq = ++session.seq;
      // If the cluster says the session expired, the next write opens a new one;
      // this write is never re-sent under it (it may have run).
      const expired = (): void => {
        if (session.cid === cid) session.cid = null;
      };
      this.request(cid, seq, opBytes, 'write', deadline, done, expired);
    };
    if (session.cid !== null) return write();
    this.register(deadline, (err, reg) => {
      if (err) return done(err);
      if ('err' in reg!) return done(null, reg.err);
      session.cid = reg!.id;
      session.seq = 0;
      write();
    });
  }

  /**
   * Open a session through the log. Retrying is harmless: a registration changes
   * no data, and a retry whose session is still live gets the same id.
   */
  private register(
    deadline: number,
    done: (err: Error | null, reg?: { id: number } | { err: OpResult }) => void,
  ): void {
    this.request(this.randomNonce(), 1, encodeRegister(), 'register', deadline, (e, r) => {
      if (e)
        return done(
          e instanceof PaxosClientError && e.code === 'unknown'
            ? new PaxosClientError(
                'unknown',
                `no session: the registration got no answer within ${this.opts.timeoutMs} ms (the operation was not sent): ${describeHeard(e.servers, this.servers.length)}`,
                undefined,
                true,
                e.servers,
              )
            : e,
        );
      const id = Number(r!.value);
      if (!r!.ok || !Number.isSafeInteger(id) || id < 1 || id >= REGISTER_NONCE_MIN)
        return done(null, {
          err: { ...r!, ok: false, err: `register: ${r!.err ?? 'bad answer'}` },
        });
      done(null, { id });
    });
  }

  private request(
    cid: number,
    seq: number,
    op: Uint8Array,
    kind: RequestKind,
    deadline: number,
    done: Done,
    onExpired?: () => void,
    transferTo?: number,
  ): void {
    if (this.closed) return done(new PaxosClientError('closed', 'client is closed'));
    const p: Pending = {
      cid,
      seq,
      op,
      kind,
      onExpired,
      target: this.preferred,
      sentAt: this.timers.now(),
      deadline,
      backoffMs: this.opts.retryMs,
      attempts: 0,
      redirects: 0,
      validations: 0,
      startedAt: this.timers.now(),
      sentTo: new Map(),
      said: new Map(),
      transferTo,
      done,
    };
    this.pending.set(`${cid}:${seq}`, p);
    this.transmit(p);
    this.ensureTimer();
  }

  private transmit(p: Pending): void {
    p.attempts++;
    p.sentAt = this.timers.now();
    p.busy = false;
    if (p.attempts > 1) this.stats.retries++;
    this.stats.sent++;
    p.sentTo.set(p.target, (p.sentTo.get(p.target) ?? 0) + 1);
    if (p.transferTo !== undefined) {
      // Its own datagram, padded: its answer is never larger than it (wire/client.ts).
      const body = encodeRequest({
        t: 'transfer',
        nonce: p.seq,
        to: p.transferTo,
        token: this.tokens[p.target],
      });
      const s = this.servers[p.target];
      this.transport.send(seal(Kind.ClientRequest, this.cluster, body, this.keys), s);
      return;
    }
    // Requests of one turn to the same server share a datagram: the per-datagram
    // cost dominates small operations, on both ends.
    let box = this.outbox.get(p.target);
    if (!box) this.outbox.set(p.target, (box = []));
    box.push({
      cid: p.cid,
      seq: p.seq,
      op: Buffer.from(p.op.buffer, p.op.byteOffset, p.op.length),
    });
    if (!this.outboxScheduled) {
      this.outboxScheduled = true;
      this.timers.defer(() => this.flushOutbox());
    }
  }

  private flushOutbox(): void {
    this.outboxScheduled = false;
    if (this.closed) return;
    for (const [target, ops] of this.outbox) {
      const s = this.servers[target];
      let i = 0;
      while (i < ops.length) {
        const batch: OpRequest[] = [];
        let bytes = 0;
        while (i < ops.length && batch.length < BATCH_OPS_MAX) {
          const size = ops[i].op.length + 24;
          if (batch.length > 0 && bytes + size > OP_BYTES_MAX) break;
          batch.push(ops[i++]);
          bytes += size;
        }
        const token = this.tokens[target];
        const body = encodeRequest(
          batch.length === 1 ? { t: 'op', ...batch[0], token } : { t: 'ops', ops: batch, token },
        );
        this.transport.send(seal(Kind.ClientRequest, this.cluster, body, this.keys), s);
      }
    }
    this.outbox.clear();
  }

  private ensureTimer(): void {
    if (this.timer) return;
    // One timer for every outstanding request, not one per request.
    this.timer = this.timers.setInterval(
      () => this.onTimer(),
      Math.max(1, Math.min(5, this.opts.retryMs)),
    );
  }

  private onTimer(): void {
    const now = this.timers.now();
    for (const [key, p] of this.pending) {
      if (now >= p.deadline) {
        this.pending.delete(key);
        const heard = this.heardBy(p);
        const why = `no answer within ${this.opts.timeoutMs} ms: ${describeHeard(heard, this.servers.length)}`;
        p.done(
          p.kind === 'write'
            ? this.unknown(p, why, heard)
            : new PaxosClientError('unknown', why, undefined, false, heard),
        );
        continue;
      }
      if (p.busy && now - p.sentAt >= this.opts.retryMs) {
        // Busy is an answer: the same server, not backed off. Treating it as
        // silence sent the request round the followers at a growing interval and
        // starved it behind clients that ask again at once (simulator seed 187).
        this.transmit(p);
      } else if (!p.busy && now - p.sentAt >= p.backoffMs) {
        // No answer: that server may be down. Try the next one in fallback order.
        p.target = (p.target + 1) % this.servers.length;
        // Capped low: during a failover the next server may be the new leader already.
        p.backoffMs = Math.min(p.backoffMs * 2, this.opts.retryMs * 4);
        this.transmit(p);
      }
    }
    if (this.pending.size === 0 && this.statusWaiters.size === 0 && this.timer) {
      this.timers.clearInterval(this.timer);
      this.timer = null;
    }
  }

  private onMessage(buf: Buffer, from?: { address: string; port: number }): void {
    const idx = from ? this.byAddress.get(`${from.address}:${from.port}`) : undefined;
    const opened = open(buf, Kind.ClientReply, this.cluster, this.keys);
    if ('error' in opened) {
      this.stats.dropped++;
      // A server answers a request it cannot authenticate with one refusal under
      // its own key: unreadable here when the keys differ (or only it has one).
      if (opened.error === 'bad_tag' || opened.error === 'unexpected_tag')
        this.noteRefusal(idx, 'auth');
      return;
    }
    const r = decodeReply(opened.body);
    if ('error' in r) {
      this.stats.dropped++;
      return;
    }
    if (r.t === 'status') {
      this.statusWaiters.get(r.nonce)?.(r.status);
      return;
    }
    if (r.t === 'results') {
      for (const x of r.results) this.onReply({ t: 'result', ...x }, idx);
      return;
    }
    if (r.t === 'validate') return this.onValidate(r, idx);
    if (r.t === 'transfer') return this.onTransferReply(r, idx);
    if (r.t === 'snapinfo' || r.t === 'snapchunk' || r.t === 'snaperr')
      return this.snapshotWaiters.get(r.nonce)?.(r, idx);
    // Request 0:0: a server refused a datagram before reading it (wrong key or
    // cluster id); the tools name it instead of waiting for a timeout.
    if (r.t === 'error' && r.cid === 0 && r.seq === 0) return this.noteRefusal(idx, r.code);
    this.onReply(r, idx);
  }

  /**
   * A server held back answers too large for an address it has not validated,
   * or a transfer-leader request (0:nonce) without a valid token for this
   * address: keep its token and ask again at once (a retry like any other: the
   * session table answers a write that already ran from its cache, never runs it
   * again; a transfer is answered from its kept result).
   */
  private onValidate(r: Extract<ClientReply, { t: 'validate' }>, from?: number): void {
    // By its sid, else by the address it answered from (paxosd --join asks a
    // member whose sid it does not know yet).
    const idx = this.indexOf.get(r.sid) ?? from;
    if (idx === undefined) return;
    this.stats.validations++;
    this.tokens[idx] = r.token;
    for (const ref of r.ops) {
      const p = this.pending.get(`${ref.cid}:${ref.seq}`);
      // Twice at once at most: if the token keeps failing (the address changes
      // under a NAT), the retry timer paces the attempts.
      if (!p) continue;
      this.noteSaid(p, idx, 'validate');
      if (p.validations >= 2) continue;
      p.validations++;
      p.target = idx;
      this.transmit(p);
    }
    if (r.nonce !== null) this.statusResend.get(r.nonce)?.();
  }

  /**
   * A transfer-leader answer: not_leader names the leader to ask (redirect), or
   * none yet (the retry timer goes on); in_progress (this or another hand-off
   * runs) polls the same node like busy; every other code ends the request.
   */
  private onTransferReply(r: Extract<ClientReply, { t: 'transfer' }>, from?: number): void {
    const key = `0:${r.nonce}`;
    const p = this.pending.get(key);
    if (!p || p.transferTo === undefined) return;
    this.stats.replies++;
    const idx = from ?? p.target;
    if (r.code === 'not_leader' || r.code === 'in_progress') {
      this.noteSaid(p, idx, r.code);
      if (r.code === 'not_leader') return this.redirect(p, r.leader);
      // Poll the node that runs it, like busy: the next node may be the new
      // leader already, which would say "leads already" and lose the report.
      p.target = idx;
      p.busy = true;
      p.sentAt = this.timers.now();
      return;
    }
    this.pending.delete(key);
    const transfer = { code: r.code, leader: r.leader, message: r.message };
    p.done(null, {
      ok: r.code === 'ok',
      err: r.code === 'ok' ? undefined : `${r.code}: ${r.message}`,
      ...this.about(p),
      sid: this.servers[idx].sid,
      transfer,
    });
  }

  /** Follow a redirect to `leader` (-1: none known: wait for the retry timer, then go on). */
  private redirect(p: Pending, leader: number): void {
    p.redirects++;
    this.stats.redirects++;
    const idx = leader >= 0 ? this.indexOf.get(leader) : undefined;
    if (idx === undefined && leader >= 0) this.learnServer(leader, p.target);
    if (idx !== undefined && idx !== p.target) {
      p.target = idx;
      this.preferred = idx;
      this.transmit(p);
    } else {
      // No leader known yet (election in progress): wait for the retry timer,
      // then go on to the next server.
      p.sentAt = this.timers.now();
    }
  }

  /** Sids a redirect named that this client is looking up (learnServer). */
  private readonly learning = new Set<number>();

  /**
   * A redirect to a leader this client's servers do not list (added through the
   * log: paxosd --join): ask the server that named it for the addresses it
   * knows (status field servers) and add it, so the retry reaches the leader
   * (without it the client would walk between followers that all redirect to
   * a node it cannot address, for as long as that node leads).
   */
  private learnServer(sid: number, via: number): void {
    if (this.learning.has(sid) || this.indexOf.has(sid)) return;
    this.learning.add(sid);
    void this.status(this.servers[via].sid, 500).then((st) => {
      this.learning.delete(sid);
      const a = st ? parseAddresses(st.servers).get(sid) : undefined;
      if (!a || this.indexOf.has(sid)) return;
      const [host, , clientPort] = a.split(':');
      const i = this.servers.length;
      this.servers.push({ sid, host, clientPort: Number(clientPort) });
      this.indexOf.set(sid, i);
      this.byAddress.set(`${host}:${clientPort}`, i);
      this.refusedAt.push(new Map());
    });
  }

  private onReply(
    r: Extract<ClientReply, { t: 'result' | 'redirect' | 'error' }>,
    from?: number,
  ): void {
    const key = `${r.cid}:${r.seq}`;
    const p = this.pending.get(key);
    if (!p) return;
    this.stats.replies++;
    const idx = from ?? p.target;
    switch (r.t) {
      case 'result': {
        this.pending.delete(key);
        const sid = this.servers[p.target].sid;
        this.preferred = p.target;
        // session_expired (evicted, or a late copy of an earlier transmission that
        // ran before the eviction) and stale cannot prove that this write never
        // ran: it is never re-sent, under this session or a new one.
        if (
          p.kind === 'write' &&
          (r.result.err === 'session_expired' || r.result.err === 'stale')
        ) {
          if (r.result.err === 'session_expired') p.onExpired?.();
          p.done(this.unknown(p, `the cluster answered ${r.result.err}`));
          return;
        }
        p.done(null, { ...r.result, ...this.about(p), sid });
        return;
      }
      case 'redirect':
        this.noteSaid(p, idx, 'redirect');
        return this.redirect(p, r.leader);
      case 'error':
        if (r.code === 'busy') {
          // The reason too (a queue full, or a member change the leader holds back).
          this.noteSaid(p, idx, r.message ? `busy: ${r.message}` : 'busy');
          p.sentAt = this.timers.now();
          p.busy = true;
          return;
        }
        this.pending.delete(key);
        // bad_op and too_large are decided from the bytes and the cluster's limits
        // (the same on every node), so they prove that no transmission ran. Any
        // other refusal proves it only for a request sent once.
        if (p.kind === 'write' && p.attempts > 1 && r.code !== 'bad_op' && r.code !== 'too_large') {
          p.done(this.unknown(p, `the cluster answered ${r.code}: ${r.message}`));
          return;
        }
        p.done(null, {
          ok: false,
          err: `${r.code}: ${r.message}`,
          ...this.about(p),
          sid: this.servers[p.target].sid,
        });
        return;
    }
  }

  private about(p: Pending): Pick<OpResult, 'request' | 'attempts' | 'redirects'> {
    return { request: `${p.cid}:${p.seq}`, attempts: p.attempts, redirects: p.redirects };
  }

  private unknown(p: Pending, why: string, heard: ServerHeard[] = []): PaxosClientError {
    const request = `${p.cid}:${p.seq}`;
    return new PaxosClientError(
      'unknown',
      `outcome unknown for request ${request}: ${why} (the write may or may not have taken effect; find ${request} in the order logs)`,
      request,
      false,
      heard,
    );
  }

  /** The servers `p` was sent to, and what each said meanwhile. */
  private heardBy(p: Pending): ServerHeard[] {
    return [...p.sentTo.keys()]
      .sort((a, b) => a - b)
      .map((idx) => ({
        ...this.heardFrom(idx, p.startedAt),
        sent: p.sentTo.get(idx)!,
        said: [...(p.said.get(idx) ?? []), ...this.refusedSince(idx, p.startedAt)],
      }));
  }

  private heardFrom(idx: number, since: number): ServerHeard {
    const s = this.servers[idx];
    return {
      sid: s.sid,
      address: `${s.host}:${s.clientPort}`,
      sent: 1,
      said: this.refusedSince(idx, since),
    };
  }

  /** Refusals server `idx` sent since `since` (client clock). */
  private refusedSince(idx: number, since: number): string[] {
    return [...this.refusedAt[idx]].filter(([, at]) => at >= since).map(([w]) => w);
  }

  /**
   * What server `sid` said since `since` (this client's clock, timers.now()),
   * for a status request that got no answer: its refusals, if any.
   */
  statusHeard(sid: number, since: number): ServerHeard | null {
    const idx = this.indexOf.get(sid);
    return idx === undefined ? null : this.heardFrom(idx, since);
  }

  /** This client's clock (ms): the `since` of statusHeard. */
  now(): number {
    return this.timers.now();
  }

  /** A server (by index) refused what we sent unread: remember what and when. */
  private noteRefusal(idx: number | undefined, what: string): void {
    this.refusals[what] = (this.refusals[what] ?? 0) + 1;
    if (idx !== undefined) this.refusedAt[idx].set(what, this.timers.now());
  }

  /** Note that server `idx` answered `p` without ending it. */
  private noteSaid(p: Pending, idx: number, what: string): void {
    let set = p.said.get(idx);
    if (!set) p.said.set(idx, (set = new Set()));
    set.add(what);
  }

  /** Ask one server for its status; null if it does not answer in time. */
  status(sid: number, timeoutMs = 500): Promise<Record<string, unknown> | null> {
    const idx = this.indexOf.get(sid);
    if (idx === undefined) return Promise.resolve(null);
    const s = this.servers[idx];
    const nonce = this.randomU32() >>> 0;
    return new Promise((resolve) => {
      const done = (v: Record<string, unknown> | null): void => {
        this.timers.clearTimeout(t);
        this.statusWaiters.delete(nonce);
        this.statusResend.delete(nonce);
        resolve(v);
      };
      const t = this.timers.setTimeout(() => done(null), timeoutMs);
      this.statusWaiters.set(nonce, (st) => done(st));
      let sends = 0;
      const send = (): void => {
        // The first send and one more after a validate reply (with its token).
        if (sends++ >= 2) return;
        const body = encodeRequest({ t: 'status', nonce, token: this.tokens[idx], pad: true });
        this.transport.send(seal(Kind.ClientRequest, this.cluster, body, this.keys), s);
      };
      this.statusResend.set(nonce, send);
      send();
    });
  }

  /**
   * Save a consistent snapshot of the cluster's state (paxos-client snapshot
   * save): the leader passes a read-index barrier, so the snapshot holds every
   * write acknowledged before this call, pins it, and serves it in chunks of
   * SNAPSHOT_CHUNK_BYTES to this client only (after a token round trip unless
   * authenticated by the client key); the bytes are checked against the
   * SHA-256 the node announced. Sent to the leader hint first; followers
   * redirect. Each step must get an answer within timeoutMs (a large snapshot
   * may take longer in all). Rejects with SnapshotSaveError.
   */
  snapshotSave(o: SnapshotSaveOptions = {}): Promise<SnapshotSaveResult> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new SnapshotSaveError('closed', 'client is closed'));
      const nonce = 1 + (this.randomU32() >>> 1);
      const port: SavePort = {
        servers: this.servers,
        timers: this.timers,
        timeoutMs: this.opts.timeoutMs,
        retryMs: this.opts.retryMs,
        preferred: () => this.preferred,
        prefer: (idx) => (this.preferred = idx),
        indexOf: (sid) => this.indexOf.get(sid),
        closed: () => this.closed,
        send: (idx, req) => {
          const body = encodeRequest({ ...req, token: this.tokens[idx] });
          this.transport.send(
            seal(Kind.ClientRequest, this.cluster, body, this.keys),
            this.servers[idx],
          );
        },
        heard: (idx, since, sent, said) => ({
          ...this.heardFrom(idx, since),
          sent,
          said: [...said, ...this.refusedSince(idx, since)],
        }),
      };
      const save = new SnapshotSaveRun(
        port,
        nonce,
        o.maxBytes ?? SNAPSHOT_SAVE_BYTES_MAX,
        (err, r) => {
          this.snapshotWaiters.delete(nonce);
          this.statusResend.delete(nonce);
          if (err) reject(err);
          else resolve(r!);
        },
      );
      this.snapshotWaiters.set(nonce, (r, from) => save.onReply(r, from));
      this.statusResend.set(nonce, () => save.onValidate());
      save.start();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) this.timers.clearInterval(this.timer);
    for (const p of this.pending.values())
      p.done(
        p.kind === 'write'
          ? this.unknown(p, 'client closed')
          : new PaxosClientError('closed', 'client closed'),
      );
    this.pending.clear();
    this.transport.close();
  }
}

/** What a SnapshotSaveRun needs from its PaxosClient. */
interface SavePort {
  servers: ClientServerAddr[];
  timers: ClientTimers;
  timeoutMs: number;
  retryMs: number;
  /** The server index tried first (the leader hint); prefer() moves it. */
  preferred(): number;
  prefer(idx: number): void;
  indexOf(sid: number): number | undefined;
  closed(): boolean;
  /** Seal and send a request (with that server's token, if any) to server `idx`. */
  send(idx: number, req: Extract<ClientRequest, { t: 'snapshot' | 'chunk' }>): void;
  /** What server `idx` said since `since`, for an error naming the servers. */
  heard(idx: number, since: number, sent: number, said: string[]): ServerHeard;
}

/**
 * One snapshot save (PaxosClient.snapshotSave): a begin, redirected to the
 * leader and retried through the server list until a node pins a snapshot;
 * then its chunks, one request per chunk, from that node only; then a last
 * request (offset = size) that unpins it. Each step must be answered within
 * timeoutMs; a validate reply (a token) sends the same request again at once.
 */
class SnapshotSaveRun {
  private target: number;
  private readonly started: number;
  private deadline: number;
  private sentAt: number;
  private backoffMs: number;
  /** The node answered busy: ask it again after retryMs (it is alive). */
  private busy = false;
  private requests = 0;
  /** Validate replies answered at once since the last progress (bounded). */
  private validations = 0;
  private info: Extract<SnapshotReply, { t: 'snapinfo' }> | null = null;
  private readonly parts: Buffer[] = [];
  private received = 0;
  private readonly sentTo = new Map<number, number>();
  private readonly said = new Map<number, Set<string>>();
  private timer: unknown = null;
  private finished = false;

  constructor(
    private readonly p: SavePort,
    private readonly nonce: number,
    private readonly maxBytes: number,
    private readonly done: (err: SnapshotSaveError | null, r?: SnapshotSaveResult) => void,
  ) {
    this.target = p.preferred();
    this.started = this.sentAt = p.timers.now();
    this.deadline = this.started + p.timeoutMs;
    this.backoffMs = p.retryMs;
  }

  start(): void {
    this.timer = this.p.timers.setInterval(
      () => this.onTimer(),
      Math.max(1, Math.min(5, this.p.retryMs)),
    );
    this.send();
  }

  /** The begin, the next chunk, or (all received) the goodbye that unpins it. */
  private send(): void {
    if (this.p.closed()) return;
    this.requests++;
    this.sentAt = this.p.timers.now();
    this.busy = false;
    this.sentTo.set(this.target, (this.sentTo.get(this.target) ?? 0) + 1);
    const i = this.info;
    this.p.send(
      this.target,
      i
        ? { t: 'chunk', nonce: this.nonce, id: i.id, offset: this.received }
        : { t: 'snapshot', nonce: this.nonce },
    );
  }

  private finish(err: SnapshotSaveError | null, r?: SnapshotSaveResult): void {
    if (this.finished) return;
    this.finished = true;
    this.p.timers.clearInterval(this.timer);
    this.done(err, r);
  }

  private onTimer(): void {
    const now = this.p.timers.now();
    if (this.p.closed()) return this.finish(new SnapshotSaveError('closed', 'client closed'));
    if (now >= this.deadline) return this.finish(this.noAnswer());
    if (this.busy ? now - this.sentAt < this.p.retryMs : now - this.sentAt < this.backoffMs) return;
    if (!this.busy) {
      // Silence before a snapshot is pinned: try the next server; after, only
      // the node that pinned it has it.
      if (!this.info) this.target = (this.target + 1) % this.p.servers.length;
      this.backoffMs = Math.min(this.backoffMs * 2, this.p.retryMs * 4);
    }
    this.send();
  }

  private noAnswer(): SnapshotSaveError {
    const heard = [...this.sentTo.keys()]
      .sort((a, b) => a - b)
      .map((idx) =>
        this.p.heard(idx, this.started, this.sentTo.get(idx)!, [...(this.said.get(idx) ?? [])]),
      );
    const i = this.info;
    const step = i ? `chunk at offset ${this.received} of ${i.bytes}` : 'snapshot save';
    return new SnapshotSaveError(
      'no_answer',
      `${step}: no answer within ${this.p.timeoutMs} ms: ${describeHeard(heard, this.p.servers.length)}`,
      heard,
    );
  }

  /** A validate reply named this save: its token is kept; ask again at once (bounded). */
  onValidate(): void {
    if (this.validations++ < 4) this.send();
  }

  onReply(r: SnapshotReply, from?: number): void {
    if (this.finished) return;
    const idx = from ?? this.target;
    if (r.t === 'snaperr') return this.onRefusal(r, idx);
    if (r.t === 'snapinfo') return this.onInfo(r, idx);
    this.onChunk(r);
  }

  private onRefusal(r: Extract<SnapshotReply, { t: 'snaperr' }>, idx: number): void {
    if (!this.said.has(idx)) this.said.set(idx, new Set());
    this.said.get(idx)!.add(r.code);
    if (r.code === 'expired')
      return this.finish(
        new SnapshotSaveError(
          'expired',
          `sid ${this.p.servers[idx].sid}: ${r.message}; run the save again`,
        ),
      );
    if (r.code === 'busy' || this.info) {
      this.busy = true;
      this.sentAt = this.p.timers.now();
      return;
    }
    const leader = r.leader >= 0 ? this.p.indexOf(r.leader) : undefined;
    if (leader !== undefined && leader !== this.target) {
      this.target = leader;
      this.p.prefer(leader);
      return this.send();
    }
    this.sentAt = this.p.timers.now(); // no leader known yet: the timer goes on
  }

  private onInfo(r: Extract<SnapshotReply, { t: 'snapinfo' }>, idx: number): void {
    if (this.info || idx !== this.target) return; // a late copy, or another node's
    this.deadline = this.p.timers.now() + this.p.timeoutMs;
    this.validations = 0;
    this.info = r;
    this.p.prefer(this.target);
    if (r.bytes <= this.maxBytes) return this.send();
    // Unpin it at once (one datagram; the node forgets it when idle anyway).
    this.received = r.bytes;
    this.send();
    this.finish(
      new SnapshotSaveError(
        'too_large',
        `the snapshot at slot ${r.slot} is ${r.bytes} bytes, above the limit of ${this.maxBytes} bytes`,
      ),
    );
  }

  private onChunk(r: Extract<SnapshotReply, { t: 'snapchunk' }>): void {
    const i = this.info;
    // Only the chunk asked for counts (copies and late ones are ignored).
    if (!i || r.id !== i.id || r.offset !== this.received || this.received >= i.bytes) return;
    if (r.data.length === 0 || this.received + r.data.length > i.bytes)
      return this.finish(
        new SnapshotSaveError(
          'corrupt',
          `chunk at offset ${this.received}: ${r.data.length} bytes`,
        ),
      );
    this.parts.push(r.data);
    this.received += r.data.length;
    this.deadline = this.p.timers.now() + this.p.timeoutMs;
    this.backoffMs = this.p.retryMs;
    this.validations = 0;
    this.send(); // the next chunk, or (all received) the goodbye that unpins it
    if (this.received < i.bytes) return;
    const data = Buffer.concat(this.parts);
    if (!createHash('sha256').update(data).digest().equals(i.digest))
      return this.finish(
        new SnapshotSaveError(
          'corrupt',
          `the ${data.length} bytes received do not match the node's SHA-256 of its snapshot`,
        ),
      );
    const sid = this.p.servers[this.target].sid;
    this.finish(null, { data, slot: i.slot, hash: i.hash, sid, requests: this.requests });
  }
}
