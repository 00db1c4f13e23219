import { Prng } from '../core/prng';
import type { Mutation } from '../core/replica';
import type { SmLimits } from '../sm/kv';
import type { LinkFaults, ReplayFaults } from './network';

/**
 * Targeted schedule families: each aims the adversary at one dangerous state
 * (issue 9) instead of waiting for random faults to stumble into it.
 * - stale-leader: the leader is paused long enough for a new election, then
 *   resumed with partial connectivity and old datagrams in flight;
 * - learning-candidate: the leader is paused; the first candidate's promises
 *   are delayed and it is paused while the others elect above it and choose;
 *   it resumes hearing only followers' heartbeats and catch-up answers, learns
 *   slots chosen beyond what its promises report, then wins with them (9.2);
 * - lagging-candidate: the highest-ranked node is cut off while the others go
 *   ahead, then comes back and campaigns while the leader is cut away;
 * - wipe-after-choice: a member of a bare majority that just chose a value loses
 *   its disk, while its old heartbeats are re-delivered to the others;
 * - forgotten-ack: a node acknowledges two slots of the leader (the others'
 *   accepts delayed or lost), loses its disk and rejoins; the delayed accepts
 *   arrive only then, and the leader and the new acceptors go away (9.7);
 * - powerloss-after-campaign: a node loses power right after it campaigns
 *   (before its own promise is durable), and campaigns again;
 * - stale-leader-snapshot: the leader's accepts reach only a few followers, which
 *   are then cut from the rest with it; it is paused while the rest elect, choose
 *   and compact, and resumed hearing from the rest only followers' heartbeats
 *   and catch-up traffic: it fetches a snapshot while it still believes it leads;
 * - powerloss-leader-reuse: a campaigning node's disk is slow; it loses power
 *   right after its first accept (only some followers got it), restarts, hears
 *   only old heartbeats (from before its campaign) of a bare majority cut from
 *   those followers, and campaigns again;
 * - lagging-under-load: a follower is cut away until the faults stop, then must
 *   catch up while the clients keep writing at full speed, with tiny chunks and
 *   a snapshot every few slots (a liveness bound, not only at the end);
 * - abandoned-incarnation: a node that lost its disk loses power (or its disk
 *   again) mid-rejoin, after its request to record a new incarnation left but
 *   before anyone answered; it rejoins with another one, and the held requests
 *   of the abandoned one arrive afterwards (at every voter, or at one alone);
 *   after the heal it is the only bridge between two halves (attack review F1);
 * - dead-leader-heartbeats: just before the heal the leader goes deaf for good
 *   (it hears nobody, all hear it) and n - quorum followers restart; its old
 *   heartbeats keep arriving at them, in order, one per election timeout (F2);
 * - bridge-free-heartbeat: after the heal a bridge node joins the leader's half
 *   to the other; an old heartbeat in which the bridge followed no leader keeps
 *   arriving at the other half (F4: pre-vote on stale evidence);
 * - dead-lives-heartbeats: every node is restarted four or five times in a row
 *   (or the whole cluster once, before the heal, after a long calm life); after
 *   the heal each live heartbeat is followed (at most once per link per tick)
 *   by a heartbeat of a dead life of its sender (in rotation, or the old life's
 *   in send order), so the peer's one echo slot names a dead life whenever its
 *   periodic heartbeat leaves (L); or (half the runs, eviction mode) every tick
 *   each link gets a fixed cycle, the newest heartbeat of each dead life of its
 *   sender and then the first of its live one: more lives than a peer
 *   remembers, so the live one is evicted and its old copy sets the echo back (L2);
 * - given-up-handoff: a hand-off whose every request is held times out (the
 *   leader leads on); its target is restarted, an accept makes it follow the
 *   leader again before a fresh heartbeat, and a held copy then arrives; it
 *   must not campaign ('a given-up hand-off deposes nobody', H); in half the
 *   rounds the target restarts while the hand-off is live, follows again by a
 *   re-delivered accept or commit with no heartbeat of the leader in its new
 *   life, and the held copy echoes that life (9.Hr);
 * - handoff-ballot-reuse (5 or 7 nodes; with 3 it does nothing): the leader L
 *   hands off to A, whose disk is slow; what A sends L is lost, its accepts
 *   reach one group G of the other peers P only, and the peers P do not hear
 *   each other (none can campaign); A loses power before its own promise is
 *   durable, and in its next life hears nothing from P while it follows L
 *   afresh; L hands off to A again, and A campaigns again at its first ballot
 *   (L and P minus G may answer, G never): a candidate that led without its
 *   own durable promise proposes twice at one (slot, ballot) (9.5);
 * - paused-handoff-target: the leader hands off to a voter picked at random,
 *   which is paused (its clock stops) at the hand-off's start, after 0-5 ticks
 *   of lost copies; the later copies queue at it, the leader gives the hand-off
 *   up and leads on, and its later heartbeats queue behind the copies; the
 *   target resumes a heartbeat period to three election timeouts after the
 *   give-up and reads its queue (in arrival order, or any order): at its first
 *   tick it must not campaign on a copy that a fresh heartbeat read before that
 *   tick shows given up ('a given-up hand-off deposes nobody', H2); in some
 *   rounds (asking: most where T's election timeout is longer than A's) T is
 *   paused instead right after it sends the heartbeat a copy must echo, so
 *   that the copies parked at it echo it: then it must not campaign if a fresh
 *   heartbeat read before its tick is dated past the hand-off's end by the
 *   leader's own election timeout (HANDOFF-LIFETIME-CONFIG, nodeElectionTicks);
 * - forgotten-handoff-prepare: the leader A hands off to a voter T whose disk
 *   is slow; T's prepares and nacks to the others are held (lost and kept); T
 *   campaigns and loses power before its own promise is durable (it forgets
 *   the campaign); A's copies to the restarted T are lost until A gives the
 *   hand-off up and leads on; a heartbeat period to ten election timeouts later
 *   the held prepares arrive, in any order: A, leading with no hand-off under
 *   way, must not step down for one ('a given-up hand-off deposes nobody',
 *   HANDOFF-PREPARE-STALE);
 * - change-depose (membership mode, issue 13): each time a membership change is
 *   chosen, the leader is paused, killed or cut from the others (the new member
 *   with them) before the change governs, and its old datagrams come back: a new
 *   leader must campaign while two configurations are active and the window of
 *   the change is still open.
 */
