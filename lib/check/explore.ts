/**
 * Bounded exhaustive explorer (a small model checker) for the smallest
 * configurations: 3 (up to 7) real `Replica` objects, 1-2 client commands, and
 * an adversary that chooses every step: which message is delivered next (any
 * order), which is dropped, which old message is delivered again, which node's
 * clock ticks, when a node's disk syncs, when a node crashes, either by a
 * process kill (every written record survives, unsynced ones too) or by a power
 * loss (only synced records survive), and, within a budget, when the operator
 * asks a leader to hand leadership to a peer (transfer-leader).
 *
 * The driver obeys the one contract of lib/core/types.ts, as the daemon does:
 * records are written at once; an `Outbound` with sync = true waits until every
 * record of a `mustSync` turn up to its own has been synced (also when it is
 * addressed to the node itself); other messages leave at once. A sync is an
 * explicit event, so a crash may come before or after it.
 *
 * A restart replays the written records into a fresh Replica; by default it
 * then syncs them (the daemon fsyncs replayed segments on start).
 *
 * States are never cloned: the core has no copy operation, so a state is
 * rebuilt by replaying its event path from scratch (the core is deterministic:
 * same path, same state). Depth-first search; a SHA-1 digest of each state
 * (the whole replica, with tick times taken relative to its clock, plus disks,
 * network and oracle) prunes revisits: a state is explored again only when
 * reached with more depth left, or with a sleep set that is not a superset of
 * the one it was explored with. Sleep sets (Godefroid) skip the second order
 * of two independent events (different nodes, different budgets).
 *
 * Reductions, each a choice of the adversary given up to bound the search
 * (all documented at their code): a heartbeat still in flight is replaced by a
 * newer one on the same link (the old one can still come back as a
 * re-delivery); a message never delivered is a drop (explicit drops only matter
 * with the quiescent tick policy); a crash is followed by an immediate restart
 * (messages sent to a node that is down are lost: the same as not delivering
 * them); client commands are submitted only to a node that believes it leads.
 * Two kinds of states start the search (the warm-up): a connected cluster
 * without a leader, or an elected leader known to all.
 *
 * Invariants, checked after every event:
 * - agreement: no two replicas apply, or mark chosen, different values at one slot
 *   (over all incarnations of every node);
 * - PMS P2b: once a value is chosen at ballot c, every accept sent at a higher
 *   ballot for that slot carries it;
 * - a value chosen in the oracle's sense (a majority sent `accepted` for one
 *   (slot, ballot)) is the only value ever applied or marked chosen at that slot;
 * - one value per (slot, ballot) among all accepts ever sent (proposer side,
 *   across restarts);
 * - a read-index read answers from a state that holds every write a leader
 *   answered before the read began;
 * - `Replica.checkInvariants()` of every replica.
 */
import { createHash } from 'node:crypto';
import { formatBallot } from '../core/ballot';
import { Prng } from '../core/prng';
import { Replica, type Mutation } from '../core/replica';
import type {
  Cmd,
  CmdResult,
  DurableRecord,
  Msg,
  Outbound,
  StateMachine,
  Value,
} from '../core/types';
import { valueKey } from '../sim/oracle';

// ======================= options =======================

export interface ExploreTiming {
  heartbeatTicks: number;
  electionTicks: number;
  retransmitTicks: number;
  windowSlots: number;
}

/** Per-path limits on the adversary's costly choices (they bound the search). */
export interface ExploreBudgets {
  /** Ticks per node after the warm-up. */
  ticksPerNode: number;
  /** Crashes (kill or power loss) per path. */
  crashes: number;
  /** Re-deliveries of messages sent earlier per path. */
  dups: number;
  /** Explicit drops per path (only needed when ticks wait for quiescence). */
  drops: number;
  /** Times each command may be submitted (to a leader) per path: client retries. */
  submitsPerCmd: number;
  /** Linearizable reads (read index) submitted to a leader per path. */
  reads?: number;
  /**
   * Operator hand-offs per path (transfer-leader, a graceful stop): a leader is
   * asked to hand leadership to a peer it may hand it to (a two-way voter).
   */
  transfers?: number;
}

export interface ExploreOptions {
  /** Cluster size (3 by default; the explorer is meant for the smallest configurations). */
  nodes: number;
  /** Client commands (1 or 2). */
  commands: number;
  timing: ExploreTiming;
  budgets: ExploreBudgets;
  /** Depth bound: events after the warm-up. */
  depth: number;
  /**
   * 'any': a tick may come at any point (capped per node); 'quiescent': only when
   * no message is in flight (a partial-order reduction: every in-flight message
   * is delivered or dropped before time moves).
   */
  tickPolicy: 'any' | 'quiescent';
  /**
   * Deterministic start state: 'none' (fresh nodes), 'connected' (heartbeats
   * exchanged until every node has two-way contact with all, no campaign yet),
   * 'leader' (until a leader is elected and known by all, quiet network).
   */
  warmup: 'none' | 'connected' | 'leader';
  /** What a state hash covers: the whole replica ('full'), or only its observable state. */
  hash: 'full' | 'observable' | 'none';
  mutations: readonly Mutation[];
  /**
   * Partial-order reduction by sleep sets: events at different nodes commute, so
   * of two independent events only one order is explored.
   */
  sleepSets: boolean;
  /**
   * A restart syncs the replayed records before anything is sent (the daemon's
   * rule). Off: they stay unsynced, a power loss after the restart may still
   * take them, and sync = true messages wait for the next sync event.
   */
  syncOnOpen: boolean;
  /**
   * Break the driver on purpose (tests only): 'release-before-sync' sends
   * sync = true messages at once, as a daemon that acknowledges before its
   * fdatasync would. Only a power loss can expose it.
   */
  sabotage?: 'release-before-sync';
  /** Stop after expanding this many states (result.complete = false). */
  maxStates: number;
  /** Stop after this much wall time, ms (result.complete = false). */
  timeLimitMs: number;
}

export const DEFAULT_OPTIONS: ExploreOptions = {
  nodes: 3,
  commands: 1,
  timing: { heartbeatTicks: 2, electionTicks: 3, retransmitTicks: 2, windowSlots: 1 },
  budgets: { ticksPerNode: 2, crashes: 1, dups: 1, drops: 0, submitsPerCmd: 2 },
  depth: 12,
  tickPolicy: 'any',
  warmup: 'connected',
  hash: 'full',
  mutations: [],
  sleepSets: true,
  syncOnOpen: true,
  maxStates: 1_000_000,
  timeLimitMs: 60_000,
};

export function withDefaults(o: Partial<ExploreOptions> = {}): ExploreOptions {
  return {
    ...DEFAULT_OPTIONS,
    ...o,
    timing: { ...DEFAULT_OPTIONS.timing, ...o.timing },
    budgets: { ...DEFAULT_OPTIONS.budgets, ...o.budgets },
  };
}

// ======================= events =======================

