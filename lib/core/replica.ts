import {
  ALPHA_SLOTS,
  ECHO_LIVES_MAX,
  KEEP_SLOTS_MAX,
  SID_MAX,
  SID_MIN,
  SNAPSHOTS_PINNED_MAX,
} from '../limits';
import { ballotSid, formatBallot, nextBallot } from './ballot';
import type { Prng } from './prng';
import { describeDivergence, StateCheck, type Divergence } from './statecheck';
import { Timeout } from './timeout';
import {
  CHOSEN_BALLOT,
  SYNC_BEFORE_SEND,
  type AppliedEntry,
  type Cmd,
  type CmdResult,
  type Configuration,
  type DurableRecord,
  type Member,
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
  /**
   * The config files' servers: the same list on every node (a `member add` of a
   * sid outside it needs an address, and the state machine decides that alike
   * everywhere). This node may be outside it (paxosd --join). Lower SID =
   * higher bully rank. The nodes this replica talks to are these, itself and
   * every member of a kept configuration; vote tables name SIDs, not positions.
   */
  sids: number[];
  /**
   * The bootstrap configuration (default: every sid a voter). Changes are log
   * commands (lib/sm/kv.ts `member`); a state machine without configurations()
   * keeps this one for ever.
   */
  members?: Member[];
  /**
   * Alpha: a configuration applied at slot i governs slots from i + alpha on,
   * and a leader proposes slot s only when it has applied every slot up to
   * s - alpha, so it knows who votes on s. Cluster-wide: every node must use the
   * same (default ALPHA_SLOTS; the simulator makes it small).
   */
  alphaSlots?: number;
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
  /**
   * How far beyond its chosen prefix an acceptor accepts (default SLOTS_AHEAD_WINDOWS
   * windows + SLOTS_AHEAD_SLACK): a bound on what a confused or hostile leader can make it store. The
   * simulator makes it small so that its edge is reached in a few slots.
   */
  slotsAheadMax?: number;
  /** Snapshot chunks sent per request (default SNAPSHOT_WINDOW_CHUNKS; the simulator uses 1). */
  snapshotWindowChunks?: number;
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
  /** Acceptor SID -> the incarnation its accepted named for itself. */
  acks: Map<number, number>;
  timeout: Timeout;
}

interface Phase1 {
  ballot: number;
  from: number;
  startedAt: number;
  /** Per acceptor: the [lo, hi) slot ranges its promise chunks covered (hi 0 = infinity). */
  covered: Map<number, [number, number][]>;
  complete: Set<number>;
  /** Highest-ballot accepted value per slot seen in promises (known chosen ones are learned at once). */
  merged: Map<number, { ballot: number; value: Value }>;
  /** Newest incarnation of every node named in any promise so far (by sid index). */
  incs: number[];
  /** Acceptor SID -> the incarnation its promise named for itself. */
  promiseInc: Map<number, number>;
  timeout: Timeout;
  /** Asked for by the previous leader (its prepares bypass leader stickiness). */
  handoff: boolean;
  /** handoff: the asking leader's ballot and the hand-off's end by its clock (onPrepare). */
  handoffOf: number;
  handoffUntil: number;
}

/**
 * What a peer's heartbeats told us. UDP may re-deliver an old heartbeat at any
 * time, and a stale "it hears us", "it votes", "it follows no live leader" or
 * "the leader is alive" can each keep a leader that chooses nothing in power or
 * defeat pre-vote. So these facts come only from a fresh statement: a heartbeat
 * that echoes one of ours sent within the last election timeout (it answers a
 * request of the current period, as a lease or an etcd heartbeat response does),
 * and is newer than the last one taken. Monotone facts (chosen, ballots) need no
 * proof of freshness.
 */
interface PeerInfo {
  chosen: number;
  /** From the latest fresh statement: */
  eligible: boolean;
  voter: boolean;
  /** It follows no live leader (pre-vote). */
  free: boolean;
  /** Our tick when the latest fresh statement arrived (-Infinity: none yet). */
  freshAt: number;
  /** Its order: the echoed tick of ours, then the sender's tick. */
  freshEcho: number;
  freshTick: number;
  /** The peer's newest heartbeat (life and tick): our heartbeats to it echo this. */
  echo: { life: number; tick: number } | null;
  /** Highest heartbeat tick seen per life of the peer (a few lives, first seen first). */
  lives: Map<number, number>;
}

export type Role = 'follower' | 'candidate' | 'leader';

/**
 * What a replica holds for its role alone: a candidate its Phase 1 (it exists
 * exactly while the node campaigns, so no code can read a stale one).
 */
type RoleState = { role: 'follower' } | { role: 'candidate'; p1: Phase1 } | { role: 'leader' };

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
  /** Highest slot this node has heard is chosen (from any peer): how far it could apply. */
  known: number;
  base: number;
  queued: number;
  inflight: number;
  /** "DIVERGED at slot N ..." once this node's state hash differed from its leader's. */
  diverged: string | null;
  /** Peers whose state hash differed from this node's, "sid@slot" each, space-separated. */
  divergedPeers: string | null;
}

/** Incarnations are epoch * INC_EPOCH + random: epoch-major order, random tie-break. */
const INC_EPOCH = 1 << 20;

/** Snapshot chunks sent per request (one catchupBytesMax each). */
const SNAPSHOT_WINDOW_CHUNKS = 8;
/** A snapshot stays pinned for a fetching peer this many election timeouts after its last request. */
const SNAPSHOT_PIN_ELECTIONS = 4;
/**
 * Default slotsAheadMax: this many windows beyond the chosen prefix, plus
 * SLOTS_AHEAD_SLACK, so that a leader's window and the retransmits of its
 * predecessors never reach the bound in normal operation.
 */
const SLOTS_AHEAD_WINDOWS = 16;
const SLOTS_AHEAD_SLACK = 4096;
/**
 * A campaign that has not won within this many election timeouts gives up and
 * its node waits as a follower (another candidate may be winning).
 */
const CAMPAIGN_ELECTIONS = 3;

/*
 * Wire-size estimates for the byte budgets (upper estimates, not exact: the
 * datagram's headroom covers the rest): a value's array head; per command, its
 * cid, seq and CBOR framing; a promise entry's slot and ballot; an accept
 * entry's slot.
 */
const VALUE_OVERHEAD_BYTES = 4;
const CMD_OVERHEAD_BYTES = 20;
const PROMISE_ENTRY_OVERHEAD_BYTES = 16;
const ACCEPT_ENTRY_OVERHEAD_BYTES = 8;

/** Bytes a command is likely to take on the wire (for budgets, not exact). */
function cmdBytes(c: Cmd): number {
  return c.op.length + CMD_OVERHEAD_BYTES;
}

