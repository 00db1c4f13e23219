// A hand-driven network of real `Replica` objects for adversarial schedules:
// every datagram ever sent can be delivered late, twice or never; nodes can be
// paused, killed (every written record survives) or powered off (only synced
// records survive), and `Outbound.sync` is honoured per node: a sync = true
// message leaves only after the records of its turn (and every earlier turn)
// are synced. Agreement and "one value per (slot, ballot)" are checked on every
// step, so a test fails at the step that broke them.
import { Prng } from '../../lib/core/prng';
import { Replica } from '../../lib/core/replica';
import type {
  Cmd,
  CmdResult,
  Configuration,
  DurableRecord,
  Member,
  Msg,
  StateMachine,
  Value,
} from '../../lib/core/types';
import { MembershipTable, type MemberOp } from '../../lib/sm/membership';

export const CORE_OPTS = {
  heartbeatTicks: 2,
  electionTicks: 10,
  retransmitTicks: 2,
  retransmitMaxTicks: 8,
  windowSlots: 4,
  batchBytesMax: 60000,
  pendingMax: 1000,
  catchupBytesMax: 60000,
  snapshotEverySlots: 1_000_000,
};
export type CoreOpts = typeof CORE_OPTS & {
  keepSlots?: number;
  /** The bootstrap configuration (default: every sid a voter). */
  members?: Member[];
  alphaSlots?: number;
};

/**
 * A replica of a test cluster. `life` counts the replicas built so far: each
 * restart gets its own PRNG stream (a new process life), the same in every
 * harness, so one seed means one run.
 */
export function makeReplica(
  sid: number,
  sids: number[],
  seed: number,
  life: number,
  opts: CoreOpts,
  trace?: (line: string) => void,
): Replica {
  return new Replica({
    sid,
    sids,
    prng: new Prng(seed * 1000 + sid + 1 + 97 * life),
    sm: new LogMachine(),
    ...(trace ? { trace } : {}),
    ...opts,
  });
}

/**
 * A minimal deterministic state machine: it keeps every applied command, so its
 * snapshot grows with the log (snapshot transfer has something to carry) and
 * tests do not depend on the key-value store's session rules.
 */
export class LogMachine implements StateMachine {
  cmds: string[] = [];
  /**
   * Commands "member add|promote|remove SID" (add may end "HOST PEERPORT
   * CLIENTPORT") change the membership (lib/sm/membership.ts).
   */
  readonly membership = new MembershipTable();
  apply(slot: number, cmds: Value): { results: CmdResult[]; lines: string[] } {
    const lines = cmds.map((c) => `${slot} ${cmdText(c)}`);
    this.cmds.push(...lines);
    const results = cmds.map((c) => {
      const m = /^member (add|promote|remove) (\d+)(?: (\S+) (\d+) (\d+))?$/.exec(
        Buffer.from(c.op).toString('utf8'),
      );
      if (!m) return { ok: true };
      const op: MemberOp = {
        kind: 'member',
        action: m[1] as MemberOp['action'],
        sid: Number(m[2]),
      };
      if (m[3]) op.addr = { host: m[3], peerPort: Number(m[4]), clientPort: Number(m[5]) };
      return this.membership.apply(slot, op).result;
    });
    return { results, lines };
  }
  bootstrapMembers(members: Member[], alphaSlots: number, sids: readonly number[]): void {
    this.membership.bootstrap(members, alphaSlots, sids);
  }
  configurations(): readonly Configuration[] {
    return this.membership.configurations();
  }
  cached(): CmdResult | undefined {
    return undefined;
  }
  snapshot(): Uint8Array {
    const v = { cmds: this.cmds, configs: this.membership.snapshot() };
    return new TextEncoder().encode(JSON.stringify(v));
  }
  restore(data: Uint8Array): void {
    const v = JSON.parse(new TextDecoder().decode(data)) as { cmds?: unknown; configs?: unknown };
    if (!v || !Array.isArray(v.cmds)) throw new Error('not a snapshot');
    const configs = this.membership.parse(v.configs ?? null);
    this.cmds = v.cmds as string[];
    this.membership.restore(configs);
  }
}

