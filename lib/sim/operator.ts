import type { Prng } from '../core/prng';
import type { AppliedEntry, Cmd, CmdResult, Configuration, MemberAddr } from '../core/types';
import { encodeMember, encodeRegister, REGISTER_NONCE_MIN, type MemberOp } from '../sm/kv';
import type { MembershipPlan } from './config';

/** What the operator may look at (the simulation's view of the run). */
export interface OperatorHooks {
  now(): number;
  /** The sid of a live, unpaused leader, or null. */
  leader(): number | null;
  /**
   * Send a command to a live, unpaused leader's client front (ClientFront.request,
   * as the daemon does for `paxos-client member`): its immediate result, 'sent'
   * (queued: the result comes from the applied log), or null (no leader,
   * redirected, busy).
   */
  submit(cmd: Cmd): CmdResult | 'sent' | null;
  /** The newest configuration of the chosen log (the oracle's). */
  config(): Configuration;
  /** Has `sid` applied (about) everything chosen so far? */
  caughtUp(sid: number): boolean;
  /** Sids whose disk was lost for good: never a member again, removed first. */
  lost: ReadonlySet<number>;
  /**
   * Was `sid` a member of a chosen configuration that the newest one removed? It
   * leaves once the removal is settled (Replica.mayLeave, as the daemon exits):
   * never added again, even before it left (it may leave before it applies the add).
   */
  retired(sid: number): boolean;
  /** The address a `member add` carries: a sid outside the servers list needs one (else none). */
  addr(sid: number): MemberAddr | undefined;
  trace(line: string): void;
}

type Change = { action: MemberOp['action']; sid: number };

interface Pending extends Change {
  seq: number;
  /** A removal of the node that led when it was submitted, or of a lost one. */
  of?: 'leader' | 'lost';
  /** Tick of the last (re)submission. */
  at: number;
}

/**
 * The operator of membership mode (issue 13): it opens a session and submits
 * `member add|promote|remove SID` commands, one at a time (and now and then two
 * or three at once: the one-at-a-time rule must refuse the later ones), at
 * whichever node leads, retrying a lost submission with the same (cid, seq) as
 * a client would. Each result comes from the applied log.
 *
 * The path is the leader's client front (ClientFront.request, then
 * Replica.submit), as the daemon takes `paxos-client member`; the datagram and
 * the daemon's gate on who may ask (an authenticated or validated client) are
 * left out: the operator hands the request to the front directly.
 *
 * A removed node leaves once the new configuration is settled (the daemon's
 * exit, Replica.mayLeave), so a removed sid is never added again; a spare
 * outside the servers list is added with its address (`member add SID HOST
 * PEERPORT CLIENTPORT`, as before `paxosd --join`).
 */
export class MemberOperator {
  private session: number | null = null;
  private nonce = 0;
  private registerAt = -1;
  private seq = 0;
  private pending: Pending[] = [];
  private nextAt = 0;
  /** Sid -> tick it became a learner (promoted once caught up, or after a while). */
  private readonly learnerSince = new Map<number, number>();
  readonly stats = {
    submitted: 0,
    applied: 0,
    refused: 0,
    expired: 0,
    registers: 0,
    /** Applied changes by kind: add, promote, remove, remove-leader, remove-lost. */
    kinds: {} as Record<string, number>,
  };

  constructor(
    private readonly plan: MembershipPlan,
    private readonly sids: readonly number[],
    private readonly prng: Prng,
    private readonly retryTicks: number,
    private readonly hooks: OperatorHooks,
  ) {}

  /** One step of the fault phase. */
  tick(): void {
    const now = this.hooks.now();
    if (this.session === null) return this.register(now);
    if (this.pending.length > 0) {
      // Lost on the way, or the leader died with it queued: the same (cid, seq) again.
      const p = this.pending[0];
      if (now - p.at >= this.retryTicks) for (const q of this.pending) this.submit(q, now);
      return;
    }
    if (now < this.nextAt) return;
    const first = this.choose();
    if (!first) {
      this.nextAt = now + this.retryTicks;
      return;
    }
    const batch = [first];
    if (this.prng.chance(this.plan.burst)) {
      const more = this.followUp(first);
      if (more) batch.push(more);
      if (more && this.prng.chance(0.5)) {
        const third = this.followUp(more);
        if (third) batch.push(third);
      }
    }
    const l = this.hooks.leader();
    for (const c of batch) {
      const p: Pending = { ...c, seq: ++this.seq, at: now };
      if (c.action === 'remove' && this.hooks.lost.has(c.sid)) p.of = 'lost';
      else if (c.action === 'remove' && l === c.sid) p.of = 'leader';
      this.pending.push(p);
      this.stats.submitted++;
      this.hooks.trace(`operator: member ${c.action} ${c.sid} (seq ${p.seq})`);
      this.submit(p, now);
    }
  }

  /** An entry applied by some node: the first application of a command is its result. */
  onApplied(a: AppliedEntry): void {
    for (let i = 0; i < a.cmds.length; i++) {
      const c = a.cmds[i];
      if (this.session === null && c.cid === this.nonce && this.registerAt >= 0) {
        this.registered(a.results[i]);
        continue;
      }
      if (c.cid !== this.session) continue;
      const k = this.pending.findIndex((p) => p.seq === c.seq);
      if (k < 0) continue;
      const p = this.pending[k];
      this.pending.splice(k, 1);
      this.result(p, a.results[i], a.slot);
    }
  }