/** One adversary choice. Message ids are assigned in send order, so a path replays exactly. */
export type Event =
  | { k: 'deliver'; id: number }
  | { k: 'drop'; id: number }
  | { k: 'dup'; id: number }
  | { k: 'tick'; n: number }
  | { k: 'sync'; n: number }
  | { k: 'submit'; c: number; n: number }
  /** A read-index read at a node that believes it leads. */
  | { k: 'read'; n: number }
  /** The operator asks leader n to hand leadership to peer `to` (Replica.transferLeadership). */
  | { k: 'transfer'; n: number; to: number }
  /** Process kill: written records survive (the page cache), held messages do not. */
  | { k: 'kill'; n: number }
  /** Power loss: only records synced so far survive. */
  | { k: 'power'; n: number };

export interface Violation {
  rule: string;
  detail: string;
}

class Packet {
  private k: string | null = null;
  constructor(
    readonly id: number,
    readonly from: number,
    readonly to: number,
    readonly msg: Msg,
  ) {}
  /** Destination and content: two packets with one key are interchangeable (made lazily: replays never ask). */
  get key(): string {
    if (this.k === null) this.k = `${this.to}<${this.from}:${msgKey(this.msg)}`;
    return this.k;
  }
}

/** A tiny deterministic state machine: it only remembers which commands it applied. */
class AppliedSet implements StateMachine {
  private readonly done = new Map<string, CmdResult>();
  apply(slot: number, cmds: Value): { results: CmdResult[]; lines: string[] } {
    const results: CmdResult[] = [];
    for (const c of cmds) {
      const r: CmdResult = { ok: true, value: `${slot}` };
      if (!this.done.has(`${c.cid}:${c.seq}`)) this.done.set(`${c.cid}:${c.seq}`, r);
      results.push(r);
    }
    return { results, lines: [`${slot} ${valueKey(cmds)}`] };
  }
  cached(cid: number, seq: number): CmdResult | undefined {
    return this.done.get(`${cid}:${seq}`);
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.done.keys()]));
  }
  restore(data: Uint8Array): void {
    this.done.clear();
    for (const k of JSON.parse(new TextDecoder().decode(data)) as string[])
      this.done.set(k, { ok: true });
  }
}

interface Node {
  sid: number;
  replica: Replica;
  /** Records written to the file, in order (the page cache holds the unsynced tail). */
  written: DurableRecord[];
  /** Records [0, synced) are durable. */
  synced: number;
  /** mustSync turns written so far / covered by a completed sync (the daemon's generations). */
  writeGen: number;
  syncedGen: number;
  /** sync = true messages waiting for the sync of generation `gen`. */
  held: { gen: number; out: Outbound }[];
  incarnation: number;
  ticks: number;
  /** Id of the first packet sent after this process life began (later ids postdate it). */
  lifeStart: number;
  /**
   * Leading heartbeats sent after this life began and delivered to it, with hand-offs
   * in the budget only: `leader:ballot` -> the earliest one's tick (leader's clock).
   */
  leadersHeard: Map<string, number>;
  /** The hand-off packet delivered since this node's last tick (it acts on it at the tick). */
  handoffIn: Packet | null;
}

function command(c: number): Cmd {
  return { cid: c + 1, seq: 1, op: new Uint8Array([c + 1]) };
}

// ======================= serialisation (hash keys, messages) =======================

/** Replica fields that hold absolute tick times: hashed relative to `now` (behaviour only depends on differences). */
const TIME_FIELDS = new Set([
  'at',
  'startedAt',
  'leaderSeenAt',
  'leaderLostAt',
  'lastNoopAt',
  'askedAt',
  'lastSnapshotAskedAt',
]);
/** Fields that never change behaviour (configuration, counters). */
const SKIP_FIELDS = new Set([
  'o',
  'sids',
  'sid',
  'quorum',
  'mutations',
  'keepSlots',
  'slotsAheadMax',
  'stats',
  'name',
  'baseTicks',
  'maxTicks',
]);
/** Differences of times beyond this are all alike (every timeout here is shorter). */
const TIME_CAP = 64;

/** A canonical string of a value (Maps in insertion order: iteration order decides behaviour). */
function ser(x: unknown, now: number | null, field = ''): string {
  if (x === null || x === undefined) return '_';
  switch (typeof x) {
    case 'number':
      if (now !== null && TIME_FIELDS.has(field)) return `~${Math.min(TIME_CAP, now - x)}`;
      return Number.isFinite(x) ? `${x}` : x > 0 ? 'I' : '-I';
    case 'string':
      return JSON.stringify(x);
    case 'boolean':
      return x ? 'T' : 'F';
    case 'function':
      return '';
  }
  if (x instanceof Uint8Array)
    return `b${Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('hex')}`;
  let s: string;
  if (Array.isArray(x)) {
    s = '[';
    for (const v of x) s += `${ser(v, now, field)},`;
    return `${s}]`;
  }
  if (x instanceof Map) {
    s = 'M{';
    // Values of lastHeard are tick times.
    const vf = field === 'lastHeard' ? 'at' : '';
    for (const [k, v] of x) s += `${ser(k, now)}:${ser(v, now, vf)},`;
    return `${s}}`;
  }
  if (x instanceof Set) {
    s = 'S{';
    for (const v of x) s += `${ser(v, now)},`;
    return `${s}}`;
  }
  s = '{';
  for (const k of Object.keys(x as object)) {
    if (SKIP_FIELDS.has(k) || k === 'now') continue;
    s += `${k}=${ser((x as Record<string, unknown>)[k], now, k)};`;
  }
  return `${s}}`;
}

function serialize(x: unknown, now: number | null = null): string {
  return ser(x, now);
}

/** Identity of a message's content; the common types without the generic walker (hot path). */
function msgKey(m: Msg): string {
  switch (m.t) {
    case 'prepare':
      return `P${m.ballot},${m.from}`;
    case 'promise':
      return `R${m.ballot},${m.from},${m.lo},${m.hi},${m.base},${m.entries.map(([s, b, v]) => `${s}@${b}=${valueKey(v)}`).join(' ')}`;
    case 'accept':
      return `A${m.ballot},${m.commit},${m.entries.map(([s, v]) => `${s}=${valueKey(v)}`).join(' ')}`;
    case 'accepted':
      return `a${m.ballot},${m.slots.join('.')}`;
    case 'nack':
      return `N${m.ballot},${m.promised}`;
    case 'commit':
      return `C${m.ballot},${m.through}`;
    case 'heartbeat':
      return `H${m.promised},${m.leading ? 1 : 0},${m.chosen},${m.next},${m.eligible ? 1 : 0},${m.voter ? 1 : 0},${m.heard.join('.')}`;
    default:
      return serialize(m);
  }
}

function recordKey(r: DurableRecord): string {
  switch (r.t) {
    case 'promise':
      return `p${r.ballot}`;
    case 'accept':
      return `a${r.slot}@${r.ballot}=${valueKey(r.value)}`;
    case 'chosen':
      return `c${r.slot}@${r.ballot}`;
    case 'learn':
      return `l${r.slot}=${valueKey(r.value)}`;
    case 'voter':
      return 'v';
    default:
      return serialize(r);
  }
}