export const FAMILIES = [
  'stale-leader',
  'learning-candidate',
  'lagging-candidate',
  'wipe-after-choice',
  'forgotten-ack',
  'powerloss-after-campaign',
  'stale-leader-snapshot',
  'powerloss-leader-reuse',
  'lagging-under-load',
  'abandoned-incarnation',
  'dead-leader-heartbeats',
  'bridge-free-heartbeat',
  'dead-lives-heartbeats',
  'given-up-handoff',
  'handoff-ballot-reuse',
  'paused-handoff-target',
  'forgotten-handoff-prepare',
  'change-depose',
] as const;
export type Family = (typeof FAMILIES)[number] | 'none';

/**
 * Cuts that stay after the faults stop, still leaving a connected majority
 * (issue 16): liveness is demanded anyway.
 * - one-way-into-advanced: the node with the longest chosen prefix hears nobody
 *   (others hear it);
 * - one-way-random: a few random one-way cuts;
 * - bridge: A and C do not hear each other, both hear B.
 */
export const POST_HEAL_SHAPES = [
  'none',
  'one-way-into-advanced',
  'one-way-random',
  'bridge',
] as const;
export type PostHealShape = (typeof POST_HEAL_SHAPES)[number];

export const MUTATIONS: readonly Mutation[] = [
  'ignore-promise-values',
  'accept-below-promise',
  'read-without-confirm',
  'minority-quorum',
];

