import type { Replica } from './core/replica';
import type { AppliedEntry, CmdResult } from './core/types';
import {
  admissionError,
  keyError,
  encodeLimits,
  isOpError,
  LIMITS_CID,
  parseCommand,
  REGISTER_NONCE_MIN,
  type KvOp,
  type KvStateMachine,
  type SmLimits,
  type SysOp,
} from './sm/kv';
import type { ClientReply } from './wire/client';

/** Answers the front door gives at once; the others come from answers(). */
export type FrontReply = Extract<ClientReply, { t: 'result' } | { t: 'redirect' } | { t: 'error' }>;

/** A result for one request, to be sent to the waiter `to`. */
export interface FrontAnswer {
  cid: number;
  seq: number;
  result: CmdResult;
  /** Answered by the read index (from the state machine, not from the log). */
  read: boolean;
}

export interface FrontOptions {
  replica: Replica;
  sm: KvStateMachine;
  /**
   * This node's own config limits. They decide nothing once the cluster's are
   * in the log: they are only what this node proposes if it is the first leader
   * of a new cluster.
   */
  localLimits: SmLimits;
  /** Sockets answered per request (retransmissions from several ports); more are dropped. */
  waitersPerRequest?: number;
}

/** Default of FrontOptions.waitersPerRequest. */
const WAITERS_PER_REQUEST = 4;

/**
 * A node's client-request rules, once, for the daemon and the simulator alike
 * (a test harness kinder than production proves nothing): parse, admit with the
 * cluster's limits from the log, propose the limits on a new cluster, submit,
 * and answer queued/cached/redirect/busy, reads by the read index. Pure and
 * deterministic: no sockets, no clocks (the caller passes `now` in its own
 * units); `T` is whatever the caller needs to address an answer.
 */
export class ClientFront<T> {
  /** Requests in the log's queue, by cid:seq: who waits for the applied result. */
  private readonly waiters = new Map<string, { to: T; at: number }[]>();
  /** Reads (and barriers) waiting for the read index, by read id. */
  private readonly readWaiters = new Map<
    number,
    | { to: T; cid: number; seq: number; key: string; at: number }
    | { barrier: () => void; at: number }
  >();
  private readSeq = 0;
  private readonly waitersPerRequest: number;

  constructor(private readonly o: FrontOptions) {
    this.waitersPerRequest = o.waitersPerRequest ?? WAITERS_PER_REQUEST;
  }

  /** One client operation: the reply to send now, or null when it comes from answers(). */
  request(to: T, cid: number, seq: number, op: Uint8Array, now: number): FrontReply | null {
    const parsed = parseCommand(op);
    if (isOpError(parsed)) return { t: 'error', cid, seq, ...parsed };
    if (parsed.kind === 'get') {
      const noKey = keyError(parsed);
      if (noKey) return { t: 'error', cid, seq, ...noKey };
      return this.read(to, cid, seq, parsed.key, now);
    }
    if (parsed.kind === 'limits')
      return { t: 'error', cid, seq, code: 'bad_op', message: 'limits is not a client operation' };
    // A membership change (member add/promote/remove SID) goes through the log
    // in a session like a write; the state machine refuses what it must (not in
    // the servers list, a member already, not a learner, the last voter, one
    // change at a time) alike on every node, and that refusal is the answer.
    // Who may ask is the daemon's rule (an authenticated or validated client).
    const refusal = this.admit(cid, seq, parsed);
    if (refusal) return refusal;
    // Strict reconfiguration check (a liveness guard, the leader's own view):
    // answered busy, never refused, because a late copy of this request reaching
    // a leader that passes the check may still run: the client retries and its
    // outcome stays what the log says (member list tells).
    if (parsed.kind === 'member' && !this.o.sm.cached(cid, seq)) {
      const why = this.o.replica.reconfigRefusal(parsed.action, parsed.sid);
      if (why) return { t: 'error', cid, seq, code: 'busy', message: why };
    }
    const r = this.o.replica.submit({ cid, seq, op });
    switch (r.kind) {
      case 'queued': {
        const key = `${cid}:${seq}`;
        let list = this.waiters.get(key);
        if (!list) this.waiters.set(key, (list = []));
        if (list.length < this.waitersPerRequest) list.push({ to, at: now });
        return null;
      }
      case 'cached':
        return { t: 'result', cid, seq, result: r.result };
      case 'redirect':
        return { t: 'redirect', cid, seq, leader: r.leader ?? -1 };
      case 'busy':
        return { t: 'error', cid, seq, code: 'busy', message: 'leader queue full' };
    }
  }