/** A short, readable description of a message (counterexample traces). */
export function describeMsg(m: Msg): string {
  switch (m.t) {
    case 'prepare':
      return `prepare ${formatBallot(m.ballot)} from ${m.from}`;
    case 'promise':
      return `promise ${formatBallot(m.ballot)} [${m.entries.map(([s, b, v]) => `${s}@${b < 0 ? 'chosen' : formatBallot(b)}=${valueKey(v)}`).join(' ')}]`;
    case 'accept':
      return `accept ${formatBallot(m.ballot)} [${m.entries.map(([s, v]) => `${s}=${valueKey(v)}`).join(' ')}] commit ${m.commit}`;
    case 'accepted':
      return `accepted ${formatBallot(m.ballot)} slots ${m.slots.join(',')}`;
    case 'nack':
      return `nack ${formatBallot(m.ballot)} promised ${formatBallot(m.promised)}`;
    case 'commit':
      return `commit ${formatBallot(m.ballot)} through ${m.through}`;
    case 'heartbeat':
      return `heartbeat promised ${formatBallot(m.promised)}${m.leading ? ' leading' : ''} chosen ${m.chosen} heard ${m.heard.join(',')}${m.eligible ? ' eligible' : ''}`;
    case 'catchupResp':
      return `catchupResp from ${m.from} [${m.entries.map(valueKey).join(' ')}]`;
    default:
      return `${m.t} ${serialize(m)}`;
  }
}

// ======================= the world =======================

/** The cluster, the network and the oracle; advanced one event at a time. */
export class World {
  readonly nodes: Node[] = [];
  /** Sent, not yet delivered or dropped, by id. */
  readonly pending = new Map<number, Packet>();
  /** Every packet that ever left a node (for re-delivery), by id. */
  readonly sent: Packet[] = [];
  private nextId = 1;
  dups = 0;
  drops = 0;
  crashes = 0;
  readonly submits: number[];
  readsSubmitted = 0;
  transfers = 0;
  /** Highest slot with commands applied (and so answered) by a leader. */
  private answeredThrough = 0;
  /** Read id -> answeredThrough when it was submitted. */
  private readonly readNeed = new Map<number, number>();
  /** Commands submitted to one leadership (sid, incarnation, ballot): a retry goes elsewhere. */
  private readonly submittedTo = new Set<string>();
  // ---- oracle ----
  /** (slot, ballot) -> value key of the accepts sent for it. */
  private readonly acceptValue = new Map<string, string>();
  /** (slot, ballot) -> SIDs that sent `accepted`. */
  private readonly acceptedBy = new Map<string, Set<number>>();
  /** slot -> [ballot, value key] of every proposal (accept) seen. */
  private readonly proposals = new Map<number, [number, string][]>();
  /** slot -> lowest ballot at which its value was chosen. */
  private readonly chosenAt = new Map<number, number>();
  /** slot -> value chosen (majority of `accepted` at one ballot). */
  readonly chosen = new Map<number, string>();
  /** slot -> value applied (by any node, any incarnation). */
  readonly applied = new Map<number, string>();
  /** slot -> value marked chosen in some replica's log. */
  readonly marked = new Map<number, string>();
  /** Hand-off packet id -> the tick (its leader's clock) at which that hand-off started. */
  private readonly handoffStart = new Map<number, number>();
  /** Ballot -> (sid, incarnation) that sent accepts at it (for the ballot-reuse coverage). */
  private readonly proposedBy = new Map<number, string>();
  /**
   * Coverage (never a violation by itself): a power loss took the promise of the
   * ballot its node was leading at (the 9.5 precondition), and a node campaigned
   * again at a ballot at which an earlier life of it had proposed.
   */
  lostLeaderPromise = false;
  ballotReused = false;
  /** Hand-off campaigns started (each checked for hand-off obedience). */
  handoffCampaigns = 0;
  private maxSlot = 0;
  violation: Violation | null = null;
  /** Event descriptions, when tracing. */
  trace: string[] | null = null;

  constructor(readonly opts: ExploreOptions) {
    this.submits = new Array<number>(opts.commands).fill(0);
    const sids = Array.from({ length: opts.nodes }, (_, i) => i);
    for (const sid of sids) {
      const node: Node = {
        sid,
        replica: null as unknown as Replica,
        written: [],
        synced: 0,
        writeGen: 0,
        syncedGen: 0,
        held: [],
        incarnation: 0,
        ticks: 0,
        lifeStart: 0,
        leadersHeard: new Map(),
        handoffIn: null,
      };
      node.replica = this.makeReplica(node);
      node.replica.bootstrap();
      this.nodes.push(node);
    }
    // The bootstrap `voter` record is durable before the cluster starts.
    for (const n of this.nodes) {
      this.turns(n);
      this.syncDisk(n);
    }
  }

  private makeReplica(n: Node): Replica {
    const t = this.opts.timing;
    return new Replica({
      sid: n.sid,
      sids: Array.from({ length: this.opts.nodes }, (_, i) => i),
      prng: new Prng(1 + n.sid + 1000 * n.incarnation),
      sm: new AppliedSet(),
      heartbeatTicks: t.heartbeatTicks,
      electionTicks: t.electionTicks,
      retransmitTicks: t.retransmitTicks,
      retransmitMaxTicks: 2 * t.retransmitTicks,
      windowSlots: t.windowSlots,
      batchBytesMax: 60_000,
      pendingMax: 16,
      catchupBytesMax: 60_000,
      snapshotEverySlots: 1_000_000,
      mutations: this.opts.mutations,
    });
  }

  // ---------------- events ----------------

  /** Every event the adversary may choose now, in a deterministic order. */
  enabled(): Event[] {
    const b = this.opts.budgets;
    const out: Event[] = [];
    const seen = new Set<string>();
    for (const p of this.pending.values()) {
      if (seen.has(p.key)) continue;
      seen.add(p.key);
      out.push({ k: 'deliver', id: p.id });
    }
    for (const n of this.nodes) if (n.synced < n.written.length) out.push({ k: 'sync', n: n.sid });
    for (let c = 0; c < this.opts.commands; c++) {
      if (this.submits[c] >= b.submitsPerCmd) continue;
      for (const n of this.nodes)
        if (n.replica.role === 'leader' && !this.submittedTo.has(this.leadership(n, c)))
          out.push({ k: 'submit', c, n: n.sid });
    }
    if (this.readsSubmitted < (b.reads ?? 0))
      for (const n of this.nodes)
        if (n.replica.role === 'leader') out.push({ k: 'read', n: n.sid });
    if (this.transfers < (b.transfers ?? 0))
      for (const n of this.nodes)
        for (const to of this.handoffTargets(n)) out.push({ k: 'transfer', n: n.sid, to });
    if (this.opts.tickPolicy === 'any' || this.pending.size === 0)
      for (const n of this.nodes) if (n.ticks < b.ticksPerNode) out.push({ k: 'tick', n: n.sid });
    if (this.drops < b.drops) {
      seen.clear();
      for (const p of this.pending.values()) {
        if (seen.has(p.key)) continue;
        seen.add(p.key);
        out.push({ k: 'drop', id: p.id });
      }
    }
    if (this.dups < b.dups) {
      seen.clear();
      for (const p of this.sent) {
        if (seen.has(p.key) || p.to === p.from) continue;
        seen.add(p.key);
        out.push({ k: 'dup', id: p.id });
      }
    }
    if (this.crashes < b.crashes)
      for (const n of this.nodes) {
        out.push({ k: 'kill', n: n.sid });
        // With nothing unsynced a power loss is a kill.
        if (n.synced < n.written.length) out.push({ k: 'power', n: n.sid });
      }
    return out;
  }