/** Everything a run does is drawn from its seed; overrides pin some of it (CLI, tests). */
export interface SimConfig {
  seed: number;
  sids: number[];
  /** Steps with faults, then a healed phase where clients keep going, then a drain. */
  faultSteps: number;
  liveSteps: number;
  /** Ticks within which, once faults stop, every request must complete. */
  liveBound: number;
  timing: {
    heartbeatTicks: number;
    electionTicks: number;
    retransmitTicks: number;
    retransmitMaxTicks: number;
  };
  /**
   * Each node's own election timeout (same order as sids): in some seeds they
   * differ, as during a rolling change of the timing config (HANDOFF-LIFETIME-CONFIG).
   * timing.electionTicks is then the largest of them, so every bound and
   * schedule length drawn from it fits the slowest node.
   */
  nodeElectionTicks: number[];
  limits: {
    windowSlots: number;
    batchBytesMax: number;
    pendingMax: number;
    catchupBytesMax: number;
    snapshotEverySlots: number;
    keepSlots: number | undefined;
    /**
     * The accept horizon above the chosen prefix, made small in some seeds so
     * that its edge is reachable in a few slots. Passed to the replica, which
     * uses it once it supports the option (undefined = the replica's default).
     */
    slotsAheadMax: number | undefined;
  };
  /**
   * Each node's own config limits (same order as sids). They differ between
   * nodes in some seeds, as during a rolling config change: the first leader
   * records its own in the log and every state machine applies those.
   */
  nodeLimits: SmLimits[];
  net: LinkFaults;
  clientNet: LinkFaults;
  /** Re-delivery of old datagrams during the faults (a quarter of the rate after). */
  replay: ReplayFaults;
  /** Ticks an fsync takes when the disk is not slow (0 = done before the next tick). */
  syncTicks: [number, number];
  /** Per-step probabilities during the fault phase. */
  faults: {
    /** A node stops: a process kill or (powerLoss of them) a power loss. */
    crash: number;
    /** Share of crashes that are power losses (only synced records survive). */
    powerLoss: number;
    /** A killed node also loses power before it restarts (its open never synced). */
    powerAfterKill: number;
    /** Per ready() handled: crash part-way (torn write, snapshot or sends lost). */
    crashInReady: number;
    pause: number;
    slowDisk: number;
    partition: number;
    /** Loss/delay bursts by direction and message type. */
    burst: number;
    /** Step at which one node loses its disk (restarts without bootstrap), or -1. */
    wipeAt: number;
    /** A second lost disk later on (another node, once the first one votes again), or -1. */
    wipeAgainAt: number;
    /** The leader is asked to hand leadership to its best caught-up voter (transfer-leader, SIGTERM). */
    handoff: number;
  };
  family: Family;
  /** Step at which the family's schedule starts. */
  familyAt: number;
  postHeal: PostHealShape;
  /** Per node (same order as sids): ticks per step, e.g. 0.9 = a slow clock. */
  clockRates: number[];
  /** Probability of running ready() after each delivered message (vs once per step). */
  flushPerMessage: number;
  clients: number;
  keys: number;
  thinkMax: number;
  /** PaxosClient's first retransmit, in ticks (it backs off up to 4x). */
  clientRetry: number;
  /** Share of written values padded to a length in bigValueBytes (around the value limits). */
  bigValues: number;
  bigValueBytes: [number, number];
  /** Deliberately broken driver, to check that the invariants catch it (tests only). */
  sabotage: Sabotage;
  /** Deliberately broken protocol (ReplicaOptions.mutations), tests only. */
  mutation: Mutation | 'none';
  /**
   * Replica.checkInvariants after every message, tick and turn (else once per
   * node per step): it walks the log, so a quarter of the seeds pay for it.
   */
  checkEveryEvent: boolean;
  /** Membership mode (issue 13), or null: every sid is a voter for the whole run. */
  membership: MembershipPlan | null;
}

/**
 * Membership mode: `sids` is the universe (every server that may ever be a
 * member), `voters` the bootstrap configuration; during the fault phase an
 * operator adds spares as learners, promotes them once caught up, removes
 * voters (the leader too) and replaces a node whose disk was lost for good.
 */
export interface MembershipPlan {
  /** The bootstrap voters (the drawn node set); the other sids are spares. */
  voters: number[];
  /** ReplicaOptions.alphaSlots: small, so that the window's edges come in a few slots. */
  alpha: number;
  /** Ticks between one change's result and the next submission: uniform in [0, gapMax]. */
  gapMax: number;
  /** Chance that a removal targets the leader (else a random voter). */
  removeLeader: number;
  /** Chance that the operator submits two or three changes at once (one is refused). */
  burst: number;
  /**
   * Spares outside the config files' servers list (`paxosd --join`, issue 13): every
   * replica's servers list leaves them out (theirs is the cluster's, without
   * themselves), they start with an empty disk and no vote (no --init), their
   * `member add` carries an address, and a peer drops their datagrams until its
   * log gave it that address (PaxosNode.learnAddresses).
   */
  outside: number[];
}

/**
 * Deliberately broken drivers. ack-before-sync sends sync = true messages at
 * once (the daemon bug of acknowledging before the fdatasync): only a power
 * loss can tell, so it shows the crash model has teeth.
 */
export type Sabotage =
  | 'none'
  | 'drop-promise-records'
  | 'drop-accept-records'
  | 'ack-before-sync'
  /** Open does not sync the records it replays (issue 9 #6: a kill keeps the page cache). */
  | 'no-sync-on-open';
export const SABOTAGES: readonly Sabotage[] = [
  'drop-promise-records',
  'drop-accept-records',
  'ack-before-sync',
  'no-sync-on-open',
];

export interface SimOverrides {
  nodes?: number;
  faultSteps?: number;
  liveSteps?: number;
  snapshotEverySlots?: number;
  windowSlots?: number;
  clients?: number;
  wipe?: boolean;
  sabotage?: Sabotage;
  mutation?: Mutation | 'none';
  family?: Family;
  postHeal?: PostHealShape;
  /** Share of crashes that are power losses (0 = process kills only, also no power loss after a kill). */
  powerLoss?: number;
  /** Membership mode on or off (default: drawn; on for change-depose). */
  membership?: boolean;
  /** Pin alpha in membership mode. */
  alpha?: number;
  /** Election timeouts that differ between nodes (default: drawn, see drawNodeTiming). */
  nodeTiming?: boolean;
  /** Membership mode: some spares outside the servers list (default: drawn, see drawOutside). */
  outside?: boolean;
}

export const NODE_COUNTS = [3, 5, 7] as const;

/** The run's one PRNG: the configuration is its first draws, then the run itself. */
export function runPrng(seed: number): Prng {
  return new Prng(seed);
}

