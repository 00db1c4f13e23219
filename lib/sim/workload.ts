import type { HistoryEvent, KvResult } from '../check/linearizability';
import {
  PaxosClient,
  PaxosClientError,
  type ClientTimers,
  type OpResult,
  type Session,
} from '../client';
import type { Prng } from '../core/prng';
import type { CmdResult } from '../core/types';
import type { KvOp } from '../sm/kv';

/** Client milliseconds per simulated tick (the client's timers run on simulated time). */
export const TICK_MS = 10;

/** The cluster id the simulated clients and nodes seal their datagrams with. */
export const SIM_CLUSTER_ID = 'sim';

export interface WorkloadOptions {
  keys: string[];
  /** Ticks a client waits between two operations: uniform in [0, thinkMax]. */
  thinkMax: number;
  /** PaxosClient's first retransmit, in ticks (it backs off up to 4x). */
  retryTicks: number;
  /** Share of puts and cas whose value is padded to `bigValueBytes` (0 = never). */
  bigValues: number;
  /** Bounds of a padded value's length: around the nodes' value limits. */
  bigValueBytes: [number, number];
}

export interface ClientHooks {
  now(): number;
  /** Strictly increasing logical time for history call/return stamps. */
  clock(): number;
  /** A datagram from client address `from` to node `to`. */
  send(from: number, to: number, datagram: Buffer): void;
  trace(line: string): void;
}

/**
 * Simulated time for one PaxosClient: its timers fire when the simulator
 * advances the clock, in due order, and deferred work ("after this turn") runs
 * when the simulator drains it, so a run stays a function of its seed.
 */
export class SimTimers implements ClientTimers {
  private nowMs = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; every: number; fn: () => void }>();
  private deferred: (() => void)[] = [];

  now(): number {
    return this.nowMs;
  }
  setInterval(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.nowMs + ms, every: Math.max(1, ms), fn });
    return id;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.nowMs + ms, every: 0, fn });
    return id;
  }
  clearInterval(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  /** Move the clock to `ms`: fire due timers (in creation order), then the deferred work. */
  advance(ms: number): void {
    this.nowMs = ms;
    for (const [id, t] of [...this.timers]) {
      if (t.at > ms || !this.timers.has(id)) continue;
      if (t.every > 0) t.at = ms + t.every;
      else this.timers.delete(id);
      t.fn();
    }
    this.drain();
  }

  /** Run the deferred work (and what it defers in turn). */
  drain(): void {
    while (this.deferred.length > 0) {
      const fns = this.deferred;
      this.deferred = [];
      for (const fn of fns) fn();
    }
  }
}

/** The operation a simulated client is waiting for. */
interface Current {
  op: KvOp;
  event: HistoryEvent;
  /** Sim tick of the call (the history uses a finer logical clock). */
  callTick: number;
}

/**
 * A simulated client: the real PaxosClient (lib/client.ts: sessions registered
 * through the log, retries, redirects, "outcome unknown" instead of a re-run)
 * over the simulated network and simulated time, one session, one operation at
 * a time. This object only chooses operations and records the history.
 */
export class SimWorker {
  readonly client: PaxosClient;
  private readonly session: Session;
  private readonly timers = new SimTimers();
  private onDatagram: (buf: Buffer) => void = () => undefined;
  cur: Current | null = null;
  private nextOpAt: number;
  /** Issue no new operations (liveness drain). An outstanding one still retries. */
  stopped = false;
  completed = 0;
  /** Writes that ended "outcome unknown" (session expired, or stale). */
  unknown = 0;
  /** Writes refused at admission (too large): they certainly never ran. */
  refused = 0;
  /** Latency (ticks) of each op completed after `liveFrom`, measured from max(call, liveFrom). */
  maxLiveLatency = 0;
  liveFrom = Infinity;
  /** The request (cid:seq) that answered each completed history event. */
  readonly requestOf = new Map<HistoryEvent, string>();
  private readonly lastSeen = new Map<string, string | null>();
  private writes = 0;

  constructor(
    /** The client's number in the history. */
    readonly cid: number,
    /** Its network address. */
    readonly addr: number,
    sids: number[],
    private readonly prng: Prng,
    private readonly o: WorkloadOptions,
    private readonly h: ClientHooks,
    readonly history: HistoryEvent[],
  ) {
    const retryMs = o.retryTicks * TICK_MS;
    this.client = new PaxosClient({
      servers: sids.map((sid) => ({ sid, host: 'sim', clientPort: sid })),
      leader: prng.pick(sids),
      // Never give up: a request still pending when the run ends fails liveness.
      timeoutMs: Number.MAX_SAFE_INTEGER / 2,
      retryMs,
      clusterId: SIM_CLUSTER_ID,
      transport: {
        send: (buf, server) => h.send(addr, server.sid, buf),
        listen: (fn) => (this.onDatagram = fn),
        close: () => undefined,
      },
      timers: this.timers,
      randomU32: () => prng.nextU32(),
    });
    this.session = this.client.session();
    this.nextOpAt = prng.int(o.thinkMax + 1);
  }

