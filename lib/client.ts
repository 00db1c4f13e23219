import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import createDebug from 'debug';
import type { CmdResult } from './core/types';
import type { ClientConfig, ClientServerAddr } from './io/config';
import { encodeOp, type KvOp } from './sm/kv';
import {
  BATCH_OPS_MAX,
  decodeReply,
  encodeRequest,
  type ClientReply,
  type OpRequest,
} from './wire/client';
import {
  clusterTag,
  DATAGRAM_BYTES_MAX,
  Kind,
  Keyring,
  NO_KEYS,
  open,
  seal,
} from './wire/envelope';

const debug = createDebug('paxos:clientlib');

/** Room for the envelope, tag and request fields inside one datagram. */
const OP_BYTES_MAX = DATAGRAM_BYTES_MAX - 200;

/** Why an operation did not get a definite answer. */
export class PaxosClientError extends Error {
  constructor(
    /** 'unknown': a write may or may not have taken effect (timed out). */
    readonly code: 'unknown' | 'closed',
    message: string,
  ) {
    super(message);
  }
}

export interface OpResult extends CmdResult {
  /** Server that answered. */
  sid: number;
  /** Transmissions it took (1 = first try). */
  attempts: number;
  redirects: number;
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
}

interface Pending {
  session: Session;
  /** Writes use the session's (cid, seq); reads use the client's own read stream. */
  cid: number;
  seq: number;
  op: Uint8Array;
  isWrite: boolean;
  target: number; // index into servers
  sentAt: number;
  deadline: number;
  backoffMs: number;
  attempts: number;
  redirects: number;
  resolve: (r: OpResult) => void;
  reject: (e: Error) => void;
}

function randomCid(): number {
  // 53 random bits: collisions between clients are negligible.
  const b = randomBytes(8);
  return (b.readUInt32LE(0) & 0x1fffff) * 2 ** 32 + b.readUInt32LE(4);
}

/**
 * A logical client: its own (client id, sequence) stream, one operation at a
 * time, so the cluster's exactly-once table can answer a retry with the first
 * answer. Many sessions share one PaxosClient (one socket).
 */
export class Session {
  cid = randomCid();
  seq = 0;
  private chain: Promise<unknown> = Promise.resolve();

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

  /** Operations of one session run strictly one after another. */
  run(op: KvOp): Promise<OpResult> {
    const p = this.chain.then(() => this.client.send(this, op));
    this.chain = p.catch(() => undefined);
    return p;
  }
}

/**
 * The client library: UDP requests matched by (cid, seq), retransmitted with
 * backoff, redirected to the leader a follower names, and failing over through
 * the configured server list until the deadline. A timed-out write is reported
 * as PaxosClientError('unknown'), never as failed.
 */
export class PaxosClient {
  private readonly sock: dgram.Socket;
  private readonly servers: ClientServerAddr[];
  private readonly indexOf = new Map<number, number>();
  private readonly pending = new Map<string, Pending>();
  private readonly statusWaiters = new Map<number, (s: Record<string, unknown>) => void>();
  private preferred = 0;
  private readonly outbox = new Map<number, OpRequest[]>();
  private outboxScheduled = false;
  private readonly readCid = randomCid();
  private readSeq = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly cluster: number;
  private readonly keys: Keyring;
  private readonly defaultSession: Session;
  readonly stats = { sent: 0, retries: 0, redirects: 0, replies: 0, dropped: 0 };