/**
 * Draw a run's configuration from the run's PRNG. Every value is drawn even when
 * an override replaces it, so an override never shifts the rest of the stream.
 * Swarm testing (Groce et al.): each seed switches each fault kind on or off and
 * draws its own small limits, so that no one fault drowns the others and every
 * window, chunk and interval edge is reached in a few slots in some seeds.
 * Longer than 100 lines on purpose: read top to bottom it is the order of the
 * draws, which is each seed's stream; split up, that order would be hidden.
 */
export function drawConfig(p: Prng, seed: number, o: SimOverrides = {}): SimConfig {
  const n = pin(o.nodes, p.pick(NODE_COUNTS));
  // Mostly 1..n; sometimes scattered SIDs (the bully order is by SID, not position).
  let sids: number[];
  if (p.chance(0.25)) {
    const set = new Set<number>();
    while (set.size < n) set.add(p.range(1, 250));
    sids = [...set].sort((a, b) => a - b);
  } else {
    sids = Array.from({ length: n }, (_, i) => i + 1);
  }
  const on = (q: number): boolean => p.chance(q);
  const heartbeatTicks = p.range(2, 5);
  const electionTicks = Math.max(4 * heartbeatTicks, p.range(12, 36));
  const retransmitTicks = p.range(2, 4);
  const retransmitMaxTicks = p.range(3 * retransmitTicks, 40);
  const snapEvery = p.pick([2, 3, 5, 8, 16, 40]);
  const catchupBytesMax = p.pick([64, 120, 200, 1000, 60000]);
  // Tiny catch-up chunks (multi-part snapshot transfers) only with frequent
  // snapshots: replaying hundreds of slots one per round trip is merely slow.
  const snapshots = pin(
    o.snapshotEverySlots,
    p.chance(0.6) || catchupBytesMax < 200 ? snapEvery : 1 << 30,
  );
  const keepSlots = p.chance(0.4) ? undefined : p.pick([0, 1, 2, 5]);
  const loss = on(0.7) ? p.next() * 0.3 : 0;
  const delayMax = p.range(1, 6);
  const net: LinkFaults = {
    loss,
    dup: on(0.5) ? p.next() * 0.1 : 0,
    delayMin: 1,
    delayMax,
    spike: on(0.5) ? p.next() * 0.05 : 0,
    // Now and then a packet arrives very late (long after a leader change).
    spikeMax: p.range(5, p.chance(0.3) ? 30 * electionTicks : 4 * electionTicks),
  };
  const clientNet: LinkFaults = { ...net, loss: loss / 2, spikeMax: electionTicks };
  const replayOn = on(0.6);
  const replay: ReplayFaults = {
    rate: replayOn ? p.pick([0.005, 0.02, 0.05, 0.2]) : 0,
    burst: p.pick([1, 3, 10]),
    // Old datagrams come back soon or very late (many election periods later).
    delayMax: p.pick([5, 3 * electionTicks, 40 * electionTicks]),
    archive: p.pick([200, 2000, 5000]),
  };
  const faultSteps = pin(o.faultSteps, p.range(600, 1600));
  const clients = pin(o.clients, p.range(1, 5));
  const wipeAt = p.range(faultSteps >> 2, faultSteps - 1);
  const wipe = pin(o.wipe, p.chance(0.25));
  const wipeAgain = p.chance(0.3);
  // Storms: a fifth of the runs get several times the crash and partition rates.
  const storm = p.chance(0.2) ? p.range(3, 5) : 1;
  const drift = p.chance(0.3);
  const clockRates = sids.map(() => (drift ? (80 + p.int(41)) / 100 : 1));
  // PaxosClient backs off from clientRetry to 4x: at most 4 election periods.
  const clientRetry = electionTicks;
  const family = pin(o.family, p.chance(0.5) ? p.pick(FAMILIES) : 'none');
  const familyAt = p.range(Math.min(150, faultSteps >> 2), Math.max(150, faultSteps >> 1));
  const postHeal = pin(o.postHeal, p.chance(0.4) ? p.pick(POST_HEAL_SHAPES) : 'none');
  const slowSync = on(0.3);
  const syncTicks: [number, number] = slowSync ? [0, p.range(1, 8)] : [0, 0];
  const windowSlots = pin(o.windowSlots, p.pick([1, 1, 2, 3, 4, 4, 8, 32]));
  const nodeLimits = drawNodeLimits(p, sids.length, clients);
  const bigValues = p.chance(0.3) ? p.pick([0.05, 0.2]) : 0;
  const valueMaxes = nodeLimits.map((l) => l.valueBytesMax);
  const bigValueBytes: [number, number] = [
    Math.max(1, Math.min(...valueMaxes) - 20),
    Math.max(...valueMaxes) + 20,
  ];
  const slotsAheadMax = p.chance(0.3) ? p.range(1, 8) : undefined;
  // After the heal: a new leader within a few election periods (bully order, a
  // candidate that may have to catch up first), then each client may need a
  // timeout or two to find it. Generous, but finite: a stuck cluster fails.
  // Persistent cuts (issue 16) may cost a few more election periods: a client
  // may try the deaf node, and the majority must first stop waiting for it.
  const liveBound = liveBoundFor(electionTicks, retransmitMaxTicks, clientRetry, postHeal);
  const crash = on(0.6) ? p.pick([0.002, 0.005, 0.01]) * storm : 0;
  const drawn: SimConfig = {
    seed,
    sids,
    faultSteps,
    liveSteps: pin(o.liveSteps, p.range(100, 300)),
    liveBound,
    timing: { heartbeatTicks, electionTicks, retransmitTicks, retransmitMaxTicks },
    nodeElectionTicks: sids.map(() => electionTicks),
    limits: {
      windowSlots,
      batchBytesMax: p.pick([120, 300, 1000, 60000]),
      pendingMax: p.pick([1, 2, 8, 1000]),
      catchupBytesMax,
      snapshotEverySlots: snapshots,
      keepSlots,
      slotsAheadMax,
    },
    nodeLimits,
    net,
    clientNet,
    replay,
    syncTicks,
    faults: {
      crash,
      powerLoss: pin(o.powerLoss, p.pick([0, 0.3, 0.5, 1])),
      powerAfterKill: p.pick([0, 0.2, 0.5]) * (o.powerLoss === 0 ? 0 : 1),
      crashInReady: on(0.4) ? p.pick([0.0005, 0.002]) * storm : 0,
      pause: on(0.4) ? p.pick([0.002, 0.005]) : 0,
      slowDisk: on(0.4) ? p.pick([0.002, 0.005, 0.02]) : 0,
      partition: on(0.6) ? p.pick([0.004, 0.01, 0.02]) * storm : 0,
      burst: on(0.4) ? p.pick([0.002, 0.01]) : 0,
      wipeAt: wipe ? wipeAt : -1,
      wipeAgainAt: wipe && wipeAgain ? p.range(wipeAt + 1, faultSteps) : -1,
      handoff: 0,
    },
    family,
    familyAt,
    postHeal,
    clockRates,
    flushPerMessage: p.pick([0, 0.3, 1]),
    clients,
    keys: p.range(1, 3),
    thinkMax: p.pick([0, 3, 10]),
    clientRetry,
    bigValues,
    bigValueBytes,
    sabotage: o.sabotage ?? 'none',
    mutation: o.mutation ?? 'none',
    checkEveryEvent: p.chance(0.25),
    membership: null,
  };
  // Drawn last, so that every draw above stays what it was for the seed.
  drawn.clientNet = clientLinkFaults(p, drawn.clientNet, electionTicks);
  // After that (same reason): an operator's leadership hand-off now and then.
  drawn.faults.handoff = p.chance(0.3) ? p.pick([0.002, 0.01]) : 0;
  drawNodeTiming(drawn, o);
  // After that (same reason): membership mode in two thirds of the seeds without
  // a family (a third of all seeds), and always with change-depose.
  const members = p.chance(2 / 3);
  const on2 = o.membership ?? (family === 'change-depose' || (family === 'none' && members));
  if (on2) return drawMembership(p, drawn, o);
  return shapeForFamily(drawn, o, snapEvery);
}

