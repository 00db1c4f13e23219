import { ballotSid, formatBallot, nextBallot } from './ballot';
import type { Prng } from './prng';
import { Timeout } from './timeout';
import {
  CHOSEN_BALLOT,
  SYNC_BEFORE_SEND,
  type AppliedEntry,
  type Cmd,
  type CmdResult,
  type DurableRecord,
  type Msg,
  type Outbound,
  type PromiseEntry,
  type Ready,
  type SnapshotOut,
  type StateMachine,
  type SubmitResult,
  type Value,
} from './types';

/** Settings of one replica; all durations are in ticks. */
export interface ReplicaOptions {
  sid: number;
  /** Every SID of the cluster, this one included. Lower SID = higher bully rank. */
  sids: number[];
  prng: Prng;
  sm: StateMachine;
  heartbeatTicks: number;
  electionTicks: number;
  retransmitTicks: number;
  retransmitMaxTicks: number;
  /** Slots the leader may have in Phase 2 at once (pipelining bound). */
  windowSlots: number;
  /** Byte budget of one slot's batch and of one datagram's worth of entries. */
  batchBytesMax: number;
  /** Client commands the leader queues before it answers "busy". */
  pendingMax: number;
  catchupBytesMax: number;
  /** Take a snapshot (and compact the log) every this many applied slots. */
  snapshotEverySlots: number;
  /**
   * Also snapshot after this many bytes of applied commands: batching packs many
   * commands per slot, and the log between snapshots is held in memory.
   */
  snapshotEveryBytes?: number;
  /** Chosen slots kept below a snapshot so that slightly lagging peers catch up without it. */
  keepSlots?: number;
  /** Deterministic trace sink (simulator, debug). */
  trace?: (line: string) => void;
  /**
   * Deliberate protocol bugs, for tests only: they show that the simulator's
   * invariants catch a broken protocol (not only a broken driver). Never set in
   * production (the daemon has no way to pass it).
   */
  mutations?: readonly Mutation[];
}

/** Protocol mutations the simulator must catch (see ReplicaOptions.mutations). */
export type Mutation =
  /** The new leader ignores the values reported in promises (proposes no-ops). */
  | 'ignore-promise-values'
  /** The acceptor accepts below its promise. */
  | 'accept-below-promise'
  /** Reads are answered without the read-index confirmation round. */
  | 'read-without-confirm'
  /** A quorum of floor(n/2): two minorities can both decide. */
  | 'minority-quorum';

/**
 * One slot as this node knows it. Acceptor and learner share the entry: once a
 * slot is known chosen its value can never change, and reporting it as chosen
 * in a promise is always safe.
 */
interface Entry {
  /** Ballot at which this node accepted `value`; CHOSEN_BALLOT if learned chosen. */
  ballot: number;
  value: Value;
  chosen: boolean;
}

interface InFlight {
  value: Value;
  acks: Set<number>;
  timeout: Timeout;
}

interface Phase1 {
  ballot: number;
  from: number;
  startedAt: number;
  /** Per acceptor: the [lo, hi) slot ranges its promise chunks covered (hi 0 = infinity). */
  covered: Map<number, [number, number][]>;
  complete: Set<number>;
  /** Highest-ballot accepted value per slot seen in promises (Infinity = known chosen). */
  merged: Map<number, { ballot: number; value: Value }>;
  timeout: Timeout;
}

interface PeerInfo {
  promised: number;
  chosen: number;
  eligible: boolean;
  voter: boolean;
}

export type Role = 'follower' | 'candidate' | 'leader';

/** A status row for operators (paxos-client status). */
export interface ReplicaStatus {
  sid: number;
  role: Role;
  voter: boolean;
  promised: number;
  ballot: string;
  leader: number | null;
  chosen: number;
  applied: number;
  base: number;
  queued: number;
  inflight: number;
}

/** Bytes a value is likely to take on the wire (for budgets, not exact). */
export function valueBytes(value: Value): number {
  let n = 4;
  for (const c of value) n += c.op.length + 20;
  return n;
}

/**
 * The Multi-Paxos replica: acceptor, leader (proposer), learner, bully election
 * and catch-up in one deterministic state machine. It never touches a clock, a
 * socket or a disk: drivers call tick(), step() and submit(), then ready(), and
 * must persist `ready.persist` before sending `ready.messages` (messages to this
 * node's own SID included; they are delivered back through step()).
 */
export class Replica {
  readonly sid: number;
  readonly sids: number[];
  readonly quorum: number;
  private readonly mutations: ReadonlySet<Mutation>;
  private readonly o: ReplicaOptions;
  private readonly keepSlots: number;
  /** How far beyond the chosen prefix an accept or learned value may reach. */
  private readonly slotsAheadMax: number;

  // ---- durable acceptor state (rebuilt from records at restart) ----
  /** Highest ballot promised; no accept below it is ever taken. */
  promised = 0;
  /** False after a lost disk until the rejoin rule passes (Paxos Made Live). */
  voter = false;
  /** Slot -> what this node accepted or learned. Slots <= base are compacted away. */
  private readonly log = new Map<number, Entry>();
  /** Slots <= base are chosen, applied and only held in the snapshot. */
  base = 0;

  // ---- learner ----
  /** Every slot <= chosenThrough is known chosen (contiguous prefix). */
  chosenThrough = 0;
  /** Every slot <= applied has been applied to the state machine, in order. */
  applied = 0;
  /** Highest chosen prefix any peer has told us about, and who said it. */
  private knownChosen = 0;
  private knownChosenFrom = -1;
  private lastCommit = { ballot: 0, through: 0 };
  private lastSnapshot: { slot: number; data: Uint8Array } | null = null;

  // ---- election ----
  role: Role = 'follower';
  /** The ballot this node leads (or campaigns) with. */
  ballot = 0;
  leader: number | null = null;
  private leaderBallot = 0;
  private leaderSeenAt = 0;
  private leaderLostAt = 0;
  private maxBallotSeen = 0;
  private now = 0;
  private readonly lastHeard = new Map<number, number>();
  private readonly peers = new Map<number, PeerInfo>();
  private readonly heartbeat: Timeout;
  private readonly election: Timeout;

