import type { HistoryEvent, KvResult } from '../check/linearizability';
import type { Prng } from '../core/prng';
import type { CmdResult } from '../core/types';
import { encodeOp, encodeRegister, REGISTER_NONCE_MIN, type KvOp } from '../sm/kv';

/** What a client sends to a node and what the node answers (the daemon's client protocol). */
export type ClientRequest = { cid: number; seq: number; op: Uint8Array };
export type ClientReply =
  | { t: 'result'; cid: number; seq: number; result: CmdResult }
  | { t: 'redirect'; cid: number; seq: number; leader: number | null }
  | { t: 'busy'; cid: number; seq: number };

export interface WorkloadOptions {
  keys: string[];
  /** Ticks a client waits between two operations: uniform in [0, thinkMax]. */
  thinkMax: number;
  /** Ticks before a client gives up on a node and tries another. */
  timeoutMin: number;
  timeoutMax: number;
  /**
   * Gets go to the read index: they never enter the log, so (like lib/client.ts)
   * they use a separate (cid, seq) stream and leave the session's writes gapless.
   */
  readIndex?: boolean;
}

/** Added to a client's cid to form its read stream's cid. */
export const READ_CID_OFFSET = 1_000_000;

interface Outstanding {
  cid: number;
  seq: number;
  op: KvOp;
  bytes: Uint8Array;
  target: number;
  /** Resend at this tick (timeout, or a short wait after a redirect or busy answer). */
  resendAt: number;
  attempts: number;
  /** On the next resend, try another node (timeout, no leader known) or the same (busy). */
  retarget: boolean;
  event: HistoryEvent;
  /** Sim tick of the call (the history uses a finer logical clock). */
  callTick: number;
  /** Opening a session first (a `register` through the log; cid is its nonce). */
  registering: boolean;
}

export interface ClientHooks {
  now(): number;
  /** Strictly increasing logical time for history call/return stamps. */
  clock(): number;
  send(from: number, to: number, req: ClientRequest): void;
  trace(line: string): void;
  /** A violation the client itself can see (two different answers for one write). */
  fail(invariant: string, detail: string): never;
}

/**
 * A simulated client: one outstanding request at a time, seq incrementing, sent to
 * the node it believes leads and retried (same cid:seq) on timeout, redirect or
 * busy, forever: a request is only "unknown" if the run ends first.
 */
export class SimClient {
  seq = 0;
  private readSeq = 0;
  /**
   * The session id the cluster gave this client (lib/client.ts does the same):
   * null before the first write and after a session_expired answer.
   */
  session: number | null = null;
  private sessionSeq = 0;
  private registrations = 0;
  cur: Outstanding | null = null;
  private leaderGuess: number | null = null;
  private nextOpAt = 0;
  /** Issue no new operations (liveness drain). Outstanding ones still retry. */
  stopped = false;
  completed = 0;
  /** Latency (ticks) of each op completed after `liveFrom`, measured from max(call, liveFrom). */
  maxLiveLatency = 0;
  liveFrom = Infinity;
  /** First answer per request cid:seq. */
  private readonly writeResults = new Map<string, string>();
  /** The seq of each of this client's history events. */
  readonly seqOf = new Map<HistoryEvent, number>();
  /** The cid (session id, or read stream) of each of this client's history events. */
  readonly cidOf = new Map<HistoryEvent, number>();
  private lastSeen = new Map<string, string | null>();

  constructor(
    readonly cid: number,
    readonly addr: number,
    private readonly sids: number[],
    private readonly prng: Prng,
    private readonly o: WorkloadOptions,
    private readonly h: ClientHooks,
    readonly history: HistoryEvent[],
  ) {
    this.nextOpAt = prng.int(o.thinkMax + 1);
  }

  /** Believe `sid` leads (a schedule family: clients that last talked to a stale leader). */
  suggestLeader(sid: number): void {
    this.leaderGuess = sid;
  }

  private newOp(): KvOp {
    const key = this.prng.pick(this.o.keys);
    const fresh = `c${this.cid}.${this.seq}`;
    const r = this.prng.int(100);
    if (r < 30) return { kind: 'get', key };
    if (r < 60) return { kind: 'put', key, value: fresh };
    if (r < 70) return { kind: 'del', key };
    const seen = this.lastSeen.get(key);
    const expected = seen !== undefined && this.prng.chance(0.8) ? seen : null;
    return { kind: 'cas', key, expected, value: fresh };
  }

  private pickTarget(exclude: number | null): number {
    if (this.leaderGuess !== null && this.leaderGuess !== exclude && this.prng.chance(0.9))
      return this.leaderGuess;
    const others = this.sids.filter((s) => s !== exclude);
    return this.prng.pick(others.length > 0 ? others : this.sids);
  }

  private timeout(): number {
    return this.prng.range(this.o.timeoutMin, this.o.timeoutMax);
  }

  tick(): void {
    const now = this.h.now();
    const c = this.cur;
    if (c) {
      if (now >= c.resendAt) {
        // Timed out (or waited after a redirect/busy): try elsewhere, same cid:seq.
        if (c.retarget) c.target = this.pickTarget(c.target);
        this.transmit(c);
      }
      return;
    }
    if (this.stopped || now < this.nextOpAt) return;
    const op = this.newOp();
    const read = op.kind === 'get' && this.o.readIndex === true;
    if (!read) ++this.seq; // numbers this client's written values
    const registering = !read && this.session === null;
    const cid = read
      ? this.cid + READ_CID_OFFSET
      : registering
        ? REGISTER_NONCE_MIN + this.cid * 2 ** 20 + ++this.registrations
        : this.session!;
    const seq = read ? ++this.readSeq : registering ? 1 : ++this.sessionSeq;
    const event: HistoryEvent = {
      client: this.cid,
      call: this.h.clock(),
      ret: null,
      op,
      result: 'unknown',
    };
    this.history.push(event);
    this.seqOf.set(event, seq);
    this.cidOf.set(event, cid);
    this.cur = {
      cid,
      seq,
      op,
      bytes: registering ? encodeRegister() : encodeOp(op),
      registering,
      // Some reads go to any node: a stale leader must still not answer from old state.
      target: read && this.prng.chance(0.3) ? this.prng.pick(this.sids) : this.pickTarget(null),
      resendAt: 0,
      attempts: 0,
      retarget: true,
      event,
      callTick: now,
    };
    this.h.trace(`client ${cid} call #${seq} ${describe(op)} -> ${this.cur.target}`);
    this.transmit(this.cur);
  }