/**
 * Membership mode (issue 13): 2 spare sids (3 if a disk is lost for good: it is
 * replaced by a spare), a small alpha, the operator's pace. Other families
 * than change-depose are off (they assume every sid votes for the whole run),
 * and so are cuts kept after the heal (their connected majority is of all sids);
 * a lost disk is lost for good (the rejoin rule across a change is not built
 * yet, see README "Membership changes"): the operator replaces the node.
 */
function drawMembership(p: Prng, c: SimConfig, o: SimOverrides): SimConfig {
  const voters = c.sids;
  const spares = c.faults.wipeAt >= 0 ? 3 : 2;
  const all = new Set(voters);
  const scattered = voters[voters.length - 1] !== voters.length;
  for (let next = voters.length + 1; all.size < voters.length + spares; next++)
    all.add(scattered ? p.range(1, 250) : next);
  const sids = [...all].sort((a, b) => a - b);
  const drift = c.clockRates.some((r) => r !== 1);
  const rate = new Map(voters.map((s, i) => [s, c.clockRates[i]]));
  const limits = new Map(voters.map((s, i) => [s, c.nodeLimits[i]]));
  const t = c.timing;
  const family = c.family === 'change-depose' ? c.family : 'none';
  const election = new Map(voters.map((s, i) => [s, c.nodeElectionTicks[i]]));
  const shortest = Math.min(...c.nodeElectionTicks);
  const plan: MembershipPlan = {
    voters,
    alpha: pin(o.alpha, p.pick([1, 2, 3, 4, 4, 6, 8, 16])),
    gapMax: p.pick([0, t.electionTicks, 6 * t.electionTicks]),
    removeLeader: p.pick([0.2, 0.5]),
    burst: p.pick([0, 0.1, 0.3]),
    outside: drawOutside(c.seed, voters, sids, o),
  };
  return {
    ...c,
    sids,
    clockRates: sids.map((s) => rate.get(s) ?? (drift ? (80 + p.int(41)) / 100 : 1)),
    nodeLimits: sids.map((s) => ({ ...(limits.get(s) ?? c.nodeLimits[0]) })),
    nodeElectionTicks: sids.map((s) => election.get(s) ?? shortest),
    family,
    postHeal: 'none',
    liveBound: liveBoundFor(t.electionTicks, t.retransmitMaxTicks, c.clientRetry, 'none'),
    membership: plan,
  };
}