export function cmdText(c: Cmd): string {
  return `${c.cid}:${c.seq}:${Buffer.from(c.op).toString('utf8')}`;
}

export function valueText(v: Value): string {
  return v.length === 0 ? '(no-op)' : v.map(cmdText).join(',');
}

/** A client command whose operation bytes are `text` (padded to `bytes`). */
export function cmd(cid: number, seq: number, text: string, bytes = 0): Cmd {
  return { cid, seq, op: new TextEncoder().encode(text.padEnd(bytes, '.')) };
}

export interface Env {
  id: number;
  from: number;
  to: number;
  msg: Msg;
}

interface Disk {
  snapshot: { slot: number; data: Uint8Array } | null;
  records: DurableRecord[];
  /** records[0..synced) survive a power loss. */
  synced: number;
}

export class CoreNet {
  readonly opts: CoreOpts;
  readonly sids: number[];
  nodes = new Map<number, Replica>();
  disk = new Map<number, Disk>();
  /** In flight, in send order. */
  queue: Env[] = [];
  /** Every datagram ever sent (for late re-delivery). */
  history: Env[] = [];
  /** sync = true messages waiting for their node's sync: [message, records needed]. */
  held = new Map<number, [Env, number][]>();
  /** Crashed: neither ticked nor delivered to; messages to it are lost. */
  down = new Set<number>();
  /** Paused (SIGSTOP): not ticked; messages to it wait in `parked` until resumed. */
  paused = new Set<number>();
  parked: Env[] = [];
  /** Not ticked, but answering messages (its timers have not fired yet: a slow clock). */
  frozen = new Set<number>();
  /** Nodes whose disk syncs only when the test calls sync(sid). */
  manualSync = new Set<number>();
  /** The adversary: return true to lose a datagram. */
  drop: (e: Env) => boolean = () => false;
  /** Tail drop: at most this many datagrams per link per delivery round (self links exempt). */
  burstMax = Infinity;
  /** Run each replica's checkInvariants() after each turn (off for bulk phases: it scans the log). */
  checks = true;
  /** sid -> slot -> applied value text. */
  applied = new Map<number, Map<number, string>>();
  /** Safety violations seen (agreement, one value per slot per ballot, replica invariants). */
  violations: string[] = [];
  /** Every node's `Ready.events` lines, in order, stamped with the tick (for debugging). */
  events: string[] = [];
  private firstApplied = new Map<number, string>();
  private proposals = new Map<string, string>();
  private nextId = 1;
  /** Replica objects built so far (each restart gets its own PRNG stream). */
  private built = 0;
  now = 0;

  constructor(
    sids: number[],
    opts: Partial<CoreOpts> = {},
    readonly seed = 1,
  ) {
    this.opts = { ...CORE_OPTS, ...opts };
    this.sids = sids;
    for (const s of sids) {
      this.disk.set(s, { snapshot: null, records: [], synced: 0 });
      this.held.set(s, []);
      this.applied.set(s, new Map());
      const r = this.make(s);
      r.bootstrap();
      this.nodes.set(s, r);
    }
    for (const s of sids) this.collect(s);
    for (const s of sids) this.sync(s);
  }

  /** Nodes started with a servers list of their own (join): sid -> that list. */
  private readonly ownSids = new Map<number, number[]>();

  private make(sid: number): Replica {
    return makeReplica(sid, this.ownSids.get(sid) ?? this.sids, this.seed, this.built++, this.opts);
  }

  /**
   * Start a node that is in nobody's servers list (paxosd --join): empty disk,
   * not a voter until the rejoin rule passes, given the cluster's servers list
   * (without itself, as every node has it); the others learn of it only through
   * a `member add` with its address.
   */
  join(sid: number): Replica {
    this.ownSids.set(sid, [...this.sids]);
    this.disk.set(sid, { snapshot: null, records: [], synced: 0 });
    this.held.set(sid, []);
    this.applied.set(sid, new Map());
    const r = this.make(sid);
    r.restore(null, []);
    this.nodes.set(sid, r);
    this.collect(sid);
    return r;
  }

  node(sid: number): Replica {
    return this.nodes.get(sid)!;
  }