  // ---- leader ----
  private p1: Phase1 | null = null;
  private nextSlot = 1;
  private readonly inflight = new Map<number, InFlight>();
  private queue: Cmd[] = [];
  private readonly queuedKeys = new Set<string>();
  private newAccepts: number[] = [];
  private commitSent = 0;
  private lastNoopAt = 0;

  // ---- read index (linearizable reads without a log slot) ----
  /** Reads that arrived since the last confirmation round began. */
  private readQueue: { id: number; index: number }[] = [];
  private readRound = 0;
  private readonly readRounds = new Map<
    number,
    { acks: Set<number>; reads: { id: number; index: number }[]; timeout: Timeout }
  >();
  /** Confirmed reads waiting for `applied` to reach their index (index ascending). */
  private confirmedReads: { id: number; index: number }[] = [];
  private readsOut: number[] = [];

  // ---- catch-up ----
  private catchup: { peer: number; timeout: Timeout; attempts: number } | null = null;
  private snapRecv: {
    slot: number;
    total: number;
    parts: Uint8Array[];
    received: number;
    peer: number;
    timeout: Timeout;
    reported: number;
  } | null = null;
  private chosenAtLastTick = 0;
  /** Command bytes applied since the last snapshot (taken or installed). */
  private bytesSinceSnapshot = 0;

  // ---- rejoin after a lost disk ----
  private readonly rejoinPromised = new Map<number, number>();
  private joinThreshold: number | null = null;

  // ---- outputs of the current turn ----
  private persistOut: DurableRecord[] = [];
  private messagesOut: Outbound[] = [];
  private appliedOut: AppliedEntry[] = [];
  private eventsOut: string[] = [];
  private snapshotOut: SnapshotOut | null = null;
  private readonly acceptedOut = new Map<number, { ballot: number; slots: number[] }>();

  /** Counters for status and tests. */
  readonly stats = {
    elections: 0,
    leaderships: 0,
    stepDowns: 0,
    proposedSlots: 0,
    proposedCmds: 0,
    catchupRequests: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    ignoredNotVoter: 0,
  };

  constructor(opts: ReplicaOptions) {
    this.o = opts;
    this.sid = opts.sid;
    this.sids = [...opts.sids].sort((a, b) => a - b);
    if (!this.sids.includes(opts.sid)) throw new Error(`sid ${opts.sid} is not in the cluster`);
    this.mutations = new Set(opts.mutations ?? []);
    this.quorum =
      Math.floor(this.sids.length / 2) + (this.mutations.has('minority-quorum') ? 0 : 1);
    this.slotsAheadMax = 16 * opts.windowSlots + 4096;
    this.keepSlots = opts.keepSlots ?? Math.min(100, Math.floor(opts.snapshotEverySlots / 2));
    this.heartbeat = new Timeout('heartbeat', opts.heartbeatTicks);
    this.heartbeat.start();
    this.election = new Timeout('election', opts.electionTicks);
    this.election.jitter(opts.prng, Math.max(1, Math.floor(opts.electionTicks / 3)));
  }

  // ======================= restore =======================

  /**
   * Rebuild state at start: the latest snapshot (if any), then every durable
   * record in write order. Records are idempotent "set" operations, so replaying
   * a WAL that overlaps its own checkpoint is harmless.
   */
  restore(snapshot: { slot: number; data: Uint8Array } | null, records: DurableRecord[]): void {
    if (snapshot) {
      this.o.sm.restore(snapshot.data);
      this.base = this.chosenThrough = this.applied = snapshot.slot;
      this.lastSnapshot = snapshot;
    }
    for (const r of records) {
      switch (r.t) {
        case 'promise':
          if (r.ballot > this.promised) this.promised = r.ballot;
          break;
        case 'voter':
          this.voter = true;
          break;
        case 'accept': {
          if (r.slot <= this.base) break;
          const e = this.log.get(r.slot);
          if (e?.chosen) break;
          if (!e || r.ballot >= e.ballot)
            this.log.set(r.slot, { ballot: r.ballot, value: r.value, chosen: false });
          break;
        }
        case 'chosen': {
          const e = this.log.get(r.slot);
          if (e && e.ballot === r.ballot) e.chosen = true;
          break;
        }
        case 'learn':
          if (r.slot > this.base)
            this.log.set(r.slot, { ballot: CHOSEN_BALLOT, value: r.value, chosen: true });
          break;
        case 'snapshot':
          if (!snapshot || r.slot > snapshot.slot)
            throw new Error(`snapshot for slot ${r.slot} is recorded but was not loaded`);
          break;
      }
    }
    this.maxBallotSeen = this.promised;
    this.nextSlot = Math.max(this.nextSlot, this.maxLogSlot() + 1);
    this.advanceChosen();
  }

  /** Make a fresh node a voter (cluster bootstrap); persisted by the next ready(). */
  bootstrap(): void {
    if (this.voter) return;
    this.voter = true;
    this.persistOut.push({ t: 'voter' });
  }

  // ======================= inputs =======================

  /** One logical clock tick. */
  tick(): void {
    this.now++;
    this.heartbeat.tick();
    this.election.tick();
    if (this.heartbeat.fired()) {
      this.heartbeat.reset();
      this.broadcastHeartbeat();
    }
    if (this.role === 'leader') this.tickLeader();
    else if (this.role === 'candidate') this.tickCandidate();
    else this.tickFollower();
    this.tickCatchup();
    if (!this.voter) this.checkRejoin();
  }

  /** A message from peer `from` (already authenticated and validated). */
  step(from: number, msg: Msg): void {
    if (from !== this.sid) this.lastHeard.set(from, this.now);
    switch (msg.t) {
      case 'prepare':
        return this.onPrepare(from, msg);
      case 'promise':
        return this.onPromise(from, msg);
      case 'accept':
        return this.onAccept(from, msg);
      case 'accepted':
        return this.onAccepted(from, msg);
      case 'nack':
        return this.onNack(msg);
      case 'commit':
        this.noteLeader(msg.ballot);
        return this.learnCommit(msg.ballot, msg.through, from);
      case 'heartbeat':
        return this.onHeartbeat(from, msg);
      case 'confirm':
        return this.onConfirm(from, msg);
      case 'confirmed':
        return this.onConfirmed(from, msg);
      case 'catchupReq':
        return this.onCatchupReq(from, msg);
      case 'catchupResp':
        return this.onCatchupResp(from, msg);
      case 'snapshotReq':
        return this.onSnapshotReq(from, msg);
      case 'snapshotResp':
        return this.onSnapshotResp(from, msg);
    }
  }

