import { performance } from 'node:perf_hooks';
import { PaxosClient, PaxosClientError, type Session } from '../client';
import type { ClientConfig } from '../io/config';
import type { loadKeyring } from '../io/keys';
import type { OpKind } from './args';
import { warn } from './log';
import { Samples } from './stats';

/*
 * The closed-loop load that paxos-bench puts on a cluster.
 *
 * Each logical client (a Session: its own cid/seq stream) has exactly one
 * operation outstanding and sends the next one as soon as the answer arrives.
 * Logical clients share sockets: one PaxosClient per CLIENTS_PER_SOCKET sessions.
 * Latency is measured per operation with performance.now() (send to answer,
 * retries included). Only operations that complete inside the measurement
 * window count; the warm-up before it is discarded.
 */

export const CLIENTS_PER_SOCKET = 16;

export interface Target {
  clientConfig: ClientConfig;
  keys?: ReturnType<typeof loadKeyring>;
  leader?: number;
}

/** `sockets` clients (one UDP socket each) for the target, trying `leader` first. */
function clientsFor(target: Target, sockets: number, leader: number | undefined): PaxosClient[] {
  return Array.from({ length: sockets }, () =>
    PaxosClient.fromConfig(target.clientConfig, { keys: target.keys, leader }),
  );
}

export interface Counts {
  ops: number;
  errors: number;
  unknown: number;
}

/**
 * Closed-loop load over `n` logical clients. Runs until stop(). Every completion
 * is offered to `onDone` (failover timing) and counted in the current window.
 */
export class Load {
  readonly clients: PaxosClient[];
  private readonly sessions: Session[] = [];
  private workers: Promise<void>[] = [];
  private stopping = false;
  /** Current measurement window: completions in [winStart, winEnd) count. */
  private winStart = Infinity;
  private winEnd = Infinity;
  readonly samples = new Samples();
  readonly window: Counts = { ops: 0, errors: 0, unknown: 0 };
  /** Since the last progress tick (any phase). */
  readonly tick: Counts = { ops: 0, errors: 0, unknown: 0 };
  readonly tickSamples = new Samples();
  readonly errorKinds = new Map<string, number>();
  onDone: ((ok: boolean, sid: number, at: number, latMs: number, isWrite: boolean) => void) | null =
    null;

  constructor(
    target: Target,
    readonly n: number,
    private readonly op: OpKind,
    private readonly keyNames: string[],
    private readonly valueBytes: number,
    private readonly collectTick: boolean,
  ) {
    const sockets = Math.ceil(n / CLIENTS_PER_SOCKET);
    this.clients = clientsFor(target, sockets, target.leader ?? target.clientConfig.leader);
    for (let i = 0; i < n; i++) this.sessions.push(this.clients[i % sockets].session());
  }

  start(): void {
    this.workers = this.sessions.map((s, i) => this.worker(s, i));
  }

  /** Count only completions in [start, end) (performance.now() ms). */
  setWindow(start: number, end: number): void {
    this.winStart = start;
    this.winEnd = end;
    this.samples.clear();
    this.window.ops = this.window.errors = this.window.unknown = 0;
  }

  private value(i: number): string {
    // Printable, different per client, fixed size.
    const s = `v${i.toString(36)}-`;
    return s.repeat(Math.ceil(this.valueBytes / s.length) + 1).slice(0, this.valueBytes);
  }

  private async worker(session: Session, i: number): Promise<void> {
    const value = this.value(i);
    const keys = this.keyNames;
    let rnd = ((i + 1) * 2654435761) >>> 0 || 1;
    while (!this.stopping) {
      // xorshift32: cheap and good enough to pick keys and the mix.
      rnd ^= rnd << 13;
      rnd >>>= 0;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      rnd >>>= 0;
      const key = keys[rnd % keys.length];
      const isGet = this.op === 'get' || (this.op === 'mix' && (rnd & 0x100000) === 0);
      const t0 = performance.now();
      let ok = false;
      let unknown = false;
      let sid = -1;
      try {
        const r = isGet ? await session.get(key) : await session.put(key, value);
        ok = r.ok;
        sid = r.sid;
        if (!ok) this.noteError(r.err ?? 'refused');
      } catch (e) {
        if (e instanceof PaxosClientError && e.code === 'closed') return;
        unknown = true;
        this.noteError(e instanceof PaxosClientError ? 'timeout (outcome unknown)' : String(e));
      }
      const t1 = performance.now();
      const lat = t1 - t0;
      if (t1 >= this.winStart && t1 < this.winEnd) {
        if (ok) {
          this.window.ops++;
          this.samples.push(lat);
        } else if (unknown) this.window.unknown++;
        else this.window.errors++;
      }
      if (this.collectTick) {
        if (ok) {
          this.tick.ops++;
          this.tickSamples.push(lat);
        } else if (unknown) this.tick.unknown++;
        else this.tick.errors++;
      }
      if (this.onDone) this.onDone(ok, sid, t1, lat, !isGet);
    }
  }

  private noteError(kind: string): void {
    if (this.errorKinds.size < 20 || this.errorKinds.has(kind))
      this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }

  resetTick(): void {
    this.tick.ops = this.tick.errors = this.tick.unknown = 0;
    this.tickSamples.clear();
  }

  clientStats(): { retries: number; redirects: number } {
    let retries = 0;
    let redirects = 0;
    for (const c of this.clients) {
      retries += c.stats.retries;
      redirects += c.stats.redirects;
    }
    return { retries, redirects };
  }

  /** Stop sending; wait until every outstanding operation has its answer. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
    for (const c of this.clients) c.close();
  }
}

/** Write every key once so that gets find values. */
export async function preload(
  target: Target,
  keyNames: string[],
  valueBytes: number,
): Promise<void> {
  const conc = 64;
  const clients = clientsFor(target, conc / CLIENTS_PER_SOCKET, target.leader);
  const value = 'p'.repeat(valueBytes);
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: conc }, async (_, i) => {
      const s = clients[i % clients.length].session();
      while (next < keyNames.length) {
        const key = keyNames[next++];
        try {
          const r = await s.put(key, value);
          if (!r.ok) failed++;
        } catch {
          failed++;
        }
      }
    }),
  );
  for (const c of clients) c.close();
  if (failed > 0) warn(`paxos-bench: WARNING: ${failed} preload writes failed`);
}