  /** The live node(s) that believe they lead. */
  leaders(): Replica[] {
    return [...this.nodes.values()].filter(
      (r) => r.role === 'leader' && !this.down.has(r.sid) && !this.paused.has(r.sid),
    );
  }

  leader(): Replica | undefined {
    return this.leaders()[0];
  }

  /** One tick, then one write through whoever leads now; whether anyone leads. */
  tickAndWrite(c: Cmd): boolean {
    this.tick(1);
    const l = this.leader();
    if (l) this.submit(l.sid, c);
    return l !== undefined;
  }

  /** Take one node's turn output: persist, hold or send, record what it applied. */
  collect(sid: number): void {
    if (this.down.has(sid)) return;
    const r = this.node(sid);
    const rd = r.ready();
    const d = this.disk.get(sid)!;
    d.records.push(...rd.persist);
    if (rd.snapshot) {
      // Snapshot file + WAL rotated to the checkpoint, both made durable at once.
      d.snapshot = { slot: rd.snapshot.slot, data: rd.snapshot.data };
      d.records = [...rd.snapshot.checkpoint];
      d.synced = d.records.length;
      // Everything written so far is in the durable checkpoint: release what waited.
      for (const h of this.held.get(sid)!) h[1] = Math.min(h[1], d.synced);
    }
    for (const e of rd.events) this.events.push(`t=${this.now} ${e}`);
    for (const a of rd.applied) this.noteApplied(sid, a.slot, valueText(a.cmds));
    for (const m of rd.messages) {
      const env: Env = { id: this.nextId++, from: sid, to: m.to, msg: m.msg };
      if (m.msg.t === 'accept') this.noteProposal(env);
      const needs = d.records.length;
      if (m.sync && d.synced < needs) this.held.get(sid)!.push([env, needs]);
      else this.send(env);
    }
    if (this.checks)
      try {
        r.checkInvariants();
      } catch (e) {
        this.violate(`t=${this.now} ${(e as Error).message}`);
      }
    if (!this.manualSync.has(sid)) this.sync(sid);
  }

  /** The node's disk reports every record written so far durable; release what waited. */
  sync(sid: number): void {
    const d = this.disk.get(sid)!;
    d.synced = d.records.length;
    const waiting = this.held.get(sid)!;
    this.held.set(
      sid,
      waiting.filter(([env, needs]) => {
        if (needs > d.synced) return true;
        this.send(env);
        return false;
      }),
    );
  }

  private send(env: Env): void {
    this.history.push(env);
    this.queue.push(env);
  }

  private violate(why: string): void {
    if (this.violations.length < 20) this.violations.push(why);
  }

  private noteApplied(sid: number, slot: number, text: string): void {
    const mine = this.applied.get(sid)!;
    const before = mine.get(slot);
    if (before !== undefined && before !== text)
      this.violate(`sid ${sid} applied slot ${slot} twice: ${before} then ${text}`);
    mine.set(slot, text);
    const first = this.firstApplied.get(slot);
    if (first === undefined) this.firstApplied.set(slot, text);
    else if (first !== text)
      this.violate(`agreement: sid ${sid} applied ${text} at slot ${slot}, another node ${first}`);
  }

  /** Proposer side (PMS): one value per slot per ballot, across restarts. */
  private noteProposal(env: Env): void {
    const m = env.msg as Extract<Msg, { t: 'accept' }>;
    for (const [slot, value] of m.entries) {
      const key = `${slot}@${m.ballot}`;
      const text = valueText(value);
      const before = this.proposals.get(key);
      if (before === undefined) this.proposals.set(key, text);
      else if (before !== text)
        this.violate(`two values proposed at slot ${slot} ballot ${m.ballot}: ${before} / ${text}`);
    }
  }

  /** Deliver one datagram now (a late or duplicated copy if it was delivered before). */
  deliver(env: Env): void {
    if (this.down.has(env.to)) return;
    this.node(env.to).step(env.from, env.msg);
    this.collect(env.to);
  }