  /** Peers a leader would accept to hand leadership to now (transferLeadership's own test). */
  private handoffTargets(n: Node): number[] {
    const r = n.replica;
    if (r.role !== 'leader') return [];
    const rr = r as unknown as { twoWay(s: number): boolean; peerVotes(s: number): boolean };
    return this.nodes
      .map((x) => x.sid)
      .filter((s) => s !== n.sid && rr.twoWay(s) && rr.peerVotes(s));
  }

  private leadership(n: Node, c: number): string {
    return `${c}@${n.sid}.${n.incarnation}.${n.replica.ballot}`;
  }

  /** Apply one event, then check every invariant (sets `violation`). */
  apply(e: Event): void {
    if (this.trace) this.trace.push(this.describe(e));
    switch (e.k) {
      case 'deliver': {
        const p = this.pending.get(e.id);
        if (!p) throw new Error(`explore: packet ${e.id} is not in flight`);
        this.pending.delete(e.id);
        this.deliver(p);
        break;
      }
      case 'drop':
        this.pending.delete(e.id);
        this.drops++;
        break;
      case 'dup': {
        const p = this.sent[this.sentIndex(e.id)];
        this.dups++;
        this.deliver(p);
        break;
      }
      case 'tick': {
        const n = this.nodes[e.n];
        n.ticks++;
        const before = n.replica.campaign;
        n.replica.tick();
        // A hand-off is acted on at the target's next tick (Replica.onHandoff).
        const p1 = n.replica.campaign;
        if (n.handoffIn && p1 !== null && p1 !== before && p1.handoff)
          this.checkHandoff(n, n.handoffIn);
        n.handoffIn = null;
        this.turns(n);
        break;
      }
      case 'sync': {
        const n = this.nodes[e.n];
        this.syncDisk(n);
        this.turns(n);
        break;
      }
      case 'submit': {
        const n = this.nodes[e.n];
        this.submits[e.c]++;
        this.submittedTo.add(this.leadership(n, e.c));
        n.replica.submit(command(e.c));
        this.turns(n);
        break;
      }
      case 'read': {
        const n = this.nodes[e.n];
        const id = ++this.readsSubmitted;
        // Every write answered before the read began must be applied where it is answered.
        this.readNeed.set(id, this.answeredThrough);
        n.replica.submitRead(id);
        this.turns(n);
        break;
      }
      case 'transfer': {
        const n = this.nodes[e.n];
        this.transfers++;
        const why = n.replica.transferLeadership(e.to);
        if (why !== null) throw new Error(`explore: transfer ${e.n} -> ${e.to} refused: ${why}`);
        this.turns(n);
        break;
      }
      case 'kill':
      case 'power': {
        const n = this.nodes[e.n];
        this.crashes++;
        if (e.k === 'power') {
          const b = n.replica.role === 'leader' ? n.replica.ballot : -1;
          if (n.written.slice(n.synced).some((r) => r.t === 'promise' && r.ballot === b))
            this.lostLeaderPromise = true;
          n.written = n.written.slice(0, n.synced);
        }
        this.restart(n);
        break;
      }
    }
    this.check();
  }