/**
 * Membership mode: in a third of the seeds, one or more spares are outside the
 * servers list (MembershipPlan.outside). Drawn from a PRNG of the seed's own, so
 * that no other draw of any seed moves.
 */
function drawOutside(
  seed: number,
  voters: readonly number[],
  sids: readonly number[],
  o: SimOverrides,
): number[] {
  const q = new Prng((seed ^ 0x0b751de5) >>> 0);
  const spares = sids.filter((s) => !voters.includes(s));
  if (!pin(o.outside, q.chance(1 / 3))) return [];
  const out = spares.filter(() => q.chance(0.5));
  return out.length > 0 ? out : [q.pick(spares)];
}

/**
 * Election timeouts of their own per node (HANDOFF-LIFETIME-CONFIG): in a fifth
 * of the seeds (half of paused-handoff-target's), each node's is the drawn one
 * times 1, 1.5, 2 or 2.5, at least two differing. Drawn from a PRNG of the seed's
 * own (not the run's), so that no other draw of any seed moves; the run's
 * timing.electionTicks becomes the largest, and the live bound and the fault
 * phase's length with it.
 */
function drawNodeTiming(c: SimConfig, o: SimOverrides): void {
  const q = new Prng((c.seed ^ 0x5eed7e1c) >>> 0);
  const share = c.family === 'paused-handoff-target' ? 0.5 : 0.2;
  if (!pin(o.nodeTiming, q.chance(share))) return;
  const t = c.timing;
  const base = t.electionTicks;
  const own = c.sids.map(() => Math.round(base * q.pick([1, 1, 1.5, 2, 2.5])));
  if (own.every((x) => x === own[0])) own[q.int(own.length)] = own[0] === base ? 2 * base : base;
  c.nodeElectionTicks = own;
  t.electionTicks = Math.max(...own);
  // As many of the longest election periods with faults as drawn of the base one
  // (fewer would leave the families fewer rounds: paused-handoff-target's, 9.H2L).
  c.faultSteps = pin(o.faultSteps, Math.round((c.faultSteps * t.electionTicks) / base));
  c.liveBound = liveBoundFor(t.electionTicks, t.retransmitMaxTicks, c.clientRetry, c.postHeal);
}

/** Ticks within which, once faults stop, every request must complete (see drawConfig). */
function liveBoundFor(
  electionTicks: number,
  retransmitMaxTicks: number,
  clientRetry: number,
  postHeal: PostHealShape,
): number {
  return (
    12 * electionTicks +
    4 * retransmitMaxTicks +
    6 * clientRetry +
    (postHeal === 'none' ? 0 : 8 * electionTicks + 6 * clientRetry)
  );
}

/**
 * What a family needs of the limits, applied after every draw (the PRNG
 * stream, hence every other draw of the seed, stays the same; overrides win):
 * - stale-leader-snapshot: snapshots every few slots and few slots kept, so the
 *   others compact past the stale leader's slots in a few slots;
 * - lagging-under-load: a snapshot every few slots, one tiny chunk per round
 *   trip (the small-edge limits), many keys and busy clients (a state of many
 *   chunks under a steady load), no cut kept after the heal, and the clients
 *   keep writing long enough after the heal for the catch-up bound to apply;
 *   no big values: the bound is in election periods for a state of a few dozen
 *   64-byte chunks (a state of 3 KB at one chunk per round trip needs more than
 *   the bound for its transfer alone: seed 3162, 7 nodes, at 1a7f54f).
 */