  /**
   * A client command arrives at this node. Only the leader queues it; the batch
   * is cut in ready(), so every command that arrived in one turn shares a slot.
   */
  submit(cmd: Cmd): SubmitResult {
    const cached = this.o.sm.cached(cmd.cid, cmd.seq);
    if (cached) return { kind: 'cached', result: cached };
    if (this.role !== 'leader') return { kind: 'redirect', leader: this.leader };
    const key = cmdKey(cmd);
    if (this.queuedKeys.has(key)) return { kind: 'queued' };
    if (this.queue.length >= this.o.pendingMax) return { kind: 'busy' };
    this.queue.push(cmd);
    this.queuedKeys.add(key);
    return { kind: 'queued' };
  }

  /**
   * A linearizable read (Raft's read index, in Paxos terms): it may be answered
   * once (a) a majority has confirmed, after the read arrived, that it promised
   * no ballot above ours, so no other leader can have chosen anything yet, and
   * (b) every slot we proposed before the read arrived is applied. All reads of
   * one turn share one confirmation round, and no disk write is needed.
   */
  submitRead(id: number): SubmitResult {
    if (this.role !== 'leader') return { kind: 'redirect', leader: this.leader };
    if (this.readQueue.length + this.confirmedReads.length >= this.o.pendingMax)
      return { kind: 'busy' };
    this.readQueue.push({ id, index: this.nextSlot - 1 });
    return { kind: 'queued' };
  }

  /**
   * Hand out this turn's work and clear it. Persist, then write the snapshot,
   * then send, then answer clients.
   */
  ready(): Ready {
    if (this.role === 'leader') {
      this.proposeQueued();
      this.flushAccepts();
      if (this.readQueue.length > 0) this.startReadRound();
      this.releaseReads();
    }
    for (const [to, a] of this.acceptedOut)
      this.send(to, { t: 'accepted', ballot: a.ballot, slots: a.slots });
    this.acceptedOut.clear();
    // The driver rotates the WAL to the checkpoint after persisting this turn's
    // records: it must include what was recorded after the snapshot was taken.
    if (this.snapshotOut) this.snapshotOut.checkpoint = this.checkpoint(this.snapshotOut.slot);
    const out: Ready = {
      persist: this.persistOut,
      mustSync: this.persistOut.some(
        (r) => r.t === 'promise' || r.t === 'accept' || r.t === 'voter',
      ),
      snapshot: this.snapshotOut,
      messages: this.messagesOut,
      applied: this.appliedOut,
      events: this.eventsOut,
      reads: this.readsOut,
    };
    this.readsOut = [];
    this.persistOut = [];
    this.messagesOut = [];
    this.appliedOut = [];
    this.eventsOut = [];
    this.snapshotOut = null;
    return out;
  }

  status(): ReplicaStatus {
    return {
      sid: this.sid,
      role: this.role,
      voter: this.voter,
      promised: this.promised,
      ballot: formatBallot(this.promised),
      leader: this.leader,
      chosen: this.chosenThrough,
      applied: this.applied,
      base: this.base,
      queued: this.queue.length,
      inflight: this.inflight.size,
    };
  }

  /**
   * Assertions on this replica's own state (TigerBeetle style), cheap enough to
   * run after every step in tests and the simulator. Throws on a broken invariant.
   */
  checkInvariants(): void {
    const bad = (why: string): never => {
      throw new Error(`sid ${this.sid}: invariant broken: ${why}`);
    };
    if (!(this.base <= this.applied)) bad(`base ${this.base} > applied ${this.applied}`);
    if (!(this.applied <= this.chosenThrough))
      bad(`applied ${this.applied} > chosen ${this.chosenThrough}`);
    if (!(this.chosenThrough <= this.knownChosen))
      bad(`chosen ${this.chosenThrough} > known chosen ${this.knownChosen}`);
    for (let s = this.base + 1; s <= this.chosenThrough; s++)
      if (!this.log.get(s)?.chosen)
        bad(`slot ${s} <= chosen prefix ${this.chosenThrough} is not chosen`);
    for (const [s, e] of this.log) {
      if (s <= this.base) bad(`slot ${s} kept below base ${this.base}`);
      if (!e.chosen && e.ballot > this.promised)
        bad(
          `slot ${s} accepted at ${formatBallot(e.ballot)} above promised ${formatBallot(this.promised)}`,
        );
    }
    if (this.role === 'leader' || this.role === 'candidate') {
      if (!this.voter) bad(`${this.role} without a vote`);
      if (ballotSid(this.ballot) !== this.sid) bad(`${this.role} with another node's ballot`);
    }
    if (this.role === 'candidate' && !this.p1) bad('candidate without phase 1 state');
    if (this.role !== 'candidate' && this.p1) bad(`${this.role} with phase 1 state`);
    if (this.role === 'leader') {
      if (this.ballot > this.promised)
        bad(`leader ballot ${formatBallot(this.ballot)} above its own promise`);
      if (this.inflight.size > this.o.windowSlots + this.slotsAheadMax)
        bad(`${this.inflight.size} slots in flight, window ${this.o.windowSlots}`);
      for (const slot of this.inflight.keys()) {
        if (slot >= this.nextSlot) bad(`in-flight slot ${slot} >= next slot ${this.nextSlot}`);
        if (this.log.get(slot)?.chosen) bad(`in-flight slot ${slot} is already chosen`);
      }
      if (this.nextSlot <= this.chosenThrough)
        bad(`next slot ${this.nextSlot} <= chosen ${this.chosenThrough}`);
    } else if (this.inflight.size > 0) bad(`${this.role} with slots in flight`);
  }

  /** The chosen value of a slot, if this node knows it and has not compacted it. */
  chosenValue(slot: number): Value | undefined {
    const e = this.log.get(slot);
    return e?.chosen ? e.value : undefined;
  }

  /** For invariant checks: the accepted (ballot, value) of a slot, if any. */
  acceptedEntry(slot: number): { ballot: number; value: Value; chosen: boolean } | undefined {
    return this.log.get(slot);
  }

