import { checkLinearizable, type HistoryEvent } from '../check/linearizability';
import { formatBallot } from '../core/ballot';
import { Prng } from '../core/prng';
import { Replica } from '../core/replica';
import type { CmdResult, DurableRecord, Msg, Ready } from '../core/types';
import { decodeOp, KvStateMachine } from '../sm/kv';
import { decodePeerBody, encodePeerBody, SCHEMA } from '../wire/peer';
import { describeConfig, drawConfig, runPrng, type SimConfig, type SimOverrides } from './config';
import { CALM, SimNetwork, type Packet, type Partition } from './network';
import { bytesEqual, fail, Oracle, SimFailure } from './oracle';
import { SimClient, toKvResult, type ClientReply, type ClientRequest } from './workload';

/**
 * Deterministic simulator (in the style of TigerBeetle's VOPR and FoundationDB's
 * simulation): the real Replica and KvStateMachine, driven by a simulated
 * clock, network, disk and clients, every choice drawn from one seeded Prng.
 * One step = packet deliveries due now, client actions, then one tick of every
 * live node; each node's ready() output is handled like lib/daemon.ts does:
 * persist (durable once "synced"), snapshot + WAL rotation, send, reply.
 */

export type Payload =
  { k: 'peer'; msg: Msg } | { k: 'req'; req: ClientRequest } | { k: 'rep'; rep: ClientReply };

export const CLIENT_BASE = 1000;

/** What survives a crash: the latest snapshot and the WAL records after it. */
interface Disk {
  snapshot: { slot: number; data: Uint8Array } | null;
  records: DurableRecord[];
}

class SimNode {
  replica: Replica | null = null;
  sm: KvStateMachine | null = null;
  up = false;
  disk: Disk = { snapshot: null, records: [] };
  /**
   * Not bootstrapped yet: every start bootstraps (cluster creation, all nodes
   * vote) until the voter record is durable. A crash before that leaves an empty
   * disk and a node that never sent anything, so creating it again is safe (like
   * re-running paxosd --init on its empty data directory).
   */
  fresh = true;
  /** Disk lost: the next start must not bootstrap (rejoin as a non-voter). */
  wiped = false;
  restartAt = -1;
  pausedUntil = 0;
  held: Packet<Payload>[] = [];
  slowUntil = 0;
  slowDelay = 0;
  /** ready() outputs whose sync has not completed (slow disk): FIFO. */
  io: { at: number; rd: Ready }[] = [];
  waiters = new Map<string, number[]>();
  /** Read-index requests waiting for their read id in ready().reads. */
  readWaiters = new Map<number, { from: number; cid: number; seq: number; key: string }>();
  readSeq = 0;
  /** Highest slot this node applied (for the contiguity check). */
  lastApplied = 0;
  incarnation = 0;
  /** Highest ballot this node sent a promise for or accepted at, since its disk was last lost. */
  committedBallot = 0;
  /** Slot -> highest ballot this node acknowledged with `accepted`. */
  acked = new Map<number, number>();
  crashes = 0;
  clockRate = 1;

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
  crashes: number;
  crashesInReady: number;
  restarts: number;
  wipes: number;
  pauses: number;
  partitions: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  packets: number;
  maxLiveLatency: number;
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
}

export interface SimRunOptions extends SimOverrides {
  /** Keep the last `traceLines` lines of the trace (0 = off: faster). */
  traceLines?: number;
  /** Stream every trace line here too. */
  onTrace?: (line: string) => void;
  /** Skip the final linearizability check (speed experiments only). */
  skipLinearizability?: boolean;
  /** Send every peer message through the real wire codec (encode at send, decode per copy). */
  wire?: boolean;
}

/** Message codes come from the wire schema (one source of truth). */
const MSG_CODE = Object.fromEntries(
  Object.entries(SCHEMA).map(([t, v]) => [t, v.code]),
) as Record<Msg['t'], number>;

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
      return `heartbeat ${b(m.promised)}${m.leading ? ' leading' : ''} chosen=${m.chosen}${m.next ? ` next=${m.next}` : ''}${m.eligible ? '' : ' !eligible'}${m.voter ? '' : ' !voter'}`;
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
  }
}