  /** Believe `sid` leads (a schedule family: clients that last talked to a stale leader). */
  suggestLeader(sid: number): void {
    this.client.preferServer(sid);
  }

  /** A datagram from a node. */
  receive(buf: Buffer): void {
    this.onDatagram(buf);
    this.timers.drain();
  }

  private newOp(): KvOp {
    const key = this.prng.pick(this.o.keys);
    let fresh = `c${this.cid}.${++this.writes}`;
    if (this.o.bigValues > 0 && this.prng.chance(this.o.bigValues))
      fresh = fresh.padEnd(this.prng.range(...this.o.bigValueBytes), '.');
    const r = this.prng.int(100);
    if (r < 30) return { kind: 'get', key };
    if (r < 60) return { kind: 'put', key, value: fresh };
    if (r < 70) return { kind: 'del', key };
    const seen = this.lastSeen.get(key);
    const expected = seen !== undefined && this.prng.chance(0.8) ? seen : null;
    return { kind: 'cas', key, expected, value: fresh };
  }

  tick(): void {
    const now = this.h.now();
    this.timers.advance(now * TICK_MS);
    if (this.cur || this.stopped || now < this.nextOpAt) return;
    const op = this.newOp();
    const event: HistoryEvent = {
      client: this.cid,
      call: this.h.clock(),
      ret: null,
      op,
      result: 'unknown',
    };
    this.history.push(event);
    const cur: Current = { op, event, callTick: now };
    this.cur = cur;
    this.h.trace(`client ${this.cid} call ${describe(op)}`);
    this.session.submit(op, (err, r) => this.done(cur, err, r));
    this.timers.drain();
  }

  private done(c: Current, err: Error | null, r: OpResult | undefined): void {
    const now = this.h.now();
    if (err) {
      // Outcome unknown (PaxosClient never re-runs a write): the checker lets it
      // take effect at any time after its call, or never.
      if (!(err instanceof PaxosClientError) || err.code !== 'unknown') throw err;
      this.unknown++;
      this.h.trace(`client ${this.cid} unknown ${describe(c.op)}: ${err.message}`);
    } else {
      const res = r!;
      if (/^(too_large|bad_op):/.test(res.err ?? '')) {
        // Refused at admission: it certainly never ran. Out of the history, so a
        // cluster that applied it anyway shows a value no operation wrote.
        this.refused++;
        this.history.splice(this.history.indexOf(c.event), 1);
      } else {
        c.event.ret = this.h.clock();
        c.event.result = toKvResult(c.op, res);
        this.requestOf.set(c.event, res.request);
        this.see(c.op, res);
      }
      this.h.trace(
        `client ${this.cid} ret ${res.request} from ${res.sid}: ${JSON.stringify({ ok: res.ok, value: res.value, err: res.err })} (${res.attempts} sends)`,
      );
    }
    if (now >= this.liveFrom) {
      const lat = now - Math.max(c.callTick, this.liveFrom);
      if (lat > this.maxLiveLatency) this.maxLiveLatency = lat;
    }
    this.cur = null;
    this.completed++;
    this.nextOpAt = now + this.prng.int(this.o.thinkMax + 1);
  }

  /** What this client last saw of a key (its cas operations expect it). */
  private see(op: KvOp, r: CmdResult): void {
    if (op.kind === 'get' && r.ok) this.lastSeen.set(op.key, r.value ?? null);
    else if (op.kind === 'put' || (op.kind === 'cas' && r.ok)) this.lastSeen.set(op.key, op.value);
    else if (op.kind === 'del') this.lastSeen.set(op.key, null);
    else if (op.kind === 'cas' && r.value !== undefined) this.lastSeen.set(op.key, r.value);
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
  const v = (x: string): string => (x.length <= 24 ? x : `${x.slice(0, 16)}…(${x.length})`);
  switch (op.kind) {
    case 'get':
      return `get ${op.key}`;
    case 'del':
      return `del ${op.key}`;
    case 'put':
      return `put ${op.key}=${v(op.value)}`;
    case 'cas':
      return `cas ${op.key} ${op.expected === null ? '<none>' : v(op.expected)}->${v(op.value)}`;
  }
}