  /** Records that rebuild everything above the snapshot: the WAL head after rotation. */
  checkpoint(slot: number): DurableRecord[] {
    const out: DurableRecord[] = [{ t: 'snapshot', slot }];
    if (this.voter) out.push({ t: 'voter' });
    if (this.promised > 0) out.push({ t: 'promise', ballot: this.promised });
    const slots = [...this.log.keys()].filter((s) => s > this.base).sort((a, b) => a - b);
    for (const s of slots) {
      const e = this.log.get(s)!;
      if (e.chosen) out.push({ t: 'learn', slot: s, value: e.value });
      else out.push({ t: 'accept', slot: s, ballot: e.ballot, value: e.value });
    }
    return out;
  }

  // ======================= election =======================

  private alive(sid: number): boolean {
    if (sid === this.sid) return true;
    const at = this.lastHeard.get(sid);
    return at !== undefined && this.now - at <= this.o.electionTicks;
  }

  private aliveCount(): number {
    let n = 0;
    for (const s of this.sids) if (this.alive(s)) n++;
    return n;
  }

  private maxPeerChosen(): number {
    let m = 0;
    for (const [sid, p] of this.peers) if (this.alive(sid) && p.chosen > m) m = p.chosen;
    return m;
  }

  /**
   * May this node lead: it votes and is caught up with its live peers. Slack of
   * two windows: under load every follower trails the leader by a few slots.
   */
  private eligible(): boolean {
    return this.voter && this.chosenThrough + 2 * this.o.windowSlots >= this.maxPeerChosen();
  }

  private tickFollower(): void {
    if (this.leader !== null && this.now - this.leaderSeenAt <= this.election.after) return;
    if (this.leader !== null) {
      this.trace(`leader ${this.leader} lost`);
      this.leader = null;
      this.leaderLostAt = this.now;
    }
    if (this.now - this.leaderSeenAt <= this.election.after) return;
    // Pre-vote check: campaigning without a live majority only inflates ballots
    // and disrupts the cluster when the partition heals.
    if (this.aliveCount() < this.quorum || !this.eligible()) return;
    const candidates = this.sids.filter(
      (s) => s === this.sid || (this.alive(s) && this.peers.get(s)?.eligible === true),
    );
    // Bully: the live eligible node of highest rank (lowest SID) runs first. If no
    // leader appears within another election period, the next one runs too.
    const waited = this.now - Math.max(this.leaderLostAt, this.leaderSeenAt);
    const skip = Math.floor(waited / this.election.after) - 1;
    const idx = Math.max(0, Math.min(skip, candidates.length - 1));
    if (candidates.indexOf(this.sid) <= idx) this.startPhase1();
  }

  private startPhase1(): void {
    this.role = 'candidate';
    this.ballot = nextBallot(Math.max(this.promised, this.maxBallotSeen), this.sid);
    this.maxBallotSeen = this.ballot;
    this.stats.elections++;
    const timeout = new Timeout('prepare', this.o.retransmitTicks, this.o.retransmitMaxTicks);
    timeout.start();
    this.p1 = {
      ballot: this.ballot,
      from: this.chosenThrough + 1,
      startedAt: this.now,
      covered: new Map(),
      complete: new Set(),
      merged: new Map(),
      timeout,
    };
    this.trace(`campaign ballot ${formatBallot(this.ballot)} from slot ${this.p1.from}`);
    for (const s of this.sids)
      this.send(s, { t: 'prepare', ballot: this.ballot, from: this.p1.from });
  }

  private tickCandidate(): void {
    const p1 = this.p1!;
    if (this.now - p1.startedAt > 3 * this.o.electionTicks) {
      this.trace(`campaign ${formatBallot(p1.ballot)} gave up`);
      this.stepDown(null);
      return;
    }
    p1.timeout.tick();
    if (!p1.timeout.fired()) return;
    p1.timeout.backoff(this.o.prng);
    for (const s of this.sids)
      if (!p1.complete.has(s)) this.send(s, { t: 'prepare', ballot: p1.ballot, from: p1.from });
  }

  private tickLeader(): void {
    // A leader cut off from a majority steps down so clients look elsewhere.
    if (this.aliveCount() < this.quorum) {
      this.eventsOut.push(`sid ${this.sid}: lost contact with a majority; stepping down`);
      this.stepDown(null);
      return;
    }
    const resend = new Map<number, number[]>();
    for (const [slot, f] of this.inflight) {
      f.timeout.tick();
      if (!f.timeout.fired()) continue;
      f.timeout.backoff(this.o.prng);
      for (const s of this.sids) {
        if (f.acks.has(s)) continue;
        let list = resend.get(s);
        if (!list) resend.set(s, (list = []));
        list.push(slot);
      }
    }
    for (const [round, r] of this.readRounds) {
      r.timeout.tick();
      if (!r.timeout.fired()) continue;
      r.timeout.backoff(this.o.prng);
      for (const s of this.sids)
        if (!r.acks.has(s)) this.send(s, { t: 'confirm', ballot: this.ballot, round });
    }
    for (const [to, slots] of resend)
      for (const msg of this.buildAccepts(slots)) this.send(to, msg);
    // A rejoining peer needs a complete instance that began after it came back.
    if (this.inflight.size === 0 && this.queue.length === 0) {
      for (const [sid, p] of this.peers) {
        if (!p.voter && this.alive(sid) && this.now - this.lastNoopAt >= this.o.electionTicks) {
          this.lastNoopAt = this.now;
          this.propose(this.nextSlot++, []);
          break;
        }
      }
    }
  }

  private becomeLeader(): void {
    const p1 = this.p1!;
    this.p1 = null;
    this.role = 'leader';
    this.leader = this.sid;
    this.leaderBallot = this.ballot;
    this.leaderSeenAt = this.now;
    this.stats.leaderships++;
    let maxSlot = p1.from - 1;
    for (const s of p1.merged.keys()) if (s > maxSlot) maxSlot = s;
    for (const s of this.log.keys()) if (s > maxSlot && !this.log.get(s)!.chosen) maxSlot = s;
    for (let s = p1.from; s <= maxSlot; s++) {
      if (this.log.get(s)?.chosen) continue;
      const m = p1.merged.get(s);
      if (m && m.ballot === Infinity) {
        this.learn(s, m.value);
        continue;
      }
      // The value with the highest accepted ballot must be proposed again;
      // a slot nobody reported accepting is a hole, filled with a no-op.
      this.propose(s, m && !this.mutations.has('ignore-promise-values') ? m.value : []);
    }
    this.nextSlot = maxSlot + 1;
    this.commitSent = 0;
    this.eventsOut.push(
      `sid ${this.sid}: leader at ballot ${formatBallot(this.ballot)} (re-proposing slots ${p1.from}..${maxSlot})`,
    );
    this.trace(`leader ballot ${formatBallot(this.ballot)} slots ${p1.from}..${maxSlot}`);
    this.advanceChosen();
    this.broadcastHeartbeat();
  }

