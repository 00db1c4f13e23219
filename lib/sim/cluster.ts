import { checkLinearizable, type HistoryEvent } from '../check/linearizability';
import { ballotRound, formatBallot, nextBallot } from '../core/ballot';
import { Prng } from '../core/prng';
import { Replica, type ReplicaOptions } from '../core/replica';
import { isDivergenceEvent } from '../core/statecheck';
import type {
  Cmd,
  CmdResult,
  Configuration,
  DurableRecord,
  MemberAddr,
  Msg,
  Outbound,
  Ready,
} from '../core/types';
import { ClientFront, type FrontAnswer } from '../front';
import {
  encodeOp,
  KvStateMachine,
  parseCommand,
  PROTOCOL_LIMITS,
  REGISTER_NONCE_MIN,
  type SmLimits,
} from '../sm/kv';
import { decodeRequest, encodeReply, type ClientReply } from '../wire/client';
import { clusterTag, Kind, NO_KEYS, open, seal } from '../wire/envelope';
import { decodePeerBody, encodePeerBody, SCHEMA } from '../wire/peer';
import {
  catchupBound,
  deadLivesCalm,
  describeConfig,
  drawConfig,
  runPrng,
  type PostHealShape,
  type SimConfig,
  type SimOverrides,
} from './config';
import { CALM, connectedMajority, SimNetwork, type Packet, type Partition } from './network';
import { MemberOperator } from './operator';
import { bytesEqual, fail, Oracle, SimFailure } from './oracle';
import { SIM_CLUSTER_ID, SimWorker, TICK_MS, toKvResult } from './workload';

/**
 * Deterministic simulator (in the style of TigerBeetle's VOPR and FoundationDB's
 * simulation): the real Replica and KvStateMachine, driven by a simulated
 * clock, network, disk and clients, every choice drawn from one seeded Prng.
 * One step = packet deliveries due now, completed syncs, client actions, then
 * one tick of every live node. Each node's ready() output is handled exactly as
 * lib/daemon.ts handles it (the driver contract of Outbound.sync and
 * Ready.mustSync): records are written at once; messages with sync = false
 * leave at once; sync = true messages wait, FIFO, for an fsync that covers
 * every record written so far; client answers for applied entries go at once.
 */

/** Client datagrams are the real sealed bytes (lib/wire/client.ts in lib/wire/envelope.ts). */
export type Payload =
  { k: 'peer'; msg: Msg } | { k: 'req'; buf: Buffer } | { k: 'rep'; buf: Buffer };

/** Who waits for a client answer at a node: the client's address, and for reads the highest ballot chosen when the read arrived. */
interface SimReplyTo {
  from: number;
  chosenBallot: number;
}

const SIM_CLUSTER = clusterTag(SIM_CLUSTER_ID);

/** Ballot rounds allowed after the heal (measured: at most 12 in 3,000 bridge seeds, 8 in 1,500 others). */
const ROUNDS_AFTER_HEAL_MAX = 20;

/** Leaderships allowed after the heal (measured: at most 3 in 600 seeds). */
const LEADERSHIPS_AFTER_HEAL_MAX = 4;

export const CLIENT_BASE = 1000;

/** The address a `member add` of a spare outside the servers list carries (unique per sid). */
function outsideAddr(sid: number): MemberAddr {
  return { host: `10.13.${sid >> 8}.${sid & 255}`, peerPort: 7000, clientPort: 7100 };
}

/** The membership operator's address for front answers (no simulated client listens there: its results come from the log). */
const OPERATOR_ADDR = CLIENT_BASE + 999;

/**
 * Heartbeat periods from the later of an injected divergence and the heal to
 * its first report (measured: at most 1 in 40 seeds; see README Testing).
 */
const DIVERGENCE_DETECT_HEARTBEATS_MAX = 10;

/**
 * A node's disk. `records` is the current WAL as written (the page cache):
 * a process kill keeps all of it. Only records[0, synced) are durable: a power
 * loss keeps those, plus perhaps a prefix of the rest (kernel writeback, torn
 * sync). The snapshot is always durable (saveSnapshot syncs the file, the new
 * segment and the directory before it returns).
 */
interface Disk {
  snapshot: { slot: number; data: Uint8Array } | null;
  records: DurableRecord[];
  synced: number;
  /** Bumped by each WAL rotation (a sync started before it covers nothing after it). */
  epoch: number;
}

class SimNode {
  replica: Replica | null = null;
  sm: KvStateMachine | null = null;
  up = false;
  disk: Disk = { snapshot: null, records: [], synced: 0, epoch: 0 };
  /**
   * May bootstrap (cluster creation) on a disk without a voter record: like
   * re-running paxosd --init on a new node whose first records never became
   * durable. False once the node lost its disk: then it must rejoin.
   */
  bootstrapOk = true;
  /** Disk lost: the next start rejoins as a non-voter. */
  wiped = false;
  /** Membership mode: the disk was lost for good; never restarted (the operator replaces it). */
  lost = false;
  /**
   * Membership mode: removed, and it left (Replica.mayLeave, as the daemon's
   * checkRemoved exits): stopped for good, never restarted nor added again.
   */
  gone = false;
  /** Sids whose peer address this incarnation learned from its log (PaxosNode.learnAddresses). */
  learned = new Set<number>();
  /** Killed, and power will be lost before the restart's open syncs the replayed records. */
  powerBeforeOpen = false;
  restartAt = -1;
  pausedUntil = 0;
  held: Packet<Payload>[] = [];
  slowUntil = 0;
  slowDelay = 0;
  // --- the driver's pipeline (PaxosNode.pipeline / writeGen / syncedGen) ---
  /** sync = true messages waiting for the sync of generation `gen` (FIFO). */
  pipeline: { gen: number; messages: Outbound[] }[] = [];
  writeGen = 0;
  /** Generation of the last mustSync record (PaxosNode.mustSyncGen). */
  mustSyncGen = 0;
  syncedGen = 0;
  /** The fsync in progress: completes at `at`, covering records[0, count) of `epoch`. */
  sync: { at: number; target: number; count: number; epoch: number } | null = null;
  /** The daemon's client-request rules (lib/front.ts), over this incarnation's replica. */
  front: ClientFront<SimReplyTo> | null = null;
  /** This node's own config limits (they may differ between nodes, as in a rolling change). */
  limits: SmLimits = PROTOCOL_LIMITS;
  /** Highest slot this node applied (for the contiguity check). */
  lastApplied = 0;
  incarnation = 0;
  /** Highest ballot this node sent a promise for or accepted at, since its disk was last lost. */
  committedBallot = 0;
  /** Same, as produced by the replica (sent or not): an ack below it is a broken promise. */
  producedBallot = 0;
  /** Slot -> highest ballot this node acknowledged with `accepted`. */
  acked = new Map<number, number>();
  crashes = 0;
  clockRate = 1;
  /** This replica's clock (its tick() calls since its start), as its `now`. */
  ticks = 0;
  /** This replica's process life, as its heartbeats say (-1: none sent yet). */
  life = -1;

  constructor(readonly sid: number) {}

  paused(now: number): boolean {
    return this.pausedUntil > now;
  }
}

export interface SimStats {
  steps: number;
  opsCompleted: number;
  opsUnknown: number;
  maxSlot: number;
  elections: number;
  leaderships: number;
  /** Leaderships won after the faults stopped (churn under the cuts kept after the heal). */
  leadershipsAfterHeal: number;
  /** Ballot rounds promised after the faults stopped (inflation by campaigns nobody joins). */
  roundsAfterHeal: number;
  crashes: number;
  kills: number;
  powerLosses: number;
  crashesInReady: number;
  restarts: number;
  wipes: number;
  pauses: number;
  /** Leadership hand-offs started (faults.handoff). */
  handoffs: number;
  partitions: number;
  bursts: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  packets: number;
  replayed: number;
  syncs: number;
  maxLiveLatency: number;
  /** Step at which the schedule family reached its dangerous state (-1: never). */
  dangerAt: number;
  /** lagging-under-load: ticks after the heal until every node reached the heal's chosen prefix (-1: n/a). */
  catchupAfterHeal: number;
  /**
   * Partition shape -> worst ticks from its start (or from the heal, for the
   * post-heal shapes) to the next value chosen anywhere.
   */
  firstChoice: Record<string, number>;
  /** injectDivergence: tick the injected replica applied its extra command (-1: never). */
  divergeInjectedAt: number;
  /** Tick of the first divergence event (-1: none). */
  divergeDetectedAt: number;
  /** Sessions registered through the log and evicted since (replay of the chosen log). */
  sessionsEvicted: number;
  /** Client writes that ended "outcome unknown" (session expired or stale). */
  clientUnknown: number;
  /** Client writes refused at admission (too large): they never ran. */
  clientRefused: number;
  /** The cluster's limits as recorded in the log (null: none chosen). */
  clusterLimits: SmLimits | null;
  /** Membership mode: changes applied by the chosen log, and changes refused (one at a time...). */
  memberChanges: number;
  memberRefused: number;
  /** Membership mode: the operator's applied changes by kind (add, promote, remove, remove-leader, remove-lost). */
  memberKinds: Record<string, number>;
  /** Membership mode: sids that left once removed (Replica.mayLeave), in order. */
  memberExits: number[];
  /** Membership mode: chosen slots with a spare outside the servers list among the governing configuration's voters that accepted. */
  outsideVotes: number;
  /** Membership mode: the outside spares that counted so (added, promoted, and voted), sorted. */
  outsideVoters: number[];
}

export interface SimResult {
  seed: number;
  nodes: number;
  ok: boolean;
  failure?: { invariant: string; detail: string; step: number };
  /** FNV-1a over every delivery, applied entry, fault and history event. */
  hash: string;
  history: HistoryEvent[];
  stats: SimStats;
  config: SimConfig;
  /** The last trace lines (only when tracing was on). */
  trace: string[];
  fork?: { step: number; salt: number };
}

export interface SimRunOptions extends SimOverrides {
  /** Keep the last `traceLines` lines of the trace (0 = off: faster). */
  traceLines?: number;
  /** Stream every trace line here too. */
  onTrace?: (line: string) => void;
  /** Skip the final linearizability check (speed experiments only). */
  skipLinearizability?: boolean;
  /**
   * Test-only fault: one replica (chosen from the seed) applies one extra
   * command at one slot, so that its state hash differs from the others'; the
   * divergence detector must then fire (see DIVERGENCE_DETECT_HEARTBEATS_MAX).
   */
  injectDivergence?: boolean;
  /** Send every peer message through the real wire codec (encode at send, decode per copy). */
  wire?: boolean;
  /**
   * Membership mode: skip the check that every replica's configurations are the
   * chosen log's (to show what agreement and the other invariants catch alone).
   */
  noConfigCheck?: boolean;
  /**
   * Membership mode, evidence runs only: what is chosen is not judged, the
   * applied log is the chosen log (Oracle.lenient), no configuration check:
   * only a real disagreement (two values applied at one slot) fails.
   */
  lenientQuorum?: boolean;
  /**
   * Branch the run: at step `step`, skip `salt` draws of the run's PRNG, so that
   * the same prefix continues differently (continuations from a dangerous state).
   */
  fork?: { step: number; salt: number };
}

/** The main number of a message (ballot, slot...), for the run hash. */
function msgNumber(m: Msg): number {
  switch (m.t) {
    case 'heartbeat':
      return m.promised * 31 + m.chosen;
    case 'catchupReq':
    case 'catchupResp':
      return m.from;
    case 'snapshotReq':
    case 'snapshotResp':
      return m.slot * 31 + m.offset;
    case 'rejoinReq':
      return m.nonce;
    case 'rejoinResp':
      return m.nonce * 31 + m.promised;
    case 'settled':
      return m.slot;
    default:
      return m.ballot;
  }
}

export function describeMsg(m: Msg): string {
  const b = (x: number): string => formatBallot(x);
  switch (m.t) {
    case 'prepare':
      return `prepare ${b(m.ballot)} from=${m.from}`;
    case 'promise':
      return `promise ${b(m.ballot)} [${m.lo},${m.hi || '∞'}) base=${m.base} ${m.entries.map(([s, eb, v]) => `${s}@${eb < 0 ? 'chosen' : b(eb)}:${v.length}`).join(' ')}`;
    case 'accept':
      return `accept ${b(m.ballot)} slots=${m.entries.map((e) => e[0]).join(',')} commit=${m.commit}`;
    case 'accepted':
      return `accepted ${b(m.ballot)} slots=${m.slots.join(',')}`;
    case 'nack':
      return `nack ${b(m.ballot)} promised=${b(m.promised)}`;
    case 'commit':
      return `commit ${b(m.ballot)} through=${m.through}`;
    case 'heartbeat':
      return `heartbeat ${b(m.promised)}${m.leading ? ' leading' : ''} chosen=${m.chosen}${m.next ? ` next=${m.next}` : ''}${m.eligible ? '' : ' !eligible'}${m.voter ? '' : ' !voter'}${Array.isArray(m.heard) ? ` heard=${m.heard.join(',')}` : ''}`;
    case 'catchupReq':
      return `catchupReq ${m.from}..${m.to}`;
    case 'catchupResp':
      return `catchupResp from=${m.from} n=${m.entries.length}${m.snapshot ? ` snapshot=${m.snapshot} (${m.snapshotBytes}B)` : ''}`;
    case 'snapshotReq':
      return `snapshotReq ${m.slot} @${m.offset}`;
    case 'snapshotResp':
      return `snapshotResp ${m.slot} @${m.offset}+${m.data.length}/${m.total}`;
    case 'confirm':
    case 'confirmed':
      return `${m.t} ${b(m.ballot)} round=${m.round}`;
    case 'rejoinReq':
      return `rejoinReq nonce=${m.nonce}`;
    case 'rejoinResp':
      return `rejoinResp nonce=${m.nonce} promised=${b(m.promised)} next=${m.next}`;
    default:
      return JSON.stringify(m);
  }
}

function payloadType(p: Payload): string {
  return p.k === 'peer' ? p.msg.t : p.k;
}

type CrashKind = 'kill' | 'power';
/** A cut a family keeps after the heal (instead of the drawn shape). */
type KeptCut = { label: string; cut: [number, number][] };
type PromiseMsg = Extract<Msg, { t: 'promise' }>;

export class Simulation {
  readonly cfg: SimConfig;
  private readonly prng: Prng;
  private readonly net: SimNetwork<Payload>;
  private readonly nodes = new Map<number, SimNode>();
  private readonly clients = new Map<number, SimWorker>();
  /** The first real answer sent for each write (cid:seq): every later one must be the same. */
  private readonly writeAnswers = new Map<string, string>();
  private readonly oracle: Oracle;
  /** Membership mode (issue 13): who submits the changes. */
  private readonly operator: MemberOperator | null = null;
  /** Membership mode: sids whose disk was lost for good. */
  private readonly lostSids = new Set<number>();
  /**
   * The config files' servers list, alike on every replica (membership mode:
   * without the spares outside it, MembershipPlan.outside).
   */
  private readonly servers: number[];
  /** Membership mode: the spares outside the servers list. */
  private readonly outside: ReadonlySet<number>;
  /** change-depose: a change was chosen; depose the leader at the next step. */
  private deposeDue = false;
  /** Configurations of the chosen log when the faults stopped. */
  private configsAtHeal = 0;
  /** injectDivergence: the replica and slot of the injected extra command. */
  private readonly diverge: { sid: number; slot: number } | null = null;
  readonly history: HistoryEvent[] = [];
  now = 0;
  private logical = 0;
  private faultsOn = true;
  private lastWiped = -1;
  /** Scheduled lost disks done (each waits until every node votes again). */
  private wipesDone = 0;
  private hash = 0x811c9dc5;
  private readonly traceCap: number;
  private readonly traceRing: string[] = [];
  private traceHead = 0;
  private readonly tracing: boolean;
  private readonly wantLin: boolean;
  private readonly quorum: number;
  /** Nodes that must converge at the end (two-way contact with the connected majority). */
  private mustConverge: Set<number> | null = null;
  /** Nodes of the connected majority left after the heal. */
  private core: Set<number> | null = null;
  /** Leaderships the live replicas had won when the faults stopped. */
  private leadershipsAtHeal = 0;
  /** Highest ballot round any live replica had promised when the faults stopped. */
  private roundAtHeal = 0;
  /** Partition shapes waiting for the next choice: shape -> start step. */
  private readonly waitingChoice = new Map<string, number>();
  private chosenCount = 0;
  private lastChoiceAt = 0;
  /** Slot -> step at which the oracle saw it chosen. */
  private readonly choiceAt = new Map<number, number>();
  /** State of the targeted schedule family. */
  private fam: { phase: number; sid: number; until: number; count: number } = {
    phase: 0,
    sid: -1,
    until: 0,
    count: 0,
  };
  /**
   * More family state: the nodes kept with the target (`group`) and the others
   * (`rest`), the target's ballot, when its campaign started, the cut the
   * family made (ended early by setting its `until`), and what it must reach.
   */
  private famx: {
    group: number[];
    rest: number[];
    ballot: number;
    at: number;
    cut: Partition | null;
    target: number;
    /** powerloss-leader-reuse: Q's free heartbeats to A sent before its campaign. */
    old: Map<number, { at: number; msg: Msg }>;
  } = { group: [], rest: [], ballot: 0, at: 0, cut: null, target: 0, old: new Map() };
  /**
   * A family's loss by direction and type, decided when a datagram arrives (so
   * it also covers datagrams already in flight, held by a paused node or
   * re-delivered): true = lost.
   */
  private famDrop: ((p: Packet<Payload>) => boolean) | null = null;
  /** powerloss-leader-reuse: the last heartbeat each node sent each other node while free (from>to -> when, what). */
  private readonly freeHeartbeats = new Map<string, { at: number; msg: Msg }>();
  private readonly stats: SimStats = {
    steps: 0,
    opsCompleted: 0,
    opsUnknown: 0,
    maxSlot: 0,
    elections: 0,
    leaderships: 0,
    leadershipsAfterHeal: 0,
    roundsAfterHeal: 0,
    crashes: 0,
    kills: 0,
    powerLosses: 0,
    crashesInReady: 0,
    restarts: 0,
    wipes: 0,
    pauses: 0,
    handoffs: 0,
    partitions: 0,
    bursts: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    packets: 0,
    replayed: 0,
    syncs: 0,
    maxLiveLatency: 0,
    dangerAt: -1,
    catchupAfterHeal: -1,
    firstChoice: {},
    divergeInjectedAt: -1,
    divergeDetectedAt: -1,
    sessionsEvicted: 0,
    clientUnknown: 0,
    clientRefused: 0,
    clusterLimits: null,
    memberChanges: 0,
    memberRefused: 0,
    memberKinds: {},
    memberExits: [],
    outsideVotes: 0,
    outsideVoters: [],
  };

  constructor(
    readonly seed: number,
    private readonly opts: SimRunOptions = {},
  ) {
    this.prng = runPrng(seed);
    this.cfg = drawConfig(this.prng, seed, opts);
    this.traceCap = opts.traceLines ?? 0;
    this.tracing = this.traceCap > 0 || opts.onTrace !== undefined;
    this.wantLin = !opts.skipLinearizability;
    this.net = new SimNetwork<Payload>(
      this.prng,
      this.cfg.net,
      this.cfg.clientNet,
      CLIENT_BASE,
      payloadType,
    );
    this.net.replay = this.cfg.replay;
    this.quorum = Math.floor(this.cfg.sids.length / 2) + 1;
    const plan = this.cfg.membership;
    this.outside = new Set(plan?.outside ?? []);
    this.servers = this.cfg.sids.filter((s) => !this.outside.has(s));
    this.oracle = new Oracle(
      this.quorum,
      plan
        ? {
            members: plan.voters.map((sid) => ({ sid, voter: true })),
            alpha: plan.alpha,
            sids: this.servers,
          }
        : null,
    );
    if (plan) {
      const e = this.cfg.timing.electionTicks;
      this.operator = new MemberOperator(plan, this.cfg.sids, this.prng, 2 * e, {
        now: () => this.now,
        leader: () => this.operatorLeader()?.sid ?? null,
        submit: (cmd) => this.operatorSubmit(cmd),
        config: () => this.oracle.newestConfig,
        caughtUp: (sid) => {
          const r = this.nodes.get(sid)!.replica;
          return r !== null && r.applied + this.cfg.limits.windowSlots >= this.oracle.ghostThrough;
        },
        lost: this.lostSids,
        retired: (sid) => {
          const h = this.oracle.configHistory;
          const member = (c: Configuration) => c.members.some((m) => m.sid === sid);
          return !member(h[h.length - 1]) && h.some(member);
        },
        addr: (sid) => (this.outside.has(sid) ? outsideAddr(sid) : undefined),
        trace: (line) => {
          if (this.tracing) this.trace(line);
        },
      });
    }
    this.oracle.lenient = opts.lenientQuorum === true;
    if (opts.injectDivergence) {
      // Its own PRNG: the run's draws, hence its schedule, stay those of the seed.
      const p = new Prng(seed ^ 0x5eed1e);
      this.diverge = { sid: this.cfg.sids[p.int(this.cfg.sids.length)], slot: p.range(4, 40) };
    }
    this.oracle.clock = () => ++this.logical;
    this.oracle.onChosen = (slot, ballot, ackers) => this.onChosen(slot, ballot, ackers);
    this.cfg.sids.forEach((sid, i) => {
      const n = new SimNode(sid);
      n.clockRate = this.cfg.clockRates[i];
      n.limits = this.cfg.nodeLimits[i];
      // A spare outside the servers list starts as paxosd --join does: an empty
      // disk and no --init, so it votes only once the lost-disk rule lets it.
      n.bootstrapOk = !this.outside.has(sid);
      this.nodes.set(sid, n);
    });
    const keys = Array.from({ length: this.cfg.keys }, (_, i) => `k${i}`);
    for (let i = 0; i < this.cfg.clients; i++) {
      const addr = CLIENT_BASE + i;
      this.clients.set(
        addr,
        new SimWorker(
          100 + i,
          addr,
          // Every sid, the outside spares too: a client given only the config
          // files' servers cannot follow a redirect to a joined leader (the
          // redirect names a sid, no address), and stalls while it leads.
          this.cfg.sids,
          this.prng,
          {
            keys,
            thinkMax: this.cfg.thinkMax,
            retryTicks: this.cfg.clientRetry,
            bigValues: this.cfg.bigValues,
            bigValueBytes: this.cfg.bigValueBytes,
          },
          {
            now: () => this.now,
            clock: () => ++this.logical,
            send: (from, to, buf) => this.net.send(from, to, { k: 'req', buf }, this.now),
            trace: (line) => {
              if (this.tracing) this.trace(line);
            },
          },
          this.history,
        ),
      );
    }
  }

  /** The simulated clients (each drives a real PaxosClient). */
  get workers(): SimWorker[] {
    return [...this.clients.values()];
  }

  // ======================= trace & hash =======================

  private trace(line: string): void {
    const l = `[${this.now}] ${line}`;
    this.opts.onTrace?.(l);
    if (this.traceCap <= 0) return;
    if (this.traceRing.length < this.traceCap) this.traceRing.push(l);
    else {
      this.traceRing[this.traceHead] = l;
      this.traceHead = (this.traceHead + 1) % this.traceCap;
    }
  }

  private traceLines(): string[] {
    return [...this.traceRing.slice(this.traceHead), ...this.traceRing.slice(0, this.traceHead)];
  }

  private mix(x: number): void {
    this.hash = Math.imul(this.hash ^ (x | 0), 16777619) >>> 0;
  }