  private register(now: number): void {
    if (this.registerAt >= 0 && now - this.registerAt < this.retryTicks) return;
    if (this.registerAt < 0) {
      const hi = this.prng.nextU32() & 0xfffff;
      this.nonce = REGISTER_NONCE_MIN + hi * 2 ** 32 + (this.prng.nextU32() >>> 0);
      this.stats.registers++;
    }
    this.registerAt = now;
    const r = this.hooks.submit({ cid: this.nonce, seq: 1, op: encodeRegister() });
    if (r !== null && r !== 'sent') this.registered(r);
  }

  private registered(r: CmdResult): void {
    if (!r.ok || r.value === undefined) return;
    this.session = Number(r.value);
    this.registerAt = -1;
    this.seq = 0;
    this.hooks.trace(`operator: session ${this.session}`);
  }

  private submit(p: Pending, now: number): void {
    p.at = now;
    if (this.session === null) return;
    const addr = p.action === 'add' ? this.hooks.addr(p.sid) : undefined;
    const cmd: Cmd = { cid: this.session, seq: p.seq, op: encodeMember(p.action, p.sid, addr) };
    const r = this.hooks.submit(cmd);
    if (r !== null && r !== 'sent') {
      this.pending = this.pending.filter((q) => q !== p);
      this.result(p, r, -1);
    }
  }

  private result(p: Pending, r: CmdResult, slot: number): void {
    const now = this.hooks.now();
    const what = `member ${p.action} ${p.sid} (seq ${p.seq}${slot >= 0 ? `, slot ${slot}` : ''})`;
    if (r.ok) {
      this.stats.applied++;
      const kind = p.of ? `remove-${p.of}` : p.action;
      this.stats.kinds[kind] = (this.stats.kinds[kind] ?? 0) + 1;
      if (p.action === 'add') this.learnerSince.set(p.sid, now);
      this.hooks.trace(`operator: ${what}: ${r.value ?? 'ok'}`);
    } else if (r.err === 'session_expired') {
      // Evicted (few sessions in some seeds): nothing later in it can run either.
      this.stats.expired++;
      this.session = null;
      this.pending = [];
      this.hooks.trace(`operator: ${what}: session expired, registering again`);
    } else {
      // Refused (one change at a time, or planned on an older configuration) or stale.
      this.stats.refused++;
      this.hooks.trace(`operator: ${what}: ${r.err ?? 'refused'}`);
    }
    if (this.pending.length === 0) this.nextAt = now + this.prng.int(this.plan.gapMax + 1);
  }

  /** The next change for the newest configuration, or null (nothing to do now). */
  private choose(): Change | null {
    const h = this.hooks;
    const c = h.config();
    const p = this.prng;
    const member = (s: number) => c.members.some((m) => m.sid === s);
    const voters = c.members.filter((m) => m.voter).map((m) => m.sid);
    const learners = c.members.filter((m) => !m.voter).map((m) => m.sid);
    const spares = this.sids.filter((s) => !member(s) && this.available(s));
    // Replace a node whose disk was lost for good: remove it, then add a spare.
    const gone = c.members.find((m) => h.lost.has(m.sid));
    if (gone && (voters.length > 1 || !gone.voter)) return { action: 'remove', sid: gone.sid };
    if (learners.length > 0) {
      const s = p.pick(learners);
      // Now and then an aborted join: the learner is removed instead.
      if (p.chance(0.1)) return { action: 'remove', sid: s };
      const since = this.learnerSince.get(s) ?? -Infinity;
      if (h.caughtUp(s) || h.now() - since > 4 * this.retryTicks)
        return { action: 'promote', sid: s };
      return null;
    }
    const min = 3;
    const max = this.plan.voters.length + 2;
    const canAdd = spares.length > 0 && voters.length < max;
    const canRemove = voters.length > min;
    if (canAdd && (!canRemove || voters.length < this.plan.voters.length || p.chance(0.5)))
      return { action: 'add', sid: p.pick(spares) };
    if (!canRemove) return null;
    const l = h.leader();
    const leader = l !== null && voters.includes(l) ? l : null;
    const sid = leader !== null && p.chance(this.plan.removeLeader) ? leader : p.pick(voters);
    return { action: 'remove', sid };
  }

  /** May `sid` be added: neither lost for good nor removed (it leaves)? */
  private available(sid: number): boolean {
    return !this.hooks.lost.has(sid) && !this.hooks.retired(sid);
  }

  /** A change submitted with `c` (refused while `c` is inside its window). */
  private followUp(c: Change): Change | null {
    const h = this.hooks;
    if (c.action === 'add') return { action: 'promote', sid: c.sid };
    const cfg = h.config();
    if (c.action === 'remove') {
      const spare = this.sids.find(
        (s) => s !== c.sid && this.available(s) && !cfg.members.some((m) => m.sid === s),
      );
      return spare === undefined ? null : { action: 'add', sid: spare };
    }
    const other = cfg.members.find((m) => m.voter && m.sid !== c.sid);
    return other ? { action: 'remove', sid: other.sid } : null;
  }
}