  /** Give up leading or campaigning; `leader` is who we now believe leads. */
  private stepDown(leader: number | null): void {
    if (this.role !== 'follower') this.stats.stepDowns++;
    this.role = 'follower';
    this.p1 = null;
    this.inflight.clear();
    this.newAccepts = [];
    this.queue = [];
    this.queuedKeys.clear();
    // Unanswered reads are dropped; their clients retry at the new leader.
    this.readQueue = [];
    this.readRounds.clear();
    this.confirmedReads = [];
    this.leader = leader;
    this.leaderSeenAt = this.now;
    this.leaderLostAt = this.now;
    this.election.jitter(this.o.prng, Math.max(1, Math.floor(this.o.electionTicks / 3)));
  }

  /** Any sign of a ballot: the higher one wins, and we follow its owner. */
  private noteBallot(ballot: number): void {
    if (ballot > this.maxBallotSeen) this.maxBallotSeen = ballot;
    if (this.role !== 'follower' && ballot > this.ballot) {
      this.trace(`preempted by ${formatBallot(ballot)}`);
      this.stepDown(ballotSid(ballot));
    }
  }

  /** A message from whoever leads `ballot`. */
  private noteLeader(ballot: number): void {
    this.noteBallot(ballot);
    if (ballot >= this.leaderBallot && this.role === 'follower') {
      this.leaderBallot = ballot;
      this.leader = ballotSid(ballot);
      this.leaderSeenAt = this.now;
    }
  }

  private broadcastHeartbeat(): void {
    const msg: Msg = {
      t: 'heartbeat',
      promised: this.role === 'leader' ? this.ballot : this.promised,
      leading: this.role === 'leader',
      chosen: this.chosenThrough,
      next: this.role === 'leader' ? this.nextSlot : 0,
      eligible: this.eligible(),
      voter: this.voter,
    };
    for (const s of this.sids) if (s !== this.sid) this.send(s, msg);
  }

  private onHeartbeat(from: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    this.peers.set(from, {
      promised: m.promised,
      chosen: m.chosen,
      eligible: m.eligible,
      voter: m.voter,
    });
    if (m.leading) {
      this.noteLeader(m.promised);
      this.learnCommit(m.promised, m.chosen, from);
    } else {
      this.noteBallot(m.promised);
      if (m.chosen > this.knownChosen) {
        this.knownChosen = m.chosen;
        this.knownChosenFrom = from;
      }
    }
    if (!this.voter) {
      this.rejoinPromised.set(from, m.promised);
      if (m.leading && this.joinThreshold === null) this.joinThreshold = m.next;
    }
  }

  /**
   * Paxos Made Live's rule for a node that lost its disk: it may have promised
   * ballots it no longer remembers, so it votes only after (a) it has heard the
   * promised ballot of enough peers to intersect any majority that used its lost
   * promise, and adopted the highest, and (b) it has learned chosen a slot that
   * began after it came back.
   */
  private checkRejoin(): void {
    const need = this.sids.length - this.quorum + 1;
    if (this.rejoinPromised.size < need) return;
    if (this.joinThreshold === null || this.chosenThrough < this.joinThreshold) return;
    let max = this.promised;
    for (const b of this.rejoinPromised.values()) if (b > max) max = b;
    if (max > this.promised) {
      this.promised = max;
      this.persistOut.push({ t: 'promise', ballot: max });
    }
    this.voter = true;
    this.persistOut.push({ t: 'voter' });
    this.eventsOut.push(
      `sid ${this.sid}: rejoined as a voter after slot ${this.joinThreshold} (promised ${formatBallot(max)})`,
    );
  }

  // ======================= acceptor =======================

  private onPrepare(from: number, m: Extract<Msg, { t: 'prepare' }>): void {
    if (!this.voter) {
      this.stats.ignoredNotVoter++;
      return;
    }
    this.noteBallot(m.ballot);
    if (m.ballot < this.promised) {
      this.send(from, { t: 'nack', ballot: m.ballot, promised: this.promised });
      return;
    }
    if (m.ballot > this.promised) {
      this.promised = m.ballot;
      this.persistOut.push({ t: 'promise', ballot: m.ballot });
    }
    const slots = [...this.log.keys()].filter((s) => s >= m.from).sort((a, b) => a - b);
    let lo = m.from;
    let entries: PromiseEntry[] = [];
    let bytes = 0;
    for (const s of slots) {
      const e = this.log.get(s)!;
      const size = valueBytes(e.value) + 16;
      if (entries.length > 0 && bytes + size > this.o.batchBytesMax) {
        this.send(from, this.promiseMsg(m, lo, s, entries));
        lo = s;
        entries = [];
        bytes = 0;
      }
      entries.push([s, e.chosen ? CHOSEN_BALLOT : e.ballot, e.value]);
      bytes += size;
    }
    this.send(from, this.promiseMsg(m, lo, 0, entries));
  }

  private promiseMsg(
    m: { ballot: number; from: number },
    lo: number,
    hi: number,
    entries: PromiseEntry[],
  ): Msg {
    return { t: 'promise', ballot: m.ballot, from: m.from, lo, hi, base: this.base, entries };
  }