  /** Reads take the read-index path: no log slot, no disk write. */
  private read(to: T, cid: number, seq: number, key: string, now: number): FrontReply | null {
    const id = ++this.readSeq;
    const r = this.o.replica.submitRead(id);
    switch (r.kind) {
      case 'queued':
        this.readWaiters.set(id, { to, cid, seq, key, at: now });
        return null;
      case 'redirect':
        return { t: 'redirect', cid, seq, leader: r.leader ?? -1 };
      default:
        return { t: 'error', cid, seq, code: 'busy', message: 'too many reads pending' };
    }
  }

  /**
   * A read-index barrier (a snapshot save): `ready` runs, from answers(), once
   * this leader confirmed it still leads and applied every slot it had proposed
   * when asked, so the state machine then holds every write acknowledged before
   * this call, as a linearizable read would see it. Null when queued, else the
   * redirect or busy answer (the caller turns it into its own reply).
   */
  barrier(
    ready: () => void,
    now: number,
  ): null | { t: 'redirect'; leader: number } | { t: 'busy' } {
    const id = ++this.readSeq;
    const r = this.o.replica.submitRead(id);
    switch (r.kind) {
      case 'queued':
        this.readWaiters.set(id, { barrier: ready, at: now });
        return null;
      case 'redirect':
        return { t: 'redirect', leader: r.leader ?? -1 };
      default:
        return { t: 'busy' };
    }
  }

  /**
   * Admission of a command into the log, decided here once and never again at
   * apply: the state machine applies whatever was chosen (PMMC), so every check
   * that may refuse a command uses the cluster's limits (from the log, the same
   * on every node), and a refusal here proves the command never ran anywhere.
   * Returns the reply for a refused command, or null to submit it.
   */
  private admit(
    cid: number,
    seq: number,
    op: KvOp | Extract<SysOp, { kind: 'register' | 'outcome' | 'member' }>,
  ): FrontReply | null {
    const limits = this.o.sm.limits;
    if (!limits) {
      // A new cluster: nothing is admitted before its limits are in the log. The
      // leader proposes its own; the first one chosen becomes the cluster's.
      if (this.o.replica.role !== 'leader')
        return { t: 'redirect', cid, seq, leader: this.o.replica.leader ?? -1 };
      this.proposeLimits();
      return { t: 'error', cid, seq, code: 'busy', message: 'recording the cluster limits' };
    }
    if (op.kind === 'register') {
      if (cid < REGISTER_NONCE_MIN)
        return { t: 'error', cid, seq, code: 'bad_op', message: 'register needs a nonce cid' };
      return null;
    }
    // An outcome query goes through the log like a write (its answer is final there).
    const tooBig =
      op.kind === 'outcome' || op.kind === 'member'
        ? null
        : admissionError(op, limits.valueBytesMax);
    if (tooBig) return { t: 'error', cid, seq, ...tooBig };
    // Evicted for good (ids are never reused): the state machine would refuse it
    // too, so it need not take a slot.
    if (this.o.sm.evicted(cid) || cid === LIMITS_CID || cid >= REGISTER_NONCE_MIN)
      return { t: 'result', cid, seq, result: { ok: false, err: 'session_expired' } };
    return null;
  }

  private proposeLimits(): void {
    const l = this.o.localLimits;
    const cmd = { sessionsMax: l.sessionsMax, valueBytesMax: l.valueBytesMax };
    // Same (cid, seq) every time: the replica queues it at most once.
    this.o.replica.submit({ cid: LIMITS_CID, seq: 1, op: encodeLimits(cmd) });
  }

  /**
   * After a ready(): the results of applied commands for those who wait for
   * them, and the reads whose read index is confirmed (answered from the state
   * machine now, after the slots before them were applied).
   */
  answers(
    applied: readonly AppliedEntry[],
    reads: readonly number[],
    out: (to: T, a: FrontAnswer) => void,
  ): void {
    for (const a of applied)
      for (let i = 0; i < a.cmds.length; i++) {
        const c = a.cmds[i];
        const key = `${c.cid}:${c.seq}`;
        const list = this.waiters.get(key);
        if (!list) continue;
        this.waiters.delete(key);
        for (const w of list)
          out(w.to, { cid: c.cid, seq: c.seq, result: a.results[i], read: false });
      }
    for (const id of reads) {
      const w = this.readWaiters.get(id);
      if (!w) continue;
      this.readWaiters.delete(id);
      if ('barrier' in w) {
        w.barrier();
        continue;
      }
      const value = this.o.sm.data.get(w.key) ?? null;
      out(w.to, { cid: w.cid, seq: w.seq, result: { ok: true, value }, read: true });
    }
  }

  /** Forget waiters that arrived before `horizon`: their request was lost with a leader change, and the client retries anyway. */
  expire(horizon: number): void {
    for (const [k, list] of this.waiters)
      if (list[list.length - 1].at < horizon) this.waiters.delete(k);
    for (const [id, w] of this.readWaiters) if (w.at < horizon) this.readWaiters.delete(id);
  }
}