  private mixStr(s: string): void {
    for (let i = 0; i < s.length; i++) this.mix(s.charCodeAt(i));
  }

  // ======================= run =======================

  run(): SimResult {
    const c = this.cfg;
    const healAt = c.faultSteps;
    const stopAt = healAt + c.liveSteps;
    let failure: SimResult['failure'];
    try {
      for (const node of this.nodes.values()) this.start(node);
      while (this.now < stopAt + this.liveBound()) {
        if (this.now === healAt) this.heal();
        if (this.now === stopAt) for (const cl of this.clients.values()) cl.stopped = true;
        this.step();
      }
      this.finalChecks();
    } catch (e) {
      this.noChoiceYet();
      if (!(e instanceof SimFailure)) {
        const err = e as Error;
        failure = {
          invariant: 'no exceptions',
          detail: `${err.stack ?? err.message}`,
          step: this.now,
        };
      } else failure = { invariant: e.invariant, detail: e.detail, step: this.now };
      if (this.tracing) this.trace(`FAILED ${failure.invariant}: ${failure.detail}`);
    }
    for (const ev of this.history) {
      if (ev.result === 'unknown') this.stats.opsUnknown++;
      else this.stats.opsCompleted++;
    }
    this.stats.steps = this.now;
    this.stats.maxSlot = this.oracle.maxApplied;
    this.stats.packets = this.net.stats.sent;
    this.stats.replayed += this.net.stats.replayed;
    for (const cl of this.clients.values()) {
      this.stats.maxLiveLatency = Math.max(this.stats.maxLiveLatency, cl.maxLiveLatency);
      this.stats.clientUnknown += cl.unknown;
      this.stats.clientRefused += cl.refused;
    }
    for (const n of this.nodes.values()) if (n.replica) this.addReplicaStats(n.replica);
    this.stats.memberChanges = Math.max(0, this.oracle.configHistory.length - 1);
    this.stats.memberRefused = this.operator?.stats.refused ?? 0;
    this.stats.memberKinds = { ...(this.operator?.stats.kinds ?? {}) };
    this.mixStr(JSON.stringify(this.history));
    return {
      seed: this.seed,
      nodes: c.sids.length,
      ok: failure === undefined,
      failure,
      hash: this.hash.toString(16).padStart(8, '0'),
      history: this.history,
      stats: this.stats,
      config: c,
      trace: this.traceLines(),
      fork: this.opts.fork,
    };
  }

  /** Fold a replica's counters into the run's (at its crash, or at the end). */
  private addReplicaStats(r: Replica): void {
    this.stats.snapshotsTaken += r.stats.snapshotsTaken;
    this.stats.snapshotsInstalled += r.stats.snapshotsInstalled;
    this.stats.elections += r.stats.elections;
    this.stats.leaderships += r.stats.leaderships;
  }

  private step(): void {
    const now = ++this.now;
    this.mix(now);
    // The heal restarted every node (in the step after it): their
    // promises as of the heal, from disk for those that were down.
    if (now === this.cfg.faultSteps + 2)
      for (const n of this.nodes.values())
        this.roundAtHeal = Math.max(this.roundAtHeal, ballotRound(n.replica?.promised ?? 0));
    const fork = this.opts.fork;
    if (fork && fork.step === now) {
      // Same prefix, another continuation: shift the one PRNG stream.
      for (let i = 0; i < fork.salt * 7 + 1; i++) this.prng.nextU32();
      if (this.tracing) this.trace(`=== fork ${fork.salt} ===`);
    }
    if (this.faultsOn) {
      if (!this.familyCalm()) this.injectFaults();
      this.runFamily();
      this.operator?.tick();
    } else {
      // The heal ends the family's losses too.
      if (this.famDrop) this.endFamilyCut();
      if (this.cfg.family === 'lagging-under-load') this.checkCatchupUnderLoad();
      else this.replayAfterHeal();
    }
    // Old datagrams keep coming while clients run; the drain at the end is quiet.
    if (now < this.cfg.faultSteps + this.cfg.liveSteps) this.net.reinject(now);
    for (const label of this.net.update(now)) if (this.tracing) this.trace(`heal ${label}`);
    for (const n of this.nodes.values()) {
      if (!n.up && n.restartAt >= 0 && n.restartAt <= now) this.start(n);
      if (n.up && n.held.length > 0 && !n.paused(now)) {
        // A paused node wakes up to everything that queued up meanwhile.
        const held = n.held;
        n.held = [];
        if (this.tracing) this.trace(`node ${n.sid} resumes with ${held.length} queued packets`);
        // In any order: a resumed leader may see a client's read before the
        // heartbeat that would tell it another node leads now.
        for (let i = held.length - 1; i > 0; i--) {
          const j = this.prng.int(i + 1);
          [held[i], held[j]] = [held[j], held[i]];
        }
        for (const p of held) this.deliver(p);
      }
    }
    for (const p of this.net.take(now)) this.deliver(p);
    for (const n of this.nodes.values()) this.completeSync(n);
    for (const cl of this.clients.values()) cl.tick();
    if (this.dvx.cycles.size > 0) this.evictionCycle();
    for (const n of this.nodes.values()) {
      if (!n.up || n.paused(now)) continue;
      // Clock drift: a slow node skips a tick now and then, a fast one takes two.
      const rate = n.clockRate;
      if (rate === 1 || rate > 1 || !this.prng.chance(1 - rate)) this.tickNode(n);
      if (rate > 1 && this.prng.chance(rate - 1)) this.tickNode(n);
      this.flush(n);
      // Every step of every live node (and after every event in some seeds).
      if (n.up) this.checkReplica(n);
    }
    // Syncs that take no time complete before the next tick.
    for (const n of this.nodes.values()) this.completeSync(n);
  }

  private tickNode(n: SimNode): void {
    n.replica!.tick();
    n.ticks++;
    this.learnAddresses(n);
    if (this.handoffWatch?.sid === n.sid) {
      this.checkHandoffWatch(n);
      this.handoffWatch = null;
    }
    if (this.phx.watch && this.phx.t === n.sid) this.checkPausedTarget(n);
    this.checkFine(n);
  }

  /** After each event (message, tick, turn), in the seeds that ask for it (the check costs O(log)). */
  private checkFine(n: SimNode): void {
    if (this.cfg.checkEveryEvent) this.checkReplica(n);
  }

  /** The replica's own assertions (Replica.checkInvariants). */
  private checkReplica(n: SimNode): void {
    try {
      n.replica!.checkInvariants();
    } catch (e) {
      fail('replica invariants', (e as Error).message);
    }
  }

  /** A value was chosen (as the oracle sees the accepted messages). */
  private onChosen(slot: number, ballot: number, ackers: number[]): void {
    this.chosenCount++;
    if (this.outside.size > 0) this.noteOutsideVotes(slot, ackers);
    this.lastChoiceAt = this.now;
    this.choiceAt.set(slot, this.now);
    for (const [shape, start] of this.waitingChoice) {
      const t = this.now - start;
      const prev = this.stats.firstChoice[shape] ?? -1;
      if (t > prev) this.stats.firstChoice[shape] = t;
    }
    this.waitingChoice.clear();
    if (this.cfg.family === 'wipe-after-choice' && this.faultsOn)
      this.wipeAfterChoice(slot, ackers);
    if (this.cfg.family === 'change-depose' && this.faultsOn) {
      const v = this.oracle.chosen.get(slot)?.value ?? [];
      if (v.some((c) => (parseCommand(c.op) as { kind?: string }).kind === 'member'))
        this.deposeDue = true;
    }
    void ballot;
  }

  /** Membership mode: an outside spare among the voters that chose `slot` (it was added, promoted, and talked to). */
  private noteOutsideVotes(slot: number, ackers: number[]): void {
    const c = this.oracle.governing(slot);
    const voted = ackers.filter(
      (s) => this.outside.has(s) && c?.members.some((m) => m.sid === s && m.voter),
    );
    if (voted.length === 0) return;
    this.stats.outsideVotes++;
    const all = new Set([...this.stats.outsideVoters, ...voted]);
    this.stats.outsideVoters = [...all].sort((a, b) => a - b);
  }

  /** Waits with no choice by the end of the run count as long as the run lasted (a lower bound). */
  private noChoiceYet(): void {
    for (const [shape, start] of this.waitingChoice) {
      const key = `${shape} (no choice by the end)`;
      const t = this.now - start;
      if (t > (this.stats.firstChoice[key] ?? -1)) this.stats.firstChoice[key] = t;
    }
    this.waitingChoice.clear();
  }

  /** Wait for the next choice, for the worst-time-to-choice figure of `shape`. */
  private awaitChoice(shape: string): void {
    if (!this.waitingChoice.has(shape)) this.waitingChoice.set(shape, this.now);
  }

  // ======================= faults =======================

  /** Has every node a durable voter record (nobody still rejoining after a lost disk)? */
  private allVoters(): boolean {
    for (const n of this.nodes.values())
      if (!n.disk.records.slice(0, n.disk.synced).some((r) => r.t === 'voter')) return false;
    return true;
  }

  /** Node `sid`'s own election timeout (they differ in some seeds: SimConfig.nodeElectionTicks). */
  private electionOf(sid: number): number {
    return this.cfg.nodeElectionTicks[this.cfg.sids.indexOf(sid)];
  }

  private upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  private leaders(): SimNode[] {
    return this.upNodes().filter((n) => n.replica!.role === 'leader');
  }

  private shuffled<T>(xs: readonly T[]): T[] {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.prng.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  private injectFaults(): void {
    const f = this.cfg.faults;
    const p = this.prng;
    const e = this.cfg.timing.electionTicks;
    if (f.crash > 0 && p.chance(f.crash)) {
      const up = this.upNodes();
      if (up.length > 0) this.crash(p.pick(up), p.chance(f.powerLoss) ? 'power' : 'kill', 'crash');
    }
    // A node killed earlier may lose power while it is down (before its restart's open).
    if (f.powerAfterKill > 0 && p.chance(f.crash)) {
      const down = [...this.nodes.values()].filter((n) => !n.up && !n.powerBeforeOpen);
      if (down.length > 0 && p.chance(f.powerAfterKill)) {
        const n = p.pick(down);
        n.powerBeforeOpen = true;
        if (this.tracing) this.trace(`node ${n.sid} (down) will lose power before its restart`);
      }
    }
    const wipeDue =
      (f.wipeAt >= 0 && this.now >= f.wipeAt && this.wipesDone === 0) ||
      (f.wipeAgainAt >= 0 && this.now >= f.wipeAgainAt && this.wipesDone === 1);
    if (wipeDue && this.cfg.membership) {
      // Membership mode: a voter's disk is lost for good, once the last one
      // lost was replaced, and only if a majority of each configuration that
      // may govern a slot some member does not know chosen yet is left (a
      // campaign needs a majority of each): liveness is demanded after the heal.
      const h = this.oracle.configHistory;
      const c = h[h.length - 1];
      let known = Infinity;
      for (const m of c.members)
        if (!this.lostSids.has(m.sid))
          known = Math.min(known, this.nodes.get(m.sid)!.replica?.chosenThrough ?? 0);
      const from = Math.max(0, h.indexOf(this.oracle.governing(known + 1) ?? h[0]));
      const gone = (s: number, x: number) => s === x || this.lostSids.has(s);
      const keeps = (x: number) =>
        h.slice(from).every((k) => {
          const v = k.members.filter((m) => m.voter);
          return v.filter((m) => !gone(m.sid, x)).length >= Math.floor(v.length / 2) + 1;
        });
      const voters = c.members.filter((m) => m.voter && keeps(m.sid));
      if (!c.members.some((m) => this.lostSids.has(m.sid)) && voters.length > 0) {
        this.wipesDone++;
        this.wipe(this.nodes.get(p.pick(voters).sid)!, 0);
      }
    } else if (wipeDue && this.allVoters()) {
      this.wipesDone++;
      // One lost disk at a time: the rejoin rule (Paxos Made Live) covers a node
      // that forgot its promises, not several forgetting at once.
      const n = p.pick([...this.nodes.values()].filter((x) => x.sid !== this.lastWiped));
      this.wipe(n, p.range(1, 3 * e));
    }
    if (f.pause > 0 && p.chance(f.pause)) {
      const up = this.upNodes().filter((n) => !n.paused(this.now));
      if (up.length > 0) this.pause(p.pick(up), p.range(3, 4 * e));
    }
    if (f.slowDisk > 0 && p.chance(f.slowDisk)) {
      const n = p.pick([...this.nodes.values()]);
      n.slowUntil = this.now + p.range(20, 300);
      n.slowDelay = p.range(1, 3 * e);
      if (this.tracing)
        this.trace(`node ${n.sid} disk slow (+${n.slowDelay} ticks/sync) until ${n.slowUntil}`);
    }
    if (f.partition > 0 && this.net.activePartitions().length < 2 && p.chance(f.partition))
      this.partition();
    if (f.burst > 0 && this.net.activeBursts().length < 3 && p.chance(f.burst)) this.burst();
    if (f.handoff > 0 && p.chance(f.handoff)) {
      // Whatever the network does meanwhile: hand-off must stay safe and live.
      const l = this.leaders().find((n) => !n.paused(this.now));
      const to = l?.replica!.handoffTarget() ?? null;
      if (l && to !== null && l.replica!.transferLeadership(to) === null) {
        this.stats.handoffs++;
        if (this.tracing) this.trace(`node ${l.sid} hands leadership to ${to}`);
      }
    }
  }

  private pause(n: SimNode, ticks: number): void {
    n.pausedUntil = this.now + ticks;
    this.stats.pauses++;
    this.mix(0xa05e + n.sid);
    if (this.tracing) this.trace(`node ${n.sid} paused until ${n.pausedUntil}`);
  }

  private wipe(n: SimNode, restartIn: number): void {
    this.lastWiped = n.sid;
    if (n.up) this.crash(n, 'power', 'crash (disk lost)');
    n.disk = { snapshot: null, records: [], synced: 0, epoch: n.disk.epoch + 1 };
    n.wiped = true;
    n.bootstrapOk = false;
    n.powerBeforeOpen = false;
    n.committedBallot = 0;
    n.producedBallot = 0;
    n.acked.clear();
    n.restartAt = this.now + restartIn;
    if (this.cfg.membership) {
      // Lost for good: the operator removes it and adds a spare in its place.
      n.lost = true;
      n.restartAt = -1;
      this.lostSids.add(n.sid);
      if (this.tracing) this.trace(`node ${n.sid} is lost for good (to be replaced)`);
    }
    this.stats.wipes++;
    this.mix(0xdead);
  }

  /** A loss or delay burst on one direction and/or some message types. */
  private burst(): void {
    const p = this.prng;
    const sids = this.cfg.sids;
    const e = this.cfg.timing.electionTicks;
    const typeSets: (string[] | null)[] = [
      null,
      ['promise'],
      ['accepted'],
      ['accept', 'commit'],
      ['heartbeat'],
      ['catchupResp', 'snapshotResp'],
      ['prepare', 'promise', 'nack'],
      ['confirm', 'confirmed'],
    ];
    const types = p.pick(typeSets);
    const from = p.chance(0.5) ? p.pick(sids) : null;
    const to = p.chance(0.5) ? p.pick(sids) : null;
    const loss = p.pick([0.5, 0.9, 1]);
    const delay = p.chance(0.3) ? p.range(1, 4 * e) : 0;
    const until = this.now + p.range(5, 10 * e);
    const label = `burst ${from ?? '*'}->${to ?? '*'} ${types ? types.join('/') : 'all'} loss=${loss}${delay ? ` delay<=${delay}` : ''}`;
    this.net.addBurst({
      label,
      from,
      to,
      types: types ? new Set(types) : null,
      loss: delay > 0 && p.chance(0.5) ? 0 : loss,
      delay,
      until,
    });
    this.stats.bursts++;
    this.mix(0xb0 + (from ?? 0));
    if (this.tracing) this.trace(`${label} until ${until}`);
  }

  private partition(): void {
    const p = this.prng;
    const sids = this.cfg.sids;
    const e = this.cfg.timing.electionTicks;
    const cut: [number, number][] = [];
    const both = (a: number, b: number): void => {
      cut.push([a, b], [b, a]);
    };
    const kinds = ['minority', 'majority', 'one-way', 'leader', 'flapping', 'bridge'] as const;
    const kind = p.pick(kinds);
    let label: string;
    let flapTicks = 0;
    let pk: Partition['kind'] = 'symmetric';
    const shuffled = this.shuffled(sids);
    const quorum = this.quorum;
    if (kind === 'minority' || kind === 'majority' || kind === 'flapping') {
      // minority: a side smaller than a quorum; majority: a quorum side cut from
      // the rest (which is then a minority), both ends of each link cut.
      const size = kind === 'majority' ? quorum : p.range(1, quorum - 1);
      const side = shuffled.slice(0, size);
      const rest = shuffled.slice(size);
      for (const a of side) for (const b of rest) both(a, b);
      label = `${kind} {${side.join(',')}} | {${rest.join(',')}}`;
      if (kind === 'flapping') {
        flapTicks = p.range(2, e);
        pk = 'flapping';
        label += ` flapping every ${flapTicks}`;
      }
    } else if (kind === 'one-way') {
      pk = 'one-way';
      label = this.oneWayCut(cut);
    } else if (kind === 'bridge') {
      pk = 'bridge';
      label = this.bridgeCut(shuffled, cut);
    } else {
      pk = 'leader-isolated';
      const leaders = this.leaders();
      const l = leaders.length > 0 ? p.pick(leaders).sid : p.pick(sids);
      const mode = p.pick(['both', 'out', 'in'] as const);
      for (const s of sids) {
        if (s === l) continue;
        if (mode !== 'in') cut.push([l, s]);
        if (mode !== 'out') cut.push([s, l]);
      }
      label = `leader ${l} isolated (${mode})`;
    }
    const until = this.now + p.range(5, 15 * e);
    this.net.addPartition({ kind: pk, label, cut, start: this.now, until, flapTicks });
    this.awaitChoice(pk);
    this.stats.partitions++;
    this.mix(0xc0de + cut.length);
    if (this.tracing) this.trace(`partition ${label} until ${until}`);
  }

  /** 1..n random one-way cuts (a -> b carries nothing, b -> a still works). Adds them, returns a label. */
  private oneWayCut(cut: [number, number][]): string {
    const p = this.prng;
    const sids = this.cfg.sids;
    const names: string[] = [];
    const links = p.range(1, sids.length);
    for (let i = 0; i < links; i++) {
      const a = p.pick(sids);
      const b = p.pick(sids.filter((s) => s !== a));
      cut.push([a, b]);
      names.push(`${a}->${b}`);
    }
    return `one-way ${names.join(' ')}`;
  }

  /**
   * Non-transitive partition: sides A and C do not hear each other, both hear
   * the bridge B (B may be one node or several). Adds the cut, returns a label.
   */
  private bridgeCut(order: number[], cut: [number, number][]): string {
    const p = this.prng;
    const n = order.length;
    const bSize = p.range(1, Math.max(1, n - 2));
    const bridge = order.slice(0, bSize);
    const rest = order.slice(bSize);
    const aSize = p.range(1, rest.length - 1);
    const a = rest.slice(0, aSize);
    const c = rest.slice(aSize);
    for (const x of a)
      for (const y of c) {
        cut.push([x, y], [y, x]);
      }
    return `bridge {${a.join(',')}} <-> {${bridge.join(',')}} <-> {${c.join(',')}}`;
  }

  /** Faults stop: heal the network (but for the persistent cuts), restart everyone, calm disks. */
  private heal(): void {
    this.faultsOn = false;
    this.net.healAll();
    this.net.peer = CALM;
    this.net.client = CALM;
    this.net.replay = { ...this.cfg.replay, rate: this.cfg.replay.rate / 4 };
    for (const n of this.nodes.values()) {
      n.slowUntil = 0;
      n.pausedUntil = 0;
      if (!n.up && !n.lost && !n.gone) n.restartAt = this.now;
    }
    this.configsAtHeal = this.oracle.configHistory.length;
    for (const cl of this.clients.values()) cl.liveFrom = this.now;
    for (const n of this.nodes.values())
      if (n.replica) this.leadershipsAtHeal += n.replica.stats.leaderships;
    if (this.cfg.family === 'dead-lives-heartbeats') this.deadLivesAtHeal();
    const shape = this.cfg.postHeal;
    const label = this.persistentCut(shape, this.familyKeptCut());
    this.awaitChoice(`after heal: ${shape}`);
    if (this.tracing)
      this.trace(
        `=== faults stop: network healed${label ? ` but for ${label}` : ''}, every node restarted ===`,
      );
  }

  /**
   * Cuts that outlive the heal (issue 16), always leaving a connected majority
   * (>= quorum nodes, every link between them both ways): liveness is still
   * demanded. Returns the label, or '' for none.
   */
  private persistentCut(shape: PostHealShape, fixed: KeptCut | null = null): string {
    const p = this.prng;
    const sids = this.cfg.sids;
    const cut: [number, number][] = [];
    let label = '';
    for (let attempt = 0; attempt < 10 && shape !== 'none'; attempt++) {
      cut.length = 0;
      if (fixed) {
        // A family's own cut (once: if it left no connected majority, the drawn shape).
        cut.push(...fixed.cut);
        label = fixed.label;
        fixed = null;
      } else if (shape === 'one-way-into-advanced') {
        // The node that knows the longest chosen prefix hears nobody; others hear it.
        let best = this.nodes.get(sids[0])!;
        for (const n of this.nodes.values()) {
          const c = n.replica?.chosenThrough ?? 0;
          if (c > (best.replica?.chosenThrough ?? 0)) best = n;
        }
        const cutFrom = sids.filter((s) => s !== best.sid && (p.chance(0.7) || attempt > 5));
        for (const s of cutFrom) cut.push([s, best.sid]);
        label = `one-way into ${best.sid} from ${cutFrom.join(',')}`;
      } else if (shape === 'one-way-random') {
        label = this.oneWayCut(cut);
      } else {
        label = this.bridgeCut(this.shuffled(sids), cut);
      }
      const blocked = new Set(cut.map(([a, b]) => `${a}>${b}`));
      // The connected majority must be of voters: a node still rejoining after a
      // lost disk may not vote in slots it might have accepted before until they
      // are chosen without it (Paxos Made Live), so it cannot complete a majority.
      const voters = sids.filter((s) =>
        this.nodes.get(s)!.disk.records.some((r) => r.t === 'voter'),
      );
      const core = connectedMajority(voters, this.quorum, (a, b) => blocked.has(`${a}>${b}`));
      if (core.length === 0) continue;
      this.core = new Set(core);
      // Everyone with two-way contact to the connected majority can catch up.
      this.mustConverge = new Set(
        sids.filter(
          (s) =>
            this.core!.has(s) ||
            core.some((c) => !blocked.has(`${s}>${c}`) && !blocked.has(`${c}>${s}`)),
        ),
      );
      this.net.addPartition({
        kind: 'persistent',
        label,
        cut: [...cut],
        start: this.now,
        until: Infinity,
        flapTicks: 0,
      });
      this.net.update(this.now);
      this.mix(0x9e45 + cut.length);
      return `${label} (connected majority {${core.join(',')}})`;
    }
    return '';
  }

  // ======================= targeted schedule families =======================

  private danger(what: string): void {
    if (this.stats.dangerAt < 0) this.stats.dangerAt = this.now;
    this.mix(0xda9);
    if (this.tracing) this.trace(`family ${this.cfg.family}: ${what}`);
  }

  /** Re-deliver up to k archived packets matching `want` within `within` ticks. */
  private replayOld(k: number, within: number, want: (p: Packet<Payload>) => boolean): number {
    let hits = 0;
    for (let i = 0; i < k; i++) {
      const p = this.net.redeliver(this.now, within, want);
      if (p && want(p)) hits++;
    }
    return hits;
  }

  private runFamily(): void {
    const c = this.cfg;
    if (c.family === 'none' || this.now < c.familyAt) return;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    if (this.pendingActions.length > 0) {
      const due = this.pendingActions.filter((a) => a.at <= this.now);
      this.pendingActions = this.pendingActions.filter((a) => a.at > this.now);
      for (const a of due) a.run();
    }
    switch (c.family) {
      case 'stale-leader':
        return this.staleLeader();
      case 'learning-candidate':
        return this.learningCandidate();
      case 'forgotten-ack':
        return this.forgottenAck();
      case 'lagging-candidate':
        return this.laggingCandidate();
      case 'wipe-after-choice':
        // Driven by onChosen; also keep old heartbeats coming to a rejoining node.
        if (f.phase === 1 && this.now < f.until && p.chance(0.3))
          this.replayOld(
            p.range(1, 5),
            2 * e,
            (x) =>
              x.payload.k === 'peer' &&
              x.payload.msg.t === 'heartbeat' &&
              (x.to === f.sid || x.from === f.sid),
          );
        return;
      case 'stale-leader-snapshot':
        return this.staleLeaderSnapshot();
      case 'powerloss-leader-reuse':
        return this.powerlossLeaderReuse();
      case 'lagging-under-load':
        return this.laggingUnderLoad();
      case 'abandoned-incarnation':
        return this.abandonedIncarnation();
      case 'dead-leader-heartbeats':
        return this.deadLeaderBeforeHeal();
      case 'dead-lives-heartbeats':
        return this.deadLivesBeforeHeal();
      case 'given-up-handoff':
        return this.givenUpHandoff();
      case 'handoff-ballot-reuse':
        return this.handoffReuse();
      case 'paused-handoff-target':
        return this.pausedHandoffTarget();
      case 'forgotten-handoff-prepare':
        return this.forgottenHandoffPrepare();
      case 'change-depose':
        return this.changeDepose();
      case 'powerloss-after-campaign':
        // Driven by noteProduced (a prepare); here: power goes at the scheduled step.
        if (f.phase === 1 && this.now >= f.until) {
          const n = this.nodes.get(f.sid)!;
          f.phase = 2;
          if (f.count < 3) this.afterFamily(() => (f.phase = 0), 10 * e);
          if (!n.up) return;
          this.crash(n, 'power', 'power loss right after campaigning');
          n.restartAt = this.now + p.range(1, e);
          this.replayOld(p.range(3, 15), 2 * e, (x) => x.payload.k === 'peer' && x.from === n.sid);
          this.danger(`node ${n.sid} lost power after campaigning`);
        }
        return;
    }
  }

  /**
   * change-depose (membership mode): a membership change was just chosen, so
   * its window is open (two configurations active). The leader is paused,
   * killed, powered off or cut from everyone, its old datagrams come back, and
   * whoever campaigns next must cover both configurations.
   */
  private changeDepose(): void {
    if (!this.deposeDue) return;
    this.deposeDue = false;
    const p = this.prng;
    const e = this.cfg.timing.electionTicks;
    const ls = this.leaders();
    if (ls.length === 0 || p.chance(0.25)) return;
    const l = p.pick(ls);
    const how = p.pick(['pause', 'kill', 'power', 'isolate'] as const);
    if (how === 'pause') this.pause(l, p.range(e, 4 * e));
    else if (how === 'isolate') {
      const cut: [number, number][] = [];
      for (const s of this.cfg.sids) if (s !== l.sid) cut.push([l.sid, s], [s, l.sid]);
      const until = this.now + p.range(2 * e, 8 * e);
      const label = `leader ${l.sid} isolated after a change`;
      this.net.addPartition({
        kind: 'leader-isolated',
        label,
        cut,
        start: this.now,
        until,
        flapTicks: 0,
      });
      this.stats.partitions++;
    } else this.crash(l, how, 'deposed after a membership change');
    this.replayOld(p.range(1, 10), 4 * e, (x) => x.payload.k === 'peer' && x.from === l.sid);
    this.danger(`leader ${l.sid} deposed (${how}) while a membership change's window is open`);
  }

  /**
   * stale-leader: the leader is paused long enough for the others to elect a
   * new one, then resumed with partial connectivity and its old datagrams.
   */
  private staleLeader(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    if (f.phase === 0) {
      // Pause the leader long enough for the others to elect a new one.
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length === 0) return;
      const l = p.pick(ls);
      f.sid = l.sid;
      f.until = this.now + p.range(3 * e, 10 * e);
      this.pause(l, 100 * e);
      f.phase = 1;
    } else if (f.phase === 1) {
      const l = this.nodes.get(f.sid)!;
      const newer = this.leaders().some(
        (n) => n.sid !== f.sid && n.replica!.promised > (l.replica?.promised ?? 0),
      );
      if (!l.up) {
        f.phase = 3;
        return;
      }
      if (!(newer && this.now >= f.until) && this.now < f.until + 20 * e) return;
      // Resume it with partial connectivity and its old datagrams still around.
      const others = this.shuffled(c.sids.filter((s) => s !== f.sid));
      const keep = p.range(1, Math.max(1, this.quorum - 1));
      const cut: [number, number][] = [];
      for (const s of others.slice(keep)) {
        if (p.chance(0.7)) cut.push([s, f.sid]);
        if (p.chance(0.7)) cut.push([f.sid, s]);
      }
      const until = this.now + p.range(3 * e, 15 * e);
      // For a few heartbeats it hears nobody: its clock stood still while
      // paused, so it still believes it leads (a GC pause or a stopped VM).
      const deaf = this.now + p.range(c.timing.heartbeatTicks, e);
      const deafCut: [number, number][] = others.map((s) => [s, f.sid]);
      this.net.addPartition({
        kind: 'one-way',
        label: `stale leader ${f.sid} deaf`,
        cut: deafCut,
        start: this.now,
        until: deaf,
        flapTicks: 0,
      });
      // The socket buffer overflowed while it was paused: most peer
      // datagrams are gone, client requests (reads!) survive.
      // (A full receive buffer keeps the oldest datagrams and drops the rest.)
      let room = p.range(0, 5);
      l.held = l.held.filter((x) => x.payload.k !== 'peer' || room-- > 0);
      // Clients that last talked to it still think it leads.
      for (const cl of this.clients.values()) if (p.chance(0.5)) cl.suggestLeader(f.sid);
      const label = `stale leader ${f.sid} resumed, deaf until ${deaf}, then hears only ${others.slice(0, keep).join(',')} fully`;
      this.net.addPartition({
        kind: 'one-way',
        label,
        cut,
        start: this.now,
        until,
        flapTicks: 0,
      });
      l.pausedUntil = this.now;
      this.replayOld(
        p.range(5, 30),
        3 * e,
        (x) => x.payload.k === 'peer' && (x.to === f.sid || x.from === f.sid),
      );
      this.danger(`${label} (newer leader: ${newer})`);
      f.phase = 2;
      f.until = this.now + 5 * e;
    } else if (f.phase === 2) {
      // Keep old packets coming for a while (catch-up answers, commits, heartbeats).
      if (this.now > f.until) f.phase = 3;
      else if (p.chance(0.2))
        this.replayOld(
          p.range(1, 4),
          2 * e,
          (x) => x.payload.k === 'peer' && (x.to === f.sid || x.from === f.sid),
        );
    } else if (f.count < 2 && this.now > f.until + 20 * e) {
      f.count++;
      f.phase = 0;
    }
  }