  private onAccept(from: number, m: Extract<Msg, { t: 'accept' }>): void {
    this.noteLeader(m.ballot);
    if (!this.voter) {
      this.stats.ignoredNotVoter++;
      this.learnCommit(m.ballot, m.commit, from);
      return;
    }
    if (m.ballot < this.promised && !this.mutations.has('accept-below-promise')) {
      this.send(from, { t: 'nack', ballot: m.ballot, promised: this.promised });
      return;
    }
    if (m.ballot > this.promised) {
      this.promised = m.ballot;
      this.persistOut.push({ t: 'promise', ballot: m.ballot });
    }
    let reply = this.acceptedOut.get(from);
    if (!reply || reply.ballot !== m.ballot) {
      reply = { ballot: m.ballot, slots: [] };
      this.acceptedOut.set(from, reply);
    }
    for (const [slot, value] of m.entries) {
      // A slot far beyond what we know is chosen cannot come from a sane leader
      // (its window is small); taking it would make the next leader fill every
      // slot up to it with no-ops. Not answering is always safe.
      if (slot > this.chosenThrough + this.slotsAheadMax || slot < 1) continue;
      const e = slot > this.base ? this.log.get(slot) : undefined;
      if (slot > this.base && !e?.chosen && !(e && e.ballot === m.ballot)) {
        this.log.set(slot, { ballot: m.ballot, value, chosen: false });
        this.persistOut.push({ t: 'accept', slot, ballot: m.ballot, value });
      }
      reply.slots.push(slot);
    }
    this.learnCommit(m.ballot, m.commit, from);
  }

  private onNack(m: Extract<Msg, { t: 'nack' }>): void {
    this.noteBallot(m.promised);
  }

  // ======================= leader =======================

  private onPromise(from: number, m: Extract<Msg, { t: 'promise' }>): void {
    const p1 = this.p1;
    if (this.role !== 'candidate' || !p1 || m.ballot !== p1.ballot) return;
    if (m.base >= p1.from) {
      // That acceptor compacted slots we have not learned: catch up first.
      if (m.base > this.knownChosen) {
        this.knownChosen = m.base;
        this.knownChosenFrom = from;
      }
      this.trace(`campaign abandoned: ${from} compacted through ${m.base}`);
      this.stepDown(null);
      return;
    }
    for (const [slot, ballot, value] of m.entries) {
      if (slot < p1.from || slot > p1.from + this.slotsAheadMax) continue;
      const cur = p1.merged.get(slot);
      const b = ballot === CHOSEN_BALLOT ? Infinity : ballot;
      if (!cur || b > cur.ballot) p1.merged.set(slot, { ballot: b, value });
    }
    let ranges = p1.covered.get(from);
    if (!ranges) p1.covered.set(from, (ranges = []));
    ranges.push([m.lo, m.hi]);
    if (coversToInfinity(ranges, p1.from)) p1.complete.add(from);
    if (p1.complete.size >= this.quorum) this.becomeLeader();
  }

  private onAccepted(from: number, m: Extract<Msg, { t: 'accepted' }>): void {
    if (this.role !== 'leader' || m.ballot !== this.ballot) return;
    for (const slot of m.slots) {
      const f = this.inflight.get(slot);
      if (!f) continue;
      f.acks.add(from);
      if (f.acks.size >= this.quorum) {
        this.inflight.delete(slot);
        this.choose(slot, this.ballot, f.value);
      }
    }
    this.advanceChosen();
  }

  private propose(slot: number, value: Value): void {
    const timeout = new Timeout('accept', this.o.retransmitTicks, this.o.retransmitMaxTicks);
    timeout.start();
    this.inflight.set(slot, { value, acks: new Set(), timeout });
    this.newAccepts.push(slot);
    this.stats.proposedSlots++;
    this.stats.proposedCmds += value.length;
  }

  /** Cut the queue into batches, one slot each, while the window has room. */
  private proposeQueued(): void {
    let i = 0;
    while (i < this.queue.length && this.inflight.size < this.o.windowSlots) {
      const batch: Cmd[] = [];
      let bytes = 4;
      while (i < this.queue.length) {
        const c = this.queue[i];
        const size = c.op.length + 20;
        if (batch.length > 0 && bytes + size > this.o.batchBytesMax) break;
        batch.push(c);
        bytes += size;
        i++;
      }
      this.propose(this.nextSlot++, batch);
    }
    if (i > 0) this.queue = i === this.queue.length ? [] : this.queue.slice(i);
  }

  private flushAccepts(): void {
    if (this.newAccepts.length > 0) {
      const slots = this.newAccepts;
      this.newAccepts = [];
      // One message object per datagram, sent to every acceptor: encoded once.
      for (const msg of this.buildAccepts(slots)) for (const s of this.sids) this.send(s, msg);
      this.commitSent = Math.max(this.commitSent, this.chosenThrough);
    } else if (this.chosenThrough > this.commitSent) {
      // Followers apply as soon as they hear; do not wait for the next heartbeat.
      this.commitSent = this.chosenThrough;
      for (const s of this.sids)
        if (s !== this.sid)
          this.send(s, { t: 'commit', ballot: this.ballot, through: this.chosenThrough });
    }
  }

  /** Accepts for `slots`, packed into datagrams up to the byte budget. */
  private buildAccepts(slots: number[]): Msg[] {
    const out: Msg[] = [];
    let entries: [number, Value][] = [];
    let bytes = 0;
    for (const slot of slots) {
      const f = this.inflight.get(slot);
      if (!f) continue;
      const size = valueBytes(f.value) + 8;
      if (entries.length > 0 && bytes + size > this.o.batchBytesMax) {
        out.push({ t: 'accept', ballot: this.ballot, entries, commit: this.chosenThrough });
        entries = [];
        bytes = 0;
      }
      entries.push([slot, f.value]);
      bytes += size;
    }
    if (entries.length > 0)
      out.push({ t: 'accept', ballot: this.ballot, entries, commit: this.chosenThrough });
    return out;
  }

  private startReadRound(): void {
    const round = ++this.readRound;
    const timeout = new Timeout('confirm', this.o.retransmitTicks, this.o.retransmitMaxTicks);
    timeout.start();
    const r = { acks: new Set([this.sid]), reads: this.readQueue, timeout };
    this.readQueue = [];
    this.readRounds.set(round, r);
    if (this.mutations.has('read-without-confirm')) return this.confirmRound(round);
    for (const s of this.sids)
      if (s !== this.sid) this.send(s, { t: 'confirm', ballot: this.ballot, round });
    if (r.acks.size >= this.quorum) this.confirmRound(round);
  }

  private onConfirm(from: number, m: Extract<Msg, { t: 'confirm' }>): void {
    this.noteLeader(m.ballot);
    if (!this.voter) return;
    if (m.ballot < this.promised) {
      this.send(from, { t: 'nack', ballot: m.ballot, promised: this.promised });
      return;
    }
    this.send(from, { t: 'confirmed', ballot: m.ballot, round: m.round });
  }