export class Simulation {
  readonly cfg: SimConfig;
  private readonly prng: Prng;
  private readonly net: SimNetwork<Payload>;
  private readonly nodes = new Map<number, SimNode>();
  private readonly clients = new Map<number, SimClient>();
  private readonly oracle: Oracle;
  readonly history: HistoryEvent[] = [];
  now = 0;
  private logical = 0;
  private faultsOn = true;
  private lastWiped = -1;
  private hash = 0x811c9dc5;
  private readonly traceCap: number;
  private readonly traceRing: string[] = [];
  private traceHead = 0;
  private readonly tracing: boolean;
  private readonly wantLin: boolean;
  private readonly stats: SimStats = {
    steps: 0,
    opsCompleted: 0,
    opsUnknown: 0,
    maxSlot: 0,
    elections: 0,
    leaderships: 0,
    crashes: 0,
    crashesInReady: 0,
    restarts: 0,
    wipes: 0,
    pauses: 0,
    partitions: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    packets: 0,
    maxLiveLatency: 0,
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
    this.net = new SimNetwork<Payload>(this.prng, this.cfg.net, this.cfg.clientNet, CLIENT_BASE);
    this.oracle = new Oracle(Math.floor(this.cfg.sids.length / 2) + 1);
    this.oracle.clock = () => ++this.logical;
    this.cfg.sids.forEach((sid, i) => {
      const n = new SimNode(sid);
      n.clockRate = this.cfg.clockRates[i];
      this.nodes.set(sid, n);
    });
    const keys = Array.from({ length: this.cfg.keys }, (_, i) => `k${i}`);
    for (let i = 0; i < this.cfg.clients; i++) {
      const cid = 100 + i;
      const addr = CLIENT_BASE + i;
      this.clients.set(
        addr,
        new SimClient(
          cid,
          addr,
          this.cfg.sids,
          this.prng,
          {
            keys,
            thinkMax: this.cfg.thinkMax,
            timeoutMin: this.cfg.clientTimeout[0],
            timeoutMax: this.cfg.clientTimeout[1],
            readIndex: this.cfg.readIndex,
          },
          {
            now: () => this.now,
            clock: () => ++this.logical,
            send: (from, to, req) => this.net.send(from, to, { k: 'req', req }, this.now),
            trace: (line) => {
              if (this.tracing) this.trace(line);
            },
            fail,
          },
          this.history,
        ),
      );
    }
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
    const end = stopAt + c.liveBound;
    let failure: SimResult['failure'];
    try {
      for (const node of this.nodes.values()) this.start(node);
      while (this.now < end) {
        if (this.now === healAt) this.heal();
        if (this.now === stopAt) for (const cl of this.clients.values()) cl.stopped = true;
        this.step();
      }
      this.finalChecks();
    } catch (e) {
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
    for (const cl of this.clients.values())
      this.stats.maxLiveLatency = Math.max(this.stats.maxLiveLatency, cl.maxLiveLatency);
    for (const n of this.nodes.values()) if (n.replica) this.addReplicaStats(n.replica);
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
    if (this.faultsOn) this.injectFaults();
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
    for (const n of this.nodes.values()) this.completeIo(n);
    for (const cl of this.clients.values()) cl.tick();
    for (const n of this.nodes.values()) {
      if (!n.up || n.paused(now)) continue;
      // Clock drift: a slow node skips a tick now and then, a fast one takes two.
      const rate = n.clockRate;
      if (rate === 1 || rate > 1 || !this.prng.chance(1 - rate)) n.replica!.tick();
      if (rate > 1 && this.prng.chance(rate - 1)) n.replica!.tick();
      this.flush(n);
    }
  }

  // ======================= faults =======================

  /** Has every node a durable voter record (nobody still rejoining after a lost disk)? */
  private allVoters(): boolean {
    for (const n of this.nodes.values())
      if (!n.disk.records.some((r) => r.t === 'voter')) return false;
    return true;
  }

  private upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  private injectFaults(): void {
    const f = this.cfg.faults;
    const p = this.prng;
    const e = this.cfg.timing.electionTicks;
    if (f.crash > 0 && p.chance(f.crash)) {
      const up = this.upNodes();
      if (up.length > 0) {
        this.crash(p.pick(up), 'crash');
      }
    }
    if (this.now === f.wipeAt || (this.now === f.wipeAgainAt && this.allVoters())) {
      // One lost disk at a time: the rejoin rule (Paxos Made Live) covers a node
      // that forgot its promises, not several forgetting at once.
      const n = p.pick([...this.nodes.values()].filter((x) => x.sid !== this.lastWiped));
      this.lastWiped = n.sid;
      if (n.up) this.crash(n, 'crash (disk lost)');
      n.disk = { snapshot: null, records: [] };
      n.wiped = true;
      n.fresh = false;
      n.committedBallot = 0;
      n.acked.clear();
      n.restartAt = this.now + p.range(1, 3 * e);
      this.stats.wipes++;
      this.mix(0xdead);
    }
    if (f.pause > 0 && p.chance(f.pause)) {
      const up = this.upNodes().filter((n) => !n.paused(this.now));
      if (up.length > 0) {
        const n = p.pick(up);
        n.pausedUntil = this.now + p.range(3, 4 * e);
        this.stats.pauses++;
        if (this.tracing) this.trace(`node ${n.sid} paused until ${n.pausedUntil}`);
      }
    }
    if (f.slowDisk > 0 && p.chance(f.slowDisk)) {
      const n = p.pick([...this.nodes.values()]);
      n.slowUntil = this.now + p.range(20, 300);
      n.slowDelay = p.range(1, 10);
      if (this.tracing)
        this.trace(`node ${n.sid} disk slow (+${n.slowDelay} ticks/sync) until ${n.slowUntil}`);
    }
    if (f.partition > 0 && this.net.activePartitions().length < 2 && p.chance(f.partition))
      this.partition();
  }

  private partition(): void {
    const p = this.prng;
    const sids = this.cfg.sids;
    const e = this.cfg.timing.electionTicks;
    const cut: [number, number][] = [];
    const both = (a: number, b: number): void => {
      cut.push([a, b], [b, a]);
    };
    const kinds = ['minority', 'majority', 'one-way', 'leader', 'flapping'] as const;
    const kind = p.pick(kinds);
    let label: string;
    let flapTicks = 0;
    let pk: Partition['kind'] = 'symmetric';
    const shuffled = [...sids];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = p.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    const quorum = Math.floor(sids.length / 2) + 1;
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
      const links = p.range(1, sids.length);
      const names: string[] = [];
      for (let i = 0; i < links; i++) {
        const a = p.pick(sids);
        const b = p.pick(sids.filter((s) => s !== a));
        cut.push([a, b]);
        names.push(`${a}->${b}`);
      }
      label = `one-way ${names.join(' ')}`;
    } else {
      pk = 'leader-isolated';
      const leaders = this.upNodes().filter((n) => n.replica!.role === 'leader');
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
    this.stats.partitions++;
    this.mix(0xc0de + cut.length);
    if (this.tracing) this.trace(`partition ${label} until ${until}`);
  }

  /** Faults stop: heal the network, restart everyone, calm disks. */
  private heal(): void {
    this.faultsOn = false;
    this.net.healAll();
    this.net.peer = CALM;
    this.net.client = CALM;
    for (const n of this.nodes.values()) {
      n.slowUntil = 0;
      n.pausedUntil = 0;
      if (!n.up) n.restartAt = this.now;
    }
    for (const cl of this.clients.values()) cl.liveFrom = this.now;
    if (this.tracing) this.trace('=== faults stop: network healed, every node restarted ===');
  }

  // ======================= process model =======================

  private start(n: SimNode): void {
    n.incarnation++;
    n.restartAt = -1;
    const c = this.cfg;
    const sm = new KvStateMachine(c.limits.sessionsMax, c.limits.valueBytesMax);
    const replica = new Replica({
      sid: n.sid,
      sids: c.sids,
      prng: new Prng(this.prng.nextU32()),
      sm,
      ...c.timing,
      windowSlots: c.limits.windowSlots,
      batchBytesMax: c.limits.batchBytesMax,
      pendingMax: c.limits.pendingMax,
      catchupBytesMax: c.limits.catchupBytesMax,
      snapshotEverySlots: c.limits.snapshotEverySlots,
      keepSlots: c.limits.keepSlots,
      trace: this.tracing ? (line) => this.trace(`  ${line}`) : undefined,
    });
    // restore() reads the records; hand it a copy like a fresh read from disk.
    replica.restore(n.disk.snapshot, [...n.disk.records]);
    if (n.incarnation > 1) this.stats.restarts++;
    if (!n.fresh) this.checkDurability(n, replica);
    if (n.fresh) replica.bootstrap();
    const how = n.fresh ? 'bootstrap' : n.wiped ? 'empty disk (non-voter)' : 'restart';
    n.wiped = false;
    n.replica = replica;
    n.sm = sm;
    n.up = true;
    n.lastApplied = n.disk.snapshot?.slot ?? 0;
    n.held = [];
    n.io = [];
    n.waiters.clear();
    n.readWaiters.clear();
    n.pausedUntil = 0;
    this.mix(0x57a7 + n.sid);
    if (this.tracing)
      this.trace(
        `node ${n.sid} start #${n.incarnation} (${how}): snapshot=${n.disk.snapshot?.slot ?? 0} records=${n.disk.records.length} promised=${formatBallot(replica.promised)} chosen=${replica.chosenThrough} voter=${replica.voter}`,
      );
    this.flush(n);
  }

  /**
   * Nothing a node told others survives only in memory: after a restart it has
   * promised at least every ballot it promised or accepted at, and still holds
   * (or knows chosen) every slot it acknowledged.
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
  }

  private crash(n: SimNode, why: string): void {
    if (!n.up) return;
    // A sync in progress may have made a prefix of its records durable (torn group commit).
    const head = n.io[0];
    if (head && head.rd.persist.length > 0 && this.prng.chance(0.5)) {
      const k = this.prng.int(head.rd.persist.length + 1);
      this.persist(n, head.rd.persist.slice(0, k));
    }
    n.up = false;
    if (n.replica) this.addReplicaStats(n.replica);
    n.replica = null;
    n.sm = null;
    n.io = [];
    n.held = [];
    n.waiters.clear();
    n.readWaiters.clear();
    n.crashes++;
    this.stats.crashes++;
    // Back after a while (the heal restarts whoever is still down).
    n.restartAt = this.now + this.prng.range(1, 6 * this.cfg.timing.electionTicks);
    this.mix(0xc4a5 + n.sid);
    if (this.tracing) this.trace(`node ${n.sid} ${why}`);
  }

  private persist(n: SimNode, records: DurableRecord[]): void {
    const sab = this.cfg.sabotage;
    for (const r of records) {
      if (sab === 'drop-promise-records' && r.t === 'promise') continue;
      if (sab === 'drop-accept-records' && r.t === 'accept') continue;
      if (r.t === 'voter') n.fresh = false;
      n.disk.records.push(r);
    }
  }

  // ======================= network =======================

  private deliver(p: Packet<Payload>): void {
    const pl = p.payload;
    if (pl.k === 'rep') {
      this.clients.get(p.to)?.onReply(p.from, pl.rep);
      return;
    }
    const n = this.nodes.get(p.to);
    if (!n || !n.up) return;
    if (n.paused(this.now)) {
      n.held.push(p);
      return;
    }
    if (pl.k === 'peer') {
      this.mix(p.from);
      this.mix(p.to);
      this.mix(MSG_CODE[pl.msg.t]);
      this.mix(msgNumber(pl.msg));
      if (this.tracing) this.trace(`${p.from} -> ${p.to} ${describeMsg(pl.msg)}`);
      n.replica!.step(p.from, pl.msg);
    } else {
      this.onClientRequest(n, p.from, pl.req);
    }
    if (this.cfg.flushPerMessage > 0 && this.prng.chance(this.cfg.flushPerMessage)) this.flush(n);
  }

  private onClientRequest(n: SimNode, from: number, req: ClientRequest): void {
    if (this.cfg.readIndex) {
      const op = decodeOp(req.op, 1 << 20);
      if (typeof op !== 'string' && op.kind === 'get') {
        const id = ++n.readSeq;
        const r = n.replica!.submitRead(id);
        this.mix(0xe1 + r.kind.length);
        if (this.tracing)
          this.trace(`node ${n.sid} <- client ${req.cid} #${req.seq} read: ${r.kind}`);
        if (r.kind === 'queued')
          n.readWaiters.set(id, { from, cid: req.cid, seq: req.seq, key: op.key });
        else if (r.kind === 'redirect')
          this.net.send(
            n.sid,
            from,
            { k: 'rep', rep: { t: 'redirect', cid: req.cid, seq: req.seq, leader: r.leader } },
            this.now,
          );
        else
          this.net.send(
            n.sid,
            from,
            { k: 'rep', rep: { t: 'busy', cid: req.cid, seq: req.seq } },
            this.now,
          );
        return;
      }
    }
    const r = n.replica!.submit({ cid: req.cid, seq: req.seq, op: req.op });
    this.mix(0xc1 + r.kind.length);
    if (this.tracing) this.trace(`node ${n.sid} <- client ${req.cid} #${req.seq}: ${r.kind}`);
    const reply = (rep: ClientReply): void =>
      this.net.send(n.sid, from, { k: 'rep', rep }, this.now);
    switch (r.kind) {
      case 'queued': {
        const key = `${req.cid}:${req.seq}`;
        let list = n.waiters.get(key);
        if (!list) n.waiters.set(key, (list = []));
        if (!list.includes(from)) list.push(from);
        return;
      }
      case 'cached':
        return reply({ t: 'result', cid: req.cid, seq: req.seq, result: r.result });
      case 'redirect':
        return reply({ t: 'redirect', cid: req.cid, seq: req.seq, leader: r.leader });
      case 'busy':
        return reply({ t: 'busy', cid: req.cid, seq: req.seq });
    }
  }

  // ======================= the driver: ready() handling =======================

  private flush(n: SimNode): void {
    for (let round = 0; round < 64; round++) {
      if (!n.up || n.paused(this.now)) return;
      const rd = n.replica!.ready();
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
      const slow = this.faultsOn && n.slowUntil > this.now;
      if (slow || n.io.length > 0) {
        // The sync is in progress: nothing of this turn leaves the node before it completes.
        const last = n.io.length > 0 ? n.io[n.io.length - 1].at : 0;
        n.io.push({ at: Math.max(last, this.now + (slow ? n.slowDelay : 0)), rd });
        return;
      }
      const self = this.handle(n, rd);
      if (!self || self.length === 0) return;
      for (const m of self) this.stepSelf(n, m);
    }
  }

  private stepSelf(n: SimNode, m: Msg): void {
    if (this.tracing) this.trace(`${n.sid} -> self ${describeMsg(m)}`);
    this.mix(MSG_CODE[m.t]);
    n.replica!.step(n.sid, m);
  }

  private completeIo(n: SimNode): void {
    let guard = 0;
    while (n.up && !n.paused(this.now) && n.io.length > 0 && n.io[0].at <= this.now) {
      if (++guard > 1000) fail('driver', `node ${n.sid}: self-message loop`);
      const { rd } = n.io.shift()!;
      const self = this.handle(n, rd);
      if (!self) return;
      for (const m of self) this.stepSelf(n, m);
      this.flush(n);
    }
  }

  /** Checks on a turn's output, made when the replica produces it. */
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
    for (const e of rd.events) if (this.tracing) this.trace(`node ${n.sid} event: ${e}`);
  }