  /** lagging-candidate: the highest-ranked node falls behind, then comes back and campaigns. */
  private laggingCandidate(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const peerTo = (sid: number) => (x: Packet<Payload>) => x.to === sid && x.payload.k === 'peer';
    // The highest-ranked node (lowest SID) falls behind, then comes back and campaigns.
    const x = c.sids[0];
    if (f.phase === 0) {
      const cut: [number, number][] = [];
      for (const s of c.sids) if (s !== x) cut.push([s, x], [x, s]);
      f.until = this.now + p.range(10 * e, 40 * e);
      this.net.addPartition({
        kind: 'symmetric',
        label: `lagging ${x}`,
        cut,
        start: this.now,
        until: f.until,
        flapTicks: 0,
      });
      f.sid = x;
      f.phase = 1;
    } else if (f.phase === 1 && this.now >= f.until) {
      for (const l of this.leaders())
        if (l.sid !== x)
          this.crash(
            l,
            p.chance(0.5) ? 'kill' : 'power',
            'crash (leader, lagging candidate returns)',
          );
      this.replayOld(p.range(3, 15), 2 * e, peerTo(x));
      this.danger(
        `lagging node ${x} returns (chosen ${this.nodes.get(x)!.replica?.chosenThrough ?? '-'}), leader stopped`,
      );
      f.phase = 2;
      f.until = this.now + 30 * e;
    } else if (f.phase === 2 && this.now >= f.until && f.count++ < 1) f.phase = 0;
  }

  private wipeAfterChoice(slot: number, ackers: number[]): void {
    const f = this.fam;
    if (f.phase !== 0 || this.now < this.cfg.familyAt || ackers.length !== this.quorum) return;
    if (!this.allVoters()) return;
    const n = this.nodes.get(this.prng.pick(ackers))!;
    const e = this.cfg.timing.electionTicks;
    this.wipe(n, this.prng.range(1, e));
    f.sid = n.sid;
    f.phase = 1;
    f.until = this.now + 10 * e;
    this.replayOld(
      this.prng.range(3, 10),
      e,
      (x) =>
        x.payload.k === 'peer' &&
        x.payload.msg.t === 'heartbeat' &&
        (x.to === n.sid || x.from === n.sid),
    );
    this.danger(
      `node ${n.sid} of the bare majority {${ackers.join(',')}} that chose slot ${slot} lost its disk`,
    );
    if (f.count++ < 2) this.afterFamily(() => (f.phase = 0), 30 * e);
  }

  private pendingActions: { at: number; run: () => void }[] = [];

  private afterFamily(run: () => void, ticks: number): void {
    this.pendingActions.push({ at: this.now + ticks, run });
  }

  /** A prepare left node `n` (powerloss-after-campaign watches for it). */
  private onCampaign(n: SimNode): void {
    const f = this.fam;
    if (this.cfg.family === 'powerloss-leader-reuse') return this.reuseCampaign(n);
    if (this.cfg.family === 'learning-candidate') return this.learningCampaign(n);
    if (this.cfg.family === 'handoff-ballot-reuse') return this.handoffReuseCampaign(n);
    if (this.cfg.family === 'forgotten-handoff-prepare') return this.forgottenCampaign(n);
    if (this.cfg.family !== 'powerloss-after-campaign' || !this.faultsOn) return;
    if (f.phase !== 0 || this.now < this.cfg.familyAt) return;
    f.sid = n.sid;
    f.phase = 1;
    f.count++;
    f.until = this.now + this.prng.range(0, 4);
    // A slow disk: the candidate's own promise is not durable yet when power goes.
    n.slowUntil = this.now + 50;
    n.slowDelay = this.prng.range(3, 10);
  }

  /**
   * While a family drives its schedule, random faults stand aside (a crash or a
   * partition drawn meanwhile would mostly spoil the dangerous state).
   */
  private familyCalm(): boolean {
    const f = this.fam;
    switch (this.cfg.family) {
      case 'stale-leader-snapshot':
        return f.phase >= 1 && f.phase <= 3;
      case 'powerloss-leader-reuse':
        return f.phase === 1 || f.phase === 2;
      case 'learning-candidate':
        return f.phase >= 1 && f.phase <= 4;
      case 'forgotten-ack':
        return f.phase >= 1 && f.phase <= 4;
      case 'abandoned-incarnation':
        return f.phase >= 1 && f.phase <= 3;
      case 'dead-leader-heartbeats':
        // A steady leader for the last stretch: many heartbeats to replay.
        return this.now >= this.cfg.faultSteps - this.deadLeaderCalm();
      case 'dead-lives-heartbeats':
        return this.now >= this.cfg.faultSteps - deadLivesCalm(this.cfg);
      case 'given-up-handoff':
        return f.phase === 1 || f.phase === 2;
      case 'handoff-ballot-reuse':
      case 'paused-handoff-target':
        return f.phase >= 1 && f.phase <= 4;
      case 'forgotten-handoff-prepare':
        return f.phase >= 1 && f.phase <= 5;
      default:
        return false;
    }
  }

  /** A symmetric cut between two groups, kept until the family ends it (sets `until`). */
  private cutApart(label: string, a: number[], b: number[], ticks: number): Partition | null {
    if (a.length === 0 || b.length === 0) return null;
    const cut: [number, number][] = [];
    for (const x of a) for (const y of b) cut.push([x, y], [y, x]);
    const part: Partition = {
      kind: 'symmetric',
      label,
      cut,
      start: this.now,
      until: this.now + ticks,
      flapTicks: 0,
    };
    this.net.addPartition(part);
    this.net.update(this.now);
    if (this.tracing) this.trace(`partition ${label} until ${part.until}`);
    return part;
  }

  /** End the family's cut and loss now. */
  private endFamilyCut(): void {
    const x = this.famx;
    if (x.cut && x.cut.until > this.now) {
      x.cut.until = this.now;
      this.net.update(this.now);
    }
    x.cut = null;
    this.famDrop = null;
    this.hrx.reqLost = -1;
  }

  /** A loss burst of `types` from one node to each of `tos` (at send time). */
  private loseTypes(from: number, tos: number[], types: string[], ticks: number): void {
    for (const to of tos)
      this.net.addBurst({
        label: `family: ${from}->${to} ${types.join('/')} lost`,
        from,
        to,
        types: new Set(types),
        loss: 1,
        delay: 0,
        until: this.now + ticks,
      });
  }

  /** Does `sid` hold an accepted, not chosen, value at `ballot` above its chosen prefix? */
  private holdsUnchosenAt(sid: number, ballot: number): boolean {
    const r = this.nodes.get(sid)!.replica;
    if (!r) return false;
    for (let s = r.chosenThrough + 1; s <= r.chosenThrough + 64; s++) {
      const e = r.acceptedEntry(s);
      if (e && !e.chosen && e.ballot === ballot) return true;
    }
    return false;
  }