  private onConfirmed(from: number, m: Extract<Msg, { t: 'confirmed' }>): void {
    if (this.role !== 'leader' || m.ballot !== this.ballot) return;
    const r = this.readRounds.get(m.round);
    if (!r) return;
    r.acks.add(from);
    if (r.acks.size >= this.quorum) this.confirmRound(m.round);
  }

  private confirmRound(round: number): void {
    const r = this.readRounds.get(round)!;
    this.readRounds.delete(round);
    // Rounds may complete out of order; keep the list sorted by index.
    for (const read of r.reads) this.confirmedReads.push(read);
    this.confirmedReads.sort((a, b) => a.index - b.index);
    this.releaseReads();
  }

  private releaseReads(): void {
    let i = 0;
    while (i < this.confirmedReads.length && this.confirmedReads[i].index <= this.applied)
      this.readsOut.push(this.confirmedReads[i++].id);
    if (i > 0) this.confirmedReads = this.confirmedReads.slice(i);
  }

  // ======================= learner =======================

  /** Mark a slot chosen with the value this node accepted at `ballot` (or `value`). */
  private choose(slot: number, ballot: number, value: Value): void {
    if (slot <= this.base) return;
    const e = this.log.get(slot);
    if (e?.chosen) return;
    if (e && e.ballot === ballot) {
      e.chosen = true;
      this.persistOut.push({ t: 'chosen', slot, ballot });
    } else {
      this.learn(slot, value);
    }
  }

  private learn(slot: number, value: Value): void {
    if (slot <= this.base) return;
    const e = this.log.get(slot);
    if (e?.chosen) return;
    this.log.set(slot, { ballot: CHOSEN_BALLOT, value, chosen: true });
    this.persistOut.push({ t: 'learn', slot, value });
  }

  /**
   * Slots <= through are chosen. Any of them this node accepted at `ballot` holds
   * the chosen value, because a leader proposes one value per slot per ballot.
   */
  private learnCommit(ballot: number, through: number, from: number): void {
    if (through > this.knownChosen) {
      this.knownChosen = through;
      this.knownChosenFrom = from;
    }
    if (ballot > this.lastCommit.ballot || through > this.lastCommit.through)
      this.lastCommit = { ballot, through };
    for (let s = this.chosenThrough + 1; s <= through; s++) {
      const e = this.log.get(s);
      if (!e) break;
      if (e.chosen) continue;
      if (e.ballot !== ballot) break;
      e.chosen = true;
      this.persistOut.push({ t: 'chosen', slot: s, ballot });
    }
    this.advanceChosen();
  }

  /** Extend the chosen prefix and apply it, strictly in slot order. */
  private advanceChosen(): void {
    while (this.log.get(this.chosenThrough + 1)?.chosen) this.chosenThrough++;
    if (this.chosenThrough > this.knownChosen) this.knownChosen = this.chosenThrough;
    while (this.applied < this.chosenThrough) {
      const slot = ++this.applied;
      const value = this.log.get(slot)!.value;
      const { results, lines } = this.o.sm.apply(slot, value);
      this.appliedOut.push({ slot, cmds: value, results, lines });
      for (const c of value) this.queuedKeys.delete(cmdKey(c));
      this.bytesSinceSnapshot += valueBytes(value);
    }
    // Not in a turn that installed a peer's snapshot: replacing the pending output
    // would hide the install from the driver (order-log gap marker). Next turn.
    if (
      (this.applied - (this.lastSnapshot?.slot ?? 0) >= this.o.snapshotEverySlots ||
        this.bytesSinceSnapshot >= (this.o.snapshotEveryBytes ?? Infinity)) &&
      !this.snapshotOut?.installed
    )
      this.takeSnapshot();
  }

  private takeSnapshot(): void {
    const slot = this.applied;
    const data = this.o.sm.snapshot();
    this.lastSnapshot = { slot, data };
    this.bytesSinceSnapshot = 0;
    this.compactTo(slot - this.keepSlots);
    this.stats.snapshotsTaken++;
    this.snapshotOut = { slot, data, checkpoint: this.checkpoint(slot), installed: false };
    this.trace(`snapshot at slot ${slot} (${data.length} bytes)`);
  }

  private compactTo(slot: number): void {
    for (let s = this.base + 1; s <= slot; s++) this.log.delete(s);
    if (slot > this.base) this.base = slot;
  }

  private maxLogSlot(): number {
    let m = this.base;
    for (const s of this.log.keys()) if (s > m) m = s;
    return m;
  }

  // ======================= catch-up =======================

  private tickCatchup(): void {
    const progressed = this.chosenThrough > this.chosenAtLastTick;
    this.chosenAtLastTick = this.chosenThrough;
    const r = this.snapRecv;
    if (r) {
      r.timeout.tick();
      if (r.timeout.fired()) {
        r.timeout.backoff(this.o.prng);
        if (r.timeout.attempts > 8) {
          this.eventsOut.push(
            `sid ${this.sid}: snapshot transfer from ${r.peer} stalled; retrying`,
          );
          this.snapRecv = null;
        } else {
          this.send(r.peer, { t: 'snapshotReq', slot: r.slot, offset: r.received });
        }
      }
      return;
    }
    if (this.knownChosen <= this.chosenThrough) {
      this.catchup = null;
      return;
    }
    const c = this.catchup;
    if (c) {
      c.timeout.tick();
      if (!c.timeout.fired()) return;
      c.timeout.backoff(this.o.prng);
      c.attempts++;
    } else if (progressed) {
      // Still moving: the slots may simply be in flight. Wait one more tick.
      return;
    }
    this.requestCatchup();
  }

  private requestCatchup(): void {
    const others = this.sids.filter((s) => s !== this.sid && this.alive(s));
    if (others.length === 0) return;
    let peer = this.knownChosenFrom;
    const attempts = this.catchup ? this.catchup.attempts : 0;
    if (peer === this.sid || peer < 0 || attempts > 0 || !this.alive(peer))
      peer = others[(attempts + this.o.prng.int(others.length)) % others.length];
    if (!this.catchup) {
      const timeout = new Timeout('catchup', this.o.retransmitTicks, this.o.retransmitMaxTicks);
      timeout.start();
      this.catchup = { peer, timeout, attempts: 0 };
    } else {
      this.catchup.peer = peer;
    }
    this.stats.catchupRequests++;
    this.send(peer, { t: 'catchupReq', from: this.chosenThrough + 1, to: this.knownChosen });
  }

