import type { Prng } from '../core/prng';

/**
 * The simulated network of the deterministic simulator: every packet gets a
 * delivery tick drawn from the run's single seeded PRNG, so loss, duplication,
 * reordering and delay spikes all replay exactly from the seed. Partitions are
 * sets of cut directed links, checked both when a packet is sent and when it
 * would be delivered (a packet in flight on a link that gets cut is lost).
 */

export interface LinkFaults {
  /** Probability that a packet is dropped. */
  loss: number;
  /** Probability that a packet is delivered twice (each copy with its own delay). */
  dup: number;
  /** One-way delay in ticks, uniform in [delayMin, delayMax]: reordering comes from the spread. */
  delayMin: number;
  delayMax: number;
  /** Probability of a delay spike, adding up to spikeMax ticks. */
  spike: number;
  spikeMax: number;
}

export const CALM: LinkFaults = Object.freeze({
  loss: 0,
  dup: 0,
  delayMin: 1,
  delayMax: 2,
  spike: 0,
  spikeMax: 0,
});

export interface Packet<P> {
  from: number;
  to: number;
  payload: P;
  sentAt: number;
}

export type PartitionKind = 'symmetric' | 'one-way' | 'leader-isolated' | 'flapping';

/** A scheduled partition: `cut` holds directed links (from -> to) that carry nothing. */
export interface Partition {
  kind: PartitionKind;
  label: string;
  cut: [number, number][];
  start: number;
  until: number;
  /** Flapping partitions are cut only during even periods of this many ticks. */
  flapTicks: number;
}

export interface NetStats {
  sent: number;
  delivered: number;
  lost: number;
  cut: number;
  duplicated: number;
}

function linkKey(from: number, to: number): number {
  return from * 65536 + to;
}

export class SimNetwork<P> {
  /** Tick -> packets due then (shuffled on delivery, so same-tick order is random too). */
  private readonly buckets = new Map<number, Packet<P>[]>();
  private partitions: Partition[] = [];
  private blocked = new Set<number>();
  private blockedAt = -1;
  readonly stats: NetStats = { sent: 0, delivered: 0, lost: 0, cut: 0, duplicated: 0 };

  constructor(
    private readonly prng: Prng,
    /** Faults of node-to-node links. */
    public peer: LinkFaults,
    /** Faults of client links (never partitioned). */
    public client: LinkFaults,
    /** Addresses >= this are clients. */
    private readonly clientBase: number,
  ) {}

  addPartition(p: Partition): void {
    this.partitions.push(p);
    this.blockedAt = -1;
  }

  healAll(): void {
    this.partitions = [];
    this.blocked.clear();
    this.blockedAt = -1;
  }

  activePartitions(): readonly Partition[] {
    return this.partitions;
  }

  /** Recompute the cut links for tick `now` (expired partitions are dropped). */
  update(now: number): string[] {
    const ended: string[] = [];
    const keep: Partition[] = [];
    for (const p of this.partitions) {
      if (now >= p.until) ended.push(p.label);
      else keep.push(p);
    }
    if (ended.length > 0 || this.blockedAt < 0 || keep.some((p) => p.flapTicks > 0)) {
      this.partitions = keep;
      this.blocked = new Set();
      for (const p of keep) {
        if (p.flapTicks > 0 && Math.floor((now - p.start) / p.flapTicks) % 2 === 1) continue;
        for (const [a, b] of p.cut) this.blocked.add(linkKey(a, b));
      }
    }
    this.blockedAt = now;
    return ended;
  }

  isCut(from: number, to: number): boolean {
    return this.blocked.size > 0 && this.blocked.has(linkKey(from, to));
  }

  send(from: number, to: number, payload: P, now: number): void {
    this.stats.sent++;
    const clientLink = from >= this.clientBase || to >= this.clientBase;
    const f = clientLink ? this.client : this.peer;
    if (!clientLink && this.isCut(from, to)) {
      this.stats.cut++;
      return;
    }
    if (f.loss > 0 && this.prng.chance(f.loss)) {
      this.stats.lost++;
      return;
    }
    const copies = f.dup > 0 && this.prng.chance(f.dup) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = this.prng.range(f.delayMin, f.delayMax);
      if (f.spike > 0 && this.prng.chance(f.spike)) delay += this.prng.range(1, f.spikeMax);
      const at = now + Math.max(1, delay);
      let bucket = this.buckets.get(at);
      if (!bucket) this.buckets.set(at, (bucket = []));
      bucket.push({ from, to, payload, sentAt: now });
    }
  }

  /** Packets due at `now`, in a seeded random order, with cut links filtered out. */
  take(now: number): Packet<P>[] {
    const bucket = this.buckets.get(now);
    if (!bucket) return [];
    this.buckets.delete(now);
    for (let i = bucket.length - 1; i > 0; i--) {
      const j = this.prng.int(i + 1);
      const t = bucket[i];
      bucket[i] = bucket[j];
      bucket[j] = t;
    }
    const out: Packet<P>[] = [];
    for (const p of bucket) {
      if (p.from < this.clientBase && p.to < this.clientBase && this.isCut(p.from, p.to)) {
        this.stats.cut++;
        continue;
      }
      this.stats.delivered++;
      out.push(p);
    }
    return out;
  }

  inFlight(): number {
    let n = 0;
    for (const b of this.buckets.values()) n += b.length;
    return n;
  }
}