  private sentIndex(id: number): number {
    // Ids grow with `sent`: binary search.
    let lo = 0;
    let hi = this.sent.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sent[mid].id < id) lo = mid + 1;
      else hi = mid;
    }
    if (this.sent[lo]?.id !== id) throw new Error(`explore: packet ${id} was never sent`);
    return lo;
  }

  private stepInto(n: Node, from: number, msg: Msg): void {
    n.replica.step(from, msg);
    this.turns(n);
  }

  /** A packet reaches its destination (first delivery or a re-delivery). */
  private deliver(p: Packet): void {
    const n = this.nodes[p.to];
    const m = p.msg;
    if (m.t === 'heartbeat' && m.leading && p.id >= n.lifeStart && this.opts.budgets.transfers) {
      const k = `${p.from}:${m.promised}`;
      n.leadersHeard.set(k, Math.min(m.tick, n.leadersHeard.get(k) ?? Infinity));
    }
    this.stepInto(n, p.from, m);
    // The copy the replica will act on (the newest valid one), as it holds it.
    const pending = (n.replica as unknown as { handoffPending: { m: Msg } | null }).handoffPending;
    if (m.t === 'handoff' && pending?.m === m) n.handoffIn = p;
  }

  /**
   * Hand-off obedience: a node campaigns on a hand-off only if its leader, after
   * this node's process life began, sent it a heartbeat of that leadership no later
   * than an election timeout after the hand-off started (the leader's clock). An
   * old copy, or an accept alone, must not make a node depose a leader that gave
   * the hand-off up (issue 9 H). Not agreement, but a rule the core states.
   */
  private checkHandoff(n: Node, p: Packet): void {
    this.handoffCampaigns++;
    const m = p.msg as Extract<Msg, { t: 'handoff' }>;
    const started = this.handoffStart.get(p.id)!;
    const limit = started + this.opts.timing.electionTicks;
    if (!((n.leadersHeard.get(`${p.from}:${m.ballot}`) ?? Infinity) <= limit))
      this.fail(
        'hand-off obedience',
        `node ${n.sid} campaigned on a hand-off of ${p.from} (ballot ${formatBallot(m.ballot)}, started at its tick ${started}) without a heartbeat of it from this life by tick ${limit}`,
      );
  }

  /** Restart after a crash from what the disk holds; nothing held in memory survives. */
  private restart(n: Node): void {
    n.incarnation++;
    n.lifeStart = this.nextId;
    n.leadersHeard = new Map();
    n.handoffIn = null;
    n.held = [];
    n.replica = this.makeReplica(n);
    n.replica.restore(null, [...n.written]);
    // Replayed records that were never synced are not durable yet (a power loss
    // may still take them): a message vouching for them waits for a sync, which
    // is the driver contract applied to the records of the previous incarnation.
    n.syncedGen = 0;
    n.writeGen = n.synced < n.written.length ? 1 : 0;
    // The daemon fsyncs the replayed segments on start, before anything is sent
    // (README, durability); without that, the next explicit sync does it.
    if (this.opts.syncOnOpen) this.syncDisk(n);
    this.turns(n);
  }

  private syncDisk(n: Node): void {
    n.synced = n.written.length;
    n.syncedGen = n.writeGen;
    const release = n.held;
    n.held = [];
    const self: Msg[] = [];
    for (const h of release) this.release(n, h.out, self);
    for (const m of self) n.replica.step(n.sid, m);
  }

  /** Drain the replica's output (ready() until empty), following the driver contract. */
  private turns(n: Node): void {
    for (let round = 0; round < 64; round++) {
      const rd = n.replica.ready();
      if (rd.snapshot)
        throw new Error('explore: snapshots are not modelled (snapshotEverySlots is huge)');
      if (rd.persist.length > 0) {
        n.written.push(...rd.persist);
        if (rd.mustSync) n.writeGen++;
      }
      for (const a of rd.applied) {
        this.noteApplied(n, a.slot, valueKey(a.cmds));
        // A leader answers the clients of the commands it applies (linearizability
        // only asks a read to see writes answered before it began).
        if (n.replica.role === 'leader' && a.cmds.length > 0)
          this.answeredThrough = Math.max(this.answeredThrough, a.slot);
      }
      for (const id of rd.reads) {
        const need = this.readNeed.get(id) ?? 0;
        if (n.replica.applied < need)
          this.fail(
            'linearizable reads',
            `node ${n.sid} answered read ${id} at applied ${n.replica.applied}, but slot ${need} was answered before the read began`,
          );
      }
      const self: Msg[] = [];
      for (const out of rd.messages) {
        if (out.sync && n.syncedGen < n.writeGen && this.opts.sabotage !== 'release-before-sync')
          n.held.push({ gen: n.writeGen, out });
        else this.release(n, out, self);
      }
      if (self.length === 0) return;
      for (const m of self) n.replica.step(n.sid, m);
    }
    throw new Error(`explore: node ${n.sid} keeps sending itself messages`);
  }

  /** A message leaves node n: to itself it is stepped back in, to a peer it enters the network. */
  private release(n: Node, out: Outbound, self: Msg[]): void {
    this.observe(n.sid, out.msg);
    if (out.to === n.sid) {
      self.push(out.msg);
      return;
    }
    const p = new Packet(this.nextId++, n.sid, out.to, out.msg);
    if (out.msg.t === 'handoff') {
      // The hand-off this copy belongs to (read from the leader: the copy's own
      // fields are what a broken leader may get wrong).
      const h = (n.replica as unknown as { handoff: { startedAt: number } | null }).handoff;
      this.handoffStart.set(p.id, h ? h.startedAt : -Infinity);
    }
    // A newer heartbeat on the same link supersedes one still in flight (the old one
    // counts as lost; it can still come back as a re-delivery).
    if (out.msg.t === 'heartbeat')
      for (const [id, q] of this.pending)
        if (q.msg.t === 'heartbeat' && q.from === n.sid && q.to === out.to) this.pending.delete(id);
    this.pending.set(p.id, p);
    this.sent.push(p);
  }

  // ---------------- oracle ----------------

  private fail(rule: string, detail: string): void {
    if (!this.violation) this.violation = { rule, detail };
  }

  /** Every message that leaves a node: accepts fix (slot, ballot) values, accepteds count votes. */
  private observe(from: number, m: Msg): void {
    const life = `${from}.${this.nodes[from].incarnation}`;
    if (m.t === 'prepare') {
      const by = this.proposedBy.get(m.ballot);
      if (by !== undefined && by !== life) this.ballotReused = true;
    } else if (m.t === 'accept') {
      if (!this.proposedBy.has(m.ballot)) this.proposedBy.set(m.ballot, life);
      for (const [slot, value] of m.entries) {
        const k = `${slot}@${m.ballot}`;
        const v = valueKey(value);
        const prev = this.acceptValue.get(k);
        if (prev === undefined) {
          this.acceptValue.set(k, v);
          let list = this.proposals.get(slot);
          if (!list) this.proposals.set(slot, (list = []));
          list.push([m.ballot, v]);
          this.checkP2b(slot);
        } else if (prev !== v)
          this.fail(
            'one value per (slot, ballot)',
            `slot ${slot} ballot ${formatBallot(m.ballot)}: accepts for ${prev} and ${v}`,
          );
        if (slot > this.maxSlot) this.maxSlot = slot;
      }
    } else if (m.t === 'accepted') {
      for (const slot of m.slots) {
        const k = `${slot}@${m.ballot}`;
        let by = this.acceptedBy.get(k);
        if (!by) this.acceptedBy.set(k, (by = new Set()));
        by.add(from);
        // The oracle's majority is the real one, whatever quorum the replicas use.
        if (by.size < Math.floor(this.opts.nodes / 2) + 1) continue;
        const v = this.acceptValue.get(k);
        if (v === undefined) {
          this.fail(
            'accepted only what was proposed',
            `slot ${slot} ballot ${formatBallot(m.ballot)} accepted without an accept`,
          );
          continue;
        }
        const prev = this.chosen.get(slot);
        const at = this.chosenAt.get(slot);
        if (at === undefined || m.ballot < at) this.chosenAt.set(slot, m.ballot);
        if (prev === undefined) this.chosen.set(slot, v);
        else if (prev !== v)
          this.fail(
            'one value chosen per slot',
            `slot ${slot}: ${prev} chosen, then ${v} at ballot ${formatBallot(m.ballot)}`,
          );
        this.checkP2b(slot);
        const app = this.applied.get(slot);
        if (app !== undefined && app !== v)
          this.fail(
            'only the chosen value is applied',
            `slot ${slot}: ${app} applied, ${v} chosen at ballot ${formatBallot(m.ballot)}`,
          );
      }
    }
  }

  /**
   * PMS P2b: once V is chosen at ballot c, every proposal at a ballot above c is V.
   * It breaks (a proposer that ignored a promised value) before a second value
   * can be chosen, so a counterexample is shorter than one that waits for that.
   */
  private checkP2b(slot: number): void {
    const v = this.chosen.get(slot);
    const c = this.chosenAt.get(slot);
    if (v === undefined || c === undefined) return;
    for (const [b, p] of this.proposals.get(slot) ?? [])
      if (b > c && p !== v)
        this.fail(
          'P2b: proposals above a choice carry its value',
          `slot ${slot}: ${v} chosen at ballot ${formatBallot(c)}, ${p} proposed at ${formatBallot(b)}`,
        );
  }

  private noteApplied(n: Node, slot: number, v: string): void {
    const prev = this.applied.get(slot);
    if (prev === undefined) this.applied.set(slot, v);
    else if (prev !== v)
      this.fail(
        'agreement (applied)',
        `slot ${slot}: node ${n.sid} applied ${v}, another applied ${prev}`,
      );
    const c = this.chosen.get(slot);
    if (c !== undefined && c !== v)
      this.fail(
        'only the chosen value is applied',
        `slot ${slot}: node ${n.sid} applied ${v}, ${c} was chosen`,
      );
  }

  /** Invariants over the whole cluster and each replica's own assertions. */
  check(): void {
    for (const n of this.nodes) {
      try {
        n.replica.checkInvariants();
      } catch (e) {
        this.fail('Replica.checkInvariants', (e as Error).message);
      }
      for (let s = 1; s <= Math.max(this.maxSlot, n.replica.chosenThrough); s++) {
        const e = n.replica.acceptedEntry(s);
        if (!e?.chosen) continue;
        const v = valueKey(e.value);
        const prev = this.marked.get(s);
        if (prev === undefined) this.marked.set(s, v);
        else if (prev !== v)
          this.fail(
            'agreement (marked chosen)',
            `slot ${s}: node ${n.sid} marked ${v} chosen, another marked ${prev}`,
          );
        const c = this.chosen.get(s);
        if (c !== undefined && c !== v)
          this.fail(
            'only the chosen value is marked chosen',
            `slot ${s}: node ${n.sid} marked ${v} chosen, ${c} was chosen`,
          );
        const a = this.applied.get(s);
        if (a !== undefined && a !== v)
          this.fail(
            'agreement (marked chosen)',
            `slot ${s}: node ${n.sid} marked ${v} chosen, ${a} was applied`,
          );
      }
    }
  }

  /** Distinct ballots among all accepts sent. */
  ballotsProposed(): number {
    const ballots = new Set<number>();
    for (const list of this.proposals.values()) for (const [b] of list) ballots.add(b);
    return ballots.size;
  }

  /** Give the adversary its whole budget again (after a warm-up or a random prefix). */
  resetBudgets(): void {
    for (const n of this.nodes) n.ticks = 0;
    this.dups = this.drops = this.crashes = this.readsSubmitted = this.transfers = 0;
    this.submits.fill(0);
  }

  // ---------------- independence (for sleep sets) ----------------

  /**
   * The nodes an event reads or writes, and the budget it draws on. A delivery
   * touches its destination, and for a heartbeat also its sender (a newer
   * heartbeat from the sender supersedes it in flight). With the quiescent tick
   * policy a tick depends on every delivery (it is enabled only when none is left).
   */
  touch(e: Event): Touch {
    switch (e.k) {
      case 'deliver':
      case 'drop':
      case 'dup': {
        const p = e.k === 'dup' ? this.sent[this.sentIndex(e.id)] : this.pending.get(e.id)!;
        const mask = (1 << p.to) | (p.msg.t === 'heartbeat' ? 1 << p.from : 0);
        return { mask, budget: e.k === 'deliver' ? null : e.k };
      }
      case 'tick':
        return {
          mask: this.opts.tickPolicy === 'quiescent' ? -1 : 1 << e.n,
          budget: null,
        };
      case 'sync':
        return { mask: 1 << e.n, budget: null };
      case 'submit':
        return { mask: 1 << e.n, budget: `submit${e.c}` };
      case 'read':
        return { mask: 1 << e.n, budget: 'read' };
      case 'transfer':
        return { mask: 1 << e.n, budget: 'transfer' };
      case 'kill':
      case 'power':
        return { mask: 1 << e.n, budget: 'crash' };
    }
  }

  /** Identity of an event across paths: packets by content, not by id. */
  eventKey(e: Event): string {
    switch (e.k) {
      case 'deliver':
      case 'drop':
        return `${e.k}|${this.pending.get(e.id)!.key}`;
      case 'dup':
        return `dup|${this.sent[this.sentIndex(e.id)].key}`;
      case 'submit':
        return `submit|${e.c}|${e.n}`;
      case 'transfer':
        return `transfer|${e.n}|${e.to}`;
      default:
        return `${e.k}|${e.n}`;
    }
  }

  // ---------------- hashing ----------------

  /** A key of everything that decides what may happen next (see ExploreOptions.hash). */
  stateKey(): string {
    const parts: string[] = [];
    for (const n of this.nodes) {
      const r = n.replica;
      const now = (r as unknown as { now: number }).now;
      if (this.opts.hash === 'full') {
        // The options hold the replica's PRNG and state machine: part of its state.
        const o = (r as unknown as { o: { prng: Prng; sm: AppliedSet } }).o;
        parts.push(serialize(r, now), serialize(o.prng), serialize(o.sm));
      } else {
        const pr = r as unknown as Record<string, unknown>;
        parts.push(
          serialize([
            r.role,
            r.promised,
            r.ballot,
            r.voter,
            r.chosenThrough,
            r.applied,
            r.leader,
            pr.log,
            pr.inflight,
            r.campaign !== null,
            pr.handoffPending,
          ]),
        );
      }
      parts.push(
        `|w${n.written.map(recordKey).join(' ')}|l${[...n.leadersHeard].join(' ')}|o${n.handoffIn?.id ?? ''}s${n.synced}g${n.writeGen - n.syncedGen}h${n.held.map((h) => `${h.out.to}:${msgKey(h.out.msg)}`).join(' ')}t${n.ticks}`,
      );
    }
    parts.push(
      `|p${[...this.pending.values()]
        .map((p) => p.key)
        .sort()
        .join('#')}`,
    );
    if (this.dups < this.opts.budgets.dups)
      parts.push(
        `|d${[...new Set(this.sent.filter((p) => p.to !== p.from).map((p) => p.key))].sort().join('#')}`,
      );
    parts.push(
      `|b${this.dups},${this.drops},${this.crashes},${this.transfers},${this.submits.join(',')}|r${this.answeredThrough}:${[...this.readNeed.values()].join(',')}|s${[...this.submittedTo].sort().join(',')}`,
    );
    // The oracle's sets in a canonical order: who voted first changes nothing.
    const votes = [...this.acceptedBy].map(([k, by]) => `${k}:${[...by].sort().join('.')}`);
    parts.push(`|o${votes.sort().join(' ')}|${serialize([...this.applied].sort())}`);
    return parts.join('');
  }

  // ---------------- descriptions ----------------

  describe(e: Event): string {
    switch (e.k) {
      case 'deliver':
      case 'drop': {
        const p = this.pending.get(e.id);
        return p ? `${e.k} ${p.from}->${p.to} ${describeMsg(p.msg)}` : `${e.k} #${e.id}`;
      }
      case 'dup': {
        const p = this.sent[this.sentIndex(e.id)];
        return `re-deliver ${p.from}->${p.to} ${describeMsg(p.msg)}`;
      }
      case 'submit':
        return `submit command ${e.c + 1} to leader ${e.n}`;
      case 'read':
        return `read at leader ${e.n}`;
      case 'transfer':
        return `operator: leader ${e.n} hands leadership to ${e.to}`;
      case 'kill':
        return `kill ${e.n} (unsynced records survive)`;
      case 'power':
        return `power loss at ${e.n} (${this.nodes[e.n].written.length - this.nodes[e.n].synced} unsynced records lost)`;
      default:
        return `${e.k} ${e.n}`;
    }
  }

  /** One line per node for counterexample reports. */
  summary(): string[] {
    return this.nodes.map((n) => {
      const r = n.replica;
      const slots: string[] = [];
      for (let s = 1; s <= this.maxSlot; s++) {
        const e = r.acceptedEntry(s);
        if (e)
          slots.push(`${s}:${e.chosen ? 'chosen' : formatBallot(e.ballot)}=${valueKey(e.value)}`);
      }
      return `node ${n.sid}: ${r.role} promised ${formatBallot(r.promised)} chosen ${r.chosenThrough} applied ${r.applied} [${slots.join(' ')}] unsynced ${n.written.length - n.synced}`;
    });
  }
}