  /**
   * stale-leader-snapshot (issue 9.3): the leader L's accepts reach only a group
   * G of followers (the others lose them), G is cut from the rest R with L, and L
   * is paused (a GC pause, a stopped VM) while R elects, chooses and compacts.
   * L resumes hearing from R only followers' heartbeats (they say how far the
   * log is chosen) and catch-up traffic; everything that carries R's higher
   * ballot is lost for a while. L, still leading in its own eyes, asks for the
   * chosen slots and is offered a snapshot.
   */
  private staleLeaderSnapshot(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const x = this.famx;
    const l = f.sid >= 0 ? this.nodes.get(f.sid)! : null;
    if (f.phase === 0) {
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length === 0) return;
      const leader = p.pick(ls);
      const others = this.shuffled(c.sids.filter((s) => s !== leader.sid));
      // G with L stays below a quorum; R is a quorum and goes on without them.
      const k = p.range(
        Math.min(1, c.sids.length - 1 - this.quorum),
        c.sids.length - 1 - this.quorum,
      );
      x.group = others.slice(0, k);
      x.rest = others.slice(k);
      x.ballot = leader.replica!.ballot;
      f.sid = leader.sid;
      this.loseTypes(leader.sid, x.rest, ['accept', 'commit'], 4 * e);
      x.cut = this.cutApart(
        `stale ${leader.sid} keeps {${x.group.join(',')}}`,
        x.group,
        x.rest,
        200 * e,
      );
      f.phase = 1;
      f.until = this.now + p.range(2, e);
    } else if (f.phase === 1) {
      if (!l!.up || l!.replica!.role !== 'leader' || l!.replica!.ballot !== x.ballot) {
        this.endFamilyCut();
        f.phase = 4;
        f.until = this.now + 10 * e;
        return;
      }
      const spread = x.group.some((s) => this.holdsUnchosenAt(s, x.ballot));
      if (!spread && this.now < f.until) return;
      this.pause(l!, 1000 * e);
      f.phase = 2;
      f.until = this.now + p.range(10 * e, 40 * e);
    } else if (f.phase === 2) {
      if (!l!.up) {
        this.endFamilyCut();
        f.phase = 4;
        f.until = this.now + 10 * e;
        return;
      }
      // Wait until a follower of R compacted past what L knows chosen.
      const lr = l!.replica!;
      const compacted = x.rest.some((s) => {
        const r = this.nodes.get(s)!.replica;
        return (
          r !== null && r.role === 'follower' && r.base > lr.chosenThrough + c.limits.windowSlots
        );
      });
      if (!compacted && this.now < f.until) return;
      const quiet = this.now + p.range(2 * e, 6 * e);
      const rest = new Set(x.rest);
      const sid = l!.sid;
      this.famDrop = (pk) => {
        if (pk.to !== sid || !rest.has(pk.from) || this.now >= quiet) return false;
        const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
        if (m.t === 'heartbeat') return m.leading;
        return !(
          m.t === 'catchupReq' ||
          m.t === 'catchupResp' ||
          m.t === 'snapshotReq' ||
          m.t === 'snapshotResp'
        );
      };
      l!.pausedUntil = this.now;
      this.danger(
        `stale leader ${sid} at ${formatBallot(x.ballot)} (chosen ${lr.chosenThrough}) resumed with {${x.group.join(',')}}; ` +
          `R {${x.rest.join(',')}} compacted ${compacted ? 'past it' : 'not yet'}, only followers' heartbeats and catch-up reach it until ${quiet}`,
      );
      f.phase = 3;
      f.until = quiet;
    } else if (f.phase === 3) {
      if (this.now < f.until) return;
      this.endFamilyCut();
      f.phase = 4;
      f.until = this.now + 20 * e;
    } else if (this.now >= f.until && f.count++ < 2) {
      f.phase = 0;
      f.sid = -1;
    }
  }

  private noteHeartbeat(from: number, to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    // Free (follows no live leader), hears `to` and votes: what a pre-vote counts.
    if (m.leader === 0 && m.voter && m.heard.includes(to))
      this.freeHeartbeats.set(`${from}>${to}`, { at: this.now, msg: m });
  }

  /**
   * powerloss-leader-reuse (issue 9.5), at a campaign: the candidate A's disk is
   * slow (its own promise is not durable for a while); its accepts and commits
   * reach only a group P of n - quorum peers; power goes right after its first
   * accept (or at a deadline). A second campaign is only watched.
   */
  private reuseCampaign(n: SimNode): void {
    const f = this.fam;
    const x = this.famx;
    const e = this.cfg.timing.electionTicks;
    if (f.phase === 2 && n.sid === f.sid && n.replica)
      this.danger(
        `node ${n.sid} campaigns again at ${formatBallot(n.replica.ballot)} (first at ${formatBallot(x.ballot)})`,
      );
    if (f.phase !== 0 || !this.faultsOn || this.now < this.cfg.familyAt || !this.allVoters())
      return;
    const p = this.prng;
    // Q: a bare majority with A, among the peers whose free heartbeats let A
    // campaign (its pre-vote counted them); P: the others, with at least one
    // such peer (a quorum of peers may promise before A's own promise is durable).
    const free = this.shuffled(
      this.cfg.sids.filter((s) => s !== n.sid && this.freeHeartbeatBefore(s, n.sid, this.now)),
    );
    if (free.length < this.quorum) return;
    x.rest = free.slice(0, this.quorum - 1);
    x.group = this.cfg.sids.filter((s) => s !== n.sid && !x.rest.includes(s));
    x.old = new Map(x.rest.map((q) => [q, this.freeHeartbeats.get(`${q}>${n.sid}`)!]));
    x.ballot = n.replica!.ballot;
    x.at = this.now;
    f.sid = n.sid;
    f.phase = 1;
    f.count++;
    n.slowUntil = this.now + 100 * e;
    n.slowDelay = p.range(4 * e, 8 * e);
    f.until = this.now + p.range(2 * e, 4 * e);
    this.loseTypes(n.sid, x.rest, ['accept', 'commit'], 6 * e);
    if (this.tracing)
      this.trace(
        `family ${this.cfg.family}: node ${n.sid} campaigns at ${formatBallot(x.ballot)}, disk slow, accepts reach only {${x.group.join(',')}}`,
      );
  }

  /**
   * An accept left node `n`: the reuse family cuts the power right after the
   * first one for a slot nobody in Q holds (a new command, not a value Phase 1
   * found, which a second Phase 1 would find again).
   */
  private onLeaderAccept(n: SimNode, m: Extract<Msg, { t: 'accept' }>): void {
    const f = this.fam;
    const x = this.famx;
    if (this.cfg.family === 'handoff-ballot-reuse') return this.handoffReuseAccept(n, m);
    if (this.cfg.family !== 'powerloss-leader-reuse' || f.phase !== 1 || n.sid !== f.sid) return;
    if (m.ballot !== x.ballot) return;
    const fresh = m.entries.some(([slot]) =>
      x.rest.every((q) => {
        const r = this.nodes.get(q)!.replica;
        return !r || (slot > r.base && !r.acceptedEntry(slot));
      }),
    );
    if (fresh) f.until = Math.min(f.until, this.now + this.prng.range(0, 2));
  }

  /**
   * powerloss-leader-reuse, after the power loss: A restarts at once; P is cut
   * from everyone; A hears from the bare majority Q only heartbeats sent before
   * its campaign (re-delivered; the current ones are lost), and Q does not hear
   * A's heartbeats (so Q cannot elect without A). A campaigns again.
   */
  private powerlossLeaderReuse(): void {
    const f = this.fam;
    const x = this.famx;
    const p = this.prng;
    const e = this.cfg.timing.electionTicks;
    if (f.phase === 1) {
      if (this.now < f.until) return;
      const n = this.nodes.get(f.sid)!;
      if (!n.up) {
        f.phase = 3;
        f.until = this.now + 10 * e;
        return;
      }
      this.crash(n, 'power', 'power loss right after leading (or campaigning) on a slow disk');
      n.slowUntil = 0;
      n.restartAt = this.now + p.range(1, Math.max(1, e >> 1));
      const window = p.range(5 * e, 12 * e);
      x.cut = this.cutApart(
        `{${x.group.join(',')}} (got ${n.sid}'s accepts) apart`,
        x.group,
        this.cfg.sids.filter((s) => !x.group.includes(s)),
        window,
      );
      const q = new Set(x.rest);
      const a = n.sid;
      const since = x.at;
      this.famDrop = (pk) => {
        const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
        if (m.t !== 'heartbeat') return false;
        return (
          (pk.to === a && q.has(pk.from) && pk.sentAt >= since) || (pk.from === a && q.has(pk.to))
        );
      };
      this.danger(
        `node ${a} lost power ${this.now - since} ticks after campaigning at ${formatBallot(x.ballot)}; ` +
          `{${x.group.join(',')}} cut away, {${x.rest.join(',')}} heard only through heartbeats older than the campaign`,
      );
      f.phase = 2;
      f.until = this.now + window;
    } else if (f.phase === 2) {
      const n = this.nodes.get(f.sid)!;
      if (this.now >= f.until) {
        this.endFamilyCut();
        f.phase = 3;
        f.until = this.now + 10 * e;
        return;
      }
      if (!n.up || !p.chance(0.5)) return;
      // Re-deliver an old heartbeat of a node of Q (sent before the campaign).
      const from = p.pick(x.rest);
      const hb = x.old.get(from)!;
      this.deliver({ from, to: n.sid, payload: { k: 'peer', msg: hb.msg }, sentAt: hb.at });
    } else if (f.phase === 3 && this.now >= f.until && f.count < 3) f.phase = 0;
  }

  private freeHeartbeatBefore(from: number, to: number, before: number): boolean {
    const h = this.freeHeartbeats.get(`${from}>${to}`);
    return h !== undefined && h.at < before;
  }

  /** forgotten-ack: the leader L, Z, the groups G and R, L's ballot, Z's incarnation before, held accepts, the slots. */
  private ackx = {
    l: -1,
    z: -1,
    g: [] as number[],
    r: [] as number[],
    ballot: 0,
    inc: 0,
    zAcked: new Set<number>(),
    answered: new Set<number>(),
    cutAt: 0,
    held: [] as Packet<Payload>[],
    pass: new Set<Packet<Payload>>(),
    s1: 0,
  };

  /**
   * forgotten-ack (issue 9.7, 5 or 7 nodes): the leader L's accepts reach only
   * Z (those to a group G of quorum - 2 nodes are delayed, to the rest R lost).
   * Z acknowledges two slots s1 < s2, then loses its disk and rejoins, answered
   * by G and R (L and Z no longer hear each other). Once they all recorded its
   * new incarnation, G's delayed accepts of s1 arrive while L's commits go out,
   * then (L now heard by nobody) those of s2. A leader that counted Z's
   * forgotten acks chooses both with {L, Z, G}; L is killed, G paused, and R
   * with Z (which learns s1, its join threshold) elect a leader whose Phase 1
   * finds nothing at s2.
   * Over 100 lines: one schedule, phase by phase in the order it runs.
   */
  private forgottenAck(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const ax = this.ackx;
    const l = ax.l >= 0 ? this.nodes.get(ax.l)! : null;
    const leading = (): boolean =>
      l!.up && l!.replica!.role === 'leader' && l!.replica!.ballot === ax.ballot;
    const slotsOf = (pk: Packet<Payload>): number[] =>
      (pk.payload as { k: 'peer'; msg: Extract<Msg, { t: 'accept' }> }).msg.entries.map(([s]) => s);
    // Held accepts to `g` that carry s1 but nothing above it / that carry s2.
    const first = (g: number): Packet<Payload>[] =>
      ax.held.filter(
        (pk) => pk.to === g && slotsOf(pk).includes(ax.s1) && Math.max(...slotsOf(pk)) === ax.s1,
      );
    const second = (g: number): Packet<Payload>[] =>
      ax.held.filter((pk) => pk.to === g && slotsOf(pk).includes(ax.s1 + 1));
    if (f.phase === 0) {
      if (c.sids.length < 5 || !this.allVoters() || this.upNodes().length < c.sids.length) return;
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length !== 1) return;
      const others = this.shuffled(c.sids.filter((s) => s !== ls[0].sid));
      ax.l = ls[0].sid;
      ax.z = others[0];
      ax.g = others.slice(1, this.quorum - 1);
      ax.r = others.slice(this.quorum - 1);
      ax.ballot = ls[0].replica!.ballot;
      ax.inc = this.activeInc(ls[0], ax.z);
      ax.zAcked = new Set();
      ax.answered = new Set();
      ax.held = [];
      ax.pass = new Set();
      f.count++;
      f.phase = 1;
      f.until = this.now + 4 * e;
      const g = new Set(ax.g);
      const r = new Set(ax.r);
      this.famDrop = (pk) => {
        const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
        if (ax.pass.has(pk)) return false;
        // After the lost disk L and Z do not hear each other; at the end nobody hears L.
        if (
          f.phase >= 2 &&
          (pk.from === ax.l || pk.to === ax.l) &&
          (pk.from === ax.z || pk.to === ax.z)
        )
          return true;
        if (f.phase >= 4 && pk.from === ax.l) return true;
        if (
          f.phase === 1 &&
          m.t === 'accepted' &&
          pk.from === ax.z &&
          pk.to === ax.l &&
          m.ballot === ax.ballot
        )
          for (const s of m.slots) ax.zAcked.add(s);
        // Z's rejoin samples the first n - quorum + 1 activation answers (its join threshold).
        if (f.phase === 2 && m.t === 'rejoinResp' && pk.to === ax.z && m.act && m.inc > 0)
          ax.answered.add(pk.from);
        if (pk.from !== ax.l || m.t !== 'accept' || m.ballot !== ax.ballot) return false;
        if (r.has(pk.to)) return true;
        if (!g.has(pk.to)) return false;
        ax.held.push(pk);
        return true;
      };
    } else if (f.phase === 1) {
      // Wait for two slots L has not chosen, acknowledged by Z, their accepts held for every node of G.
      if (!leading() || this.now >= f.until) return this.endForgottenAck(10 * e);
      ax.s1 = l!.replica!.chosenThrough + 1;
      if (!ax.zAcked.has(ax.s1) || !ax.zAcked.has(ax.s1 + 1)) return;
      // New slots: no node of G or R holds them (they lie above Z's join threshold).
      const fresh = [...ax.g, ...ax.r].every((s) => {
        const r = this.nodes.get(s)!.replica;
        return r !== null && !r.acceptedEntry(ax.s1) && !r.acceptedEntry(ax.s1 + 1);
      });
      if (!fresh) return;
      if (ax.g.some((g) => first(g).length === 0 || second(g).length === 0)) return;
      const z = this.nodes.get(ax.z)!;
      this.wipe(z, p.range(1, e));
      f.phase = 2;
      f.until = this.now + 30 * e;
    } else if (f.phase === 2) {
      // Z rejoins through G and R; L still leads, unaware.
      if (!leading() || this.now >= f.until) return this.endForgottenAck(10 * e);
      const recorded = [...ax.g, ...ax.r].every((s) => {
        const n = this.nodes.get(s)!;
        return n.up && this.activeInc(n, ax.z) > ax.inc;
      });
      if (!recorded || ax.answered.size < c.sids.length - this.quorum + 1) return;
      this.danger(
        `node ${ax.z} acknowledged slots ${ax.s1}, ${ax.s1 + 1} at ${formatBallot(ax.ballot)}, lost its disk and rejoined; ` +
          `L ${ax.l}'s delayed accepts of slot ${ax.s1} now reach {${ax.g.join(',')}}`,
      );
      for (const g of ax.g) for (const pk of first(g)) this.releaseHeld(pk);
      f.phase = 3;
      f.until = this.now + 2 * e;
    } else if (f.phase === 3) {
      // L chose s1 (with Z's forgotten ack) and told G: now nobody hears L, and s2 arrives at G.
      if (!leading()) return this.endForgottenAck(10 * e);
      const told = [...ax.g, ...ax.r].every(
        (s) => (this.nodes.get(s)!.replica?.chosenThrough ?? 0) >= ax.s1,
      );
      if (!(l!.replica!.chosenThrough >= ax.s1 && told)) {
        if (this.now >= f.until) this.endForgottenAck(10 * e);
        return;
      }
      f.phase = 4;
      f.until = this.now + e;
      ax.cutAt = this.now;
      for (const g of ax.g) for (const pk of second(g)) this.releaseHeld(pk);
    } else if (f.phase === 4) {
      if (l!.up && l!.replica!.chosenThrough <= ax.s1 && this.now < f.until) return;
      // L is killed (down a while), G stands still: R and Z go on without them.
      this.crash(l!, 'kill', 'crash (leader, after choosing with a forgotten ack)');
      l!.restartAt = this.now + p.range(20 * e, 40 * e);
      for (const g of ax.g) this.pause(this.nodes.get(g)!, p.range(20 * e, 40 * e));
      this.endForgottenAck(40 * e);
      // What L sent since nobody hears it stays lost.
      const { l: from, cutAt } = ax;
      this.famDrop = (pk) => pk.from === from && pk.sentAt >= cutAt;
    } else if (f.phase === 5 && this.now >= f.until && f.count < 3) f.phase = 0;
  }

  /** Deliver a held datagram now (it passes the family's loss). */
  private releaseHeld(pk: Packet<Payload>): void {
    this.ackx.pass.add(pk);
    this.deliver(pk);
  }

  /** The incarnation of `sid` that node `n` recorded as active (durable records). */
  private activeInc(n: SimNode, sid: number): number {
    let inc = 0;
    for (const r of n.disk.records)
      if (r.t === 'incarnation' && r.sid === sid && !r.reserve && r.inc > inc) inc = r.inc;
    return inc;
  }

  private endForgottenAck(cool: number): void {
    this.endFamilyCut();
    this.ackx.held = [];
    this.fam.phase = 5;
    this.fam.until = this.now + cool;
  }

  /** learning-candidate: A's Phase 1 start, its own highest log slot, its held promises. */
  private learnx: { from: number; own: number; holding: boolean; held: Packet<Payload>[] } = {
    from: 0,
    own: 0,
    holding: false,
    held: [],
  };

  /**
   * learning-candidate (issue 9.2): a candidate A learns, during Phase 1, slots
   * chosen above everything its promises report, and then wins with them. The
   * leader L is paused (a GC pause); the first node A to campaign, at b1, hears
   * nothing that carries a higher ballot, and every promise of b1 to it is
   * delayed (held here). Once a majority's promises are on their way, A is
   * paused too and L resumes: the others elect at b2 > b1 and choose slots that
   * those promises, sent before, cannot report. A resumes hearing only
   * followers' heartbeats and catch-up answers (snapshot offers are lost),
   * learns those slots chosen while still a candidate, and then its late
   * promises arrive, the lowest reports first.
   */
  private learningCandidate(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const x = this.famx;
    const lc = this.learnx;
    const a = f.sid >= 0 ? this.nodes.get(f.sid)! : null;
    const campaigning = (): boolean =>
      a!.up && a!.replica!.role === 'candidate' && a!.replica!.ballot === x.ballot;
    if (f.phase === 0) {
      if (!this.allVoters() || this.upNodes().length < c.sids.length) return;
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length !== 1) return;
      x.group = [ls[0].sid];
      lc.held = [];
      f.sid = -1;
      f.count++;
      f.phase = 1;
      f.until = this.now + 10 * e;
      this.pause(ls[0], 1000 * e);
    } else if (f.phase === 1) {
      // Waiting for a campaign (learningCampaign moves on).
      if (this.now >= f.until) this.endLearning(5 * e);
    } else if (f.phase === 2) {
      // A campaigns; promises from a majority (with its own) are on their way: pause it.
      if (!campaigning()) return this.endLearning(10 * e);
      if (new Set(lc.held.map((pk) => pk.from)).size < this.quorum - 1) {
        if (this.now >= f.until) this.endLearning(10 * e);
        return;
      }
      this.pause(a!, 1000 * e);
      const l = this.nodes.get(x.group[0])!;
      if (l.pausedUntil > this.now) l.pausedUntil = this.now + p.range(0, e);
      f.phase = 3;
      f.until = this.now + p.range(10 * e, 30 * e);
    } else if (f.phase === 3) {
      // A stands still while the others elect above b1 and choose past the reports.
      if (!a!.up) return this.endLearning(10 * e);
      const others = this.upNodes().filter((n) => n.sid !== a!.sid);
      const above = others.some(
        (n) => n.replica!.role === 'leader' && n.replica!.ballot > x.ballot,
      );
      const chosen = Math.max(0, ...others.map((n) => n.replica!.chosenThrough));
      if (!(above && chosen > this.learnReported()) && this.now < f.until) return;
      a!.pausedUntil = this.now;
      f.phase = 4;
      f.until = this.now + 2 * e;
    } else if (f.phase === 4) {
      if (!campaigning()) return this.endLearning(10 * e);
      const known = a!.replica!.chosenThrough;
      const reported = this.learnReported();
      if (known <= reported && this.now < f.until) return;
      if (known > reported)
        this.danger(
          `candidate ${a!.sid} at ${formatBallot(x.ballot)} (Phase 1 from slot ${lc.from}) learned slots chosen through ${known}; its late promises report up to ${reported}`,
        );
      lc.holding = false;
      const top = (pk: Packet<Payload>): number =>
        Math.max(0, ...(pk.payload as { k: 'peer'; msg: PromiseMsg }).msg.entries.map(([s]) => s));
      const held = lc.held.sort((u, v) => top(u) - top(v));
      lc.held = [];
      for (const pk of held) this.deliver(pk);
      // Deaf to the higher ballot a little longer (its first accepts go out).
      f.phase = 5;
      f.until = this.now + p.range(1, e);
    } else if (f.phase === 5) {
      if (this.now >= f.until) this.endLearning(20 * e);
    } else if (f.phase === 6 && this.now >= f.until && f.count < 4) f.phase = 0;
  }

  /** A prepare left `n`: the first campaign after the leader's pause is A's. */
  private learningCampaign(n: SimNode): void {
    const f = this.fam;
    const x = this.famx;
    const lc = this.learnx;
    const r = n.replica;
    if (f.phase !== 1 || !this.faultsOn || n.sid === x.group[0] || !r || r.role !== 'candidate')
      return;
    const a = n.sid;
    const b1 = r.ballot;
    f.sid = a;
    f.phase = 2;
    f.until = this.now + this.cfg.timing.electionTicks;
    x.ballot = b1;
    x.at = this.now;
    lc.from = r.chosenThrough + 1;
    lc.own = lc.from - 1;
    for (let s = lc.from; s < lc.from + 256; s++) if (r.acceptedEntry(s)) lc.own = s;
    lc.holding = true;
    // Lost: whatever would show A a ballot above b1 (it would step down), and
    // snapshot offers (installing one deposes a candidate). Delayed: b1's promises.
    this.famDrop = (pk) => {
      if (pk.to !== a) return false;
      const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
      switch (m.t) {
        case 'promise':
          if (m.ballot !== b1 || !lc.holding) return false;
          lc.held.push(pk);
          return true;
        case 'heartbeat':
          return m.leading && m.promised > b1;
        case 'nack':
          return m.promised > b1;
        case 'prepare':
        case 'accept':
        case 'commit':
        case 'confirm':
        case 'handoff':
          return m.ballot > b1;
        case 'catchupResp':
          return m.snapshot > 0;
        case 'snapshotResp':
          return true;
        default:
          return false;
      }
    };
    if (this.tracing)
      this.trace(
        `family ${this.cfg.family}: node ${a} campaigns at ${formatBallot(b1)} from slot ${lc.from} (own log to ${lc.own}); its promises are held, higher ballots lost to it`,
      );
  }

  /** The highest slot A's Phase 1 can know of without learning: its start, its own log, the held promises. */
  private learnReported(): number {
    const lc = this.learnx;
    let m = Math.max(lc.from - 1, lc.own);
    for (const pk of lc.held)
      for (const [s] of (pk.payload as { k: 'peer'; msg: PromiseMsg }).msg.entries)
        if (s > m) m = s;
    return m;
  }

  /** learning-candidate ends: nothing held or lost any more, L and A run; the next try after `cool`. */
  private endLearning(cool: number): void {
    const f = this.fam;
    this.endFamilyCut();
    this.learnx.holding = false;
    this.learnx.held = [];
    for (const sid of [this.famx.group[0], f.sid]) {
      const n = sid === undefined || sid < 0 ? undefined : this.nodes.get(sid);
      if (n && n.pausedUntil > this.now) n.pausedUntil = this.now;
    }
    f.phase = 6;
    f.until = this.now + cool;
  }

  /**
   * lagging-under-load (issue 9.10): a random follower is cut away for the last
   * 10-30 election periods of the faults, so it ends far behind the others'
   * compaction point; after the heal the clients keep writing at full speed
   * and it must catch up within catchupBound ticks (checkCatchupUnderLoad).
   */
  private laggingUnderLoad(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    if (f.phase === 0) {
      f.until = Math.max(this.now, c.faultSteps - p.range(10 * e, 30 * e));
      f.phase = 1;
    } else if (f.phase === 1 && this.now >= f.until) {
      const ups = this.upNodes().filter((n) => n.replica!.role === 'follower');
      const pick = ups.length > 0 ? p.pick(ups).sid : p.pick(c.sids);
      f.sid = pick;
      this.famx.cut = this.cutApart(
        `lagging ${pick}`,
        [pick],
        c.sids.filter((s) => s !== pick),
        c.faultSteps - this.now,
      );
      this.danger(`node ${pick} cut away until the heal (step ${c.faultSteps})`);
      f.phase = 2;
    }
  }

  /**
   * Catch-up under load (issue 9.10): within catchupBound ticks after the heal,
   * while the clients are still writing, every node has chosen everything that
   * was chosen anywhere at the heal. A snapshot transfer restarted by every new
   * snapshot would never finish (a lagging node stays behind for good).
   */
  private checkCatchupUnderLoad(): void {
    const c = this.cfg;
    const heal = c.faultSteps;
    const x = this.famx;
    if (this.now === heal + 1) {
      x.target = 0;
      for (const n of this.nodes.values())
        if (n.replica) x.target = Math.max(x.target, n.replica.chosenThrough);
      return;
    }
    if (this.now <= heal + 1 || this.stats.catchupAfterHeal >= 0) return;
    const behind = [...this.nodes.values()].filter(
      (n) => !n.replica || n.replica.chosenThrough < x.target,
    );
    if (behind.length === 0) {
      this.stats.catchupAfterHeal = this.now - heal;
      if (this.tracing)
        this.trace(`every node reached slot ${x.target} ${this.now - heal} ticks after the heal`);
      return;
    }
    const bound = catchupBound(c.timing.electionTicks);
    if (this.now - heal < bound || this.now >= heal + c.liveSteps) return;
    fail(
      'catch-up under load',
      `${behind.map((n) => `node ${n.sid} (chosen ${n.replica?.chosenThrough ?? 'down'})`).join(', ')} not caught up with slot ${x.target} (chosen at the heal) ${bound} ticks after the heal, while the clients keep writing (leader at slot ${Math.max(...[...this.nodes.values()].map((n) => n.replica?.chosenThrough ?? 0))})`,
    );
  }

  // ============ families judged after the heal (attack review F1, F2, F4) ============

  /**
   * abandoned-incarnation: the node Z that lost its disk, the highest
   * incarnation it abandoned and every one it abandoned, the one it kept, the
   * held requests that carry an abandoned one, and the voters they reached.
   */
  private abx: {
    z: number;
    abandoned: Set<number>;
    kept: number;
    held: Packet<Payload>[];
    holders: number[];
  } = { z: -1, abandoned: new Set(), kept: 0, held: [], holders: [] };

  /** Z's own incarnation as its replica knows it (0: none yet). */
  private ownInc(n: SimNode): number {
    return n.replica ? n.replica.incs[n.sid] : 0;
  }

  /**
   * abandoned-incarnation (attack review F1): Z loses its disk. Its disk is slow,
   * so when it takes an incarnation (and asks every voter to record it) the
   * record is not durable yet; every copy of that request is held in the
   * network, and Z loses power (or is killed and loses power before its
   * restart, or loses its disk again). It forgets that incarnation, asks again,
   * and nobody knew it, so it draws another in the same epoch: abandoned again
   * while the draw is above every abandoned one (at most 4 times), else kept.
   * Once Z votes again, the held requests arrive, at every other voter or (5+
   * nodes, half the runs) at one alone. After the heal Z is the only bridge
   * between two halves (see familyKeptCut): every quorum needs Z's vote.
   */
  private abandonedIncarnation(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const a = this.abx;
    const z = a.z >= 0 ? this.nodes.get(a.z)! : null;
    if (f.phase === 0) {
      if (f.count > 0 || this.now > c.faultSteps - 15 * e) return;
      if (!this.allVoters() || this.upNodes().length < c.sids.length) return;
      if (this.leaders().length === 0) return;
      const n = p.pick([...this.nodes.values()]);
      a.z = n.sid;
      a.abandoned = new Set();
      a.kept = 0;
      a.held = [];
      a.holders = [];
      f.sid = n.sid;
      f.count++;
      f.phase = 1;
      f.until = this.now + 60 * e;
      this.wipe(n, p.range(1, e));
      n.slowUntil = this.now + 100 * e;
      n.slowDelay = p.range(2 * e, 4 * e);
      // Every request of Z to record an incarnation it did not keep is held.
      this.famDrop = (pk) => {
        const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
        if (pk.from !== a.z || m.t !== 'rejoinReq' || m.inc === 0 || m.inc === a.kept) return false;
        a.held.push(pk);
        return true;
      };
      if (this.tracing)
        this.trace(`family ${c.family}: node ${n.sid} lost its disk (slow disk from now on)`);
    } else if (f.phase === 1) {
      if (this.now >= f.until) return this.endAbandoned();
      if (!z!.up || !z!.replica) return;
      if (z!.replica.voter) {
        f.phase = 2;
        f.until = this.now + p.range(1, 2 * e);
        return;
      }
      const inc = this.ownInc(z!);
      if (inc === 0 || inc === a.kept || a.abandoned.has(inc)) return;
      if (a.abandoned.size >= 4 || [...a.abandoned].some((x) => x > inc)) {
        // Below an abandoned one (or enough tries): let this rejoin complete.
        a.kept = inc;
        z!.slowUntil = 0;
        if (this.tracing)
          this.trace(
            `family ${c.family}: node ${z!.sid} keeps incarnation ${inc} (abandoned ${[...a.abandoned].join(',')})`,
          );
        return;
      }
      a.abandoned.add(inc);
      const kind = p.pick(['power', 'kill then power', 'disk'] as const);
      const why = `abandons incarnation ${inc} mid-rejoin`;
      if (kind === 'disk') this.wipe(z!, p.range(1, e));
      else {
        this.crash(z!, kind === 'power' ? 'power' : 'kill', `${why} (${kind})`);
        z!.powerBeforeOpen = kind !== 'power';
        z!.restartAt = this.now + p.range(1, e);
      }
      if (this.tracing) this.trace(`family ${c.family}: node ${z!.sid} ${why} (${kind})`);
    } else if (f.phase === 2) {
      if (this.now < f.until) return;
      this.famDrop = null;
      const others = c.sids.filter((s) => s !== a.z);
      a.holders = others.length >= 4 && p.chance(0.5) ? [p.pick(others)] : others;
      for (const pk of a.held) if (a.holders.includes(pk.to)) this.deliver(pk);
      const top = Math.max(0, ...a.abandoned);
      if (top > a.kept)
        this.danger(
          `node ${a.z} votes as incarnation ${a.kept}; its request to record abandoned incarnation ${top} reached {${a.holders.join(',')}} late`,
        );
      f.phase = 4;
    }
  }

  /** abandoned-incarnation gives up (Z did not vote again in time). */
  private endAbandoned(): void {
    this.famDrop = null;
    const z = this.nodes.get(this.abx.z);
    if (z) z.slowUntil = 0;
    this.fam.phase = 5;
  }

  /**
   * dead-leader-heartbeats: the leader X that goes deaf, and per restarted
   * follower X's old heartbeats still to come (oldest first), when the next one
   * arrives, and the newest it got.
   */
  private dlx: {
    x: number;
    queues: Map<number, Msg[]>;
    next: Map<number, number>;
    /** The newest heartbeat of X each follower got after the heal (ballot, tick). */
    seen: Map<number, { ballot: number; tick: number }>;
  } = { x: -1, queues: new Map(), next: new Map(), seen: new Map() };
  /** Leading heartbeats sent per link (from>to), for dead-leader-heartbeats (the last 400). */
  private readonly leadBeats = new Map<string, Msg[]>();

  private get recordsHeartbeats(): boolean {
    return (
      this.cfg.family === 'dead-leader-heartbeats' ||
      this.cfg.family === 'bridge-free-heartbeat' ||
      this.cfg.family === 'dead-lives-heartbeats'
    );
  }

  private recordHeartbeat(from: number, to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    if (this.cfg.family === 'bridge-free-heartbeat') return this.noteHeartbeat(from, to, m);
    if (this.cfg.family === 'dead-lives-heartbeats') return this.noteLifeBeat(from, to, m);
    if (!m.leading || !this.faultsOn) return;
    const k = `${from}>${to}`;
    let l = this.leadBeats.get(k);
    if (!l) this.leadBeats.set(k, (l = []));
    l.push(m);
    if (l.length > 400) l.shift();
  }

  /** dead-leader-heartbeats: random faults stop this long before the heal. */
  private deadLeaderCalm(): number {
    return 80 * this.cfg.timing.heartbeatTicks + 3 * this.cfg.timing.electionTicks;
  }

  /**
   * dead-leader-heartbeats (attack review F2), just before the heal: the leader
   * X is killed (a few ticks before, so that its last heartbeats have arrived),
   * then n - quorum followers; all restart at the heal, X deaf for good (see
   * familyKeptCut). X's heartbeats to those followers, at or above their
   * promise, are to be re-delivered.
   */
  private deadLeaderBeforeHeal(): void {
    const c = this.cfg;
    const f = this.fam;
    const d = this.dlx;
    if (f.phase === 0 && this.now === c.faultSteps - c.net.delayMax - 2) {
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length === 0) return;
      const x = ls.reduce((b, n) => (n.replica!.ballot > b.replica!.ballot ? n : b));
      this.dlx = { x: x.sid, queues: new Map(), next: new Map(), seen: new Map() };
      this.crash(x, 'kill', 'crash (restarts deaf at the heal)');
      x.restartAt = c.faultSteps;
      f.sid = x.sid;
      f.phase = 1;
    } else if (f.phase === 1 && this.now === c.faultSteps - 1) {
      const beats = (s: number): Msg[] => {
        const promised = this.nodes.get(s)!.replica?.promised ?? 0;
        return (this.leadBeats.get(`${d.x}>${s}`) ?? []).filter(
          (m) => m.t === 'heartbeat' && m.promised >= promised,
        );
      };
      const follow = this.shuffled(this.upNodes().filter((n) => n.sid !== d.x))
        .map((n) => ({ n, beats: beats(n.sid) }))
        .sort((u, v) => v.beats.length - u.beats.length)
        .slice(0, c.sids.length - this.quorum);
      for (const { n, beats: b } of follow) {
        this.crash(n, 'kill', 'crash (restarts at the heal; its leader is gone)');
        d.queues.set(n.sid, b);
        d.next.set(n.sid, 0);
      }
      f.phase = 2;
      this.danger(
        `leader ${d.x} restarts deaf at the heal; {${follow.map((u) => `${u.n.sid}: ${u.beats.length} old heartbeats`).join(', ')}} restart`,
      );
    }
  }

  /** A heartbeat of the dead leader reached `to` after the heal: older ones are no news to it. */
  private seenDeadLeader(to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    if (this.faultsOn || !m.leading) return;
    const s = this.dlx.seen.get(to);
    if (!s || m.promised > s.ballot || (m.promised === s.ballot && m.tick > s.tick))
      this.dlx.seen.set(to, { ballot: m.promised, tick: m.tick });
  }

  /** bridge-free-heartbeat: the bridge node and the half beyond it (from the leader). */
  private bfx: { bridge: number; side: number[] } = { bridge: -1, side: [] };

  /**
   * The cut a family keeps after the heal, or null (then the drawn shape):
   * - abandoned-incarnation: Z alone bridges two halves of (n - 1) / 2 nodes
   *   (a single holder of the abandoned incarnation is in the first half);
   * - dead-leader-heartbeats: the leader X hears nobody, everyone hears it;
   * - bridge-free-heartbeat: a node F bridges the leader's half and the other
   *   half, each of (n - 1) / 2 nodes; F sent each node of the other half a
   *   heartbeat saying it follows no leader (re-delivered after the heal).
   */
  private familyKeptCut(): KeptCut | null {
    const c = this.cfg;
    const f = this.fam;
    if (c.postHeal === 'none') return null;
    const half = (c.sids.length - 1) >> 1;
    const apart = (a: number[], b: number[]): [number, number][] =>
      a.flatMap((u) =>
        b.flatMap((v): [number, number][] => [
          [u, v],
          [v, u],
        ]),
      );
    if (c.family === 'abandoned-incarnation') {
      const a = this.abx;
      if (f.phase !== 4 || !this.nodes.get(a.z)!.disk.records.some((r) => r.t === 'voter'))
        return null;
      const others = this.shuffled(c.sids.filter((s) => s !== a.z && s !== a.holders[0]));
      // A single holder is in the first half (else it is one of the others).
      others.unshift(a.holders[0]);
      const one = others.slice(0, half);
      const two = others.slice(half);
      return {
        label: `bridge {${one.join(',')}} <-> {${a.z}} <-> {${two.join(',')}} (abandoned incarnation of ${a.z} held by {${a.holders.join(',')}})`,
        cut: apart(one, two),
      };
    }
    if (c.family === 'dead-leader-heartbeats') {
      const x = this.dlx.x;
      if (f.phase !== 2) return null;
      const from = c.sids.filter((s) => s !== x);
      return {
        label: `one-way into ${x} (the deaf leader) from ${from.join(',')}`,
        cut: from.map((s): [number, number] => [s, x]),
      };
    }
    if (c.family === 'bridge-free-heartbeat') {
      const ls = this.leaders();
      const l = ls.length > 0 ? ls[this.prng.int(ls.length)].sid : this.prng.pick(c.sids);
      for (const b of this.shuffled(c.sids.filter((s) => s !== l))) {
        const free = this.shuffled(
          c.sids.filter((s) => s !== l && s !== b && this.freeHeartbeats.has(`${b}>${s}`)),
        );
        if (free.length < half) continue;
        const side = free.slice(0, half);
        const mine = c.sids.filter((s) => s !== b && !side.includes(s));
        this.bfx = { bridge: b, side };
        this.danger(
          `bridge ${b}: its old "I follow no leader" heartbeats go to {${side.join(',')}}`,
        );
        return {
          label: `bridge {${mine.join(',')}} <-> {${b}} <-> {${side.join(',')}} (old free heartbeats of ${b} replayed)`,
          cut: apart(mine, side),
        };
      }
    }
    return null;
  }

  /**
   * After the heal, while the clients run: the old heartbeats of the families
   * that keep a cut keep coming (on links that work).
   * - dead-leader-heartbeats: X's next old heartbeat to each restarted follower,
   *   every half to whole election timeout (of that node's clock);
   * - bridge-free-heartbeat: F's old free heartbeat to a node beyond it, every
   *   other tick on average.
   */
  private replayAfterHeal(): void {
    const c = this.cfg;
    if (this.now >= c.faultSteps + c.liveSteps || this.now <= c.faultSteps + 1) return;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const old = (from: number, to: number, msg: Msg): void => {
      const n = this.nodes.get(to)!;
      if (n.up && !this.net.isCut(from, to))
        this.deliver({ from, to, payload: { k: 'peer', msg }, sentAt: 0 });
    };
    if (c.family === 'dead-leader-heartbeats' && this.fam.phase === 2) {
      const d = this.dlx;
      for (const [s, q] of d.queues) {
        if (this.now < d.next.get(s)!) continue;
        // The next one that is news to it (one that came otherwise may be newer).
        const seen = d.seen.get(s);
        while (q.length > 0 && seen) {
          const m = q[0] as Extract<Msg, { t: 'heartbeat' }>;
          if (m.promised > seen.ballot || (m.promised === seen.ballot && m.tick > seen.tick)) break;
          q.shift();
        }
        if (q.length === 0) continue;
        old(d.x, s, q.shift()!);
        // Within the follower's election timeout even on a fast clock.
        const rate = this.nodes.get(s)!.clockRate;
        const lo = Math.ceil(e / 2);
        d.next.set(s, this.now + p.range(lo, Math.max(lo, Math.floor((e - 2) / rate))));
      }
    } else if (c.family === 'bridge-free-heartbeat' && this.bfx.bridge >= 0 && p.chance(0.5)) {
      const b = this.bfx.bridge;
      const to = p.pick(this.bfx.side);
      old(b, to, this.freeHeartbeats.get(`${b}>${to}`)!.msg);
    }
  }

  // ----------------------- dead-lives-heartbeats (attack review L) -----------------------

  /**
   * dead-lives-heartbeats: per link (from>to) the heartbeats sent in the calm
   * stretch, grouped by the sender's process life (the last 6 lives, each its
   * first 4,000); each node's current life (as its heartbeats say; unknown
   * after a kill); the rotation's kills still to do per node and when the next
   * may come; after the heal, per link the dead-life heartbeats still to come
   * (and the rotation's position), and each node's dead lives.
   */
  private dvx: {
    whole: boolean;
    /**
     * Eviction mode (rotation only; L2): after the heal, every tick, each link
     * gets its fixed cycle (`cycles`) instead of the reactive replay.
     */
    evict: boolean;
    cycles: Map<string, Msg[]>;
    beats: Map<string, { life: number; msgs: Msg[] }[]>;
    life: Map<number, number>;
    kills: Map<number, number>;
    next: Map<number, number>;
    queues: Map<string, Msg[]>;
    turn: Map<string, number>;
    /** Per link, the tick of its last dead-life heartbeat (at most one per tick). */
    at: Map<string, number>;
    dead: Map<number, Set<number>>;
  } = {
    whole: false,
    evict: false,
    cycles: new Map(),
    beats: new Map(),
    life: new Map(),
    kills: new Map(),
    next: new Map(),
    queues: new Map(),
    turn: new Map(),
    at: new Map(),
    dead: new Map(),
  };

  private noteLifeBeat(from: number, to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    const d = this.dvx;
    if (!this.faultsOn && d.evict && m.life !== undefined) return this.noteLiveFirst(from, to, m);
    if (!this.faultsOn || this.now < this.cfg.familyAt || m.life === undefined) return;
    d.life.set(from, m.life);
    const k = `${from}>${to}`;
    let lives = d.beats.get(k);
    if (!lives) d.beats.set(k, (lives = []));
    const last = lives[lives.length - 1];
    if (last?.life === m.life) {
      if (last.msgs.length < 4000) last.msgs.push(m);
      return;
    }
    lives.push({ life: m.life, msgs: [m] });
    if (lives.length > 6) lives.shift();
  }

  /** Has `sid` sent every peer a heartbeat of its current process life (as recorded)? */
  private beatAllInLife(sid: number): boolean {
    const life = this.dvx.life.get(sid);
    if (life === undefined) return false;
    return this.cfg.sids.every(
      (s) => s === sid || this.dvx.beats.get(`${sid}>${s}`)?.at(-1)?.life === life,
    );
  }

  /**
   * dead-lives-heartbeats (attack review L), in the calm stretch before the heal
   * (random faults stop at familyAt): three runs in four kill every node four
   * or five times in a row (each life lasts until it has sent every peer a
   * heartbeat; down for up to a heartbeat period; two of them in eviction
   * mode), the others kill the whole cluster just before the heal (every node
   * restarts at the heal, remembering no peer's life), after a calm life longer
   * than the live bound.
   */
  private deadLivesBeforeHeal(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const d = this.dvx;
    if (f.phase === 0) {
      f.phase = 1;
      // A quarter whole-cluster restarts, a quarter rotations with the reactive
      // replay, half rotations with the eviction cycle.
      const mode = p.int(4);
      d.whole = mode === 0;
      d.evict = mode >= 2;
      if (!d.whole)
        for (const s of c.sids) {
          d.kills.set(s, p.range(4, 5));
          // After any node still down at the calm's start is back.
          d.next.set(s, this.now + 6 * e + p.int(e));
        }
      if (this.tracing)
        this.trace(
          `family ${c.family}: ${d.whole ? 'whole-cluster restart' : d.evict ? 'restart rotation, eviction cycle' : 'restart rotation'}`,
        );
    }
    if (d.whole) {
      if (this.now !== c.faultSteps - c.net.delayMax - 2) return;
      for (const n of this.upNodes()) {
        this.crash(n, 'kill', 'crash (the whole cluster restarts at the heal)');
        n.restartAt = c.faultSteps;
        d.life.delete(n.sid);
      }
      return;
    }
    for (const n of this.nodes.values()) {
      const left = d.kills.get(n.sid)!;
      if (left === 0 || this.now < d.next.get(n.sid)! || !n.up || !this.beatAllInLife(n.sid))
        continue;
      this.crash(n, 'kill', `crash (restart rotation, ${left - 1} more)`);
      n.restartAt = this.now + p.range(1, c.timing.heartbeatTicks);
      d.kills.set(n.sid, left - 1);
      d.life.delete(n.sid);
    }
  }

  /**
   * At the heal: per link, the heartbeats of its sender's dead lives that will
   * follow each live one: the last of each dead life (rotation; ECHO_LIVES_MAX
   * is 4, so four dead lives and the live one make every arrival news), or
   * every heartbeat of the life the whole-cluster restart ended, in send order
   * (each news to a peer that restarted after it).
   */
  private deadLivesAtHeal(): void {
    const c = this.cfg;
    const d = this.dvx;
    let least = Infinity;
    for (const from of c.sids) {
      const cur = d.life.get(from);
      const dead = new Set<number>();
      for (const to of c.sids) {
        if (to === from) continue;
        const lives = (d.beats.get(`${from}>${to}`) ?? []).filter((l) => l.life !== cur);
        for (const l of lives) dead.add(l.life);
        const q = d.whole
          ? (lives.at(-1)?.msgs ?? [])
          : lives.slice(-5).map((l) => l.msgs[l.msgs.length - 1]);
        least = Math.min(least, q.length);
        if (q.length === 0) continue;
        if (!d.evict) {
          d.queues.set(`${from}>${to}`, q);
          continue;
        }
        // The live life's first heartbeat (long before the heal) closes the cycle;
        // a node down at the heal gets its first after it (noteLiveFirst).
        const live = d.beats.get(`${from}>${to}`)?.at(-1);
        if (cur !== undefined && live?.life === cur) q.push(live.msgs[0]);
        d.cycles.set(`${from}>${to}`, q);
      }
      d.dead.set(from, dead);
    }
    d.beats.clear();
    // Enough to stall the cluster past the live bound (one per live heartbeat).
    const enough = d.whole ? least * c.timing.heartbeatTicks > c.liveBound : least >= 4;
    if (enough)
      this.danger(
        d.whole
          ? `the whole cluster restarts; at least ${least} heartbeats of each node's last life to follow its live ones to each peer`
          : `every node restarted 4+ times; at least ${least} dead lives per link in ${d.evict ? 'the eviction cycle' : 'rotation'}`,
      );
  }

  /**
   * Eviction mode, after the heal: the first heartbeat of a live life of `from`
   * sent to `to` closes the link's cycle if none does yet (its sender was down
   * at the heal); delivered a heartbeat period later it is old.
   */
  private noteLiveFirst(from: number, to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    const d = this.dvx;
    const q = d.cycles.get(`${from}>${to}`);
    if (!q || d.dead.get(from)?.has(m.life!) !== false) return;
    const last = q[q.length - 1] as Extract<Msg, { t: 'heartbeat' }>;
    if (!d.dead.get(from)!.has(last.life!)) return;
    q.push(m);
  }

  /**
   * dead-lives-heartbeats, eviction mode (attack review L2), every tick after
   * the heal while the clients run: each link gets its fixed cycle, the newest
   * heartbeat of each dead life of its sender (send order; more lives than the
   * ECHO_LIVES_MAX a peer remembers) and then the first of its live life, so the
   * live life is evicted and its old copy sets the echo back by many periods.
   * A fixed schedule, not one copy per live heartbeat: no feedback (at most
   * n(n-1)*6 deliveries per tick). Just before the nodes tick, after this
   * step's live datagrams: a periodic heartbeat then echoes the old copy, and
   * only an echo answered at once (on the jump) is fresh.
   */
  private evictionCycle(): void {
    const c = this.cfg;
    if (this.faultsOn || this.now <= c.faultSteps + 1 || this.now >= c.faultSteps + c.liveSteps)
      return;
    for (const [k, q] of this.dvx.cycles) {
      const [from, to] = k.split('>').map(Number);
      const n = this.nodes.get(to)!;
      for (const msg of q) {
        if (!n.up || n.paused(this.now) || this.net.isCut(from, to)) break;
        this.stats.replayed++;
        this.deliver({ from, to, payload: { k: 'peer', msg }, sentAt: 0 });
      }
    }
  }

  /**
   * A live heartbeat from `from` reached `to` (clients still running): the next
   * dead-life heartbeat of `from` follows it at once, so that `to`'s echo for
   * `from` names a dead life when its own periodic heartbeat leaves. At most one
   * per link per tick: the network's re-deliveries are bounded, not a copy per
   * live datagram (each answer of a peer's new life would draw another, and the
   * answers to those another: exponential, seed 2 at 3 nodes).
   */
  private afterLiveHeartbeat(from: number, to: number, m: Extract<Msg, { t: 'heartbeat' }>): void {
    const c = this.cfg;
    const d = this.dvx;
    if (this.faultsOn || this.now >= c.faultSteps + c.liveSteps) return;
    if (m.life === undefined || d.dead.get(from)?.has(m.life) !== false) return;
    const k = `${from}>${to}`;
    const q = d.queues.get(k);
    if (!q || q.length === 0 || d.at.get(k) === this.now) return;
    d.at.set(k, this.now);
    let msg: Msg;
    if (d.whole) msg = q.shift()!;
    else {
      const i = d.turn.get(k) ?? 0;
      d.turn.set(k, i + 1);
      msg = q[i % q.length];
    }
    this.stats.replayed++;
    this.deliver({ from, to, payload: { k: 'peer', msg }, sentAt: 0 });
  }

  // ----------------------- given-up-handoff (attack review H) -----------------------

  /**
   * given-up-handoff: the leader A (its process life and ballot), the target B,
   * the held copies of A's request to B, whether A gave the hand-off up, and
   * whether a heartbeat of A reached the restarted B (it may be fresh: the
   * window closes).
   */
  private hox: {
    a: number;
    b: number;
    aLife: number;
    ballot: number;
    copies: Extract<Msg, { t: 'handoff' }>[];
    gaveUp: boolean;
    heard: boolean;
    /** B restarts while the hand-off is live (9.H's round); restarted: it did. */
    early: boolean;
    restarted: boolean;
    /** B's process life after the restart, from its heartbeats (0: none seen yet). */
    bLife: number;
  } = {
    a: -1,
    b: -1,
    aLife: 0,
    ballot: 0,
    copies: [],
    gaveUp: false,
    heard: false,
    early: false,
    restarted: false,
    bLife: 0,
  };

  /** Is A still the leader of the family's hand-off (same life, same ballot)? */
  private handoffLeaderOn(): boolean {
    return this.leadsAt(this.hox.a, this.hox.aLife, this.hox.ballot);
  }

  /** Is node `sid` up in incarnation `inc` and leading at `ballot`? */
  private leadsAt(sid: number, inc: number, ballot: number): boolean {
    const a = this.nodes.get(sid);
    return (
      a !== undefined &&
      a.up &&
      a.incarnation === inc &&
      a.replica!.role === 'leader' &&
      a.replica!.ballot === ballot
    );
  }

  /**
   * given-up-handoff (attack review H), up to four rounds in the fault phase
   * (random faults stand aside meanwhile): the leader A hands off to its best
   * voter B and every request is held, so A gives it up an election timeout
   * later and leads on; then B is killed and restarts, A's heartbeats to it are
   * lost for a while, and right after a message of A (an accept, a commit) makes
   * B follow A again, a held copy arrives (afterLeaderMessage).
   *
   * In half the rounds (early, 9.H) B is killed while the hand-off is still live:
   * in its new life the copies that echo no heartbeat of it reach it (it sees the
   * hand-off), those that echo one are held (A answers B's heartbeat with one:
   * the echo rule's round trip), and every heartbeat of A to it is lost; A gives
   * up, B follows A again by an accept alone (no heartbeat of A in this life),
   * and a held copy echoing its new life arrives. Only the recency test (no
   * heartbeat of the leader in this life: no proof the copy is not stale) stops
   * B from campaigning on it.
   */
  private givenUpHandoff(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const h = this.hox;
    if (f.phase === 0) {
      if (f.count >= 4 || this.now > c.faultSteps - 12 * e) return;
      const a = this.leaders().find((n) => !n.paused(this.now));
      const b = a ? this.nodes.get(a.replica!.handoffTarget() ?? -1) : undefined;
      if (!a || !b?.up || b.paused(this.now)) return;
      if (a.replica!.transferLeadership(b.sid) !== null) return;
      this.stats.handoffs++;
      this.hox = {
        a: a.sid,
        b: b.sid,
        aLife: a.incarnation,
        ballot: a.replica!.ballot,
        copies: [],
        gaveUp: false,
        heard: false,
        early: p.chance(0.5),
        restarted: false,
        bLife: 0,
      };
      this.famDrop = (pk) => {
        if (pk.payload.k !== 'peer') return false;
        const m = pk.payload.msg;
        const x = this.hox;
        if (x.restarted && pk.from === x.b && m.t === 'heartbeat' && m.life !== undefined)
          x.bLife = m.life;
        if (pk.from !== x.a || pk.to !== x.b || m.t !== 'handoff') return false;
        // Early rounds, B's new life: a copy that echoes no heartbeat of it passes.
        if (x.early && x.restarted && !(x.bLife !== 0 && m.echoLife === x.bLife)) return false;
        x.copies.push(m);
        return true;
      };
      f.count++;
      f.phase = 1;
      f.until = this.now + 3 * e;
      if (this.tracing)
        this.trace(`family ${c.family}: node ${a.sid} hands off to ${b.sid}; every request held`);
    } else if (f.phase === 1) {
      if (!this.handoffLeaderOn() || this.now >= f.until) return this.endHandoffRound();
      if (h.early && !h.restarted) {
        if (h.copies.length === 0 || h.gaveUp) return;
        const b = this.nodes.get(h.b)!;
        this.crash(b, 'kill', 'crash (target of a live hand-off)');
        b.restartAt = this.now + p.range(1, c.timing.heartbeatTicks);
        this.loseTypes(h.a, [h.b], ['heartbeat'], b.restartAt - this.now + 2 * e + p.range(1, e));
        h.restarted = true;
        h.copies = [];
        return;
      }
      if (h.early && h.restarted && !h.gaveUp) {
        // UDP re-delivers an old accept or commit of A (this ballot): B follows A
        // again by it, with no heartbeat of A in this life, while the hand-off is
        // live, so the copies that reach it show it the hand-off.
        const b = this.nodes.get(h.b)!;
        if (b.up && b.replica!.leader !== h.a)
          this.replayOld(1, 20 * e, (x) => {
            if (x.payload.k !== 'peer' || x.from !== h.a || x.to !== h.b) return false;
            const m = x.payload.msg;
            return (m.t === 'accept' || m.t === 'commit') && m.ballot === h.ballot;
          });
      }
      if (!h.gaveUp) return;
      if (h.early) {
        if (!h.copies.some((x) => x.echoLife === h.bLife)) return this.endHandoffRound();
        f.phase = 2;
        f.until = this.now + 3 * e;
        return;
      }
      if (h.copies.length === 0) return this.endHandoffRound();
      const b = this.nodes.get(h.b)!;
      this.crash(b, 'kill', 'crash (target of a given-up hand-off)');
      b.restartAt = this.now + p.range(1, c.timing.heartbeatTicks);
      this.loseTypes(h.a, [h.b], ['heartbeat'], b.restartAt - this.now + p.range(1, e));
      f.phase = 2;
      f.until = this.now + 3 * e;
    } else if (f.phase === 2 && (this.now >= f.until || !this.handoffLeaderOn())) {
      this.endHandoffRound();
    }
  }

  /**
   * A message of the hand-off's leader A reached its target B (B stepped it;
   * `role` is B's role before). In the window (A gave the hand-off up, B
   * restarted since, no heartbeat of A reached it), once B follows A again and
   * has chosen what the copy says, the held copy arrives. Invariant (exact under
   * the rule that B acts only on a fresh heartbeat of A within the hand-off's
   * lifetime: a fresh one echoes B's new life, so A sent it after it gave up):
   * B does not campaign on it.
   */
  private afterLeaderMessage(b: SimNode, m: Msg, role: string): void {
    const h = this.hox;
    if (this.fam.phase !== 2 || !b.up || b.incarnation < 1) return;
    if (m.t === 'heartbeat') h.heard = true;
    const r = b.replica!;
    if (h.heard || role !== 'follower' || r.role !== 'follower' || !r.voter) return;
    if (r.leader !== h.a || !this.handoffLeaderOn()) return;
    const pool = h.early ? h.copies.filter((x) => x.echoLife === h.bLife) : h.copies;
    if (pool.length === 0) return;
    const copy = pool.reduce((x, y) => (y.chosen < x.chosen ? y : x));
    if (r.chosenThrough < copy.chosen) return;
    // The round ends first: the copy's own delivery comes back here.
    this.endHandoffRound();
    this.danger(
      `node ${b.sid} restarted after ${h.a} gave its hand-off up; it follows ${h.a} again by ${m.t} and a held copy arrives`,
    );
    this.deliver({ from: h.a, to: b.sid, payload: { k: 'peer', msg: copy }, sentAt: 0 });
    // A target acts on a hand-off at its next tick (Replica.onHandoff): watch
    // that tick too.
    this.handoffWatch = { sid: b.sid, replica: b.replica!, a: h.a, tick: copy.tick };
    this.checkHandoffWatch(b);
  }

  /** B, watched since a given-up hand-off's copy reached it, must not campaign on it. */
  private handoffWatch: { sid: number; replica: Replica; a: number; tick: number } | null = null;

  private checkHandoffWatch(b: SimNode): void {
    const w = this.handoffWatch;
    if (!w || w.sid !== b.sid) return;
    // A hand-off campaign (an ordinary election timeout at that tick is no breach).
    if (b.up && b.replica === w.replica && b.replica.campaign?.handoff === true)
      fail(
        'a given-up hand-off deposes nobody',
        `node ${b.sid}, restarted after leader ${w.a} gave up its hand-off (started at tick ${w.tick}) and led on, campaigned on a held copy of it`,
      );
  }

  private endHandoffRound(): void {
    const f = this.fam;
    this.famDrop = null;
    f.phase = 3;
    this.afterFamily(() => (f.phase = 0), 2 * this.cfg.timing.electionTicks);
  }

  // ----------------------- handoff-ballot-reuse (issue 9.5) -----------------------

  /**
   * handoff-ballot-reuse: the leader L and its ballot, the target A (its life
   * at the hand-off, its first ballot b1), the other peers P and the group G of
   * them that A's accepts reach, when the family started, when A lost power
   * (-1: not yet), whether L handed off again, and the node whose client
   * requests are lost (-1: none).
   */
  private hrx = {
    l: -1,
    a: -1,
    bL: 0,
    b1: 0,
    aLife: 0,
    p: [] as number[],
    g: [] as number[],
    at: 0,
    crashAt: -1,
    again: false,
    reqLost: -1,
  };

  /** Is L still the leader it was at the family's hand-off (same ballot)? */
  private hrLeaderOn(): boolean {
    const l = this.nodes.get(this.hrx.l)!;
    return l.up && l.replica!.role === 'leader' && l.replica!.ballot === this.hrx.bL;
  }

  /**
   * handoff-ballot-reuse (issue 9.5; 5 or 7 nodes, up to three rounds in the
   * fault phase, random faults standing aside): the leader L hands off to A,
   * whose disk is slow. What A sends L but heartbeats is lost (L leads on below
   * A's ballot b1: a follower's promise deposes no leader) and so are the clients' requests to
   * L (it proposes nothing a promiser would nack); A's accepts and commits
   * reach only G; the peers P do not hear each other (a campaign needs fresh
   * two-way contact with a majority: none of them can run). A loses power
   * after its first accept of a new slot (or at a deadline) and restarts; until
   * it campaigns again it hears nothing from P (all of it says b1) and follows
   * L on a fresh heartbeat; L hands off to A again, and A campaigns at
   * nextBallot(L's ballot) = b1 again. Then P minus G may answer it (G's
   * promise would report A's first value). At HEAD A led at b1 only after its
   * own promise was durable, so the power loss cannot have made it forget a
   * proposal at b1; the 9.5 revert proposes a second value at (slot, b1).
   * Over 60 lines: one schedule, phase by phase in the order it runs.
   */
  private handoffReuse(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const h = this.hrx;
    if (f.phase === 0) {
      if (c.sids.length < 5 || f.count >= 3 || this.now > c.faultSteps - 20 * e) return;
      if (!this.allVoters() || this.upNodes().length < c.sids.length) return;
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length !== 1) return;
      const l = ls[0];
      const a = this.nodes.get(l.replica!.handoffTarget() ?? -1);
      if (!a || a.paused(this.now) || l.replica!.transferLeadership(a.sid) !== null) return;
      this.stats.handoffs++;
      const peers = this.shuffled(c.sids.filter((s) => s !== l.sid && s !== a.sid));
      this.hrx = {
        l: l.sid,
        a: a.sid,
        bL: l.replica!.ballot,
        b1: 0,
        aLife: a.incarnation,
        p: peers,
        // L and P minus G must make a quorum without A.
        g: peers.slice(0, p.range(1, peers.length - (this.quorum - 1))),
        at: this.now,
        crashAt: -1,
        again: false,
        reqLost: l.sid,
      };
      this.slowTargetRound(
        a,
        (pk) => this.handoffReuseDrop(pk),
        () =>
          `node ${l.sid} hands off to ${a.sid} (disk slow); what ${a.sid} sends ${l.sid} is lost, its accepts reach only {${this.hrx.g.join(',')}}, {${peers.join(',')}} do not hear each other`,
      );
    } else if (f.phase === 1) {
      // Waiting for A's campaign (handoffReuseCampaign).
      if (this.now >= f.until || !this.hrLeaderOn()) this.endHandoffReuse();
    } else if (f.phase === 2) {
      const a = this.nodes.get(h.a)!;
      if (!a.up || a.incarnation !== h.aLife || !this.hrLeaderOn()) return this.endHandoffReuse();
      if (this.now < f.until) return;
      this.crash(a, 'power', 'power loss after its hand-off campaign, before its disk synced');
      a.slowUntil = 0;
      a.restartAt = this.now + p.range(1, c.timing.heartbeatTicks);
      h.crashAt = this.now;
      f.phase = 3;
      f.until = this.now + 8 * e;
    } else if (f.phase === 3) {
      // A follows L again (a fresh heartbeat): the operator hands off to it again.
      if (this.now >= f.until || !this.hrLeaderOn()) return this.endHandoffReuse();
      const r = this.nodes.get(h.a)!.replica;
      if (h.again || !r || r.role !== 'follower' || r.leader !== h.l) return;
      if (this.nodes.get(h.l)!.replica!.transferLeadership(h.a) !== null) return;
      h.again = true;
      this.stats.handoffs++;
      if (this.tracing) this.trace(`family ${c.family}: node ${h.l} hands off to ${h.a} again`);
    } else if (f.phase === 4 && this.now >= f.until) this.endHandoffReuse();
  }

  /**
   * A hand-off round whose target's disk is slow (its own promise is not durable
   * for 6-10 election timeouts) starts, under the family's losses `drop`; phase 1
   * waits up to two election timeouts for the target's campaign.
   */
  private slowTargetRound(
    target: SimNode,
    drop: (pk: Packet<Payload>) => boolean,
    what: () => string,
  ): void {
    const e = this.cfg.timing.electionTicks;
    const f = this.fam;
    target.slowUntil = this.now + 100 * e;
    target.slowDelay = this.prng.range(6 * e, 10 * e);
    this.famDrop = drop;
    f.count++;
    f.phase = 1;
    f.until = this.now + 2 * e;
    if (this.tracing) this.trace(`family ${this.cfg.family}: ${what()}`);
  }

  /** The family's losses (see handoffReuse), decided when a datagram arrives. */
  private handoffReuseDrop(pk: Packet<Payload>): boolean {
    const h = this.hrx;
    const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
    const firstLife = h.crashAt < 0 || pk.sentAt <= h.crashAt;
    if (pk.from === h.a) {
      // A's heartbeats pass: a target campaigns only on a copy echoing one (H2-LATE).
      if (pk.to === h.l) return firstLife && pk.sentAt >= h.at && m.t !== 'heartbeat';
      if (h.g.includes(pk.to) || !h.p.includes(pk.to)) return false;
      return firstLife && (m.t === 'accept' || m.t === 'commit');
    }
    if (!h.p.includes(pk.from)) return false;
    if (pk.to === h.a) return h.crashAt >= 0 && (this.fam.phase <= 3 || h.g.includes(pk.from));
    return h.p.includes(pk.to);
  }

  /** A prepare left `n`: A's first campaign (b1), or its campaign in its next life. */
  private handoffReuseCampaign(n: SimNode): void {
    const f = this.fam;
    const h = this.hrx;
    const r = n.replica;
    const e = this.cfg.timing.electionTicks;
    if (!this.faultsOn || n.sid !== h.a || !r || r.role !== 'candidate') return;
    if (f.phase === 1 && n.incarnation === h.aLife) {
      h.b1 = r.ballot;
      // A ballot above L's seen first: the next life (which sees only L's) cannot reach it.
      if (r.ballot !== nextBallot(h.bL, n.sid)) return this.endHandoffReuse();
      f.phase = 2;
      f.until = this.now + this.prng.range(e, 3 * e);
    } else if (f.phase === 3 && n.incarnation > h.aLife) {
      if (r.ballot === h.b1)
        this.danger(
          `node ${n.sid} campaigns again at ${formatBallot(h.b1)} after a power loss (first campaign ${this.now - h.at} ticks ago, hand-off from ${h.l}${h.again ? ', twice' : ''}); {${h.g.join(',')}} unheard`,
        );
      f.phase = 4;
      f.until = this.now + 4 * e;
    }
  }

  /** An accept of A at b1 for a slot neither L nor P minus G holds: power goes soon. */
  private handoffReuseAccept(n: SimNode, m: Extract<Msg, { t: 'accept' }>): void {
    const f = this.fam;
    const h = this.hrx;
    if (f.phase !== 2 || n.sid !== h.a || m.ballot !== h.b1) return;
    const others = [h.l, ...h.p.filter((s) => !h.g.includes(s))];
    const fresh = m.entries.some(([slot]) =>
      others.every((q) => {
        const r = this.nodes.get(q)!.replica;
        return !r || (slot > r.base && !r.acceptedEntry(slot));
      }),
    );
    if (fresh) f.until = Math.min(f.until, this.now + this.prng.range(0, 2));
  }

  private endHandoffReuse(): void {
    const f = this.fam;
    const a = this.nodes.get(this.hrx.a);
    this.famDrop = null;
    this.hrx.reqLost = -1;
    if (a) a.slowUntil = 0;
    f.phase = 5;
    this.afterFamily(() => (f.phase = 0), 10 * this.cfg.timing.electionTicks);
  }

  // ------------------ paused-handoff-target (attack review 4, H2) ------------------

  /**
   * paused-handoff-target: the leader A (its incarnation, its replica's life as
   * its heartbeats say, its ballot) and the target T; the schedule (A gave the
   * hand-off up at `gaveUpAt`, T resumes at `resumeAt`, its queue read in arrival
   * order or not); and, from the hand-off's start to T's first tick after its
   * resume (`watch`), T's replica, life and clock at its pause, the newest
   * hand-off start among the copies T read, whether T read a hand-off of anyone
   * else, and the newest tick among A's heartbeats that T read and took as fresh;
   * whether T is paused once it asks (`asking`: right after it sends the
   * heartbeat a copy must echo) and its clock when it read its first copy.
   */
  private phx = {
    a: -1,
    t: -1,
    aInc: 0,
    aLife: -1,
    ballot: 0,
    gaveUpAt: -1,
    resumeAt: -1,
    fifo: true,
    watch: false,
    replica: null as Replica | null,
    tLife: -1,
    tNow: 0,
    copyTick: -1,
    foreign: false,
    beatTick: -1,
    asking: false,
    readAt: -1,
  };

  /**
   * paused-handoff-target (attack review 4, H2), up to six rounds in the fault
   * phase, random faults standing aside: the leader A hands off to a voter T
   * picked at random (as an operator names one); A's copies to T are lost for
   * 0-5 ticks, then T is paused (SIGSTOP, a stopped VM) with its clock, so the
   * later copies queue at it, A gives the hand-off up an election timeout after
   * its start and leads on, and A's heartbeats from after that queue behind the
   * copies; T resumes from a heartbeat period to three election timeouts after
   * the give-up and reads its queue, in arrival order (a socket buffer; a
   * quarter of the rounds in any order). Its first tick is watched
   * (checkPausedTarget). In some rounds (asking: three in four where T's election
   * timeout is longer than A's, one in five otherwise) no copy is lost and T is
   * paused right after it asks (targetAsked): the copies that queue at it echo
   * that heartbeat, and it resumes within its own election timeout of the
   * give-up (where a target with a longer one than A's would still judge the
   * hand-off live by its own clock).
   */
  private pausedHandoffTarget(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const h = this.phx;
    if (f.phase === 0) {
      if (f.count >= 6 || h.watch || this.now > c.faultSteps - 12 * e) return;
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length !== 1 || ls[0].life < 0) return;
      const a = ls[0];
      const ts = this.upNodes().filter((n) => n !== a && !n.paused(this.now) && n.life >= 0);
      // The first that transferLeadership takes (a two-way voter of A).
      const t = this.shuffled(ts).find((n) => a.replica!.transferLeadership(n.sid) === null);
      if (!t) return;
      this.stats.handoffs++;
      this.phx = {
        ...h,
        a: a.sid,
        t: t.sid,
        aInc: a.incarnation,
        aLife: a.life,
        ballot: a.replica!.ballot,
        gaveUpAt: -1,
        resumeAt: -1,
        fifo: p.chance(0.75),
        watch: true,
        replica: null,
        tLife: -1,
        copyTick: -1,
        foreign: false,
        beatTick: -1,
      };
      // Asking rounds mostly where the target's timeout is the longer (where the
      // lifetime's clock matters); the others mostly judge H2-LATE.
      const asking = p.chance(this.electionOf(t.sid) > this.electionOf(a.sid) ? 0.75 : 0.2);
      const hold = asking || p.chance(0.5) ? 0 : p.range(1, 5);
      this.phx.asking = asking;
      this.phx.readAt = -1;
      f.count++;
      f.phase = 1;
      f.until = this.now + (asking ? this.electionOf(a.sid) : hold);
      if (hold > 0)
        this.famDrop = (pk) => {
          const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
          return pk.from === this.phx.a && pk.to === this.phx.t && m.t === 'handoff';
        };
      if (this.tracing)
        this.trace(
          `family ${c.family}: node ${a.sid} hands off to ${t.sid}; ${asking ? `${t.sid} paused once it asks` : `its copies lost for ${hold} ticks, then ${t.sid} paused`}`,
        );
    }
    if (f.phase === 1) {
      // Asking: paused by targetAsked, or the round ends.
      if (this.now < f.until) return;
      if (h.asking) this.endPausedTarget();
      else this.pauseHandoffTarget();
    } else if (f.phase === 2) {
      if (!this.leadsAt(h.a, h.aInc, h.ballot) || this.now >= f.until)
        return this.endPausedTarget();
      if (h.gaveUpAt < 0) return;
      const lo = c.timing.heartbeatTicks + c.net.delayMax;
      h.resumeAt = this.now + p.range(lo, h.asking ? Math.max(lo, this.electionOf(h.t)) : 3 * e);
      f.phase = 3;
    } else if (f.phase === 3) {
      if (!this.leadsAt(h.a, h.aInc, h.ballot)) return this.endPausedTarget();
      if (this.now >= h.resumeAt) this.resumeHandoffTarget();
    } else if (f.phase === 4 && this.now >= f.until) this.endPausedTarget();
  }

  /** T stops with its clock (the hand-off's copies and A's heartbeats queue at it). */
  private pauseHandoffTarget(): void {
    const h = this.phx;
    const t = this.nodes.get(h.t)!;
    const r = t.replica;
    this.famDrop = null;
    if (!t.up || !r || r.role !== 'follower' || r.leader !== h.a || t.paused(this.now))
      return this.endPausedTarget();
    if (!this.leadsAt(h.a, h.aInc, h.ballot)) return this.endPausedTarget();
    const e = this.cfg.timing.electionTicks;
    this.pause(t, 10 * e);
    h.replica = r;
    h.tLife = t.life;
    h.tNow = t.ticks;
    this.fam.phase = 2;
    this.fam.until = this.now + 3 * e;
  }

  /** T sent A a heartbeat: in an asking round, the first after a tick past its first copy asks. */
  private targetAsked(t: SimNode): void {
    const h = this.phx;
    if (this.fam.phase !== 1 || h.readAt < 0 || t.ticks <= h.readAt) return;
    this.pauseHandoffTarget();
  }

  /** T resumes and reads what queued at it (in arrival order, or as step() shuffles it). */
  private resumeHandoffTarget(): void {
    const h = this.phx;
    const t = this.nodes.get(h.t)!;
    const copies = t.held.filter(
      (pk) => pk.from === h.a && pk.payload.k === 'peer' && pk.payload.msg.t === 'handoff',
    ).length;
    this.fam.phase = 4;
    this.fam.until = this.now + 2 * this.cfg.timing.electionTicks;
    t.pausedUntil = this.now;
    if (copies > 0)
      this.danger(
        `node ${t.sid} resumes ${this.now - h.gaveUpAt} ticks after ${h.a} gave its hand-off up, ${copies} copies queued${h.fifo ? ' (read in arrival order)' : ''}`,
      );
    if (!h.fifo) return;
    const held = t.held;
    t.held = [];
    for (const pk of held) this.deliver(pk);
  }

  /** A message T read while watched: hand-off copies, and A's heartbeats fresh for T. */
  private pausedTargetHeard(from: number, m: Msg): void {
    const h = this.phx;
    if (m.t === 'handoff') {
      if (from !== h.a || m.ballot !== h.ballot) h.foreign = true;
      else h.copyTick = Math.max(h.copyTick, m.tick);
      if (h.readAt < 0 && h.tLife < 0) h.readAt = this.nodes.get(h.t)!.ticks;
      return;
    }
    if (m.t !== 'heartbeat' || from !== h.a || h.tLife < 0) return;
    if (!m.leading || m.promised !== h.ballot || m.life !== h.aLife || m.echoLife !== h.tLife)
      return;
    // Replica.isFresh, on T's clock at its pause (it stands still until T's next tick).
    const at = m.echoTick;
    if (at === undefined || at > h.tNow || h.tNow - at > this.electionOf(h.t)) return;
    h.beatTick = Math.max(h.beatTick, m.tick);
  }

  /**
   * T's first tick after its resume. Invariant: T does not campaign on a copy
   * (H2-LATE: see the check). Before attack review 5 it was (exact under the
   * rule that a hand-off is acted on at the target's next tick and re-checked then): if,
   * before that tick, T read a heartbeat of A (same life, leading at the
   * hand-off's ballot) that echoes a heartbeat of T's within an election timeout
   * of T's clock, dated more than an election timeout after every copy's start,
   * then T does not campaign on a copy. Such a heartbeat is fresh for T (A's
   * echoes and ticks only grow, and A was in two-way contact with T when it
   * handed off, so no other life of A echoes a later heartbeat of T), and A,
   * leading at that ballot now, led at it throughout: it moved T's leaderTick
   * past the copies' lifetime, so the re-check fails.
   */
  private checkPausedTarget(n: SimNode): void {
    const h = this.phx;
    if (h.tLife < 0) return; // not paused yet (the copies are still lost)
    h.watch = false;
    if (this.fam.phase === 4) this.endPausedTarget();
    const r = n.replica!;
    // The hand-off's end is by A's clock and A's own election timeout.
    const e = this.electionOf(h.a);
    if (r !== h.replica || h.foreign || h.copyTick < 0) return;
    if (!this.leadsAt(h.a, h.aInc, h.ballot) || r.campaign?.handoff !== true) return;
    // Asking: T may act on a parked copy echoing its asking heartbeat unless a
    // fresh heartbeat of A read first is dated past the hand-off's end (A leads
    // at the hand-off's ballot now, so it led at it throughout: that heartbeat
    // moved T's leaderTick past the copy's end, and Replica.handoffValid says no).
    if (h.asking && h.beatTick <= h.copyTick + e) return;
    if (h.asking)
      fail(
        'a given-up hand-off deposes nobody',
        `node ${n.sid} (election timeout ${this.electionOf(n.sid)}), paused right after it asked for the hand-off of leader ${h.a} (election timeout ${e}, started at its tick ${h.copyTick}), resumed after ${h.a} gave it up and led on, and campaigned on a parked copy by its first tick after reading a fresh heartbeat of ${h.a} dated ${h.beatTick}, past the hand-off's end ${h.copyTick + e}`,
      );
    // Without a fresh voiding heartbeat read first, still exact since attack
    // review 5 (H2-LATE): T read no copy before its pause (they were lost or not
    // sent yet) and A gave up before T resumed, while T acts only on a copy echoing
    // a heartbeat it sent after it first saw one, i.e. after its resume: A, no
    // longer handing off, sends no such copy.
    const late = h.beatTick <= h.copyTick + e;
    fail(
      'a given-up hand-off deposes nobody',
      `node ${n.sid}, paused while the hand-off of leader ${h.a} (started at its tick ${h.copyTick}) was live and resumed after ${h.a} gave it up and led on, campaigned on a copy by its first tick, ${late ? 'before any fresh heartbeat of it showed the hand-off given up (H2-LATE)' : `after a fresh heartbeat of ${h.a} dated ${h.beatTick}`}`,
    );
  }

  private endPausedTarget(): void {
    const f = this.fam;
    const t = this.nodes.get(this.phx.t);
    this.famDrop = null;
    // Its queue is read by step(), in any order; its first tick is still watched.
    if (t && t.paused(this.now) && this.phx.tLife >= 0) t.pausedUntil = this.now;
    if (this.phx.tLife < 0) this.phx.watch = false;
    f.phase = 5;
    this.afterFamily(() => (f.phase = 0), 2 * this.cfg.timing.electionTicks);
  }

  // ------------- forgotten-handoff-prepare (attack review 5, HANDOFF-PREPARE-STALE) -------------

  /**
   * forgotten-handoff-prepare: the leader A (its incarnation and ballot), the
   * target T (its incarnation at the hand-off), T's hand-off campaign ballot,
   * when T lost power (-1: not yet), when A gave the hand-off up (-1: not yet),
   * whether A handed off again since, when the held prepares arrive, and the
   * held prepares of T's forgotten campaign (with their destinations).
   */
  private fpx = {
    a: -1,
    t: -1,
    aInc: 0,
    ballot: 0,
    tInc: 0,
    b: 0,
    crashAt: -1,
    gaveUpAt: -1,
    again: false,
    deliverAt: -1,
    held: [] as Packet<Payload>[],
  };

  /**
   * forgotten-handoff-prepare (attack review 5, HANDOFF-PREPARE-STALE), up to
   * four rounds in the fault phase, random faults standing aside: A hands off to
   * a voter T picked at random, whose disk is slow; T's prepares and nacks to
   * the others are held (hpsDrop); T campaigns (forgottenCampaign) and loses
   * power 0-2 ticks later, before its own promise is durable, so that nothing
   * but the held prepares says it ever ran; A's copies to the restarted T are
   * lost until A gives the hand-off up; a heartbeat period plus the network's
   * delay to ten election timeouts after the give-up, the held prepares arrive,
   * shuffled (forgottenDeliver). Over 60 lines: one schedule, phase by phase.
   */
  private forgottenHandoffPrepare(): void {
    const c = this.cfg;
    const p = this.prng;
    const e = c.timing.electionTicks;
    const f = this.fam;
    const h = this.fpx;
    if (f.phase === 0) {
      if (f.count >= 4 || this.now > c.faultSteps - 20 * e) return;
      if (!this.allVoters() || this.upNodes().length < c.sids.length) return;
      const ls = this.leaders().filter((n) => !n.paused(this.now));
      if (ls.length !== 1) return;
      const a = ls[0];
      const ts = this.upNodes().filter((n) => n !== a && !n.paused(this.now));
      const t = this.shuffled(ts).find((n) => a.replica!.transferLeadership(n.sid) === null);
      if (!t) return;
      this.stats.handoffs++;
      this.fpx = {
        a: a.sid,
        t: t.sid,
        aInc: a.incarnation,
        ballot: a.replica!.ballot,
        tInc: t.incarnation,
        b: 0,
        crashAt: -1,
        gaveUpAt: -1,
        again: false,
        deliverAt: -1,
        held: [],
      };
      this.slowTargetRound(
        t,
        (pk) => this.hpsDrop(pk),
        () => `node ${a.sid} hands off to ${t.sid} (disk slow); ${t.sid}'s prepares and nacks held`,
      );
    } else if (f.phase > 5) {
      return; // ended: the next round waits (afterFamily)
    } else if (!this.leadsAt(h.a, h.aInc, h.ballot) || h.again) {
      this.endForgotten();
    } else if (f.phase === 1) {
      // Waiting for T's hand-off campaign (forgottenCampaign).
      if (this.now >= f.until) this.endForgotten();
    } else if (f.phase === 2) {
      if (this.now < f.until) return;
      const t = this.nodes.get(h.t)!;
      if (!t.up || t.incarnation !== h.tInc) return this.endForgotten();
      this.crash(
        t,
        'power',
        'power loss right after its hand-off campaign, before its disk synced',
      );
      t.slowUntil = 0;
      t.restartAt = this.now + p.range(1, c.timing.heartbeatTicks);
      h.crashAt = this.now;
      f.phase = 3;
      f.until = this.now + 3 * e;
    } else if (f.phase === 3) {
      // Until A gives the hand-off up (forgottenLeaderEvent).
      if (h.gaveUpAt >= 0) {
        h.deliverAt = this.now + p.range(c.timing.heartbeatTicks + c.net.delayMax, 10 * e);
        f.phase = 4;
      } else if (this.now >= f.until) this.endForgotten();
    } else if (f.phase === 4 && this.now >= h.deliverAt) {
      this.forgottenDeliver();
      f.phase = 5;
      f.until = this.now + 3 * e;
    } else if (f.phase === 5 && this.now >= f.until) this.endForgotten();
  }

  /**
   * The family's losses, decided when a datagram arrives: T's prepares (held)
   * and nacks (its promise of the campaign would depose A) of its first life to
   * the others, and from T's power loss to A's give-up, A's copies to T (the
   * restarted T must not run a fresh campaign on the same hand-off).
   */
  private hpsDrop(pk: Packet<Payload>): boolean {
    const h = this.fpx;
    const m = (pk.payload as { k: 'peer'; msg: Msg }).msg;
    if (pk.from === h.t && pk.to !== h.t && (h.crashAt < 0 || pk.sentAt <= h.crashAt)) {
      if (m.t === 'prepare' && m.handoff === true) h.held.push(pk);
      return m.t === 'prepare' || m.t === 'nack';
    }
    return (
      pk.from === h.a && pk.to === h.t && m.t === 'handoff' && h.crashAt >= 0 && h.gaveUpAt < 0
    );
  }

  /** A prepare left `n`: T's hand-off campaign in its life of the hand-off. */
  private forgottenCampaign(n: SimNode): void {
    const f = this.fam;
    const h = this.fpx;
    const r = n.replica;
    if (!this.faultsOn || f.phase !== 1 || n.sid !== h.t || n.incarnation !== h.tInc) return;
    if (!r || r.campaign?.handoff !== true) return;
    h.b = r.ballot;
    f.phase = 2;
    f.until = this.now + this.prng.range(0, 2);
  }

  /** An event of A: the hand-off to T given up, or another one started. */
  private forgottenLeaderEvent(e: string): void {
    const h = this.fpx;
    if (this.fam.phase < 1 || this.fam.phase > 5) return;
    if (e.endsWith(`hand-off to ${h.t} timed out; leading on`)) h.gaveUpAt = this.now;
    else if (h.gaveUpAt >= 0 && e.includes('handing leadership to')) h.again = true;
  }

  /**
   * The held prepares arrive, shuffled, each at its destination. Invariant
   * ('a given-up hand-off deposes nobody'), exact: A leads at the ballot it
   * handed off from (same process), gave that hand-off up and started none
   * since, every node votes, and A checked its two-way contact with a majority
   * at its last tick (a leader steps down at a tick without it, and between
   * ticks contact only grows): a prepare above its promise does not pass
   * stickiness (Replica.handoffLive: no hand-off of A's is live), so A must
   * still lead at that ballot after it.
   */
  private forgottenDeliver(): void {
    const h = this.fpx;
    const held = this.shuffled(h.held);
    h.held = [];
    this.famDrop = null;
    const a = this.nodes.get(h.a)!;
    for (const pk of held) {
      const m = (pk.payload as { k: 'peer'; msg: Msg }).msg as Extract<Msg, { t: 'prepare' }>;
      const judged =
        pk.to === h.a &&
        this.leadsAt(h.a, h.aInc, h.ballot) &&
        !a.paused(this.now) &&
        this.allVoters() &&
        m.ballot > a.replica!.status().promised;
      if (judged)
        this.danger(
          `node ${h.t}'s held prepare at ${formatBallot(m.ballot)} (hand-off of ${h.a}, forgotten in a power loss ${this.now - h.crashAt} ticks ago) reaches ${h.a}, which gave the hand-off up ${this.now - h.gaveUpAt} ticks ago and leads on`,
        );
      this.deliver(pk);
      if (judged && !this.leadsAt(h.a, h.aInc, h.ballot))
        fail(
          'a given-up hand-off deposes nobody',
          `leader ${h.a} gave its hand-off to ${h.t} up at tick ${h.gaveUpAt} and led on at ${formatBallot(h.ballot)}; a held prepare at ${formatBallot(m.ballot)} of ${h.t}'s hand-off campaign, forgotten in a power loss at tick ${h.crashAt}, arrived at tick ${this.now} and ${h.a} stepped down`,
        );
    }
  }

  private endForgotten(): void {
    const f = this.fam;
    const t = this.nodes.get(this.fpx.t);
    this.famDrop = null;
    this.fpx.held = [];
    if (t) t.slowUntil = 0;
    f.phase = 6;
    this.afterFamily(() => (f.phase = 0), 2 * this.cfg.timing.electionTicks);
  }

  // ======================= process model =======================

  private start(n: SimNode): void {
    n.incarnation++;
    n.restartAt = -1;
    const c = this.cfg;
    if (n.powerBeforeOpen) {
      // Killed, then power lost before the restart: the page cache is gone too.
      this.loseUnsynced(n);
      n.powerBeforeOpen = false;
    }
    // Opening the data directory syncs the replayed records before anything is
    // sent (issue 9: acknowledging replayed, never-synced state is unsafe).
    if (c.sabotage !== 'no-sync-on-open') n.disk.synced = n.disk.records.length;
    // No limits given: the state machine learns the cluster's from the log (as the daemon's).
    const sm = new KvStateMachine();
    const ro: ReplicaOptions & { slotsAheadMax?: number } = {
      sid: n.sid,
      // The config files' servers (a spare outside them gets the list without itself).
      sids: this.servers,
      prng: new Prng(this.prng.nextU32()),
      sm,
      ...c.timing,
      electionTicks: this.electionOf(n.sid),
      windowSlots: c.limits.windowSlots,
      batchBytesMax: c.limits.batchBytesMax,
      pendingMax: c.limits.pendingMax,
      catchupBytesMax: c.limits.catchupBytesMax,
      snapshotEverySlots: c.limits.snapshotEverySlots,
      keepSlots: c.limits.keepSlots,
      mutations: c.mutation === 'none' ? [] : [c.mutation],
      trace: this.tracing ? (line) => this.trace(`  ${line}`) : undefined,
    };
    if (c.membership) {
      ro.members = c.membership.voters.map((sid) => ({ sid, voter: true }));
      ro.alphaSlots = c.membership.alpha;
    }
    if (c.limits.slotsAheadMax !== undefined) {
      // Small-edge seeds: a small horizon and one snapshot chunk per round trip,
      // so that a snapshot transfer racing new snapshots is reachable.
      ro.slotsAheadMax = c.limits.slotsAheadMax;
      ro.snapshotWindowChunks = 1;
    }
    const replica = new Replica(ro);
    // restore() reads the records; hand it a copy like a fresh read from disk.
    replica.restore(n.disk.snapshot, [...n.disk.records]);
    if (n.incarnation > 1) this.stats.restarts++;
    this.checkDurability(n, replica);
    const fresh =
      n.bootstrapOk && n.disk.snapshot === null && !n.disk.records.some((r) => r.t === 'voter');
    if (fresh) replica.bootstrap();
    const how = fresh ? 'bootstrap' : n.wiped ? 'empty disk (non-voter)' : 'restart';
    n.wiped = false;
    n.replica = replica;
    n.sm = sm;
    if (this.diverge?.sid === n.sid) this.injectDivergence(sm, this.diverge.slot);
    n.front = new ClientFront({ replica, sm, localLimits: n.limits });
    n.up = true;
    n.lastApplied = n.disk.snapshot?.slot ?? 0;
    n.held = [];
    n.pipeline = [];
    n.writeGen = 0;
    n.mustSyncGen = 0;
    n.syncedGen = 0;
    n.sync = null;
    n.pausedUntil = 0;
    n.ticks = 0;
    n.life = -1;
    n.learned.clear();
    this.learnAddresses(n);
    this.mix(0x57a7 + n.sid);
    if (this.tracing)
      this.trace(
        `node ${n.sid} start #${n.incarnation} (${how}): snapshot=${n.disk.snapshot?.slot ?? 0} records=${n.disk.records.length} promised=${formatBallot(replica.promised)} chosen=${replica.chosenThrough} voter=${replica.voter}`,
      );
    this.checkReplica(n);
    this.checkConfigurations(n);
    this.flush(n);
  }

  /**
   * Membership mode, the daemon's removal rule (PaxosNode.checkRemoved): a node
   * the newest configuration removed stops for good once Replica.mayLeave()
   * holds (it applied every slot the old configuration decides, and a majority
   * of the new one's voters said so durably). No more input or output; never
   * restarted, never added again. Its disk is not lost: the lost-disk schedule
   * counts it as there (a majority of the new configuration knows every slot
   * it could still be asked to vote on chosen).
   */
  private leaves(n: SimNode): boolean {
    if (!this.cfg.membership || !n.replica!.mayLeave()) return false;
    const r = n.replica!;
    this.stop(n);
    n.gone = true;
    n.restartAt = -1;
    this.stats.memberExits.push(n.sid);
    this.mix(0x9011 + n.sid);
    if (this.tracing)
      this.trace(
        `node ${n.sid} removed (configuration of slot ${r.configuration.slot}, applied ${r.applied}): the new configuration is settled, it exits`,
      );
    return true;
  }

  /** Has node `n` an address for `sid` (the servers list, or learned from its log)? */
  private knows(n: SimNode, sid: number): boolean {
    return this.outside.size === 0 || !this.outside.has(sid) || n.learned.has(sid);
  }

  /** PaxosNode.learnAddresses: every member address in the log's configurations (at each tick and start). */
  private learnAddresses(n: SimNode): void {
    if (this.outside.size === 0) return;
    for (const c of n.sm!.configurations())
      for (const m of c.members) if (m.addr && m.sid !== n.sid) n.learned.add(m.sid);
  }

  /** Membership mode: a live, unpaused leader for the operator (any of them, if several believe they lead). */
  private operatorLeader(): SimNode | null {
    const ls = this.leaders().filter((n) => !n.paused(this.now));
    return ls.length === 0 ? null : this.prng.pick(ls);
  }

  /** Membership mode: the operator's command at a leader's client front (see MemberOperator). */
  private operatorSubmit(cmd: Cmd): CmdResult | 'sent' | null {
    const n = this.operatorLeader();
    if (!n) return null;
    const to: SimReplyTo = { from: OPERATOR_ADDR, chosenBallot: this.oracle.maxChosenBallot };
    const rep = n.front!.request(to, cmd.cid, cmd.seq, cmd.op, this.now);
    this.checkFine(n);
    if (this.tracing)
      this.trace(`node ${n.sid} <- operator ${cmd.cid}:${cmd.seq}: ${rep ? rep.t : 'queued'}`);
    if (!rep) return 'sent';
    if (rep.t !== 'result') return null;
    this.checkAnswer(rep.cid, rep.seq, rep.result);
    return rep.result;
  }

  /** Membership mode: the node's configurations are the chosen log's (Oracle.checkConfigurations). */
  private checkConfigurations(n: SimNode): void {
    const r = n.replica;
    if (!this.cfg.membership || !r || this.opts.noConfigCheck || this.opts.lenientQuorum) return;
    this.oracle.checkConfigurations(n.sid, r.applied, n.sm!.configurations(), (s) => r.configOf(s));
  }

  /** The process is gone: no replica, no input or output, nothing queued or syncing. */
  private stop(n: SimNode): void {
    n.up = false;
    if (n.replica) this.addReplicaStats(n.replica);
    n.replica = null;
    n.sm = null;
    n.front = null;
    n.sync = null;
    n.pipeline = [];
    n.held = [];
  }

  /**
   * Nothing a node told others survives only in memory: after a restart (kill
   * or power loss) it has promised at least every ballot it promised or
   * accepted at, and still holds (or knows chosen) every slot it acknowledged.
   */
  private checkDurability(n: SimNode, r: Replica): void {
    if (r.promised < n.committedBallot)
      fail(
        'promises survive restarts',
        `node ${n.sid} restarted with promised ${formatBallot(r.promised)} but had promised/accepted ${formatBallot(n.committedBallot)}`,
      );
    for (const [slot, ballot] of n.acked) {
      if (slot <= r.base) {
        n.acked.delete(slot);
        continue;
      }
      const e = r.acceptedEntry(slot);
      if (!e || (!e.chosen && e.ballot < ballot))
        fail(
          'acceptances survive restarts',
          `node ${n.sid} acknowledged slot ${slot} at ballot ${formatBallot(ballot)} but restarted with ${e ? `ballot ${formatBallot(e.ballot)}` : 'nothing'} for it`,
        );
    }
    // What it produced but never sent may be forgotten: start again from what it said.
    n.producedBallot = n.committedBallot;
  }

  /**
   * Stop a node. kill: the process dies, the page cache (every written record)
   * survives. power: only synced records survive, plus perhaps a prefix of the
   * rest (kernel writeback or a torn sync; a torn record is cut on open).
   */
  private crash(n: SimNode, kind: CrashKind, why: string): void {
    if (!n.up) return;
    this.stop(n);
    n.crashes++;
    this.stats.crashes++;
    if (kind === 'power') {
      this.stats.powerLosses++;
      this.loseUnsynced(n);
    } else this.stats.kills++;
    // Back after a while (the heal restarts whoever is still down).
    n.restartAt = this.now + this.prng.range(1, 6 * this.cfg.timing.electionTicks);
    this.mix(0xc4a5 + n.sid + (kind === 'power' ? 7 : 0));
    if (this.tracing)
      this.trace(`node ${n.sid} ${why} (${kind === 'power' ? 'power loss' : 'process kill'})`);
  }

  private loseUnsynced(n: SimNode): void {
    const d = n.disk;
    const extra = d.records.length - d.synced;
    const keep = d.synced + (extra > 0 && this.prng.chance(0.5) ? this.prng.int(extra + 1) : 0);
    if (this.tracing && keep < d.records.length)
      this.trace(`node ${n.sid} loses ${d.records.length - keep} unsynced records`);
    d.records.length = keep;
    d.synced = keep;
  }

  private write(n: SimNode, records: DurableRecord[]): void {
    const sab = this.cfg.sabotage;
    for (const r of records) {
      if (sab === 'drop-promise-records' && r.t === 'promise') continue;
      if (sab === 'drop-accept-records' && r.t === 'accept') continue;
      n.disk.records.push(r);
    }
  }

  // ======================= network =======================

  private deliver(p: Packet<Payload>): void {
    const pl = p.payload;
    if (pl.k === 'rep') {
      this.clients.get(p.to)?.receive(pl.buf);
      return;
    }
    const n = this.nodes.get(p.to);
    if (!n || !n.up) return;
    if (pl.k === 'peer' && this.famDrop?.(p)) return;
    // The daemon drops a datagram from an address it does not know (peer_wrong_source).
    if (pl.k === 'peer' && !this.knows(n, p.from)) return;
    if (pl.k === 'req' && p.to === this.hrx.reqLost) return;
    if (n.paused(this.now)) {
      n.held.push(p);
      return;
    }
    if (pl.k === 'peer') {
      this.mix(p.from);
      this.mix(p.to);
      this.mix(SCHEMA[pl.msg.t].code); // message codes from the wire schema
      this.mix(msgNumber(pl.msg));
      if (this.tracing) this.trace(`${p.from} -> ${p.to} ${describeMsg(pl.msg)}`);
      if (p.from === this.dlx.x && pl.msg.t === 'heartbeat') this.seenDeadLeader(p.to, pl.msg);
      const role = n.replica!.role;
      n.replica!.step(p.from, pl.msg);
      this.checkFine(n);
      if (pl.msg.t === 'heartbeat' && this.dvx.queues.size > 0)
        this.afterLiveHeartbeat(p.from, p.to, pl.msg);
      if (p.from === this.hox.a && p.to === this.hox.b) this.afterLeaderMessage(n, pl.msg, role);
      if (this.phx.watch && p.to === this.phx.t) this.pausedTargetHeard(p.from, pl.msg);
    } else {
      this.onClientRequest(n, p.from, pl.buf);
    }
    if (this.cfg.flushPerMessage > 0 && this.prng.chance(this.cfg.flushPerMessage)) this.flush(n);
  }

  /** A client datagram at a node: opened and decoded as the daemon does, then the daemon's front door (lib/front.ts). */
  private onClientRequest(n: SimNode, from: number, buf: Buffer): void {
    const opened = open(buf, Kind.ClientRequest, SIM_CLUSTER, NO_KEYS);
    if ('error' in opened) fail('client wire', `node ${n.sid}: ${opened.error}`);
    const req = decodeRequest(opened.body);
    if ('error' in req) fail('client wire', `node ${n.sid}: ${req.error}`);
    // The simulated clients send none of the others (hand-offs are a fault drawn by the run).
    if (req.t !== 'op' && req.t !== 'ops') return;
    const to: SimReplyTo = { from, chosenBallot: this.oracle.maxChosenBallot };
    for (const o of req.t === 'op' ? [req] : req.ops) {
      const rep = n.front!.request(to, o.cid, o.seq, o.op, this.now);
      this.checkFine(n);
      this.mix(0xc1 + (rep ? rep.t.length : 0));
      if (this.tracing)
        this.trace(`node ${n.sid} <- client ${from} ${o.cid}:${o.seq}: ${rep ? rep.t : 'queued'}`);
      if (rep) this.reply(n, from, rep);
    }
  }

  /** One answer to a client, sealed as the daemon seals it. */
  private reply(n: SimNode, to: number, rep: ClientReply): void {
    if (rep.t === 'result') this.checkAnswer(rep.cid, rep.seq, rep.result);
    const buf = seal(Kind.ClientReply, SIM_CLUSTER, encodeReply(rep), NO_KEYS);
    this.net.send(n.sid, to, { k: 'rep', buf }, this.now);
  }

  /** A write's answer never changes: every answer for one cid:seq must be the same. */
  private checkAnswer(cid: number, seq: number, result: CmdResult): void {
    // Reads and registrations use nonces, not sessions; "stale" and
    // "session_expired" say nothing about a request's outcome.
    if (cid >= REGISTER_NONCE_MIN || result.err === 'stale' || result.err === 'session_expired')
      return;
    const key = `${cid}:${seq}`;
    const text = JSON.stringify(result);
    const prev = this.writeAnswers.get(key);
    if (prev === undefined) this.writeAnswers.set(key, text);
    else if (prev !== text)
      fail('one answer per request', `request ${key} was answered ${prev} and later ${text}`);
  }

  /** Answers due after a ready(): applied writes, and reads whose read index is confirmed. */
  private answer(n: SimNode, to: SimReplyTo, a: FrontAnswer): void {
    // Read index: a majority confirmed, after the read arrived, that it promised
    // nothing above our ballot; so nothing was chosen above it before the read arrived.
    if (a.read && to.chosenBallot > n.replica!.promised)
      fail(
        'read index: no higher ballot chose before the read arrived',
        `node ${n.sid} answered read ${a.cid}:${a.seq} at promised ${formatBallot(n.replica!.promised)}, but a value was chosen at ${formatBallot(to.chosenBallot)} before the read arrived`,
      );
    this.reply(n, to.from, { t: 'result', cid: a.cid, seq: a.seq, result: a.result });
  }

  // ======================= the driver: PaxosNode.handle / kickSync / release =======================

  private flush(n: SimNode): void {
    for (let round = 0; round < 64; round++) {
      if (!n.up || n.paused(this.now)) return;
      // After each turn, tick and message (the daemon checks at each tick).
      if (this.leaves(n)) return;
      const rd = n.replica!.ready();
      this.checkFine(n);
      if (
        rd.persist.length === 0 &&
        rd.messages.length === 0 &&
        rd.applied.length === 0 &&
        !rd.snapshot &&
        rd.events.length === 0 &&
        rd.reads.length === 0
      )
        return;
      this.observe(n, rd);
      this.handle(n, rd);
    }
  }

  /**
   * One turn, as PaxosNode.handle does it: write the records (page cache), save
   * a snapshot (synced), send the sync = false messages at once and queue the
   * sync = true ones behind the sync of everything written so far, answer
   * clients, release what is durable, start a sync if one is needed.
   * A crash may strike part-way (crashInReady).
   */
  private handle(n: SimNode, rd: Ready): void {
    const f = this.cfg.faults;
    const crashAt =
      this.faultsOn &&
      f.crashInReady > 0 &&
      (rd.persist.length > 0 || rd.messages.length > 0) &&
      this.prng.chance(f.crashInReady)
        ? this.prng.int(3)
        : -1;
    const kind: CrashKind = crashAt >= 0 && this.prng.chance(f.powerLoss) ? 'power' : 'kill';
    this.checkProduced(n, rd);
    if (crashAt === 0) {
      // Killed in the middle of write(): a prefix of the records reached the page cache.
      this.write(n, rd.persist.slice(0, this.prng.int(rd.persist.length + 1)));
      this.stats.crashesInReady++;
      this.crash(n, kind, `crash while writing ${rd.persist.length} records`);
      return;
    }
    if (rd.persist.length > 0) {
      this.write(n, rd.persist);
      // As the daemon: every record gets a generation (a sync message waits for
      // all records before it); only mustSync records ask for a sync themselves.
      n.writeGen++;
      if (rd.mustSync) n.mustSyncGen = n.writeGen;
    }
    if (rd.snapshot) {
      if (crashAt === 1) {
        this.stats.crashesInReady++;
        this.crash(n, kind, `crash while saving snapshot ${rd.snapshot.slot}`);
        return;
      }
      // The snapshot file, then a new WAL segment that starts with the
      // checkpoint; saveSnapshot syncs both: everything written is durable.
      const d = n.disk;
      d.snapshot = { slot: rd.snapshot.slot, data: rd.snapshot.data };
      d.records = [];
      d.epoch++;
      this.write(n, rd.snapshot.checkpoint);
      d.synced = d.records.length;
      n.syncedGen = n.writeGen;
    }
    const now: Outbound[] = [];
    const gated: Outbound[] = [];
    const ackEarly = this.cfg.sabotage === 'ack-before-sync';
    for (const o of rd.messages) (o.sync && !ackEarly ? gated : now).push(o);
    if (crashAt === 2) {
      // Killed while sending: some of the immediate messages left.
      this.send(n, now.slice(0, this.prng.int(now.length + 1)));
      this.stats.crashesInReady++;
      this.crash(n, kind, `crash after sending part of ${now.length} messages`);
      return;
    }
    if (gated.length > 0) n.pipeline.push({ gen: n.writeGen, messages: gated });
    const self = this.send(n, now);
    // Client answers go at once: an applied entry is chosen, a majority holds it.
    n.front!.answers(rd.applied, rd.reads, (to, x) => this.answer(n, to, x));
    this.stepSelf(n, self);
    this.release(n);
    this.kickSync(n);
  }

  /**
   * Send messages; those addressed to the node itself are returned (stepped
   * after the rest of the turn, like PaxosNode.emit). `record` = false for a
   * send cut short by a crash (what left is still recorded).
   */
  private send(n: SimNode, messages: Outbound[]): Msg[] {
    const self: Msg[] = [];
    let lastMsg: Msg | null = null;
    let lastBody: Buffer | null = null;
    for (const { to, msg } of messages) {
      // No address for `to` (not in the servers list, none learned from the log): not sent.
      if (to !== n.sid && !this.knows(n, to)) continue;
      this.noteSent(n, msg);
      if (msg.t === 'heartbeat' && this.phx.asking && n.sid === this.phx.t && to === this.phx.a)
        this.targetAsked(n);
      if (msg.t === 'heartbeat' && this.cfg.family === 'powerloss-leader-reuse')
        this.noteHeartbeat(n.sid, to, msg);
      else if (msg.t === 'heartbeat' && this.recordsHeartbeats)
        this.recordHeartbeat(n.sid, to, msg);
      if (to === n.sid) {
        self.push(msg);
        continue;
      }
      if (!this.opts.wire) {
        this.net.send(n.sid, to, { k: 'peer', msg }, this.now);
        continue;
      }
      // Encoded when sent (a later mutation by the sender cannot leak), decoded per copy.
      if (msg !== lastMsg) {
        lastMsg = msg;
        lastBody = encodePeerBody(n.sid, msg);
      }
      const d = decodePeerBody(lastBody!);
      if ('error' in d) fail('wire codec', `${describeMsg(msg)} does not decode: ${d.error}`);
      if (d.from !== n.sid) fail('wire codec', `sender ${n.sid} decoded as ${d.from}`);
      this.net.send(n.sid, to, { k: 'peer', msg: d.msg }, this.now);
    }
    return self;
  }

  private stepSelf(n: SimNode, msgs: Msg[]): void {
    for (const m of msgs) {
      if (!n.up) return;
      if (this.tracing) this.trace(`${n.sid} -> self ${describeMsg(m)}`);
      this.mix(SCHEMA[m.t].code);
      n.replica!.step(n.sid, m);
      this.checkFine(n);
    }
  }

  /** Send (and step to self) every gated batch whose records are durable, in order. */
  private release(n: SimNode): void {
    let guard = 0;
    while (n.up && n.pipeline.length > 0 && n.pipeline[0].gen <= n.syncedGen) {
      if (++guard > 10_000) fail('driver', `node ${n.sid}: release loop`);
      const { messages } = n.pipeline.shift()!;
      this.stepSelf(n, this.send(n, messages));
    }
  }

  /** Start an fsync covering every record written so far, unless one is running or none is needed. */
  private kickSync(n: SimNode): void {
    const due = Math.max(n.mustSyncGen, n.pipeline.at(-1)?.gen ?? 0);
    if (!n.up || n.sync || n.syncedGen >= due) return;
    const slow = this.faultsOn && n.slowUntil > this.now;
    const [lo, hi] = this.cfg.syncTicks;
    const ticks = slow ? n.slowDelay : hi > 0 ? this.prng.range(lo, hi) : 0;
    n.sync = {
      at: this.now + ticks,
      target: n.writeGen,
      count: n.disk.records.length,
      epoch: n.disk.epoch,
    };
  }

  /** The running fsync completes: its records are durable; release, sync again, run a turn. */
  private completeSync(n: SimNode): void {
    let guard = 0;
    while (n.up && !n.paused(this.now) && n.sync && n.sync.at <= this.now) {
      if (++guard > 1000) fail('driver', `node ${n.sid}: sync loop`);
      const s = n.sync;
      n.sync = null;
      this.stats.syncs++;
      if (s.epoch === n.disk.epoch && s.count > n.disk.synced) n.disk.synced = s.count;
      if (s.target > n.syncedGen) n.syncedGen = s.target;
      this.release(n);
      this.kickSync(n);
      this.flush(n);
    }
  }

  /**
   * Checks on what the replica produced in a turn, sent or not: an acceptor
   * never acknowledges a ballot below one it promised or accepted in an
   * earlier turn (within one turn, message order says nothing about which came
   * first). A prepare starts the powerloss-after-campaign family.
   */
  private checkProduced(n: SimNode, rd: Ready): void {
    const before = n.producedBallot;
    let campaign = false;
    for (const { msg } of rd.messages) {
      if (msg.t === 'accepted') {
        if (msg.ballot < before && msg.slots.length > 0)
          fail(
            'no accept below a promise',
            `node ${n.sid} acknowledged ballot ${formatBallot(msg.ballot)} (slots ${msg.slots.join(',')}) after promising ${formatBallot(before)}`,
          );
        if (msg.ballot > n.producedBallot) n.producedBallot = msg.ballot;
      } else if (msg.t === 'promise') {
        if (msg.ballot > n.producedBallot) n.producedBallot = msg.ballot;
      } else if (msg.t === 'prepare') campaign = true;
      else if (msg.t === 'accept') this.onLeaderAccept(n, msg);
      else if (msg.t === 'heartbeat' && msg.life !== undefined) n.life = msg.life;
    }
    if (campaign) this.onCampaign(n);
  }

  /** Checks on a turn's output, made when the replica produces it. */
  /**
   * The test-only fault of injectDivergence: at `slot`, this replica's state
   * machine applies one extra command, a read from a session that never
   * existed. It changes no data and no answer (refused: session expired), only
   * the command history, so the other invariants still hold and only the state
   * hash can see it. Again at every re-application (a deterministic bug).
   */
  private injectDivergence(sm: KvStateMachine, slot: number): void {
    const apply = sm.apply.bind(sm);
    const extra = { cid: REGISTER_NONCE_MIN - 1, seq: 1, op: encodeOp({ kind: 'get', key: '!' }) };
    sm.apply = (s, cmds) => {
      if (s !== slot) return apply(s, cmds);
      if (this.stats.divergeInjectedAt < 0) this.stats.divergeInjectedAt = this.now;
      // The oracle's comparisons of order-log lines and snapshots would see it first.
      this.oracle.compareStates = false;
      const out = apply(s, [...cmds, extra]);
      return { results: out.results.slice(0, cmds.length), lines: out.lines };
    };
  }

  /**
   * The divergence detector: silent unless a divergence was injected before it
   * spoke (no false alarm, on any schedule).
   */
  private noteDivergence(n: SimNode, e: string): void {
    if (this.stats.divergeInjectedAt < 0)
      fail('no false divergence', `node ${n.sid} reported a divergence nobody injected: ${e}`);
    if (this.stats.divergeDetectedAt < 0) this.stats.divergeDetectedAt = this.now;
  }

  /**
   * An injected divergence still there at the end (the injected replica's state
   * hash differs from a converged node's at a slot both remember) was reported,
   * within DIVERGENCE_DETECT_HEARTBEATS_MAX heartbeats of the later of the
   * injection and the heal (a partition may delay it before).
   */
  private checkDivergenceFound(): void {
    const injectedAt = this.stats.divergeInjectedAt;
    if (injectedAt < 0 || !this.diverge) return;
    const bad = this.nodes.get(this.diverge.sid)!;
    if (this.mustConverge && !this.mustConverge.has(bad.sid)) return; // cut off for good
    if (bad.lost || bad.gone) return;
    let differs: string | null = null;
    for (const n of this.nodes.values()) {
      if (n === bad || n.lost || n.gone) continue;
      if (this.mustConverge && !this.mustConverge.has(n.sid)) continue;
      const slot = Math.min(n.replica!.applied, bad.replica!.applied);
      const a = n.sm!.hashAt(slot);
      const b = bad.sm!.hashAt(slot);
      if (a && b && !bytesEqual(a, b)) differs = `node ${n.sid} at slot ${slot}`;
    }
    if (differs === null) return; // healed (e.g. a snapshot from a healthy node replaced its state)
    const detectedAt = this.stats.divergeDetectedAt;
    const from = Math.max(injectedAt, this.cfg.faultSteps);
    const bound = DIVERGENCE_DETECT_HEARTBEATS_MAX * this.cfg.timing.heartbeatTicks;
    if (detectedAt < 0)
      fail(
        'divergence detected',
        `node ${bad.sid} applied an extra command at slot ${this.diverge.slot} (tick ${injectedAt}); its state hash still differs from ${differs}, and no node reported it`,
      );
    if (detectedAt - from > bound)
      fail(
        'divergence detected',
        `node ${bad.sid}'s divergence (slot ${this.diverge.slot}, tick ${injectedAt}) was reported at tick ${detectedAt}, ${detectedAt - from} ticks after the later of the injection and the heal (bound ${bound}: ${DIVERGENCE_DETECT_HEARTBEATS_MAX} heartbeats)`,
      );
  }

  private observe(n: SimNode, rd: Ready): void {
    const snap = rd.snapshot;
    const appliedBefore = n.lastApplied;
    for (const a of rd.applied) {
      const expected = n.lastApplied + 1;
      const jump = snap?.installed && a.slot === snap.slot + 1 && n.lastApplied < snap.slot;
      if (a.slot !== expected && !jump)
        fail(
          'apply in order',
          `node ${n.sid} applied slot ${a.slot} after slot ${n.lastApplied}${snap ? ` (snapshot ${snap.slot})` : ''}`,
        );
      n.lastApplied = a.slot;
      this.oracle.onApplied(n.sid, a);
      this.operator?.onApplied(a);
      this.mix(n.sid);
      this.mix(a.slot);
      this.mix(a.cmds.length);
      if (this.tracing)
        this.trace(
          `node ${n.sid} applied ${a.lines.length === 1 ? a.lines[0] : `${a.slot}: ${a.lines.map((l) => l.slice(l.indexOf(' ') + 1)).join('; ')}`}`,
        );
    }
    if (snap) {
      if (snap.installed && snap.slot > n.lastApplied) n.lastApplied = snap.slot;
      // A snapshot is taken right after applying its slot (this turn or before).
      if (
        !snap.installed &&
        snap.slot !== appliedBefore &&
        !rd.applied.some((a) => a.slot === snap.slot)
      )
        fail(
          'snapshots at an applied point',
          `node ${n.sid} took a snapshot at ${snap.slot} in a turn that applied ${rd.applied.map((a) => a.slot).join(',') || 'nothing'}`,
        );
      this.oracle.onSnapshot(n.sid, snap.slot, snap.data, snap.installed);
      this.mix(0x5a9 + snap.slot);
      if (this.tracing)
        this.trace(
          `node ${n.sid} ${snap.installed ? 'installed' : 'took'} snapshot ${snap.slot} (${snap.data.length}B, checkpoint ${snap.checkpoint.length} records)`,
        );
    }
    if (rd.applied.length > 0 || snap) this.checkConfigurations(n);
    for (const e of rd.events) {
      if (this.tracing) this.trace(`node ${n.sid} event: ${e}`);
      if (isDivergenceEvent(e)) this.noteDivergence(n, e);
      if (n.sid === this.hox.a && e.endsWith(`hand-off to ${this.hox.b} timed out; leading on`))
        this.hox.gaveUp = true;
      if (n.sid === this.phx.a && e.endsWith(`hand-off to ${this.phx.t} timed out; leading on`))
        this.phx.gaveUpAt = this.now;
      if (n.sid === this.fpx.a) this.forgottenLeaderEvent(e);
    }
  }

  /**
   * Ghost bookkeeping of what a node has told the world (when a message leaves
   * it): promises and acceptances it must remember across restarts, and every
   * proposal and acceptance for the oracle.
   */
  private noteSent(n: SimNode, msg: Msg): void {
    switch (msg.t) {
      case 'promise':
        if (msg.ballot > n.committedBallot) n.committedBallot = msg.ballot;
        return;
      case 'accepted':
        if (msg.ballot > n.committedBallot) n.committedBallot = msg.ballot;
        for (const s of msg.slots) {
          const prev = n.acked.get(s);
          if (prev === undefined || prev < msg.ballot) n.acked.set(s, msg.ballot);
        }
        this.oracle.onAccepted(n.sid, msg);
        return;
      case 'accept':
        this.oracle.onAccept(n.sid, msg);
        return;
    }
  }

  // ======================= end of run =======================

  /**
   * Is the chosen log order itself a linearization? True when every op with a
   * known answer executed (first application of its slot) strictly inside its
   * call/return interval with exactly the answer its client got. Returns null
   * if so, else the first op that breaks it.
   */
  private logWitness(): string | null {
    for (const ev of this.history) {
      if (ev.result === 'unknown') continue;
      const cl = [...this.clients.values()].find((c) => c.cid === ev.client)!;
      const k = cl.requestOf.get(ev)!;
      const runs = this.oracle.executions.get(k) ?? [];
      const answer = JSON.stringify(ev.result);
      const ok = runs.some(
        (r) =>
          r.time > ev.call &&
          r.time < (ev.ret ?? Infinity) &&
          (ev.op.kind === 'get' || r.effect) &&
          JSON.stringify(toKvResult(ev.op, JSON.parse(r.result) as CmdResult)) === answer,
      );
      if (!ok)
        return `${k} ${JSON.stringify(ev.op)} -> ${answer} [${ev.call}, ${ev.ret}] has no matching execution in the log (${JSON.stringify(runs)})`;
    }
    return null;
  }

  /**
   * Ticks within which every request completes once the faults stop. Membership
   * mode: a client's servers list (its config file) still names the nodes that
   * left or were lost for good (and the outside spares, which know no leader
   * before their add); a request may walk past each of them, one retry period at
   * the backoff's cap (PaxosClient: 4 x retry) per server, and walk again when
   * the leader it reached is deposed before it answers (seed 421: 2 of 10 left).
   */
  private liveBound(): number {
    const m = this.cfg.membership;
    if (!m) return this.cfg.liveBound;
    const dead = this.stats.memberExits.length + this.lostSids.size + m.outside.length;
    return this.cfg.liveBound + 2 * dead * 4 * this.cfg.clientRetry;
  }

  /** Nodes other than `sid` with both links to it working after the heal. */
  private twoWayPeers(sid: number): number {
    return this.cfg.sids.filter(
      (s) => s !== sid && !this.net.isCut(s, sid) && !this.net.isCut(sid, s),
    ).length;
  }

  /**
   * The end-of-run invariants, in the order they are judged (over 100 lines:
   * each is a short block with its reason; together they read as one list).
   */
  private finalChecks(): void {
    const c = this.cfg;
    let leaderships = 0;
    for (const n of this.nodes.values()) leaderships += n.replica?.stats.leaderships ?? 0;
    this.stats.leadershipsAfterHeal = leaderships - this.leadershipsAtHeal;
    let round = 0;
    for (const n of this.nodes.values())
      round = Math.max(round, ballotRound(n.replica?.promised ?? 0));
    this.stats.roundsAfterHeal = round - this.roundAtHeal;
    // Campaigns nobody can join must not inflate ballots (issue 16.3): a few
    // elections and duels after the heal, not one raised promise per period.
    // Membership mode: a change applied after the heal (submitted before it)
    // makes its leader campaign again, or step down when it was removed.
    const changes = this.oracle.configHistory.length - this.configsAtHeal;
    const roundsMax = ROUNDS_AFTER_HEAL_MAX + 2 * changes;
    const leadershipsMax = LEADERSHIPS_AFTER_HEAL_MAX + 2 * changes;
    if (this.stats.roundsAfterHeal > roundsMax)
      fail(
        'no ballot inflation',
        `promised ballots rose by ${this.stats.roundsAfterHeal} rounds after the faults stopped (at most ${roundsMax})${this.core ? ` (persistent cut: ${c.postHeal})` : ''}`,
      );
    // Once the faults stop, the cuts kept after the heal leave a connected
    // majority: one election, maybe two (a node restarting at the heal), and the
    // leader stays (issue 16: bridges and one-way links must not cause churn).
    if (this.stats.leadershipsAfterHeal > leadershipsMax)
      fail(
        'no leader churn',
        `${this.stats.leadershipsAfterHeal} leaderships won after the faults stopped (at most ${leadershipsMax})${this.core ? ` (persistent cut: ${c.postHeal})` : ''}`,
      );
    const cuts = this.core
      ? ` (persistent cut: ${this.cfg.postHeal}, connected majority {${[...this.core].join(',')}})`
      : '';
    // Liveness: once faults stopped, every request completed within the bound.
    const bound = this.liveBound();
    const walk = bound > c.liveBound ? ` + ${bound - c.liveBound} for servers gone` : '';
    for (const cl of this.clients.values()) {
      if (cl.cur)
        fail(
          'liveness',
          `client ${cl.cid} request ${JSON.stringify(cl.cur.op)} still pending ${this.now - Math.max(cl.cur.callTick, c.faultSteps)} ticks after the faults stopped (bound ${c.liveBound}${walk})${cuts}`,
        );
      if (cl.maxLiveLatency > bound)
        fail(
          'liveness',
          `client ${cl.cid}: a request took ${cl.maxLiveLatency} ticks after the faults stopped (bound ${c.liveBound}${walk})${cuts}`,
        );
    }
    // Convergence: every node is up and has applied the same prefix; every node
    // of the connected majority votes. Under a persistent cut, a node that
    // cannot exchange messages with the connected majority cannot learn: only
    // nodes with two-way contact to it must converge.
    let max = 0;
    for (const n of this.nodes.values()) max = Math.max(max, n.replica?.applied ?? 0);
    // An old datagram (a client request) may arrive during the drain and have a
    // slot chosen just before the end: every node must have applied every slot
    // chosen at least `settle` ticks before the end (a heartbeat, a catch-up
    // round trip, retransmissions), not the very last one.
    const settle = 2 * c.timing.electionTicks + 2 * c.timing.retransmitMaxTicks;
    let target = 0;
    for (const [slot, at] of this.choiceAt)
      if (at <= this.now - settle && slot > target) target = slot;
    // Membership mode: the members of the newest configuration must converge
    // (removed nodes and spares never added get nothing); a lost disk stays lost,
    // a removed node that left is gone.
    const members = this.cfg.membership
      ? new Set(this.oracle.newestConfig.members.map((m) => m.sid))
      : null;
    for (const n of this.nodes.values()) {
      if (n.lost || n.gone) continue;
      const r = n.replica;
      if (!r) fail('liveness', `node ${n.sid} is down at the end`);
      if (this.mustConverge && !this.mustConverge.has(n.sid)) continue;
      if (members && !members.has(n.sid)) continue;
      // A node rejoining after a lost disk needs answers from a majority of
      // voters (Paxos Made Live): only demanded when it has two-way contact
      // with that many others.
      if (!r.voter && this.twoWayPeers(n.sid) >= this.quorum)
        fail(
          'liveness',
          `node ${n.sid} never rejoined as a voter after ${this.outside.has(n.sid) ? 'joining with an empty disk' : 'losing its disk'}${cuts}`,
        );
      if (r.applied < target || r.chosenThrough < target)
        fail(
          'liveness',
          `node ${n.sid} (${r.voter ? 'voter' : 'non-voter'}) applied ${r.applied} (chosen ${r.chosenThrough}), but slot ${target} was chosen more than ${settle} ticks before the end (others reached ${max}, last choice at step ${this.lastChoiceAt})${cuts}`,
        );
      // Gated messages with no sync running to release them would wait forever.
      if (n.pipeline.length > 0 && !n.sync)
        fail(
          'driver',
          `node ${n.sid} has ${n.pipeline.length} turns waiting for a sync that never runs`,
        );
    }
    this.checkDivergenceFound();
    // State = replay of the chosen log, for every node and every snapshot.
    const bySlot = new Map<number, SimNode[]>();
    for (const n of this.nodes.values()) {
      if (n.lost || n.gone) continue;
      const s = n.replica!.applied;
      let l = bySlot.get(s);
      if (!l) bySlot.set(s, (l = []));
      l.push(n);
    }
    const through = Math.max(max, ...this.oracle.snapshots.keys());
    const replayed = this.oracle.replay(through, (slot, sm) => {
      const nodes = bySlot.get(slot);
      const snap = this.oracle.snapshots.get(slot);
      if (!nodes && !snap) return;
      const bytes = sm.snapshot();
      if (!this.oracle.compareStates) return; // a divergence was injected
      for (const n of nodes ?? [])
        if (!bytesEqual(n.sm!.snapshot(), bytes))
          fail(
            'state = replay of the log',
            `node ${n.sid} state at slot ${slot} differs from a replay of the chosen log`,
          );
      if (snap && !bytesEqual(snap, bytes))
        fail('state = replay of the log', `the snapshot of slot ${slot} differs from a replay`);
    });
    this.stats.sessionsEvicted = replayed.nextSessionId - 1 - replayed.sessions.size;
    this.stats.clusterLimits = replayed.limits;
    if (this.wantLin) {
      const lin = checkLinearizable(this.history);
      if (!lin.ok) {
        const w = this.logWitness();
        fail(
          lin.timedOut ? 'linearizability (inconclusive)' : 'linearizability',
          `${lin.message}\n${w === null ? 'NOTE: the chosen log order IS a valid linearization of this history (every op took effect inside its call/return interval with the answer the client got): suspect the checker' : `the chosen log order is no witness either: ${w}`}`,
        );
      }
    }
  }
}

export function runSimulation(seed: number, opts: SimRunOptions = {}): SimResult {
  return new Simulation(seed, opts).run();
}

export { describeConfig };