  private onCatchupReq(from: number, m: Extract<Msg, { t: 'catchupReq' }>): void {
    if (m.from <= this.base && this.lastSnapshot) {
      this.send(from, {
        t: 'catchupResp',
        from: m.from,
        entries: [],
        snapshot: this.lastSnapshot.slot,
        snapshotBytes: this.lastSnapshot.data.length,
      });
      return;
    }
    // Slot numbering starts at 1; below base only the snapshot has the values.
    const start = Math.max(m.from, this.base + 1);
    const entries: Value[] = [];
    let bytes = 0;
    for (let s = start; s <= this.chosenThrough; s++) {
      const value = this.log.get(s)!.value;
      const size = valueBytes(value);
      if (entries.length > 0 && bytes + size > this.o.catchupBytesMax) break;
      entries.push(value);
      bytes += size;
    }
    this.send(from, { t: 'catchupResp', from: start, entries, snapshot: 0, snapshotBytes: 0 });
  }

  private onCatchupResp(from: number, m: Extract<Msg, { t: 'catchupResp' }>): void {
    if (m.snapshot > 0) {
      if (m.snapshot > this.chosenThrough && !this.snapRecv) {
        const timeout = new Timeout('snapshot', this.o.retransmitTicks, this.o.retransmitMaxTicks);
        timeout.start();
        this.snapRecv = {
          slot: m.snapshot,
          total: m.snapshotBytes,
          parts: [],
          received: 0,
          peer: from,
          timeout,
          reported: 0,
        };
        this.eventsOut.push(
          `sid ${this.sid}: behind the compaction point; fetching snapshot at slot ${m.snapshot} (${m.snapshotBytes} bytes) from ${from}`,
        );
        this.send(from, { t: 'snapshotReq', slot: m.snapshot, offset: 0 });
      }
      return;
    }
    const before = this.chosenThrough;
    if (m.from < 1 || m.from > this.chosenThrough + this.slotsAheadMax) return;
    for (let i = 0; i < m.entries.length; i++) this.learn(m.from + i, m.entries[i]);
    this.advanceChosen();
    this.learnCommit(this.lastCommit.ballot, this.lastCommit.through, this.knownChosenFrom);
    if (this.chosenThrough > before && this.catchup) {
      // Progress: ask for the next chunk right away (no timer wait).
      this.catchup = null;
      if (this.knownChosen > this.chosenThrough) this.requestCatchup();
    }
  }

  private onSnapshotReq(from: number, m: Extract<Msg, { t: 'snapshotReq' }>): void {
    const snap = this.lastSnapshot;
    if (!snap) return;
    const offset = snap.slot === m.slot ? m.offset : 0;
    const data = snap.data.subarray(offset, offset + this.o.catchupBytesMax);
    this.send(from, {
      t: 'snapshotResp',
      slot: snap.slot,
      offset,
      total: snap.data.length,
      data,
    });
  }

  private onSnapshotResp(from: number, m: Extract<Msg, { t: 'snapshotResp' }>): void {
    let r = this.snapRecv;
    if (!r) return;
    if (m.slot !== r.slot) {
      if (m.slot <= r.slot || m.offset !== 0) return;
      r.slot = m.slot;
      r.total = m.total;
      r.parts = [];
      r.received = 0;
      r.reported = 0;
    }
    if (m.offset !== r.received || m.total !== r.total) return;
    r.parts.push(m.data);
    r.received += m.data.length;
    r.timeout.start();
    const pct = Math.floor((100 * r.received) / Math.max(1, r.total));
    if (pct >= r.reported + 10 || r.received >= r.total) {
      r.reported = pct;
      this.eventsOut.push(
        `sid ${this.sid}: snapshot ${r.slot} from ${from}: ${r.received}/${r.total} bytes (${pct}%)`,
      );
    }
    if (r.received < r.total && m.data.length > 0) {
      this.send(from, { t: 'snapshotReq', slot: r.slot, offset: r.received });
      return;
    }
    if (r.received < r.total) return;
    r = null;
    this.installSnapshot(this.snapRecv!.slot, concat(this.snapRecv!.parts));
    this.snapRecv = null;
  }

  private installSnapshot(slot: number, data: Uint8Array): void {
    if (slot <= this.chosenThrough) return;
    try {
      this.o.sm.restore(data);
    } catch (e) {
      // A snapshot we cannot read must not take the node down (restore() leaves
      // the state machine untouched when it throws); catch-up will try again.
      this.eventsOut.push(
        `sid ${this.sid}: received snapshot ${slot} is unreadable (${(e as Error).message}); ignoring it`,
      );
      return;
    }
    this.lastSnapshot = { slot, data };
    this.bytesSinceSnapshot = 0;
    this.compactTo(slot);
    this.chosenThrough = this.applied = slot;
    this.stats.snapshotsInstalled++;
    this.snapshotOut = { slot, data, checkpoint: this.checkpoint(slot), installed: true };
    this.eventsOut.push(`sid ${this.sid}: installed snapshot at slot ${slot}`);
    this.advanceChosen();
    this.learnCommit(this.lastCommit.ballot, this.lastCommit.through, this.knownChosenFrom);
  }

  // ======================= helpers =======================

  private send(to: number, msg: Msg): void {
    this.messagesOut.push({ to, msg, sync: SYNC_BEFORE_SEND.has(msg.t) });
  }

  private trace(line: string): void {
    this.o.trace?.(`t=${this.now} sid=${this.sid} ${line}`);
  }
}

function cmdKey(c: Cmd): string {
  return `${c.cid}:${c.seq}`;
}

/** Do [lo, hi) ranges (hi 0 = infinity) cover every slot from `from` on? */
function coversToInfinity(ranges: [number, number][], from: number): boolean {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  let reach = from;
  for (const [lo, hi] of sorted) {
    if (lo > reach) return false;
    if (hi === 0) return true;
    if (hi > reach) reach = hi;
  }
  return false;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export type { CmdResult };