/** What an event touches: a bit per node, and the per-path budget it uses (if any). */
export interface Touch {
  mask: number;
  budget: string | null;
}

function independent(a: Touch, b: Touch): boolean {
  return (a.mask & b.mask) === 0 && (a.budget === null || a.budget !== b.budget);
}

function subset(a: Set<string>, b: Map<string, Touch>): boolean {
  for (const k of a) if (!b.has(k)) return false;
  return true;
}

function intersect(a: Set<string>, b: Map<string, Touch>): Set<string> {
  const out = new Set<string>();
  for (const k of a) if (b.has(k)) out.add(k);
  return out;
}

// ======================= warm-up =======================

/**
 * Deterministic start: rounds in which every node ticks once, then every message
 * is delivered in send order and every disk synced. The explorer starts where
 * it stops, so its depth is spent on the interesting part.
 */
export function warmupPath(opts: ExploreOptions): Event[] {
  if (opts.warmup === 'none') return [];
  const w = new World({ ...opts, budgets: { ...opts.budgets, ticksPerNode: Infinity } });
  const path: Event[] = [];
  const run = (e: Event): void => {
    path.push(e);
    w.apply(e);
  };
  const quiesce = (): void => {
    for (let guard = 0; guard < 1000; guard++) {
      const first = w.pending.values().next();
      if (!first.done) {
        run({ k: 'deliver', id: first.value.id });
        continue;
      }
      const n = w.nodes.find((x) => x.synced < x.written.length);
      if (!n) return;
      run({ k: 'sync', n: n.sid });
    }
    throw new Error('explore: warm-up does not quiesce');
  };
  for (let round = 0; round < 50; round++) {
    const mark = path.length;
    for (const n of w.nodes) run({ k: 'tick', n: n.sid });
    quiesce();
    const roles = w.nodes.map((n) => n.replica.role);
    if (opts.warmup === 'connected') {
      // Stop before the round in which someone campaigns.
      if (roles.some((r) => r !== 'follower')) return path.slice(0, mark);
    } else if (roles.includes('leader')) {
      const l = w.nodes.find((n) => n.replica.role === 'leader')!;
      if (w.nodes.every((n) => n.replica.leader === l.sid)) return path;
    }
  }
  throw new Error(`explore: warm-up '${opts.warmup}' did not settle in 50 rounds`);
}