  private transmit(c: Outstanding): void {
    c.attempts++;
    c.retarget = true;
    c.resendAt = this.h.now() + this.timeout();
    this.h.send(this.addr, c.target, { cid: c.cid, seq: c.seq, op: c.bytes });
  }

  onReply(from: number, r: ClientReply): void {
    if (r.t === 'result' && r.cid < REGISTER_NONCE_MIN && r.cid !== this.cid + READ_CID_OFFSET)
      this.checkWriteResult(`${r.cid}:${r.seq}`, r.result);
    const c = this.cur;
    if (!c || r.seq !== c.seq || r.cid !== c.cid) return;
    const now = this.h.now();
    switch (r.t) {
      case 'redirect':
        if (from !== c.target) return;
        if (r.leader !== null && r.leader !== from) {
          this.leaderGuess = r.leader;
          c.target = r.leader;
          this.transmit(c);
        } else {
          // Nobody leads (yet): wait a little, then try someone.
          this.leaderGuess = null;
          c.retarget = true;
          c.resendAt = Math.min(c.resendAt, now + this.prng.range(2, 8));
        }
        return;
      case 'busy':
        if (from !== c.target) return;
        c.retarget = false;
        c.resendAt = Math.min(c.resendAt, now + this.prng.range(2, 8));
        return;
      case 'result': {
        this.leaderGuess = from;
        if (c.registering) {
          // The session is open: now send the operation itself under it.
          const id = Number(r.result.value);
          if (!r.result.ok || !Number.isSafeInteger(id) || id < 1 || id >= REGISTER_NONCE_MIN)
            this.h.fail('register answers a session id', JSON.stringify(r.result));
          this.session = id;
          this.sessionSeq = 0;
          c.registering = false;
          c.cid = id;
          c.seq = ++this.sessionSeq;
          c.bytes = encodeOp(c.op);
          this.seqOf.set(c.event, c.seq);
          this.cidOf.set(c.event, c.cid);
          this.transmit(c);
          return;
        }
        // Evicted: the next write opens a new session (this one is never re-sent).
        if (r.result.err === 'session_expired' && this.session === c.cid) this.session = null;
        c.event.ret = this.h.clock();
        c.event.result = toKvResult(c.op, r.result);
        if (c.op.kind === 'get' && r.result.ok) this.lastSeen.set(c.op.key, r.result.value ?? null);
        else if (c.op.kind === 'put' || (c.op.kind === 'cas' && r.result.ok))
          this.lastSeen.set(c.op.key, c.op.value);
        else if (c.op.kind === 'del') this.lastSeen.set(c.op.key, null);
        else if (c.op.kind === 'cas' && r.result.value !== undefined)
          this.lastSeen.set(c.op.key, r.result.value);
        if (now >= this.liveFrom) {
          const lat = now - Math.max(c.callTick, this.liveFrom);
          if (lat > this.maxLiveLatency) this.maxLiveLatency = lat;
        }
        this.h.trace(
          `client ${this.cid} ret #${c.seq} from ${from}: ${JSON.stringify(r.result)} (${c.attempts} sends)`,
        );
        this.cur = null;
        this.completed++;
        this.nextOpAt = now + this.prng.int(this.o.thinkMax + 1);
        return;
      }
    }
  }

  /** A write's answer never changes: every answer for one cid:seq must be the same. */
  private checkWriteResult(key: string, result: CmdResult): void {
    // The session table keeps only each client's latest answer: a request retried
    // late may be answered "stale" or "session_expired", which says nothing about
    // its outcome. Only real answers must agree.
    if (result.err === 'stale' || result.err === 'session_expired') return;
    const text = JSON.stringify(result);
    const prev = this.writeResults.get(key);
    if (prev === undefined) {
      const cur = this.cur;
      const op = cur && !cur.registering && key === `${cur.cid}:${cur.seq}` ? cur.op : undefined;
      if (op && op.kind !== 'get') this.writeResults.set(key, text);
      return;
    }
    if (prev !== text)
      this.h.fail(
        'one answer per request',
        `client ${this.cid} request ${key} was answered ${prev} and later ${text}`,
      );
  }
}

/** The checker's view of a result; errors (session expired) leave the outcome unknown. */
export function toKvResult(op: KvOp, r: CmdResult): KvResult | 'unknown' {
  if (r.err !== undefined) return 'unknown';
  switch (op.kind) {
    case 'get':
      return { ok: r.ok, value: r.value ?? null };
    case 'put':
    case 'del':
      return { ok: r.ok };
    case 'cas':
      return r.ok ? { ok: true } : { ok: false, value: r.value ?? null };
  }
}

export function describe(op: KvOp): string {
  switch (op.kind) {
    case 'get':
      return `get ${op.key}`;
    case 'del':
      return `del ${op.key}`;
    case 'put':
      return `put ${op.key}=${op.value}`;
    case 'cas':
      return `cas ${op.key} ${op.expected ?? '<none>'}->${op.value}`;
  }
}