function shapeForFamily(c: SimConfig, o: SimOverrides, snapEvery: number): SimConfig {
  const l = c.limits;
  if (c.family === 'stale-leader-snapshot') {
    return {
      ...c,
      limits: {
        ...l,
        snapshotEverySlots: pin(o.snapshotEverySlots, Math.min(snapEvery, 8)),
        keepSlots: Math.min(l.keepSlots ?? 2, 2),
      },
    };
  }
  if (c.family === 'forgotten-ack') {
    // Two slots in flight at once, so one can be chosen while the next waits.
    return {
      ...c,
      limits: { ...l, windowSlots: pin(o.windowSlots, Math.max(l.windowSlots, 2)) },
    };
  }
  if (c.family === 'learning-candidate') {
    // Small windows and horizon: the slots chosen while the candidate waits
    // reach past its promises in a few slots. Snapshots no more often than every
    // 16 slots: a snapshot offer would depose it (it learns by catch-up entries).
    return {
      ...c,
      limits: {
        ...l,
        windowSlots: pin(o.windowSlots, Math.min(l.windowSlots, 4)),
        slotsAheadMax: l.slotsAheadMax ?? 4,
        snapshotEverySlots: pin(o.snapshotEverySlots, Math.max(l.snapshotEverySlots, 16)),
      },
    };
  }
  const kept = keptCutFamily(c, o);
  if (kept) return kept;
  if (c.family === 'dead-lives-heartbeats') return deadLivesShape(c, o);
  if (c.family === 'lagging-under-load') {
    const e = c.timing.electionTicks;
    return {
      ...c,
      limits: {
        ...l,
        snapshotEverySlots: pin(o.snapshotEverySlots, Math.min(snapEvery, 5)),
        keepSlots: Math.min(l.keepSlots ?? 1, 2),
        catchupBytesMax: Math.min(l.catchupBytesMax, 64),
        slotsAheadMax: l.slotsAheadMax ?? 8,
      },
      clients: pin(o.clients, Math.max(c.clients, 4)),
      keys: 24,
      bigValues: 0,
      thinkMax: 0,
      liveSteps: pin(o.liveSteps, Math.max(c.liveSteps, catchupBound(e) + 100)),
      postHeal: pin(o.postHeal, 'none'),
    };
  }
  return c;
}

/**
 * The families whose failure shows only after the heal, under a cut kept after
 * it (a bridge, or a node that hears nobody), while old heartbeats keep coming
 * (attack review F1, F2, F4). The live bound is that of a kept cut. The clients
 * run long enough after the heal that a request stalled for the whole time they
 * run exceeds it (F2), and that a node campaigning on stale evidence once every
 * few election periods goes past ROUNDS_AFTER_HEAL_MAX (F4).
 */
function keptCutFamily(c: SimConfig, o: SimOverrides): SimConfig | null {
  const shape: Record<string, PostHealShape> = {
    'abandoned-incarnation': 'bridge',
    'dead-leader-heartbeats': 'one-way-into-advanced',
    'bridge-free-heartbeat': 'bridge',
  };
  if (!(c.family in shape)) return null;
  const t = c.timing;
  const postHeal = pin(o.postHeal, shape[c.family]);
  const liveBound = liveBoundFor(t.electionTicks, t.retransmitMaxTicks, c.clientRetry, postHeal);
  const span = c.family === 'bridge-free-heartbeat' ? 60 * t.electionTicks : liveBound;
  return {
    ...c,
    postHeal,
    liveBound,
    liveSteps: pin(o.liveSteps, Math.max(c.liveSteps, span + 10 * t.electionTicks)),
  };
}

/**
 * dead-lives-heartbeats: no cut after the heal (the bound of a healed network);
 * the clients run past the live bound, so a cluster stalled while the old
 * heartbeats keep coming fails it; the faults stop deadLivesCalm ticks before
 * the heal (so that the last life of the whole-cluster restart lasts longer than
 * the bound: its heartbeats, one per live one, outlast it).
 */
function deadLivesShape(c: SimConfig, o: SimOverrides): SimConfig {
  const t = c.timing;
  const postHeal = pin(o.postHeal, 'none');
  const liveBound = liveBoundFor(t.electionTicks, t.retransmitMaxTicks, c.clientRetry, postHeal);
  const calm = deadLivesCalm({ ...c, liveBound });
  const faultSteps = pin(o.faultSteps, Math.max(c.faultSteps, calm + 150));
  return {
    ...c,
    postHeal,
    liveBound,
    faultSteps,
    // The family starts with the calm stretch.
    familyAt: Math.max(1, faultSteps - calm),
    liveSteps: pin(o.liveSteps, Math.max(c.liveSteps, liveBound + 10 * t.electionTicks)),
  };
}

/** dead-lives-heartbeats: ticks before the heal without random faults (see deadLivesShape). */
export function deadLivesCalm(c: Pick<SimConfig, 'liveBound' | 'timing'>): number {
  return c.liveBound + 12 * c.timing.electionTicks;
}

/**
 * lagging-under-load: ticks after the heal within which the lagging node must
 * have caught up with what was chosen at the heal, while the clients keep
 * writing (an election or two, then a snapshot transfer and its catch-up;
 * measured: at most 6.4 election periods in 300 seeds).
 */
export function catchupBound(electionTicks: number): number {
  return 12 * electionTicks;
}

/**
 * Client links of their own in some seeds: datagrams duplicated and delivered
 * late both ways (a copy of a request that arrives after its session was
 * evicted; an answer lost while a late copy is answered), as issue 15 needs.
 */