function build(opts: ExploreOptions, prefix: Event[], path: Event[], trace = false): World {
  const w = new World(opts);
  for (const e of prefix) w.apply(e);
  // The budgets are the exhaustive part's: what the prefix used is not counted.
  w.resetBudgets();
  if (trace) w.trace = [];
  for (const e of path) w.apply(e);
  return w;
}
// ======================= search =======================

export interface ExploreResult {
  violation:
    (Violation & { path: Event[]; trace: string[]; summary: string[]; depth: number }) | null;
  /** Distinct states expanded (after pruning by hash). */
  states: number;
  /** Events applied, replays included. */
  events: number;
  /** States cut because their hash was seen with at least as much depth left. */
  pruned: number;
  /** Distinct states (hash digests) reached. */
  distinct: number;
  /** Events not taken because they were in the sleep set. */
  slept: number;
  /** Deepest path explored. */
  maxDepth: number;
  timeMs: number;
  /** False if maxStates or timeLimitMs cut the search short. */
  complete: boolean;
  warmupEvents: number;
}

/** A search's result before it starts. */
function emptyResult(warmupEvents: number): ExploreResult {
  return {
    violation: null,
    states: 0,
    events: 0,
    pruned: 0,
    distinct: 0,
    slept: 0,
    maxDepth: 0,
    timeMs: 0,
    complete: true,
    warmupEvents,
  };
}

/**
 * The sleep set after taking event i of a state's enabled events (`keys`,
 * `touches`), the state's own being `sleep`. Sleep sets (Godefroid): an event
 * already explored from this state, and independent of the one taken now, need
 * not be taken after it: the other order reaches the same state. Without sleep
 * sets (a test's reference search), always empty.
 */
function childSleepSet(
  sleep: Map<string, Touch>,
  touches: Touch[],
  keys: string[],
  i: number,
  sleepSets: boolean,
): Map<string, Touch> {
  const childSleep = new Map<string, Touch>();
  for (const [k, t] of sleep) if (independent(t, touches[i])) childSleep.set(k, t);
  if (sleepSets)
    for (let j = 0; j < i; j++)
      if (!sleep.has(keys[j]) && independent(touches[j], touches[i]))
        childSleep.set(keys[j], touches[j]);
  return sleepSets ? childSleep : new Map();
}

/**
 * Depth-first search over every event sequence up to opts.depth after the
 * warm-up. The current world is advanced in place for the first child of a
 * state and rebuilt by replay for the others (no state copies).
 */
export function explore(
  partial: Partial<ExploreOptions> = {},
  start: Event[] = [],
  /** Called with every state's digest as it is reached (tests compare reductions with it). */
  onState?: (digest: string) => void,
): ExploreResult {
  const opts = withDefaults(partial);
  const started = Date.now();
  const warmup = warmupPath(opts);
  // The exhaustive search starts after the warm-up and the given start path.
  const prefix = [...warmup, ...start];
  const seen = new Map<string, { left: number; sleep: Set<string> }>();
  const res = emptyResult(warmup.length);
  const path: Event[] = [];
  let stop = false;

  const report = (w: World): void => {
    const t = build(opts, warmup, [...start, ...path], true);
    res.violation = {
      ...(w.violation as Violation),
      path: [...start, ...path],
      trace: t.trace ?? [],
      summary: t.summary(),
      depth: start.length + path.length,
    };
    stop = true;
  };

  const visit = (w: World, sleep: Map<string, Touch>): void => {
    if (stop) return;
    if (w.violation) return report(w);
    const left = opts.depth - path.length;
    if (opts.hash !== 'none') {
      // A 160-bit digest: a million states fit in memory (keys are a few KB each).
      const key = createHash('sha1').update(w.stateKey()).digest('base64');
      onState?.(key);
      const before = seen.get(key);
      // Explored before with as much depth left and a sleep set inside ours:
      // everything we would explore here was explored then.
      if (before && before.left >= left && subset(before.sleep, sleep)) {
        res.pruned++;
        return;
      }
      if (!before || left > before.left) seen.set(key, { left, sleep: new Set(sleep.keys()) });
      else before.sleep = intersect(before.sleep, sleep);
    }
    res.states++;
    if (path.length > res.maxDepth) res.maxDepth = path.length;
    if (
      res.states >= opts.maxStates ||
      (res.states % 256 === 0 && Date.now() - started > opts.timeLimitMs)
    ) {
      res.complete = false;
      stop = true;
      return;
    }
    if (left === 0) return;
    const events = w.enabled();
    const touches = events.map((e) => w.touch(e));
    const keys = events.map((e) => w.eventKey(e));
    let first = true;
    for (let i = 0; i < events.length && !stop; i++) {
      if (sleep.has(keys[i])) {
        res.slept++;
        continue;
      }
      const childSleep = childSleepSet(sleep, touches, keys, i, opts.sleepSets);
      const child = first ? w : build(opts, prefix, path);
      if (!first) res.events += prefix.length + path.length;
      first = false;
      path.push(events[i]);
      child.apply(events[i]);
      res.events++;
      visit(child, childSleep);
      path.pop();
    }
  };

  visit(build(opts, prefix, []), new Map());
  res.timeMs = Date.now() - started;
  res.distinct = seen.size;
  return res;
}