  /**
   * Persist -> snapshot (+ WAL rotation) -> send -> reply, like PaxosNode.handle.
   * Returns the messages addressed to the node itself, or null if it crashed
   * part-way (then nothing after the crash point happened).
   */
  private handle(n: SimNode, rd: Ready): Msg[] | null {
    const crashAt =
      this.faultsOn &&
      this.cfg.faults.crashInReady > 0 &&
      (rd.persist.length > 0 || rd.messages.length > 0) &&
      this.prng.chance(this.cfg.faults.crashInReady)
        ? this.prng.int(3)
        : -1;
    if (crashAt === 0) {
      // Torn group commit: some prefix of the records reached the disk.
      this.persist(n, rd.persist.slice(0, this.prng.int(rd.persist.length + 1)));
      this.stats.crashesInReady++;
      this.crash(n, `crash while syncing ${rd.persist.length} records`);
      return null;
    }
    this.persist(n, rd.persist);
    if (rd.snapshot) {
      if (crashAt === 1) {
        this.stats.crashesInReady++;
        this.crash(n, `crash while writing snapshot ${rd.snapshot.slot}`);
        return null;
      }
      // The snapshot file, then a new WAL segment that starts with the checkpoint.
      n.disk.snapshot = { slot: rd.snapshot.slot, data: rd.snapshot.data };
      n.disk.records = [];
      this.persist(n, rd.snapshot.checkpoint);
    }
    let sendCount = rd.messages.length;
    if (crashAt >= 1) sendCount = this.prng.int(rd.messages.length + 1);
    const self: Msg[] = [];
    const before = n.committedBallot;
    let lastMsg: Msg | null = null;
    let lastBody: Buffer | null = null;
    for (let i = 0; i < sendCount; i++) {
      const { to, msg } = rd.messages[i];
      this.noteSent(n, msg, before);
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
    if (crashAt >= 1) {
      this.stats.crashesInReady++;
      this.crash(n, `crash after sending ${sendCount}/${rd.messages.length} messages`);
      return null;
    }
    for (const a of rd.applied) {
      for (let i = 0; i < a.cmds.length; i++) {
        const c = a.cmds[i];
        const key = `${c.cid}:${c.seq}`;
        const list = n.waiters.get(key);
        if (!list) continue;
        n.waiters.delete(key);
        for (const addr of list)
          this.net.send(
            n.sid,
            addr,
            { k: 'rep', rep: { t: 'result', cid: c.cid, seq: c.seq, result: a.results[i] } },
            this.now,
          );
      }
    }
    for (const id of rd.reads) {
      const w = n.readWaiters.get(id);
      if (!w) continue;
      n.readWaiters.delete(id);
      const value = n.sm!.data.get(w.key) ?? null;
      this.net.send(
        n.sid,
        w.from,
        { k: 'rep', rep: { t: 'result', cid: w.cid, seq: w.seq, result: { ok: true, value } } },
        this.now,
      );
    }
    return self;
  }

  /**
   * Ghost bookkeeping of what a node has told the world (after its persist).
   * `before` is the node's commitment as of its previous turns: an ack made in
   * this turn must not be below it (within one turn, message order says nothing
   * about whether an ack came before or after a promise).
   */
  private noteSent(n: SimNode, msg: Msg, before: number): void {
    switch (msg.t) {
      case 'promise':
        if (msg.ballot > n.committedBallot) n.committedBallot = msg.ballot;
        return;
      case 'accepted':
        if (msg.ballot < before && msg.slots.length > 0)
          fail(
            'no accept below a promise',
            `node ${n.sid} acknowledged ballot ${formatBallot(msg.ballot)} (slots ${msg.slots.join(',')}) after promising ${formatBallot(before)}`,
          );
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
      const k = `${ev.client}:${cl.seqOf.get(ev)}`;
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

  private finalChecks(): void {
    const c = this.cfg;
    // Liveness: once faults stopped, every request completed within the bound.
    for (const cl of this.clients.values()) {
      if (cl.cur)
        fail(
          'liveness',
          `client ${cl.cid} request #${cl.cur.seq} (${JSON.stringify(cl.cur.op)}) still pending ${this.now - Math.max(cl.cur.callTick, c.faultSteps)} ticks after the faults stopped (bound ${c.liveBound})`,
        );
      if (cl.maxLiveLatency > c.liveBound)
        fail(
          'liveness',
          `client ${cl.cid}: a request took ${cl.maxLiveLatency} ticks after the faults stopped (bound ${c.liveBound})`,
        );
    }
    // Convergence: every node is up, votes, and has applied the same prefix.
    let max = 0;
    for (const n of this.nodes.values()) max = Math.max(max, n.replica?.applied ?? 0);
    for (const n of this.nodes.values()) {
      const r = n.replica;
      if (!r) fail('liveness', `node ${n.sid} is down at the end`);
      if (!r.voter)
        fail('liveness', `node ${n.sid} never rejoined as a voter after losing its disk`);
      if (r.applied !== max || r.chosenThrough !== max)
        fail(
          'liveness',
          `node ${n.sid} applied ${r.applied} (chosen ${r.chosenThrough}) while others reached ${max}`,
        );
      if (n.io.length > 0) fail('liveness', `node ${n.sid} still has ${n.io.length} syncs pending`);
    }
    // State = replay of the chosen log, for every node and every snapshot.
    const bySlot = new Map<number, SimNode[]>();
    for (const n of this.nodes.values()) {
      const s = n.replica!.applied;
      let l = bySlot.get(s);
      if (!l) bySlot.set(s, (l = []));
      l.push(n);
    }
    const through = Math.max(max, ...this.oracle.snapshots.keys());
    this.oracle.replay(through, c.limits.sessionsMax, c.limits.valueBytesMax, (slot, sm) => {
      const nodes = bySlot.get(slot);
      const snap = this.oracle.snapshots.get(slot);
      if (!nodes && !snap) return;
      const bytes = sm.snapshot();
      for (const n of nodes ?? [])
        if (!bytesEqual(n.sm!.snapshot(), bytes))
          fail(
            'state = replay of the log',
            `node ${n.sid} state at slot ${slot} differs from a replay of the chosen log`,
          );
      if (snap && !bytesEqual(snap, bytes))
        fail('state = replay of the log', `the snapshot of slot ${slot} differs from a replay`);
    });
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