  constructor(readonly opts: ClientOptions) {
    if (opts.servers.length === 0) throw new Error('no servers configured');
    this.servers = opts.servers;
    opts.servers.forEach((s, i) => this.indexOf.set(s.sid, i));
    if (opts.leader !== undefined && this.indexOf.has(opts.leader))
      this.preferred = this.indexOf.get(opts.leader)!;
    this.cluster = clusterTag(opts.clusterId ?? 'local');
    this.keys = opts.keys ?? NO_KEYS;
    this.sock = dgram.createSocket({
      type: 'udp4',
      recvBufferSize: 8 << 20,
      sendBufferSize: 8 << 20,
    });
    this.sock.on('message', (buf) => this.onMessage(buf));
    this.sock.on('error', (e) => debug('socket error %s', e.message));
    this.sock.bind(0, '0.0.0.0');
    this.sock.unref();
    this.defaultSession = new Session(this);
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

  /** @internal used by Session */
  send(session: Session, op: KvOp): Promise<OpResult> {
    if (this.closed) return Promise.reject(new PaxosClientError('closed', 'client is closed'));
    const opBytes = encodeOp(op);
    // A request that cannot fit in one datagram certainly never ran: say so now.
    if (opBytes.length > OP_BYTES_MAX)
      return Promise.resolve({
        ok: false,
        err: `too_large: the operation is ${opBytes.length} bytes; the limit is ${OP_BYTES_MAX} bytes per request`,
        sid: -1,
        attempts: 0,
        redirects: 0,
      });
    // Reads are answered by the leader's read index and never enter the log, so
    // they must not use up the session's sequence numbers (the exactly-once
    // table expects a session's writes to start at 1 without gaps).
    const isRead = op.kind === 'get';
    const cid = isRead ? this.readCid : session.cid;
    const seq = isRead ? ++this.readSeq : ++session.seq;
    const now = Date.now();
    return new Promise<OpResult>((resolve, reject) => {
      const p: Pending = {
        session,
        cid,
        seq,
        op: opBytes,
        isWrite: op.kind !== 'get',
        target: this.preferred,
        sentAt: now,
        deadline: now + this.opts.timeoutMs,
        backoffMs: this.opts.retryMs,
        attempts: 0,
        redirects: 0,
        resolve,
        reject,
      };
      this.pending.set(`${cid}:${seq}`, p);
      this.transmit(p);
      this.ensureTimer();
    });
  }

  private transmit(p: Pending): void {
    p.attempts++;
    p.sentAt = Date.now();
    if (p.attempts > 1) this.stats.retries++;
    this.stats.sent++;
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
      setImmediate(() => this.flushOutbox());
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
        const body = encodeRequest(
          batch.length === 1 ? { t: 'op', ...batch[0] } : { t: 'ops', ops: batch },
        );
        this.sock.send(
          seal(Kind.ClientRequest, this.cluster, body, this.keys),
          s.clientPort,
          s.host,
          (err) => {
            if (err) debug('send to %s:%d failed: %s', s.host, s.clientPort, err.message);
          },
        );
      }
    }
    this.outbox.clear();
  }

  private ensureTimer(): void {
    if (this.timer) return;
    // One timer for every outstanding request, not one per request.
    this.timer = setInterval(() => this.onTimer(), Math.max(1, Math.min(5, this.opts.retryMs)));
  }

  private onTimer(): void {
    const now = Date.now();
    for (const [key, p] of this.pending) {
      if (now >= p.deadline) {
        this.pending.delete(key);
        p.reject(
          new PaxosClientError(
            'unknown',
            p.isWrite
              ? `outcome unknown: no answer within ${this.opts.timeoutMs} ms (the write may or may not have taken effect)`
              : `no answer within ${this.opts.timeoutMs} ms`,
          ),
        );
        continue;
      }
      if (now - p.sentAt >= p.backoffMs) {
        // No answer: that server may be down. Try the next one in fallback order.
        p.target = (p.target + 1) % this.servers.length;
        // Capped low: during a failover the next server may be the new leader already.
        p.backoffMs = Math.min(p.backoffMs * 2, this.opts.retryMs * 4);
        this.transmit(p);
      }
    }
    if (this.pending.size === 0 && this.statusWaiters.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private onMessage(buf: Buffer): void {
    const opened = open(buf, Kind.ClientReply, this.cluster, this.keys);
    if ('error' in opened) {
      this.stats.dropped++;
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
      for (const x of r.results) this.onReply({ t: 'result', ...x });
      return;
    }
    this.onReply(r);
  }

  private onReply(r: Exclude<ClientReply, { t: 'status' } | { t: 'results' }>): void {
    const key = `${r.cid}:${r.seq}`;
    const p = this.pending.get(key);
    if (!p) return;
    this.stats.replies++;
    switch (r.t) {
      case 'result': {
        this.pending.delete(key);
        const sid = this.servers[p.target].sid;
        this.preferred = p.target;
        if (r.result.err === 'session_expired' && p.attempts === 1 && p.redirects === 0) {
          // Refused before it ran: safe to resend under a fresh session.
          p.session.cid = randomCid();
          p.session.seq = 1;
          p.cid = p.session.cid;
          p.seq = 1;
          this.pending.set(`${p.cid}:1`, p);
          this.transmit(p);
          return;
        }
        if (r.result.err === 'session_expired' && p.isWrite) {
          p.session.cid = randomCid();
          p.session.seq = 0;
          p.reject(
            new PaxosClientError('unknown', 'outcome unknown: the session expired during retries'),
          );
          return;
        }
        p.resolve({ ...r.result, sid, attempts: p.attempts, redirects: p.redirects });
        return;
      }
      case 'redirect': {
        p.redirects++;
        this.stats.redirects++;
        const idx = r.leader >= 0 ? this.indexOf.get(r.leader) : undefined;
        if (idx !== undefined && idx !== p.target) {
          p.target = idx;
          this.preferred = idx;
          this.transmit(p);
        } else {
          // No leader known yet (election in progress): wait for the retry timer,
          // then go on to the next server.
          p.sentAt = Date.now();
        }
        return;
      }
      case 'error':
        if (r.code === 'busy') {
          p.sentAt = Date.now();
          return;
        }
        this.pending.delete(key);
        p.resolve({
          ok: false,
          err: `${r.code}: ${r.message}`,
          sid: this.servers[p.target].sid,
          attempts: p.attempts,
          redirects: p.redirects,
        });
        return;
    }
  }

  /** Ask one server for its status; null if it does not answer in time. */
  status(sid: number, timeoutMs = 500): Promise<Record<string, unknown> | null> {
    const idx = this.indexOf.get(sid);
    if (idx === undefined) return Promise.resolve(null);
    const s = this.servers[idx];
    const nonce = randomBytes(4).readUInt32LE(0);
    return new Promise((resolve) => {
      const done = (v: Record<string, unknown> | null): void => {
        clearTimeout(t);
        this.statusWaiters.delete(nonce);
        resolve(v);
      };
      const t = setTimeout(() => done(null), timeoutMs);
      this.statusWaiters.set(nonce, (st) => done(st));
      const body = encodeRequest({ t: 'status', nonce });
      this.sock.send(seal(Kind.ClientRequest, this.cluster, body, this.keys), s.clientPort, s.host);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const p of this.pending.values())
      p.reject(new PaxosClientError(p.isWrite ? 'unknown' : 'closed', 'client closed'));
    this.pending.clear();
    this.sock.close();
  }
}