export interface WalkOptions extends Partial<ExploreOptions> {
  seed: number;
  walks: number;
}

export interface WalkResult {
  violation: ExploreResult['violation'];
  walks: number;
  events: number;
  timeMs: number;
  /** Seed of the walk that failed (replays with walks = 1), -1 if none did. */
  seed: number;
}

/** How often each kind of event is picked (when enabled): delivery most, crashes rarely. */
const WALK_WEIGHTS: Record<Event['k'], number> = {
  deliver: 40,
  read: 1,
  tick: 12,
  sync: 12,
  submit: 10,
  dup: 3,
  drop: 2,
  transfer: 2,
  kill: 1,
  power: 1,
};

/** Walk `depth` random events from w (in place); the path taken is appended to `path`. */
function walk(w: World, prng: Prng, depth: number, path: Event[]): void {
  for (let d = 0; d < depth && !w.violation; d++) {
    const evs = w.enabled();
    if (evs.length === 0) return;
    const byKind = new Map<Event['k'], Event[]>();
    for (const e of evs) {
      const list = byKind.get(e.k);
      if (list) list.push(e);
      else byKind.set(e.k, [e]);
    }
    let total = 0;
    for (const k of byKind.keys()) total += WALK_WEIGHTS[k];
    let x = prng.int(total);
    let pick: Event[] = evs;
    for (const [k, list] of byKind) {
      x -= WALK_WEIGHTS[k];
      if (x < 0) {
        pick = list;
        break;
      }
    }
    const e = prng.pick(pick);
    path.push(e);
    w.apply(e);
  }
}

function found(
  opts: ExploreOptions,
  warmup: Event[],
  w: World,
  path: Event[],
): NonNullable<ExploreResult['violation']> {
  const t = build(opts, warmup, path, true);
  return {
    ...(w.violation as Violation),
    path,
    trace: t.trace ?? [],
    summary: t.summary(),
    depth: path.length,
  };
}

/** How many walks reached the states that matter (a sweep that never chooses anything proves nothing). */
export interface WalkCoverage {
  /** Walks in which the oracle saw a slot chosen. */
  chosen: number;
  /** Walks in which two slots were chosen. */
  chosenTwo: number;
  /** Walks with proposals at two or more ballots (a leader change with a proposal). */
  ballots: number;
  /** Walks with a crash (kill or power loss). */
  crashed: number;
  /** Walks in which a power loss took a leader's promise of its own ballot (9.5's precondition). */
  lostLeaderPromise: number;
  /** Walks in which a node campaigned at a ballot an earlier life of it had proposed at. */
  ballotReused: number;
  /** Walks with a hand-off campaign (checked for hand-off obedience). */
  handoff: number;
}

/**
 * Seeded random walks for depths the exhaustive search cannot reach: walk i
 * (seed + i) takes up to opts.depth events after the warm-up.
 */
export function randomWalks(o: WalkOptions): WalkResult & { coverage: WalkCoverage } {
  const opts = withDefaults(o);
  const started = Date.now();
  const warmup = warmupPath(opts);
  const coverage: WalkCoverage = {
    chosen: 0,
    chosenTwo: 0,
    ballots: 0,
    crashed: 0,
    lostLeaderPromise: 0,
    ballotReused: 0,
    handoff: 0,
  };
  let events = 0;
  const result = (violation: ExploreResult['violation'], walks: number, seed: number) => ({
    violation,
    walks,
    events,
    timeMs: Date.now() - started,
    seed,
    coverage,
  });
  for (let i = 0; i < o.walks; i++) {
    if (Date.now() - started > opts.timeLimitMs) return result(null, i, -1);
    const seed = o.seed + i;
    const w = build(opts, warmup, []);
    const path: Event[] = [];
    walk(w, new Prng(seed), opts.depth, path);
    events += path.length;
    if (w.chosen.size >= 1) coverage.chosen++;
    if (w.chosen.size >= 2) coverage.chosenTwo++;
    if (w.ballotsProposed() >= 2) coverage.ballots++;
    if (w.crashes > 0) coverage.crashed++;
    if (w.lostLeaderPromise) coverage.lostLeaderPromise++;
    if (w.ballotReused) coverage.ballotReused++;
    if (w.handoffCampaigns > 0) coverage.handoff++;
    if (w.violation) return result(found(opts, warmup, w, path), i + 1, seed);
  }
  return result(null, o.walks, -1);
}

export interface AroundOptions extends WalkOptions {
  /** Random events before each exhaustive search. */
  prefixDepth: number;
  /** Budgets of the random prefix (default: those of the search). */
  walkBudgets?: Partial<ExploreBudgets>;
}

export interface AroundResult extends WalkResult {
  /** States expanded by all the exhaustive searches together. */
  states: number;
}

/**
 * Exhaustive search around random points: walk i (seed + i) takes prefixDepth
 * random events, then every sequence of up to opts.depth events from there is
 * explored (with the full budgets). Deep states come from the walk, the short
 * unlikely interleavings around them from the search.
 */
export function exploreAround(o: AroundOptions): AroundResult {
  const opts = withDefaults(o);
  const walkOpts = { ...opts, budgets: { ...opts.budgets, ...o.walkBudgets } };
  const started = Date.now();
  const warmup = warmupPath(opts);
  let events = 0;
  let states = 0;
  for (let i = 0; i < o.walks; i++) {
    const spent = Date.now() - started;
    if (spent > opts.timeLimitMs)
      return { violation: null, walks: i, events, states, timeMs: spent, seed: -1 };
    const seed = o.seed + i;
    const w = build(walkOpts, warmup, []);
    const path: Event[] = [];
    walk(w, new Prng(seed), o.prefixDepth, path);
    events += path.length;
    const r = w.violation
      ? null
      : explore({ ...opts, timeLimitMs: opts.timeLimitMs - spent }, path);
    if (r) {
      events += r.events;
      states += r.states;
    }
    const violation = w.violation ? found(opts, warmup, w, path) : r?.violation;
    if (violation)
      return { violation, walks: i + 1, events, states, timeMs: Date.now() - started, seed };
  }
  return {
    violation: null,
    walks: o.walks,
    events,
    states,
    timeMs: Date.now() - started,
    seed: -1,
  };
}

/** Rebuild the state a path leads to, with its trace (reproducing a counterexample). */
export function replay(partial: Partial<ExploreOptions>, path: Event[]): World {
  const opts = withDefaults(partial);
  return build(opts, warmupPath(opts), path, true);
}