  /** Inject a datagram as if `from` had sent it (e.g. a request it sent long ago). */
  inject(from: number, to: number, msg: Msg): void {
    this.deliver({ id: this.nextId++, from, to, msg });
  }

  /** Deliver queued datagrams round by round (each round's replies form the next). */
  run(maxRounds = 100): void {
    for (let i = 0; i < maxRounds && this.queue.length > 0; i++) this.round();
  }

  /** One delivery round: everything queued now is delivered, lost or parked. */
  round(): void {
    const batch = this.queue;
    this.queue = [];
    const perLink = new Map<string, number>();
    const touched = new Set<number>();
    for (const env of batch) {
      if (this.down.has(env.to) || this.drop(env)) continue;
      if (this.paused.has(env.to)) {
        this.parked.push(env);
        continue;
      }
      if (env.from !== env.to) {
        const link = `${env.from}>${env.to}`;
        const n = (perLink.get(link) ?? 0) + 1;
        perLink.set(link, n);
        if (n > this.burstMax) continue;
      }
      this.node(env.to).step(env.from, env.msg);
      touched.add(env.to);
    }
    for (const s of this.nodes.keys()) if (touched.has(s)) this.collect(s);
  }

  private tickNodes(): void {
    this.now++;
    for (const [sid, r] of this.nodes) {
      if (this.down.has(sid) || this.paused.has(sid) || this.frozen.has(sid)) continue;
      r.tick();
      this.collect(sid);
    }
  }

  /** n ticks; after each, deliver until quiet (a network much faster than a tick). */
  tick(n = 1): void {
    for (let i = 0; i < n; i++) {
      this.tickNodes();
      this.run();
    }
  }

  /** n ticks with one delivery round per tick: a round trip takes two ticks. */
  tickSlow(n = 1): void {
    for (let i = 0; i < n; i++) {
      this.round();
      this.tickNodes();
    }
  }

  /** Tick until `done()` or `max` ticks; returns the ticks taken (max + 1 if never). */
  tickUntil(done: () => boolean, max: number, slow = false): number {
    for (let i = 1; i <= max; i++) {
      if (slow) this.tickSlow(1);
      else this.tick(1);
      if (done()) return i;
    }
    return max + 1;
  }

  pause(sid: number): void {
    this.paused.add(sid);
  }

  resume(sid: number): void {
    this.paused.delete(sid);
    const mine = this.parked.filter((e) => e.to === sid);
    this.parked = this.parked.filter((e) => e.to !== sid);
    this.queue.push(...mine);
  }

  /** Crash a node: its unsent output is lost, it is neither ticked nor reachable. */
  crash(sid: number): void {
    this.down.add(sid);
    this.held.set(sid, []);
    this.queue = this.queue.filter((e) => e.to !== sid);
  }

  /**
   * Restart a crashed node from its disk: after a process kill every written
   * record is there (page cache); after a power loss only the synced ones.
   */
  restart(sid: number, kind: 'kill' | 'power'): Replica {
    this.crash(sid);
    const d = this.disk.get(sid)!;
    if (kind === 'power') d.records = d.records.slice(0, d.synced);
    // Opening the log syncs what it replays before anything is sent (the daemon's rule).
    d.synced = d.records.length;
    const r = this.make(sid);
    r.restore(d.snapshot, d.records);
    this.nodes.set(sid, r);
    this.down.delete(sid);
    this.collect(sid);
    return r;
  }

  /** A node that lost its disk comes back empty and must rejoin (Paxos Made Live). */
  wipe(sid: number): Replica {
    this.crash(sid);
    this.disk.set(sid, { snapshot: null, records: [], synced: 0 });
    this.applied.set(sid, new Map());
    const r = this.make(sid);
    r.restore(null, []);
    this.nodes.set(sid, r);
    this.down.delete(sid);
    this.collect(sid);
    return r;
  }

  /** Datagrams sent so far that match. */
  sent(pred: (e: Env) => boolean): Env[] {
    return this.history.filter(pred);
  }

  /** Submit a command at `sid` and take its turn (the accept goes into the queue). */
  submit(sid: number, c: Cmd): string {
    const res = this.node(sid).submit(c).kind;
    this.collect(sid);
    return res;
  }
}