function clientLinkFaults(p: Prng, f: LinkFaults, electionTicks: number): LinkFaults {
  if (!p.chance(0.4)) return f;
  return {
    ...f,
    dup: 0.05 + p.next() * 0.25,
    spike: 0.02 + p.next() * 0.1,
    spikeMax: p.range(electionTicks, 4 * electionTicks),
  };
}

/**
 * Each node's own limits. A fifth of the seeds keep a few sessions only
 * (evictions every few operations); a third give the nodes different limits
 * (a rolling config change), so that a state machine that used its own node's
 * limits instead of the log's would diverge.
 */
function drawNodeLimits(p: Prng, n: number, clients: number): SmLimits[] {
  const few = (): number => p.range(1, clients + 1);
  const base: SmLimits = {
    sessionsMax: p.chance(0.2) ? few() : 1000,
    valueBytesMax: p.pick([64, 200, 1000]),
  };
  if (!p.chance(0.35)) return Array.from({ length: n }, () => ({ ...base }));
  const other: SmLimits = {
    sessionsMax: p.chance(0.5) ? few() : base.sessionsMax * 2,
    valueBytesMax: p.chance(0.7) ? Math.max(32, base.valueBytesMax >> 1) : base.valueBytesMax,
  };
  return Array.from({ length: n }, () => (p.chance(0.5) ? { ...base } : { ...other }));
}

function pin<T>(override: T | undefined, drawn: T): T {
  return override === undefined ? drawn : override;
}

export function describeConfig(c: SimConfig): string {
  const f = c.faults;
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  const r = c.replay;
  return [
    `seed=${c.seed} nodes=${c.sids.length} sids=[${c.sids.join(',')}] steps=${c.faultSteps}+${c.liveSteps}+${c.liveBound}`,
    `  timing hb=${c.timing.heartbeatTicks} election=${c.nodeElectionTicks.some((x) => x !== c.timing.electionTicks) ? `per node ${c.nodeElectionTicks.join(' ')}` : c.timing.electionTicks} rtx=${c.timing.retransmitTicks}..${c.timing.retransmitMaxTicks} sync=${c.syncTicks.join('..')} ticks`,
    `  limits window=${c.limits.windowSlots} batch=${c.limits.batchBytesMax}B pending=${c.limits.pendingMax} catchup=${c.limits.catchupBytesMax}B snapshotEvery=${c.limits.snapshotEverySlots >= 1 << 30 ? 'never' : c.limits.snapshotEverySlots} keep=${c.limits.keepSlots ?? 'default'} slotsAhead=${c.limits.slotsAheadMax ?? 'default'}`,
    `  node limits (sessionsMax/valueBytesMax) ${c.nodeLimits.map((l) => `${l.sessionsMax}/${l.valueBytesMax}`).join(' ')}${c.bigValues > 0 ? ` big values ${pct(c.bigValues)} of ${c.bigValueBytes.join('..')}B` : ''}`,
    `  net loss=${pct(c.net.loss)} dup=${pct(c.net.dup)} delay=${c.net.delayMin}..${c.net.delayMax} spikes=${pct(c.net.spike)} up to ${c.net.spikeMax} replay=${pct(r.rate)}/step x1..${r.burst} within ${r.delayMax} (archive ${r.archive})`,
    `  faults/step crash=${pct(f.crash)} (power loss ${pct(f.powerLoss)}, then power after kill ${pct(f.powerAfterKill)}) crashInReady=${pct(f.crashInReady)} pause=${pct(f.pause)} slowDisk=${pct(f.slowDisk)} partition=${pct(f.partition)} burst=${pct(f.burst)} wipe=${f.wipeAt >= 0 ? `@${f.wipeAt}${f.wipeAgainAt >= 0 ? `,@${f.wipeAgainAt}` : ''}` : 'no'}`,
    `  family=${c.family}${c.family !== 'none' ? `@${c.familyAt}` : ''} postHeal=${c.postHeal} clock rates ${c.clockRates.some((x) => x !== 1) ? c.clockRates.join(' ') : 'exact'}`,
    ...(c.membership
      ? [
          `  membership voters=[${c.membership.voters.join(',')}] alpha=${c.membership.alpha} gap<=${c.membership.gapMax} removeLeader=${c.membership.removeLeader} burst=${c.membership.burst}${c.membership.outside.length > 0 ? ` outside=[${c.membership.outside.join(',')}]` : ''}`,
        ]
      : []),
    `  clients=${c.clients} keys=${c.keys} think<=${c.thinkMax} flushPerMessage=${c.flushPerMessage} invariants=${c.checkEveryEvent ? 'every event' : 'every step'} clientRetry=${c.clientRetry}${c.sabotage !== 'none' ? ` SABOTAGE=${c.sabotage}` : ''}${c.mutation !== 'none' ? ` MUTATION=${c.mutation}` : ''}`,
  ].join('\n');
}