/** Bytes a value is likely to take on the wire (for budgets, not exact). */
export function valueBytes(value: Value): number {
  let n = VALUE_OVERHEAD_BYTES;
  for (const c of value) n += cmdBytes(c);
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
  /** The config files' servers (ReplicaOptions.sids), sorted. */
  private readonly bootSids: readonly number[];
  /** bootSids and every member of a kept configuration, sorted (refreshSids). */
  private universe: number[] = [];
  /** Alpha (ReplicaOptions.alphaSlots). */
  readonly alpha: number;
  /** The bootstrap configuration, for a state machine without configurations(). */
  private readonly bootstrapConfigs: readonly Configuration[];
  private readonly mutations: ReadonlySet<Mutation>;
  private readonly o: ReplicaOptions;
  private readonly keepSlots: number;
  /** How far beyond the chosen prefix an accept or learned value may reach. */
  private readonly slotsAheadMax: number;
  /** Snapshot chunks per request (ReplicaOptions.snapshotWindowChunks). */
  private readonly snapshotWindowChunks: number;

  // ---- durable acceptor state (rebuilt from records at restart) ----
  /** Highest ballot promised; no accept below it is ever taken. */
  promised = 0;
  /** False after a lost disk until the rejoin rule passes (Paxos Made Live). */
  voter = false;
  /** Slot -> what this node accepted or learned. Slots <= base are compacted away. */
  private readonly log = new Map<number, Entry>();
  /** Slots <= base are chosen, applied and only held in the snapshot. */
  base = 0;
  /**
   * Incarnation of every node as far as we know (index = SID; 0 = the original
   * one; messages carry the nonzero ones as [sid, inc, ...] pairs). A node that lost its disk takes a new, higher one and
   * every voter that answers its rejoin records it before answering; promises and
   * accepteds carry this table, and a proposer discards a vote from an older
   * incarnation of a node once any vote names a newer one (crash-consistent
   * quorums, Michael et al., "Recovering Shared Objects Without Stable Storage",
   * DISC 2017): a vote the node forgot cannot complete a quorum behind its back.
   */
  readonly incs: number[];
  /**
   * Reserved incarnations: recorded by a voter in the first half of a rejoin's
   * second step, reported in `known` so every later rejoin draws above them, but
   * never named in votes. Only an incarnation n - quorum + 1 voters reserved is
   * activated (moved into `incs`), so only one that every later rejoin is sure to
   * see (quorum intersection) can void votes: an abandoned one, recorded late by
   * a replay or by a minority, cannot void a later life's votes for good.
   */
  readonly reserved: number[];

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
  private state: RoleState = { role: 'follower' };
  /** The ballot this node leads (or campaigns) with. */
  ballot = 0;
  leader: number | null = null;
  private leaderBallot = 0;
  /** Highest heartbeat tick seen from the leader of `leaderBallot`. */
  private leaderTick = -1;
  private leaderSeenAt = 0;
  private leaderLostAt = 0;
  private maxBallotSeen = 0;
  private now = 0;
  private readonly lastHeard = new Map<number, number>();
  private readonly peers = new Map<number, PeerInfo>();
  /** Random per process life: peers echo it, proving their heartbeat postdates ours. */
  private readonly life: number;
  private readonly heartbeat: Timeout;
  private readonly election: Timeout;
  /** Rolling state hashes compared with peers' (heartbeats): divergence detection. */
  readonly stateCheck: StateCheck;

  // ---- leader ----
  /** Leader only: a hand-off in progress (transferLeadership). */
  private handoff: { to: number; startedAt: number; sentAt: number } | null = null;
  /** A hand-off to us, received since the last tick: acted on at the next one (actOnHandoff). */
  private handoffPending: { from: number; m: Extract<Msg, { t: 'handoff' }> } | null = null;
  /**
   * The hand-off to us we saw last (its leader, ballot and start) and our tick
   * when we first saw it: we act only on a copy echoing a heartbeat of ours sent
   * after that tick (asked: that heartbeat went out).
   */
  private handoffSeen: {
    from: number;
    ballot: number;
    tick: number;
    at: number;
    asked: boolean;
  } | null = null;
  /** First slot our Phase 1 covered: every slot from here on is ours to propose at `ballot`. */
  private leaderFrom = 1;
  /** The newest configuration an event line was written for (noteConfiguration). */
  private configSeen = 0;
  /** Configurations (by slot) our Phase 1 had a majority of: we propose only slots they govern. */
  private leaderConfigs = new Set<number>();
  /** Phase 1 values beyond the alpha window at election (slot order): proposed when it reaches them. */
  private readonly deferred = new Map<number, Value>();
  /** Newest incarnations named in our quorum's votes (see `incs`). */
  private incView: number[] = [];
  private nextSlot = 1;
  private readonly inflight = new Map<number, InFlight>();
  private queue: Cmd[] = [];
  private readonly queuedKeys = new Set<string>();
  private newAccepts: number[] = [];
  private commitSent = 0;
  private lastNoopAt = 0;
  /** Removed peer -> when we last told it the newest configuration is settled here. */
  private readonly settledSentAt = new Map<number, number>();
  /** Voters of the configuration applied at `slot` that told us it is settled there. */
  private settled: { slot: number; from: Set<number> } = { slot: -1, from: new Set() };
  /** When a rejoining peer last asked us to record its incarnation. */
  private rejoinAskedAt = -1;

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
    /** Chunks by offset; those at or past `received` may arrive out of order. */
    parts: Map<number, Uint8Array>;
    /** Bytes received contiguously from offset 0. */
    received: number;
    /** Offset up to which the last request asked (a window of chunks). */
    askedTo: number;
    peer: number;
    /** Sources tried for this snapshot (switching keeps the bytes received). */
    tried: Set<number>;
    timeout: Timeout;
    reported: number;
  } | null = null;
  /**
   * Older snapshots still being fetched by a peer (slot -> data, last request):
   * a transfer keeps the snapshot it started, so a new local snapshot under load
   * does not restart it from offset 0 (which could go on forever).
   */
  private readonly pinnedSnapshots = new Map<number, { data: Uint8Array; askedAt: number }>();
  private lastSnapshotAskedAt = -Infinity;
  private chosenAtLastTick = 0;
  /** Command bytes applied since the last snapshot (taken or installed). */
  private bytesSinceSnapshot = 0;

  // ---- rejoin after a lost disk ----
  /**
   * Answers to our rejoin request: only those echoing `nonce`, drawn after this
   * restart, count; a delayed heartbeat or answer sent before the disk was lost
   * cannot (PML: evidence must postdate the amnesia).
   */
  private rejoin: {
    nonce: number;
    /** Our new incarnation (0 while we still ask which ones the voters know). */
    inc: number;
    /** Voters that told us which incarnation of ours they know. */
    asked: Set<number>;
    /** Newest incarnation of ours any voter knows. */
    known: number;
    /** Promises of voters that recorded `inc` (answers made after recording it). */
    promised: Map<number, number>;
    threshold: number;
    /** n - quorum + 1 voters reserved `inc`: we now ask them to activate it. */
    activating: boolean;
    /** Voters that reserved `inc`. */
    reservedBy: Set<number>;
  } | null = null;

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
    /** Prepares not promised because a live leader is heard (check quorum). */
    preparesRefusedLiveLeader: 0,
  };

  constructor(opts: ReplicaOptions) {
    this.o = opts;
    this.sid = opts.sid;
    // A node may be outside the servers list (paxosd --join): a member only
    // through a `member add` with its address.
    this.bootSids = [...opts.sids].sort((a, b) => a - b);
    for (const s of this.bootSids)
      if (!Number.isSafeInteger(s) || s < SID_MIN || s > SID_MAX)
        throw new Error(`sid ${s}: must be an integer in ${SID_MIN}..${SID_MAX}`);
    this.mutations = new Set(opts.mutations ?? []);
    this.incs = new Array<number>(SID_MAX + 1).fill(0);
    this.reserved = new Array<number>(SID_MAX + 1).fill(0);
    this.alpha = opts.alphaSlots ?? ALPHA_SLOTS;
    if (!(Number.isSafeInteger(this.alpha) && this.alpha >= 1))
      throw new Error(`alpha ${this.alpha}: must be an integer >= 1`);
    const members = (opts.members ?? this.bootSids.map((sid) => ({ sid, voter: true })))
      .map((m) => ({ ...m }))
      .sort((a, b) => a.sid - b.sid);
    if (!members.some((m) => m.voter)) throw new Error('the bootstrap configuration has no voter');
    for (const m of members)
      if (!this.bootSids.includes(m.sid)) throw new Error(`member ${m.sid} is not in the sids`);
    this.bootstrapConfigs = [{ slot: 0, members }];
    opts.sm.bootstrapMembers?.(members, this.alpha, this.bootSids);
    this.refreshSids();
    this.slotsAheadMax =
      opts.slotsAheadMax ?? SLOTS_AHEAD_WINDOWS * opts.windowSlots + SLOTS_AHEAD_SLACK;
    this.snapshotWindowChunks = opts.snapshotWindowChunks ?? SNAPSHOT_WINDOW_CHUNKS;
    this.keepSlots =
      opts.keepSlots ?? Math.min(KEEP_SLOTS_MAX, Math.floor(opts.snapshotEverySlots / 2));
    this.heartbeat = new Timeout('heartbeat', opts.heartbeatTicks);
    this.heartbeat.start();
    // Outvoted by a majority of the newest configuration's voters (issue 13): after
    // 3 grow to 5, two differing peers no longer make this node distrust itself.
    this.stateCheck = new StateCheck(
      opts.sm,
      () => this.majority(this.configuration),
      (sid) => this.votesIn(this.configuration, sid),
    );
    this.election = new Timeout('election', opts.electionTicks);
    this.election.jitter(opts.prng, Math.max(1, Math.floor(opts.electionTicks / 3)));
    this.life = opts.prng.int(0x7fffffff) + 1;
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
        case 'incarnation': {
          const i = r.sid;
          if (!(i >= SID_MIN && i <= SID_MAX)) break;
          if (r.inc > this.reserved[i]) this.reserved[i] = r.inc;
          if (!r.reserve && r.inc > this.incs[i]) this.incs[i] = r.inc;
          break;
        }
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
    this.refreshSids();
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
    this.actOnHandoff();
    this.heartbeat.tick();
    this.election.tick();
    if (this.heartbeat.fired()) {
      this.heartbeat.reset();
      this.broadcastHeartbeat();
    }
    if (this.state.role === 'leader') this.tickLeader();
    else if (this.state.role === 'candidate') this.tickCandidate(this.state.p1);
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
      case 'handoff':
        return this.onHandoff(from, msg);
      case 'promise':
        return this.onPromise(from, msg);
      case 'accept':
        return this.onAccept(from, msg);
      case 'accepted':
        return this.onAccepted(from, msg);
      case 'nack':
        return this.onNack(from, msg);
      case 'commit':
        this.noteLeader(msg.ballot);
        return this.learnCommit(msg.ballot, msg.through, from);
      case 'heartbeat':
        return this.onHeartbeat(from, msg);
      case 'confirm':
        return this.onConfirm(from, msg);
      case 'confirmed':
        return this.onConfirmed(from, msg);
      case 'settled':
        return this.onSettled(from, msg);
      case 'catchupReq':
        return this.onCatchupReq(from, msg);
      case 'catchupResp':
        return this.onCatchupResp(from, msg);
      case 'snapshotReq':
        return this.onSnapshotReq(from, msg);
      case 'snapshotResp':
        return this.onSnapshotResp(from, msg);
      case 'rejoinReq':
        return this.onRejoinReq(from, msg);
      case 'rejoinResp':
        return this.onRejoinResp(from, msg);
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
    // Handing off: the client retries shortly, by then at the new leader.
    if (this.handoff) return { kind: 'busy' };
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
    this.noteConfiguration();
    this.checkConfigurations();
    if (this.role === 'leader') {
      // Handing off, submit takes nothing new, so the queue and then the in-flight
      // slots drain and the successor's Phase 1 has nothing left to recover.
      this.proposeDeferred();
      this.proposeQueued();
      this.flushAccepts();
      if (this.readQueue.length > 0) this.startReadRound();
      this.releaseReads();
    }
    for (const [to, a] of this.acceptedOut)
      this.send(to, { t: 'accepted', ballot: a.ballot, slots: a.slots, incs: incPairs(this.incs) });
    this.acceptedOut.clear();
    // The driver rotates the WAL to the checkpoint after persisting this turn's
    // records: it must include what was recorded after the snapshot was taken.
    if (this.snapshotOut) this.snapshotOut.checkpoint = this.checkpoint(this.snapshotOut.slot);
    const out: Ready = {
      persist: this.persistOut,
      mustSync: this.persistOut.some(
        (r) => r.t === 'promise' || r.t === 'accept' || r.t === 'voter' || r.t === 'incarnation',
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
      known: Math.max(this.knownChosen, this.chosenThrough),
      base: this.base,
      queued: this.queue.length,
      inflight: this.inflight.size,
      diverged: this.stateCheck.self ? `DIVERGED at slot ${this.stateCheck.self.slot}` : null,
      divergedPeers:
        [...this.stateCheck.peers.values()].map((d) => `${d.peer}@${d.slot}`).join(' ') || null,
    };
  }

  /** Follower, candidate (Phase 1 running) or leader. */
  get role(): Role {
    return this.state.role;
  }

  /** The running Phase 1 (candidates only; for the model checker's state key). */
  get campaign(): Phase1 | null {
    return this.state.role === 'candidate' ? this.state.p1 : null;
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
    if (this.handoff && this.role !== 'leader') bad(`hand-off in progress as ${this.role}`);
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
    if (this.state.role === 'candidate' && this.state.p1.ballot !== this.ballot)
      bad(`campaign at ${formatBallot(this.state.p1.ballot)}, ballot ${formatBallot(this.ballot)}`);
    // The ballots. maxBallotSeen is the highest ballot this node has seen: it
    // took its own from above it (a new ballot must beat every one it knows of,
    // or its Phase 1 is refused) and has followed none above it. (promised may
    // pass it: a rejoin takes a majority's promise without seeing its ballot.)
    if (this.ballot > this.maxBallotSeen)
      bad(`ballot ${formatBallot(this.ballot)} above max seen ${formatBallot(this.maxBallotSeen)}`);
    if (this.leaderBallot > this.maxBallotSeen)
      bad(
        `leader ballot ${formatBallot(this.leaderBallot)} above max seen ${formatBallot(this.maxBallotSeen)}`,
      );
    if (this.role === 'leader') {
      // A leader promised its own ballot (its own Phase 1 vote) and follows itself.
      if (this.ballot > this.promised)
        bad(`leader ballot ${formatBallot(this.ballot)} above its own promise`);
      if (this.leaderBallot !== this.ballot || this.leader !== this.sid)
        bad(`leader following ${this.leader} at ${formatBallot(this.leaderBallot)}`);
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
    for (let sid = SID_MIN; sid <= SID_MAX; sid++) {
      if (this.reserved[sid] > 0)
        out.push({ t: 'incarnation', sid, inc: this.reserved[sid], reserve: true });
      if (this.incs[sid] > 0) out.push({ t: 'incarnation', sid, inc: this.incs[sid] });
    }
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

  /**
   * Two-way contact: a fresh statement of `sid` (it echoed a heartbeat of ours
   * from the last election timeout) arrived within an election timeout. Only
   * two-way peers count for progress and campaigning: a peer we hear but that
   * cannot hear us can neither vote for us nor follow us.
   */
  private twoWay(sid: number): boolean {
    if (sid === this.sid) return true;
    const p = this.peers.get(sid);
    return p !== undefined && this.alive(sid) && this.now - p.freshAt <= this.o.electionTicks;
  }

  /**
   * Voters (us included) with two-way contact: only they can answer a prepare or
   * an accept, so only they make a quorum possible. A peer still rejoining after
   * a lost disk does not count, or a leader whose only contact is a majority
   * including a non-voter would keep leading, and keep others from campaigning,
   * without ever getting a value chosen.
   */
  /** A peer votes if its latest fresh statement, of the last election timeout, said so. */
  private peerVotes(sid: number): boolean {
    const p = this.peers.get(sid);
    return p !== undefined && p.voter && this.now - p.freshAt <= this.o.electionTicks;
  }

  /** Voters (us included) with two-way contact make a quorum of every active configuration. */
  private twoWayQuorate(): boolean {
    return this.quorateAll((s) =>
      s === this.sid ? this.voter : this.twoWay(s) && this.peerVotes(s),
    );
  }

  // ======================= membership =======================

  /** The configurations applied so far that may still govern (oldest first). */
  private configs(): readonly Configuration[] {
    const c = this.o.sm.configurations?.();
    return c && c.length > 0 ? c : this.bootstrapConfigs;
  }

  /** First slot a configuration governs (the bootstrap one: slot 1). */
  governsFrom(c: Configuration): number {
    return c.slot === 0 ? 1 : c.slot + this.alpha;
  }

  /**
   * The configuration that governs `slot`: the newest applied at or below
   * slot - alpha. Known for every slot up to applied + alpha, and only for
   * those: a change applied later governs from above it.
   */
  configOf(slot: number): Configuration {
    const cs = this.configs();
    for (let i = cs.length - 1; i > 0; i--) if (this.governsFrom(cs[i]) <= slot) return cs[i];
    return cs[0];
  }

  /**
   * The configurations that govern some slot not yet chosen that we could
   * propose: from the one of chosenThrough + 1 to the newest. A campaign needs a
   * majority of each (PMS phase 1 per slot, with every slot's own acceptors).
   */
  private activeConfigs(): readonly Configuration[] {
    const cs = this.configs();
    const first = this.configOf(this.chosenThrough + 1);
    return cs.slice(Math.max(0, cs.indexOf(first)));
  }

  /** The newest configuration applied (it governs from governsFrom on). */
  get configuration(): Configuration {
    const cs = this.configs();
    return cs[cs.length - 1];
  }

  /** A majority of the newest configuration's voters (for status and tests). */
  get quorum(): number {
    return this.majority(this.configuration);
  }

  private majority(c: Configuration): number {
    let n = 0;
    for (const m of c.members) if (m.voter) n++;
    return Math.floor(n / 2) + (this.mutations.has('minority-quorum') ? 0 : 1);
  }

  private votesIn(c: Configuration, sid: number): boolean {
    return c.members.some((m) => m.sid === sid && m.voter);
  }

  /** Do the voters of `c` for which `has` holds make a majority of it? */
  private quorate(c: Configuration, has: (sid: number) => boolean): boolean {
    let n = 0;
    for (const m of c.members) if (m.voter && has(m.sid)) n++;
    return n >= this.majority(c);
  }

  private quorateAll(has: (sid: number) => boolean): boolean {
    return this.activeConfigs().every((c) => this.quorate(c, has));
  }

  /**
   * Does `has` hold for voters enough to meet every majority of every active
   * configuration (n - quorum + 1 of each)? The rejoin rule's sets.
   */
  private blockingAll(has: (sid: number) => boolean): boolean {
    return this.activeConfigs().every((c) => {
      let n = 0;
      let voters = 0;
      for (const m of c.members)
        if (m.voter) {
          voters++;
          if (has(m.sid)) n++;
        }
      return n >= voters - this.majority(c) + 1;
    });
  }

  /** May we campaign at all: we vote, in the newest configuration too. */
  private votesNow(): boolean {
    return this.voter && this.votesIn(this.configuration, this.sid);
  }

  /** Members (voters and learners) of the active configurations: who hears broadcasts. */
  private audience(): number[] {
    const out = new Set<number>();
    for (const c of this.activeConfigs()) for (const m of c.members) out.add(m.sid);
    return this.sids.filter((s) => out.has(s));
  }

  /** Highest chosen prefix among two-way peers (a deaf peer's cannot hold us back). */
  private maxPeerChosen(): number {
    let m = 0;
    for (const [sid, p] of this.peers) if (this.twoWay(sid) && p.chosen > m) m = p.chosen;
    return m;
  }

  /**
   * May this node lead: it votes, has two-way contact with a majority, and is
   * caught up with its two-way peers. Slack of two windows: under load every
   * follower trails the leader by a few slots.
   */
  private eligible(): boolean {
    return (
      this.votesNow() &&
      this.twoWayQuorate() &&
      this.chosenThrough + 2 * this.o.windowSlots >= this.maxPeerChosen()
    );
  }

  /**
   * Do we follow (or are we) a leader that is live right now? Then a prepare from
   * someone else is not promised (etcd's CheckQuorum + leader stickiness): a node
   * on the far side of a bridge partition cannot depose a leader that a majority
   * still hears. Progress is kept: a leader without two-way contact with a
   * majority steps down within an election timeout, and its followers stop
   * hearing it within another, after which prepares are promised again.
   */
  private hearsLiveLeader(from: number): boolean {
    if (this.role === 'leader') return from !== this.sid && this.twoWayQuorate();
    return (
      this.role === 'follower' &&
      this.leader !== null &&
      this.leader !== from &&
      this.leader !== this.sid &&
      this.leaderBallot >= this.promised &&
      this.now - this.leaderSeenAt <= this.o.electionTicks
    );
  }

  private tickFollower(): void {
    if (this.leader !== null && this.now - this.leaderSeenAt <= this.election.after) return;
    if (this.leader !== null) {
      this.trace(`leader ${this.leader} lost`);
      this.leader = null;
      this.leaderLostAt = this.now;
    }
    if (this.now - this.leaderSeenAt <= this.election.after) return;
    // Pre-vote check: campaigning without two-way contact with a majority only
    // inflates ballots (nobody could answer) and disrupts the cluster later.
    if (!this.votesNow() || !this.twoWayQuorate()) return;
    // Pre-vote (etcd): peers that follow a live leader would not promise us, so
    // a campaign they cannot join only raises our own promise, and that raised
    // promise would make us refuse the live leader's accepts when links heal.
    // Free: its latest fresh statement, of the last two heartbeats, says it
    // follows no live leader.
    const free = (s: number): boolean => {
      if (s === this.sid) return true;
      const p = this.peers.get(s);
      return (
        p !== undefined &&
        this.twoWay(s) &&
        this.peerVotes(s) &&
        p.free &&
        this.now - p.freshAt <= 2 * this.o.heartbeatTicks
      );
    };
    if (!this.quorateAll(free)) return;
    const waited = this.now - Math.max(this.leaderLostAt, this.leaderSeenAt);
    const periods = Math.floor(waited / this.election.after);
    // Bounded wait: after this many periods without a leader, campaign even if
    // behind. Phase 1 learns every accepted value from a majority (PMS), so a
    // lagging leader is safe; the eligibility rule is only a preference.
    if (periods > this.sids.length + 1) return this.startPhase1();
    if (!this.eligible()) return;
    // Phantom candidates are skipped: only two-way peers that say they may lead,
    // voters of the newest configuration (a learner or a removed node never runs).
    const candidates = this.sids.filter(
      (s) =>
        s === this.sid ||
        (this.votesIn(this.configuration, s) &&
          this.twoWay(s) &&
          this.peers.get(s)?.eligible === true),
    );
    // Bully: the eligible node of highest rank (lowest SID) runs first. If no
    // leader appears within another election period, the next one runs too.
    const idx = Math.max(0, Math.min(periods - 1, candidates.length - 1));
    if (candidates.indexOf(this.sid) <= idx) this.startPhase1();
  }

  private startPhase1(handoff: { of: number; until: number } | null = null): void {
    this.ballot = nextBallot(Math.max(this.promised, this.maxBallotSeen), this.sid);
    this.maxBallotSeen = this.ballot;
    this.stats.elections++;
    const timeout = new Timeout('prepare', this.o.retransmitTicks, this.o.retransmitMaxTicks);
    timeout.start();
    const p1: Phase1 = {
      ballot: this.ballot,
      from: this.chosenThrough + 1,
      startedAt: this.now,
      covered: new Map(),
      complete: new Set(),
      merged: new Map(),
      incs: [...this.incs],
      promiseInc: new Map(),
      timeout,
      handoff: handoff !== null,
      handoffOf: handoff?.of ?? 0,
      handoffUntil: handoff?.until ?? 0,
    };
    this.state = { role: 'candidate', p1 };
    this.trace(`campaign ballot ${formatBallot(this.ballot)} from slot ${p1.from}`);
    for (const s of this.audience()) this.send(s, this.prepareMsg(p1, p1.from));
  }

  private prepareMsg(p1: Phase1, from: number): Msg {
    return p1.handoff
      ? {
          t: 'prepare',
          ballot: p1.ballot,
          from,
          handoff: true,
          of: p1.handoffOf,
          until: p1.handoffUntil,
        }
      : { t: 'prepare', ballot: p1.ballot, from };
  }

  /**
   * Hand leadership to `to` (an operator's transfer-leader, or a graceful stop;
   * etcd's leader transfer): stop proposing, let the in-flight slots be chosen,
   * then ask `to` to campaign at once. Its Phase 1 is an ordinary one, so safety
   * is untouched; the hand-off only saves the election timeout. Gives up after
   * an election timeout and leads on. Returns null, or why it cannot start.
   */
  transferLeadership(to: number): string | null {
    if (this.role !== 'leader') return 'not the leader';
    if (to === this.sid) return 'already the leader';
    if (!this.configuration.members.some((m) => m.sid === to)) return `sid ${to} is not a member`;
    if (!this.votesIn(this.configuration, to)) return `sid ${to} is a learner, not a voter`;
    if (!this.twoWay(to) || !this.peerVotes(to))
      return `sid ${to} is not a voter in two-way contact with the leader`;
    this.handoff = { to, startedAt: this.now, sentAt: -Infinity };
    this.eventsOut.push(`sid ${this.sid}: handing leadership to ${to}`);
    return null;
  }

  /** The peer a hand-off should go to: a two-way voter with the longest chosen prefix. */
  handoffTarget(): number | null {
    let best: number | null = null;
    for (const s of this.sids) {
      if (s === this.sid || !this.twoWay(s) || !this.peerVotes(s)) continue;
      if (!this.votesIn(this.configuration, s)) continue;
      if (best === null || this.peers.get(s)!.chosen > this.peers.get(best)!.chosen) best = s;
    }
    return best;
  }

  /** Leader side of a hand-off, every tick: ask once the in-flight slots are chosen. */
  private tickHandoff(): void {
    const h = this.handoff!;
    if (this.now - h.startedAt > this.o.electionTicks) {
      this.eventsOut.push(`sid ${this.sid}: hand-off to ${h.to} timed out; leading on`);
      this.handoff = null;
      return;
    }
    if (this.now - h.sentAt >= this.o.retransmitTicks) this.sendHandoff();
  }

  /** A copy of our hand-off to its target, once the in-flight slots are chosen. */
  private sendHandoff(): void {
    const h = this.handoff!;
    if (this.inflight.size > 0 || this.queue.length > 0) return;
    h.sentAt = this.now;
    const e = this.peers.get(h.to)?.echo;
    // Every copy carries the hand-off's end by our clock (the target compares our
    // heartbeats' ticks with it: it cannot know our election timeout) and the echo
    // of the target's newest heartbeat (it acts only on an echo of one sent after
    // it first saw the hand-off: see onHandoff).
    this.send(h.to, {
      t: 'handoff',
      ballot: this.ballot,
      chosen: this.chosenThrough,
      tick: h.startedAt,
      until: h.startedAt + this.o.electionTicks,
      echoLife: e?.life ?? 0,
      echoTick: e?.tick ?? 0,
    });
  }

  /**
   * Asked by our leader to campaign now. Acted on only if it comes from the leader
   * we follow at the ballot we follow, that leader's newest heartbeat is not past
   * the hand-off's end, and it echoes a heartbeat we sent after we first saw the
   * hand-off: an old or re-delivered copy must not depose a leader that never asked. We campaign only once we have chosen
   * everything it chose (it re-sends until then), so the pause is one round trip.
   */
  private onHandoff(from: number, m: Extract<Msg, { t: 'handoff' }>): void {
    if (!this.handoffValid(from, m)) return;
    // A copy read now may have waited in our socket buffer for a minute (we were
    // paused: SIGSTOP, a VM stall; our clock stood still) or in the network, and
    // the leader's later heartbeats that void it may come after our next tick
    // (attack review 5, H2-LATE). Nothing in the copy or our clock tells its age;
    // an answer to something we send now does: we act only on a copy that echoes
    // a heartbeat of ours sent after we first saw this hand-off, so the leader
    // sent it after that moment, with the hand-off still live (one round trip).
    let seen = this.handoffSeen;
    if (!seen || seen.from !== from || seen.ballot !== m.ballot || seen.tick !== m.tick)
      seen = this.handoffSeen = {
        from,
        ballot: m.ballot,
        tick: m.tick,
        at: this.now,
        asked: false,
      };
    // Acted on at our next tick, not now (attack review 4, H2): the leader's
    // heartbeats read before then may still void it (handoffValid again).
    if (m.echoLife === this.life && m.echoTick > seen.at) this.handoffPending = { from, m };
  }

  /** A hand-off copy may make us campaign (checked on arrival and again at the next tick). */
  private handoffValid(from: number, m: Extract<Msg, { t: 'handoff' }>): boolean {
    if (this.role !== 'follower' || !this.votesNow()) return false;
    if (ballotSid(m.ballot) !== from || m.ballot !== this.leaderBallot || this.leader !== from)
      return false;
    if (m.ballot < this.promised) return false;
    // Only while the hand-off is live at the leader, as far as its newest fresh
    // heartbeat (one that echoes ours of this process life) tells: after a restart,
    // or when an accept alone made us follow it (leaderTick -1), an old copy could
    // depose a leader that gave the hand-off up and led on.
    if (this.leaderTick < 0 || this.leaderTick > m.until) return false;
    return this.chosenThrough >= m.chosen;
  }

  /** Campaign on the hand-off received since the last tick, if it still holds. */
  private actOnHandoff(): void {
    const seen = this.handoffSeen;
    if (seen && !seen.asked && this.now > seen.at) {
      // The heartbeat a copy must echo (onHandoff): at once, not at the next period.
      seen.asked = true;
      if (this.role === 'follower' && this.leader === seen.from) this.broadcastHeartbeat(seen.from);
    }
    const h = this.handoffPending;
    this.handoffPending = null;
    if (!h || !this.handoffValid(h.from, h.m)) return;
    this.eventsOut.push(`sid ${this.sid}: leader ${h.from} handed off; campaigning`);
    this.startPhase1({ of: h.m.ballot, until: h.m.until });
  }

  private tickCandidate(p1: Phase1): void {
    if (this.now - p1.startedAt > CAMPAIGN_ELECTIONS * this.o.electionTicks) {
      this.trace(`campaign ${formatBallot(p1.ballot)} gave up`);
      this.stepDown(null);
      return;
    }
    p1.timeout.tick();
    if (!p1.timeout.fired()) return;
    p1.timeout.backoff(this.o.prng);
    // Re-ask only from the first slot each acceptor's promise chunks left
    // uncovered: a full re-send would put the missing chunk last in the burst
    // again, where tail drop keeps losing it.
    for (const s of this.audience()) {
      if (p1.complete.has(s)) continue;
      const from = firstUncovered(p1.covered.get(s) ?? [], p1.from);
      this.send(s, this.prepareMsg(p1, from));
    }
  }

  private tickLeader(): void {
    // Check quorum: a leader without two-way contact with a majority steps down
    // so clients look elsewhere and its followers stop refusing prepares.
    if (!this.twoWayQuorate()) {
      this.eventsOut.push(`sid ${this.sid}: lost contact with a majority; stepping down`);
      this.stepDown(null);
      return;
    }
    const resend = new Map<number, number[]>();
    for (const [slot, f] of this.inflight) {
      f.timeout.tick();
      if (!f.timeout.fired()) continue;
      f.timeout.backoff(this.o.prng);
      for (const s of this.audience()) {
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
      for (const s of this.audience())
        if (!r.acks.has(s)) this.send(s, { t: 'confirm', ballot: this.ballot, round });
    }
    for (const [to, slots] of resend)
      for (const msg of this.buildAccepts(slots)) this.send(to, msg);
    // A rejoining peer that recorded its incarnation with us waits for a slot at or
    // above the `next` we told it to be chosen: when idle, propose a no-op for it.
    if (this.handoff) return this.tickHandoff();
    if (
      this.inflight.size === 0 &&
      this.queue.length === 0 &&
      this.rejoinAskedAt > this.lastNoopAt &&
      this.now - this.lastNoopAt >= this.o.electionTicks &&
      this.mayPropose(this.nextSlot)
    ) {
      this.lastNoopAt = this.now;
      this.propose(this.nextSlot++, []);
    }
    // A new configuration governs only from its slot + alpha: when idle, fill the
    // slots up to there with no-ops, so that a change completes without load.
    const from = this.governsFrom(this.configuration);
    while (
      this.inflight.size < this.o.windowSlots &&
      this.queue.length === 0 &&
      this.nextSlot < from &&
      this.mayPropose(this.nextSlot)
    )
      this.propose(this.nextSlot++, []);
  }

  /**
   * Every node we talk to: the config files' servers and the members of every
   * kept configuration (a learner added through the log is heard and sent to
   * from the turn its change is applied; a removed one stops being sent to once
   * no kept configuration names it).
   */
  get sids(): readonly number[] {
    return this.universe;
  }

  private refreshSids(): void {
    const all = new Set([...this.bootSids, this.sid]);
    for (const c of this.configs()) for (const m of c.members) all.add(m.sid);
    this.universe = [...all].sort((a, b) => a - b);
  }

  /** An event line when a newer configuration is applied (and when it removed us). */
  private noteConfiguration(): void {
    const c = this.configuration;
    if (c.slot === this.configSeen) return;
    this.configSeen = c.slot;
    this.refreshSids();
    const members = c.members.map((m) => (m.voter ? `${m.sid}` : `${m.sid} (learner)`)).join(', ');
    const self = c.members.find((m) => m.sid === this.sid);
    this.eventsOut.push(
      `sid ${this.sid}: configuration of slot ${c.slot} governs from slot ${this.governsFrom(c)}: ${members}${self ? '' : '; this node was removed'}`,
    );
  }

  /**
   * May the leader propose `slot` now? Only if it knows who votes on it (every
   * slot up to slot - alpha applied: the alpha window) and its Phase 1 had a
   * majority of that configuration (PMS phase 1 must precede phase 2 with the
   * slot's own acceptors). A slot beyond waits; a configuration our Phase 1 did
   * not cover makes us campaign again (checkConfigurations).
   */
  private mayPropose(slot: number): boolean {
    return slot <= this.applied + this.alpha && this.leaderConfigs.has(this.configOf(slot).slot);
  }

  /**
   * Leader: a configuration applied since our Phase 1 governs slots we will
   * propose, and our Phase 1 had no majority of it. Campaign again at a higher
   * ballot over every active configuration (one round trip of write pause); the
   * values in flight are found again by that Phase 1. Not a voter any more: step
   * down (the newest configuration's voters elect a leader among them).
   */
  private checkConfigurations(): void {
    if (this.role !== 'leader') return;
    if (this.activeConfigs().every((c) => this.leaderConfigs.has(c.slot))) return;
    const voting = this.votesNow();
    this.eventsOut.push(
      `sid ${this.sid}: configuration of slot ${this.configuration.slot} applied; ${voting ? 'campaigning again' : 'not a voter any more; stepping down'}`,
    );
    this.stepDown(null);
    if (voting) this.startPhase1();
  }

  private becomeLeader(p1: Phase1): void {
    this.state = { role: 'leader' };
    this.leader = this.sid;
    this.leaderBallot = this.ballot;
    this.leaderSeenAt = this.now;
    this.stats.leaderships++;
    this.leaderFrom = p1.from;
    this.incView = p1.incs;
    this.leaderConfigs = new Set(this.activeConfigs().map((c) => c.slot));
    // The next slot is above everything chosen or accepted that we know of, by
    // promise or by catch-up during Phase 1: a new command proposed into a slot
    // already chosen would be a second value there (PMMC: a leader proposes only
    // in slots it has no decision for).
    let maxSlot = Math.max(p1.from - 1, this.chosenThrough, this.maxLogSlot());
    for (const s of p1.merged.keys()) if (s > maxSlot) maxSlot = s;
    // Values reported chosen were learned as their promises came (onPromise).
    this.deferred.clear();
    for (let s = p1.from; s <= maxSlot; s++) {
      if (s <= this.base || this.log.get(s)?.chosen) continue;
      const m = p1.merged.get(s);
      // The value with the highest accepted ballot must be proposed again;
      // a slot nobody reported accepting is a hole, filled with a no-op.
      const value = m && !this.mutations.has('ignore-promise-values') ? m.value : [];
      // Beyond the alpha window (its configuration is not known yet): later.
      if (this.mayPropose(s)) this.propose(s, value);
      else this.deferred.set(s, value);
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
    this.state = { role: 'follower' };
    this.handoff = null;
    this.inflight.clear();
    this.deferred.clear();
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

  /**
   * A message from whoever leads `ballot`. It shows that leader alive only if it
   * is news: a higher ballot than we follow, or a heartbeat whose tick is above
   * every earlier one of that leadership (`tick`, heartbeats only; and only a
   * fresh one, see onHeartbeat: after our restart every old heartbeat would be
   * news). UDP may re-deliver a dead leader's old messages at any time; they
   * must not keep its followers from electing another.
   */
  private noteLeader(ballot: number, tick = -1): void {
    this.noteBallot(ballot);
    if (this.role !== 'follower' || ballot < this.leaderBallot) return;
    if (ballot > this.leaderBallot) {
      this.leaderBallot = ballot;
      this.leaderTick = tick;
    } else if (tick > this.leaderTick) {
      this.leaderTick = tick;
    } else return;
    this.leader = ballotSid(ballot);
    this.leaderSeenAt = this.now;
  }

  /** A heartbeat to every peer, or to `only` (an answer to a peer's new life, see onHeartbeat). */
  private broadcastHeartbeat(only?: number): void {
    const leading = this.role === 'leader';
    const promised = leading ? this.ballot : this.promised;
    const next = leading ? this.nextSlot : 0;
    const eligible = this.eligible();
    const heard = this.sids.filter((s) => s !== this.sid && this.alive(s));
    const leader = this.role === 'follower' && this.hearsLiveLeader(-1) ? this.leader! + 1 : 0;
    const { hashSlot, hash } = this.stateCheck.ours();
    for (const s of this.sids) {
      if (s === this.sid || (only !== undefined && s !== only)) continue;
      // Each peer gets the echo of its own newest heartbeat (a leader's echo is
      // what lets its followers judge it alive). One literal per peer: spreading
      // a shared one costs more than the rest of the heartbeat.
      const e = this.peers.get(s)?.echo;
      this.send(s, {
        t: 'heartbeat',
        promised,
        leading,
        chosen: this.chosenThrough,
        next,
        eligible,
        voter: this.voter,
        heard,
        tick: this.now,
        leader,
        hashSlot,
        hash,
        life: this.life,
        echoLife: e?.life,
        echoTick: e?.tick,
      });
    }
    if (!this.voter && only === undefined) this.requestRejoin();
  }

  private onHeartbeat(from: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    let p = this.peers.get(from);
    if (!p) {
      p = {
        chosen: 0,
        eligible: false,
        voter: false,
        free: false,
        freshAt: -Infinity,
        freshEcho: -Infinity,
        freshTick: -Infinity,
        echo: null,
        lives: new Map(),
      };
      this.peers.set(from, p);
    }
    p.chosen = m.chosen;
    const switched = noteEcho(p, m, this.o.heartbeatTicks);
    const fresh = this.isFresh(p, m);
    if (fresh) {
      p.freshEcho = m.echoTick!;
      p.freshTick = m.tick;
      p.freshAt = this.now;
      p.eligible = m.eligible;
      p.voter = m.voter;
      p.free = m.leader === 0;
    }
    if (m.leading) {
      // A stale heartbeat still carries its ballot and chosen prefix (monotone).
      if (fresh) this.noteLeader(m.promised, m.tick);
      else this.noteBallot(m.promised);
      this.learnCommit(m.promised, m.chosen, from);
    } else {
      // A follower's promise alone deposes no leader: if it promised above us it
      // will nack our next accept (PMS), and a node nobody hears cannot win.
      if (m.promised > this.maxBallotSeen) this.maxBallotSeen = m.promised;
      if (m.chosen > this.knownChosen) {
        this.knownChosen = m.chosen;
        this.knownChosenFrom = from;
      }
    }
    // A leader at or above our promise is the current one (a deposed leader's
    // heartbeat, delayed, must not make this node distrust itself).
    const fromLeader = m.leading && this.role !== 'leader' && m.promised >= this.promised;
    this.noteDivergence(this.stateCheck.heard(from, fromLeader, m.hashSlot, m.hash, this.applied));
    // Our echo for this peer now names another of its lives. A re-delivered
    // heartbeat of a dead life can do that at any time, just before our periodic
    // heartbeat, so echo the news at once: the live life's heartbeat is always
    // answered by an echo of itself (a heartbeat response, as in Raft).
    if (switched) this.broadcastHeartbeat(from);
    // Our hand-off target's heartbeat: the copy that echoes it lets it campaign
    // (onHandoff); send it now rather than at the next retransmission.
    if (this.role === 'leader' && this.handoff?.to === from) this.sendHandoff();
    this.answerRemoved(from);
  }

  /**
   * A removed node's heartbeat: once the newest configuration is in force here
   * (every slot before the one it governs from is chosen), say so, durably (a
   * settled message waits for the sync of those chosen records). Slots below it
   * are the old configuration's to decide, and a node that does not know them
   * chosen needs a majority of the old configuration, which counts the removed
   * node, to learn them: so the removed node leaves only once a majority of the
   * new configuration knows them for good (mayLeave); a later campaign of new
   * voters then learns them chosen from the promise of one of that majority
   * (PMS: any two majorities of a configuration meet). Attack review 6,
   * REMOVED-EXIT-EARLY: a removed node that left when it alone knew them made a
   * healthy majority of the new configuration stall for ever.
   */
  private answerRemoved(from: number): void {
    const c = this.configuration;
    if (c.slot === 0 || !this.voter || !this.votesIn(c, this.sid)) return;
    if (c.members.some((m) => m.sid === from)) return;
    if (!this.configs().some((x) => x.members.some((m) => m.sid === from))) return;
    if (this.chosenThrough < this.governsFrom(c) - 1) return;
    // One per election timeout per removed node: each costs a sync.
    const at = this.settledSentAt.get(from);
    if (at !== undefined && this.now - at < this.o.electionTicks) return;
    this.settledSentAt.set(from, this.now);
    this.send(from, { t: 'settled', slot: c.slot });
  }

  private onSettled(from: number, m: Extract<Msg, { t: 'settled' }>): void {
    const c = this.configuration;
    if (m.slot !== c.slot || !this.votesIn(c, from)) return;
    if (this.settled.slot !== c.slot) this.settled = { slot: c.slot, from: new Set() };
    this.settled.from.add(from);
  }

  /**
   * The leader's strict reconfiguration check (etcd's --strict-reconfig-check):
   * why `action sid` should not be proposed now, or null. A promote or remove
   * whose new configuration would have fewer voters in two-way contact with us
   * (us included) than its majority could never choose a slot it governs until
   * those voters are back; a liveness guard for the operator, not a safety rule
   * (the state machine decides the change alike everywhere; this view is ours).
   */
  reconfigRefusal(action: 'add' | 'promote' | 'remove', sid: number): string | null {
    if (this.role !== 'leader' || action === 'add') return null;
    const c = this.configuration;
    const m = c.members.find((x) => x.sid === sid);
    if (!m || (action === 'promote' && m.voter)) return null; // the state machine refuses it
    // A learner that cannot vote yet (an empty disk: the lost-disk rule has not let
    // it) would count in the new majority without voting: one more failure could
    // then stall the configuration (the simulator's seed 2828: {1,2,3,4} with 4
    // still rejoining and 3's disk lost).
    if (action === 'promote' && !this.peerVotes(sid))
      return `member promote ${sid} refused for now: sid ${sid} does not vote yet (its lost-disk rule has not passed, or it is not in contact); promote it once status shows it a voter (strict reconfiguration check)`;
    const voters = c.members
      .filter((x) => (x.sid === sid ? action === 'promote' : x.voter))
      .map((x) => x.sid);
    const reach = (s: number) =>
      s === this.sid ? this.voter : this.twoWay(s) && this.peerVotes(s);
    const out = voters.filter((s) => !reach(s));
    const need = Math.floor(voters.length / 2) + 1;
    if (voters.length - out.length >= need) return null;
    return `member ${action} ${sid} refused for now: the new configuration's voters (${voters.join(' ')}) would have ${voters.length - out.length} in contact with the leader, ${need} needed (not in contact: ${out.join(' ')}); bring them back or remove them first (strict reconfiguration check)`;
  }

  /**
   * May this node stop for good? Only once the newest configuration removed it,
   * it applied every slot that configuration does not govern (it may still be
   * needed to vote on them), and a majority of the new configuration's voters
   * said the configuration is settled there (answerRemoved). A node in no kept
   * configuration (a spare never added) waits for its add instead.
   */
  mayLeave(): boolean {
    const c = this.configuration;
    const self = (x: Configuration) => x.members.some((m) => m.sid === this.sid);
    if (self(c) || !this.configs().some(self)) return false;
    if (this.applied < this.governsFrom(c) - 1) return false;
    return this.settled.slot === c.slot && this.quorate(c, (s) => this.settled.from.has(s));
  }

  /**
   * A fresh statement: it echoes a heartbeat we sent in this life within the
   * last election timeout (so it was sent after that one), and it is newer than
   * the last fresh statement taken from this peer (a re-delivered copy is not).
   */
  private isFresh(p: PeerInfo, m: Extract<Msg, { t: 'heartbeat' }>): boolean {
    const at = m.echoTick;
    if (m.life === undefined || m.echoLife !== this.life || at === undefined) return false;
    if (at > this.now || this.now - at > this.o.electionTicks) return false;
    return at > p.freshEcho || (at === p.freshEcho && m.tick > p.freshTick);
  }

  /** A state-hash mismatch is news for the driver (fail-stop and a loud log line). */
  private noteDivergence(d: Divergence | null): void {
    if (d) this.eventsOut.push(`sid ${this.sid}: ${describeDivergence(d)}`);
  }

  /**
   * Rejoin in steps, each answered by every voter that hears it: (1) which
   * incarnations of ours do you know (active or reserved)? (2a) reserve our new
   * one, higher than all of them; (2b) once n - quorum + 1 reserved it, activate
   * it and tell us your promise and highest slot. A nonce drawn after this
   * restart tags every step, so no answer made before the disk was lost can count.
   */
  private requestRejoin(): void {
    if (!this.rejoin)
      this.rejoin = {
        nonce: this.o.prng.int(0x7fffffff) + 1,
        inc: 0,
        asked: new Set(),
        known: this.knownInc(this.sid),
        promised: new Map(),
        threshold: 0,
        activating: false,
        reservedBy: new Set(),
      };
    const { nonce, inc, activating } = this.rejoin;
    for (const s of this.sids)
      if (s !== this.sid) this.send(s, { t: 'rejoinReq', nonce, inc, act: activating });
  }

  /** The newest incarnation of `sid` we know, active or reserved. */
  private knownInc(sid: number): number {
    return Math.max(this.incs[sid], this.reserved[sid]);
  }

  private onRejoinReq(from: number, m: Extract<Msg, { t: 'rejoinReq' }>): void {
    if (!this.voter) return;
    const i = from;
    if (m.inc > 0) this.rejoinAskedAt = this.now;
    // Durable before the answer (rejoinResp is a sync message). A reservation
    // voids nothing; an activation (sent only after n - quorum + 1 reservations)
    // makes our promises and accepteds name it, voiding the node's old votes.
    if (m.inc > this.reserved[i]) {
      this.reserved[i] = m.inc;
      this.persistOut.push({ t: 'incarnation', sid: from, inc: m.inc, reserve: true });
    }
    if (m.act && m.inc > this.incs[i]) {
      this.incs[i] = m.inc;
      this.persistOut.push({ t: 'incarnation', sid: from, inc: m.inc });
    }
    const ok = m.inc > 0 && (m.act ? this.incs[i] === m.inc : this.reserved[i] === m.inc);
    this.send(from, {
      t: 'rejoinResp',
      nonce: m.nonce,
      inc: ok ? m.inc : 0,
      act: m.act === true,
      known: this.knownInc(from),
      promised: this.promised,
      next: Math.max(this.role === 'leader' ? this.nextSlot : 0, this.maxLogSlot() + 1),
      incs: incPairs(this.incs),
      res: incPairs(this.reserved),
    });
  }

  /** A new incarnation of ours, above every one `known` names (epoch-major order). */
  private takeIncarnation(r: NonNullable<Replica['rejoin']>, known: number): void {
    const epoch = Math.floor(known / INC_EPOCH) + 1;
    r.inc = epoch * INC_EPOCH + 1 + this.o.prng.int(INC_EPOCH - 1);
    r.promised.clear();
    r.threshold = 0;
    r.activating = false;
    r.reservedBy.clear();
    this.incs[this.sid] = r.inc;
    this.reserved[this.sid] = r.inc;
    this.persistOut.push({ t: 'incarnation', sid: this.sid, inc: r.inc });
    for (const s of this.sids)
      if (s !== this.sid) this.send(s, { t: 'rejoinReq', nonce: r.nonce, inc: r.inc, act: false });
  }

  private onRejoinResp(from: number, m: Extract<Msg, { t: 'rejoinResp' }>): void {
    const r = this.rejoin;
    if (this.voter || !r || m.nonce !== r.nonce) return;
    if (m.known > r.known) r.known = m.known;
    // Our lost disk held other nodes' incarnations too: re-learn them, or a node
    // that rejoined before us could later draw one below what we forgot and have
    // its votes voided for good by those who still remember.
    forPairs(m.incs, (sid, inc) => {
      if (sid !== this.sid && inc > this.incs[sid]) {
        this.incs[sid] = inc;
        this.persistOut.push({ t: 'incarnation', sid, inc });
      }
    });
    forPairs(m.res ?? [], (sid, inc) => {
      if (sid !== this.sid && inc > this.reserved[sid]) {
        this.reserved[sid] = inc;
        this.persistOut.push({ t: 'incarnation', sid, inc, reserve: true });
      }
    });
    if (r.inc === 0) {
      // Step 1: n - quorum + 1 answers meet every set that recorded an earlier
      // incarnation of ours in a completed rejoin, so ours goes above all of them.
      r.asked.add(from);
      if (this.blockingAll((s) => r.asked.has(s))) this.takeIncarnation(r, r.known);
      return;
    }
    if (m.inc !== r.inc) {
      // Someone knows an incarnation of ours at least as new: take a higher one.
      if (m.known >= r.inc && m.known !== r.inc) this.takeIncarnation(r, m.known);
      return;
    }
    if (!r.activating) {
      // Step 2a: activate only what n - quorum + 1 voters reserved, so that every
      // later step 1 (as many answers) sees it and draws above it.
      if (m.act) return;
      r.reservedBy.add(from);
      if (this.blockingAll((s) => r.reservedBy.has(s))) {
        r.activating = true;
        for (const s of this.sids)
          if (s !== this.sid)
            this.send(s, { t: 'rejoinReq', nonce: r.nonce, inc: r.inc, act: true });
      }
      return;
    }
    // Step 2b: only answers made after activating count for the sample below.
    if (!m.act) return;
    // Sampled until enough voters answered, then frozen: a threshold that kept
    // rising with every answer would chase the leader's next slot forever.
    if (this.blockingAll((s) => r.promised.has(s)) && r.threshold > 0) return;
    r.promised.set(from, Math.max(m.promised, r.promised.get(from) ?? 0));
    // Above every slot these voters accepted or a leader among them proposed,
    // sampled after our restart: a slot we voted for before the disk was lost and
    // that could be chosen lies below it (a choosing majority intersects them).
    if (m.next > r.threshold) r.threshold = m.next;
  }

  /**
   * Paxos Made Live's rule for a node that lost its disk: it may have promised
   * ballots it no longer remembers, so it votes only after (a) voters enough to
   * intersect any majority that used its lost promise (n - quorum + 1) answered a
   * request made after the restart, and it adopted the highest promise they
   * reported, and (b) it has learned chosen a slot that a leader began after the
   * restart (so every slot it may have voted for before is decided).
   */
  private checkRejoin(): void {
    const r = this.rejoin;
    if (!r) return;
    if (!this.blockingAll((s) => r.promised.has(s))) return;
    if (r.threshold === 0 || this.chosenThrough < r.threshold) return;
    let max = this.promised;
    for (const b of r.promised.values()) if (b > max) max = b;
    if (max > this.promised) {
      this.promised = max;
      this.persistOut.push({ t: 'promise', ballot: max });
    }
    this.voter = true;
    this.persistOut.push({ t: 'voter' });
    this.eventsOut.push(
      `sid ${this.sid}: rejoined as a voter after slot ${r.threshold} (promised ${formatBallot(max)})`,
    );
    this.rejoin = null;
  }

  // ======================= acceptor =======================

  /**
   * A hand-off prepare passes stickiness only while the hand-off that asked for it
   * is live as far as we know: at its leader, while it still hands off to the
   * sender; at a follower of that leadership, while the leader's newest heartbeat
   * is not past the hand-off's end (its clock). A copy re-delivered after the
   * leader gave the hand-off up and led on is an ordinary campaign (attack review
   * 5, HANDOFF-PREPARE-STALE: its target had lost the promise in a power loss, and
   * the old prepares deposed a healthy leader much later).
   */
  private handoffLive(from: number, m: Extract<Msg, { t: 'prepare' }>): boolean {
    if (!m.handoff) return false;
    if (this.role === 'leader') return this.handoff?.to === from && this.ballot === m.of;
    if (m.of === undefined || m.until === undefined) return false;
    // A newer leadership than the one we follow asked: we cannot judge it, and the
    // one we follow is stale. An older one is not ours to obey.
    if (m.of !== this.leaderBallot) return m.of > this.leaderBallot;
    return this.leaderTick <= m.until;
  }

  private onPrepare(from: number, m: Extract<Msg, { t: 'prepare' }>): void {
    if (!this.voter) {
      this.stats.ignoredNotVoter++;
      return;
    }
    // Stickiness protects a live leader from campaigns it did not ask for; a
    // hand-off campaign was asked for by the leader itself. Safety never rests on
    // stickiness: any ballot may run Phase 1 (PMS).
    if (m.ballot > this.promised && !this.handoffLive(from, m) && this.hearsLiveLeader(from)) {
      this.stats.preparesRefusedLiveLeader++;
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
      const size = valueBytes(e.value) + PROMISE_ENTRY_OVERHEAD_BYTES;
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
    return {
      t: 'promise',
      ballot: m.ballot,
      from: m.from,
      lo,
      hi,
      base: this.base,
      entries,
      incs: incPairs(this.incs),
    };
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

  private onNack(from: number, m: Extract<Msg, { t: 'nack' }>): void {
    // A nack from a node that votes in no active configuration (a learner, a
    // removed node) cannot block any quorum we need: note its ballot (our next
    // one goes above it) and keep leading. Safety never rests on nacks.
    if (!this.activeConfigs().some((c) => this.votesIn(c, from))) {
      if (m.promised > this.maxBallotSeen) this.maxBallotSeen = m.promised;
      return;
    }
    this.noteBallot(m.promised);
  }

  // ======================= leader =======================

  private onPromise(from: number, m: Extract<Msg, { t: 'promise' }>): void {
    if (this.state.role !== 'candidate' || m.ballot !== this.state.p1.ballot) return;
    const p1 = this.state.p1;
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
    // Crash-consistent quorums: a promise from an incarnation older than one some
    // promise names is a vote its node forgot; it does not count (nor do earlier
    // ones from that incarnation). Values it reported stay merged: every accepted
    // value above the chosen ballot is the chosen value (PMS P2b), so extra
    // reports cannot mislead.
    for (const sid of this.mergeIncs(p1.incs, m.incs))
      if ((p1.promiseInc.get(sid) ?? Infinity) < p1.incs[sid]) {
        p1.complete.delete(sid);
        p1.covered.delete(sid);
        p1.promiseInc.delete(sid);
      }
    const fromInc = pairValue(m.incs, from);
    if (fromInc < p1.incs[from]) return;
    const prevInc = p1.promiseInc.get(from);
    if (prevInc !== undefined && prevInc !== fromInc) p1.covered.delete(from);
    p1.promiseInc.set(from, fromInc);
    for (const [slot, ballot, value] of m.entries) {
      // Every accepted value above p1.from counts, however far ahead: an acceptor
      // accepts up to its own chosen prefix + slotsAheadMax, which may be far past
      // ours, and a value dropped here could be chosen (PMS phase 2a rule).
      if (slot < p1.from) continue;
      // Known chosen: learned now, so that a configuration it applies is known
      // before we count this campaign's majorities (the alpha window's slots).
      if (ballot === CHOSEN_BALLOT) {
        this.learn(slot, value);
        continue;
      }
      const cur = p1.merged.get(slot);
      if (!cur || ballot > cur.ballot) p1.merged.set(slot, { ballot, value });
    }
    let ranges = p1.covered.get(from);
    if (!ranges) p1.covered.set(from, (ranges = []));
    ranges.push([m.lo, m.hi]);
    if (coversToInfinity(ranges, p1.from)) p1.complete.add(from);
    this.advanceChosen();
    if (this.state.role !== 'candidate' || this.state.p1 !== p1) return;
    // A change learned just now may have made us a learner, or removed us.
    if (!this.votesNow()) {
      this.eventsOut.push(
        `sid ${this.sid}: not a voter of the newest configuration; campaign ends`,
      );
      this.stepDown(null);
      return;
    }
    // A majority of every configuration that governs a slot we may propose (PMS
    // phase 1 per slot, with that slot's acceptors; new members are asked at the
    // next retransmission). Our own promise must be among them: it reaches us
    // only after it is durable (Outbound.sync), so a power loss cannot make us
    // forget this ballot and campaign with it again, proposing a second value
    // per slot at one ballot.
    if (this.quorateAll((s) => p1.complete.has(s)) && p1.complete.has(this.sid))
      this.becomeLeader(p1);
  }

  private onAccepted(from: number, m: Extract<Msg, { t: 'accepted' }>): void {
    if (this.role !== 'leader' || m.ballot !== this.ballot) return;
    // Crash-consistent quorums (see `incs`): drop acks from incarnations older
    // than one this accepted names, and ignore this one if it is itself older.
    for (const sid of this.mergeIncs(this.incView, m.incs)) {
      const newest = this.incView[sid];
      for (const f of this.inflight.values())
        if ((f.acks.get(sid) ?? Infinity) < newest) f.acks.delete(sid);
    }
    const fromInc = pairValue(m.incs, from);
    if (fromInc < this.incView[from]) return;
    for (const slot of m.slots) {
      const f = this.inflight.get(slot);
      if (!f) continue;
      f.acks.set(from, fromInc);
      // A majority of the voters of the configuration that governs this slot.
      if (this.quorate(this.configOf(slot), (s) => f.acks.has(s))) {
        this.inflight.delete(slot);
        this.choose(slot, this.ballot, f.value);
      }
    }
    this.advanceChosen();
  }

  private propose(slot: number, value: Value): void {
    const timeout = new Timeout('accept', this.o.retransmitTicks, this.o.retransmitMaxTicks);
    timeout.start();
    this.inflight.set(slot, { value, acks: new Map(), timeout });
    this.newAccepts.push(slot);
    this.stats.proposedSlots++;
    this.stats.proposedCmds += value.length;
  }

  /** Phase 1 values beyond the alpha window at election: proposed once it reaches them. */
  private proposeDeferred(): void {
    for (const [s, value] of this.deferred) {
      if (!this.mayPropose(s)) break;
      this.deferred.delete(s);
      if (s > this.base && !this.log.get(s)?.chosen) this.propose(s, value);
    }
  }

  /** Cut the queue into batches, one slot each, while the window has room. */
  private proposeQueued(): void {
    let i = 0;
    while (
      i < this.queue.length &&
      this.inflight.size < this.o.windowSlots &&
      this.deferred.size === 0 &&
      this.mayPropose(this.nextSlot)
    ) {
      const batch: Cmd[] = [];
      let bytes = VALUE_OVERHEAD_BYTES;
      while (i < this.queue.length) {
        const c = this.queue[i];
        const size = cmdBytes(c);
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
      const to = this.audience();
      for (const msg of this.buildAccepts(slots)) for (const s of to) this.send(s, msg);
      this.commitSent = Math.max(this.commitSent, this.chosenThrough);
    } else if (this.chosenThrough > this.commitSent) {
      // Followers apply as soon as they hear; do not wait for the next heartbeat.
      this.commitSent = this.chosenThrough;
      for (const s of this.audience())
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
      const size = valueBytes(f.value) + ACCEPT_ENTRY_OVERHEAD_BYTES;
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
    for (const s of this.audience())
      if (s !== this.sid) this.send(s, { t: 'confirm', ballot: this.ballot, round });
    if (this.quorateAll((s) => r.acks.has(s))) this.confirmRound(round);
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
    if (this.quorateAll((s) => r.acks.has(s))) this.confirmRound(m.round);
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
      // Our own accept of it may still wait for our sync: a majority chose it.
      this.markLearned(slot, value);
    }
  }

  /** A chosen value for `slot` known from a peer (catch-up), not from our own quorum. */
  private learn(slot: number, value: Value): void {
    if (slot <= this.base) return;
    const e = this.log.get(slot);
    if (e?.chosen) return;
    if (this.role === 'leader' && slot >= this.leaderFrom) {
      // PMS: a slot at or above our Phase 1 start can only have been chosen with a
      // value we did not propose at our ballot by a higher ballot. Our commit
      // index means "what you accepted at my ballot is chosen" (PMMC decisions):
      // covering this slot would make an acceptor holding our own value for it
      // mark that value chosen. A deposed leader steps down before it can.
      const f = this.inflight.get(slot);
      if (f && valuesEqual(f.value, value)) {
        this.inflight.delete(slot);
      } else {
        this.eventsOut.push(
          `sid ${this.sid}: slot ${slot} was chosen by a higher ballot; stepping down`,
        );
        this.stepDown(null);
      }
    }
    this.markLearned(slot, value);
  }

  private markLearned(slot: number, value: Value): void {
    if (slot <= this.base || this.log.get(slot)?.chosen) return;
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
      // Still in flight at our higher ballot: we proposed this same value (our
      // Phase 1 found it, PMS P2c), so the slot is done.
      this.inflight.delete(s);
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
    for (const d of this.stateCheck.appliedThrough(this.applied)) this.noteDivergence(d);
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
    this.pinLastSnapshot();
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
        if (r.timeout.attempts > 1) {
          // One retransmission unanswered: the source may be dead. Another peer
          // continues at the same offset (snapshots of one slot are identical:
          // the state machine is deterministic); when none is left, catch-up.
          const next = this.sids.find((s) => s !== this.sid && !r.tried.has(s) && this.alive(s));
          this.eventsOut.push(
            `sid ${this.sid}: snapshot transfer from ${r.peer} stalled; ${next === undefined ? 'starting over' : `continuing from ${next}`}`,
          );
          if (next === undefined) {
            this.snapRecv = null;
            this.requestCatchup(r.peer);
          } else {
            r.peer = next;
            r.tried.add(next);
            r.timeout.start();
            this.askSnapshot(r);
          }
        } else {
          this.askSnapshot(r);
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

  /** Ask a peer for chosen values; `avoid` is a peer that just failed us. */
  private requestCatchup(avoid = -1, prefer = -1): void {
    let others = this.sids.filter((s) => s !== this.sid && this.alive(s));
    // A peer we hear but that cannot hear us would never answer: two-way first.
    const twoWay = others.filter((s) => this.twoWay(s));
    if (twoWay.length > 0) others = twoWay;
    if (others.length > 1) others = others.filter((s) => s !== avoid);
    if (others.length === 0) return;
    let peer = others.includes(prefer) ? prefer : this.knownChosenFrom;
    const attempts = this.catchup ? this.catchup.attempts : 0;
    if (peer !== prefer && (!others.includes(peer) || peer === avoid || attempts > 0))
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
          parts: new Map(),
          received: 0,
          askedTo: 0,
          peer: from,
          tried: new Set([from]),
          timeout,
          reported: 0,
        };
        this.eventsOut.push(
          `sid ${this.sid}: behind the compaction point; fetching snapshot at slot ${m.snapshot} (${m.snapshotBytes} bytes) from ${from}`,
        );
        this.askSnapshot(this.snapRecv);
      }
      return;
    }
    const before = this.chosenThrough;
    if (m.from < 1 || m.from > this.chosenThrough + this.slotsAheadMax) return;
    for (let i = 0; i < m.entries.length; i++) this.learn(m.from + i, m.entries[i]);
    this.advanceChosen();
    this.learnCommit(this.lastCommit.ballot, this.lastCommit.through, this.knownChosenFrom);
    if (this.chosenThrough > before && this.catchup) {
      // Progress: ask the same peer for the next chunk right away (no timer wait).
      this.catchup = null;
      if (this.knownChosen > this.chosenThrough) this.requestCatchup(-1, from);
    }
  }

  /** Raise table `into` to the newest incarnations in wire pairs `from`; returns the SIDs raised. */
  private mergeIncs(into: number[], from: readonly number[]): number[] {
    const raised: number[] = [];
    forPairs(from, (sid, inc) => {
      if (inc > into[sid]) {
        into[sid] = inc;
        raised.push(sid);
      }
    });
    return raised;
  }

  /** Keep the current snapshot while someone fetched it recently (bounded count). */
  private pinLastSnapshot(): void {
    const last = this.lastSnapshot;
    if (
      !last ||
      this.now - this.lastSnapshotAskedAt > SNAPSHOT_PIN_ELECTIONS * this.o.electionTicks
    )
      return;
    this.pinnedSnapshots.set(last.slot, { data: last.data, askedAt: this.lastSnapshotAskedAt });
    while (this.pinnedSnapshots.size > SNAPSHOTS_PINNED_MAX) {
      let oldest = -1;
      let at = Infinity;
      for (const [s, p] of this.pinnedSnapshots) if (p.askedAt < at) [oldest, at] = [s, p.askedAt];
      this.pinnedSnapshots.delete(oldest);
    }
  }

  private onSnapshotReq(from: number, m: Extract<Msg, { t: 'snapshotReq' }>): void {
    const last = this.lastSnapshot;
    if (!last) return;
    let slot = last.slot;
    let data = last.data;
    let offset = 0;
    const pinned = this.pinnedSnapshots.get(m.slot);
    if (m.slot === last.slot) {
      offset = m.offset;
      this.lastSnapshotAskedAt = this.now;
    } else if (pinned) {
      [slot, data, offset] = [m.slot, pinned.data, m.offset];
      pinned.askedAt = this.now;
    } else this.lastSnapshotAskedAt = this.now;
    for (const [s, p] of this.pinnedSnapshots)
      if (this.now - p.askedAt > SNAPSHOT_PIN_ELECTIONS * this.o.electionTicks)
        this.pinnedSnapshots.delete(s);
    // A window of chunks per request: one round trip per chunk cannot keep up
    // with a steady write load over a long link.
    const chunk = Math.max(1, this.o.catchupBytesMax);
    for (let i = 0; i < this.snapshotWindowChunks && (offset < data.length || i === 0); i++) {
      this.send(from, {
        t: 'snapshotResp',
        slot,
        offset,
        total: data.length,
        data: data.subarray(offset, offset + chunk),
      });
      offset += chunk;
    }
  }

  /** Request the next window of chunks, from the first byte not yet received. */
  private askSnapshot(r: NonNullable<Replica['snapRecv']>): void {
    r.askedTo = r.received + this.snapshotWindowChunks * Math.max(1, this.o.catchupBytesMax);
    this.send(r.peer, { t: 'snapshotReq', slot: r.slot, offset: r.received });
  }

  private onSnapshotResp(from: number, m: Extract<Msg, { t: 'snapshotResp' }>): void {
    const r = this.snapRecv;
    if (!r || from !== r.peer) return;
    if (m.slot !== r.slot) {
      // The source no longer has our snapshot and restarted us on its newest.
      if (m.slot <= r.slot || m.offset !== 0) return;
      r.slot = m.slot;
      r.total = m.total;
      r.parts.clear();
      r.received = 0;
      r.reported = 0;
    }
    if (m.total !== r.total) return;
    // Any chunk shows the source is alive: only silence moves us to another.
    r.timeout.start();
    if (m.offset < r.received || m.offset >= r.askedTo) return;
    if (m.data.length === 0 && m.offset < r.total) return;
    r.parts.set(m.offset, m.data);
    const before = r.received;
    for (let p = r.parts.get(r.received); p && p.length > 0; p = r.parts.get(r.received))
      r.received += p.length;
    if (r.received === before) return;
    const pct = Math.floor((100 * r.received) / Math.max(1, r.total));
    if (pct >= r.reported + 10 || r.received >= r.total) {
      r.reported = pct;
      this.eventsOut.push(
        `sid ${this.sid}: snapshot ${r.slot} from ${from}: ${r.received}/${r.total} bytes (${pct}%)`,
      );
    }
    if (r.received < r.total) {
      // The window is in: ask for the next one (a gap waits for the timer).
      if (r.received >= Math.min(r.askedTo, r.total)) this.askSnapshot(r);
      return;
    }
    const parts: Uint8Array[] = [];
    for (let o = 0; o < r.total;) {
      const p = r.parts.get(o)!;
      parts.push(p);
      o += p.length;
    }
    this.snapRecv = null;
    this.installSnapshot(r.slot, concat(parts));
  }

  private installSnapshot(slot: number, data: Uint8Array): void {
    if (slot <= this.chosenThrough) return;
    // A snapshot replaces slots we may be proposing or campaigning for: chosen
    // values we never saw, so our ballot's bookkeeping below it is void (the
    // same rule as learn(): step down before the commit index can cover them).
    if (this.role !== 'follower') {
      this.eventsOut.push(`sid ${this.sid}: installing a snapshot at slot ${slot}; stepping down`);
      this.stepDown(null);
    }
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
    this.pinLastSnapshot();
    this.lastSnapshot = { slot, data };
    this.bytesSinceSnapshot = 0;
    this.compactTo(slot);
    this.chosenThrough = this.applied = slot;
    if (this.nextSlot <= slot) this.nextSlot = slot + 1;
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

/** Same commands in the same order (cid, seq and operation bytes). */
function valuesEqual(a: Value, b: Value): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x.cid !== y.cid || x.seq !== y.seq || x.op.length !== y.op.length) return false;
    for (let j = 0; j < x.op.length; j++) if (x.op[j] !== y.op[j]) return false;
  }
  return true;
}

function cmdKey(c: Cmd): string {
  return `${c.cid}:${c.seq}`;
}

/** The first slot >= from not covered by [lo, hi) ranges (hi 0 = infinity); Infinity if none. */
function firstUncovered(ranges: [number, number][], from: number): number {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  let reach = from;
  for (const [lo, hi] of sorted) {
    if (lo > reach) return reach;
    if (hi === 0) return Infinity;
    if (hi > reach) reach = hi;
  }
  return reach;
}

/** Do [lo, hi) ranges (hi 0 = infinity) cover every slot from `from` on? */
function coversToInfinity(ranges: [number, number][], from: number): boolean {
  return firstUncovered(ranges, from) === Infinity;
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

/**
 * Record a peer's heartbeat for our echoes: its newest per life. A re-delivered
 * copy from a life already seen is no news, so replaying one old heartbeat cannot
 * keep our echoes pointing at a dead life (which would make the peer doubt us).
 * Returns whether the echo must be answered at once: it moved to another life, or
 * jumped more than one heartbeat period within one life. The jump: only the
 * ECHO_LIVES_MAX newest lives are remembered, so replays of that many dead lives
 * evict the live one, an old copy of the live life is then news again and sets
 * the echo to a stale tick; the live life's next heartbeat is no switch of life,
 * and without an answer our periodic heartbeat may echo the stale tick again
 * after the next replays (attack review 4, L2: a healthy cluster stalled as long
 * as five old datagrams per pair kept coming). Periodic heartbeats move by one
 * period; a larger move follows a loss or a stale echo, and is answered.
 */
function noteEcho(p: PeerInfo, m: Extract<Msg, { t: 'heartbeat' }>, period: number): boolean {
  if (m.life === undefined) return false;
  const max = p.lives.get(m.life);
  if (max !== undefined && m.tick <= max) return false;
  p.lives.set(m.life, m.tick);
  if (p.lives.size > ECHO_LIVES_MAX) p.lives.delete(p.lives.keys().next().value!);
  const switched = p.echo?.life !== m.life || m.tick - p.echo.tick > period;
  if (p.echo) {
    p.echo.life = m.life;
    p.echo.tick = m.tick;
  } else p.echo = { life: m.life, tick: m.tick };
  return switched;
}

/** An incarnation table (index = SID) as wire pairs [sid, inc, ...], nonzero entries only. */
function incPairs(table: readonly number[]): number[] {
  const out: number[] = [];
  for (let sid = SID_MIN; sid <= SID_MAX; sid++) if (table[sid] > 0) out.push(sid, table[sid]);
  return out;
}

/**
 * Each (sid, inc) of wire pairs. A pair naming no valid SID, or a negative or
 * non-integer incarnation, is skipped: it can only come from a broken or
 * hostile peer, and an unknown incarnation is 0 (the original one).
 */
function forPairs(pairs: readonly number[], f: (sid: number, inc: number) => void): void {
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const sid = pairs[i];
    const inc = pairs[i + 1];
    if (!Number.isSafeInteger(sid) || sid < SID_MIN || sid > SID_MAX) continue;
    if (!Number.isSafeInteger(inc) || inc < 0) continue;
    f(sid, inc);
  }
}

/** The incarnation wire pairs name for `sid` (0: not named). */
function pairValue(pairs: readonly number[], sid: number): number {
  let v = 0;
  forPairs(pairs, (s, inc) => {
    if (s === sid) v = inc;
  });
  return v;
}
