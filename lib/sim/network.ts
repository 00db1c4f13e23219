import type { Prng } from '../core/prng';

/**
 * The simulated network of the deterministic simulator: every packet gets a
 * delivery tick drawn from the run's single seeded PRNG, so loss, duplication,
 * reordering and delay all replay exactly from the seed. It is an adversary in
 * the sense UDP is one: besides loss and short delays, any datagram ever sent
 * may come back much later (a bounded reservoir of past packets is re-injected,
 * duplicates included), links may be cut one way or non-transitively (bridges),
 * and loss bursts may hit one direction or one message type. Cuts are checked
 * both when a packet is sent and when it would be delivered (a packet in
 * flight on a link that gets cut is lost).
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

/** Re-delivery of old datagrams (per run). */
export interface ReplayFaults {
  /** Per step: probability of re-injecting old packets from the archive. */
  rate: number;
  /** Packets re-injected at once (uniform in 1..burst). */
  burst: number;
  /** A re-injected packet arrives within this many ticks. */
  delayMax: number;
  /** Reservoir size: how many past packets can come back. */
  archive: number;
}

export const NO_REPLAY: ReplayFaults = Object.freeze({
  rate: 0,
  burst: 1,
  delayMax: 1,
  archive: 0,
});

export interface Packet<P> {
  from: number;
  to: number;
  payload: P;
  sentAt: number;
}

export type PartitionKind =
  'symmetric' | 'one-way' | 'leader-isolated' | 'flapping' | 'bridge' | 'persistent';

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

/**
 * A loss (or delay) burst on some links and message types. null = any. Real
 * networks lose by direction (a full receive queue) and by size (big packets).
 */
export interface Burst {
  label: string;
  from: number | null;
  to: number | null;
  /** Message types hit (as the classifier names them); null = every type. */
  types: ReadonlySet<string> | null;
  loss: number;
  /** Extra delay of the packets that are not lost (ticks, uniform in 0..delay). */
  delay: number;
  until: number;
}

export interface NetStats {
  sent: number;
  delivered: number;
  lost: number;
  cut: number;
  duplicated: number;
  /** Old packets re-injected from the archive. */
  replayed: number;
  burstLost: number;
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
  private bursts: Burst[] = [];
  /** Reservoir sample (Vitter's algorithm R) of every packet sent this run. */
  private readonly archive: Packet<P>[] = [];
  private archived = 0;
  replay: ReplayFaults = NO_REPLAY;
  readonly stats: NetStats = {
    sent: 0,
    delivered: 0,
    lost: 0,
    cut: 0,
    duplicated: 0,
    replayed: 0,
    burstLost: 0,
  };

  constructor(
    private readonly prng: Prng,
    /** Faults of node-to-node links. */
    public peer: LinkFaults,
    /** Faults of client links (never partitioned). */
    public client: LinkFaults,
    /** Addresses >= this are clients. */
    private readonly clientBase: number,
    /** The message type of a payload (for per-type bursts and targeted re-delivery). */
    private readonly classify: (p: P) => string = () => '',
  ) {}

  addPartition(p: Partition): void {
    this.partitions.push(p);
    this.blockedAt = -1;
  }

  addBurst(b: Burst): void {
    this.bursts.push(b);
  }

  /** Remove every partition and burst. */
  healAll(): void {
    this.partitions = [];
    this.bursts = [];
    this.blocked.clear();
    this.blockedAt = -1;
  }

  activePartitions(): readonly Partition[] {
    return this.partitions;
  }

  activeBursts(): readonly Burst[] {
    return this.bursts;
  }

  /** Recompute the cut links for tick `now` (expired partitions and bursts are dropped). */
  update(now: number): string[] {
    const ended: string[] = [];
    const keep: Partition[] = [];
    for (const p of this.partitions) {
      if (now >= p.until) ended.push(p.label);
      else keep.push(p);
    }
    if (this.bursts.length > 0) {
      const live = this.bursts.filter((b) => now < b.until);
      for (const b of this.bursts) if (now >= b.until) ended.push(b.label);
      this.bursts = live;
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

  /** Currently cut directed links (for the connected-majority check). */
  cutLinks(): Set<number> {
    return new Set(this.blocked);
  }

  send(from: number, to: number, payload: P, now: number): void {
    this.stats.sent++;
    const clientLink = from >= this.clientBase || to >= this.clientBase;
    const f = clientLink ? this.client : this.peer;
    const pkt: Packet<P> = { from, to, payload, sentAt: now };
    // Archived before any fault: a datagram lost now may still turn up later.
    this.remember(pkt);
    if (!clientLink && this.isCut(from, to)) {
      this.stats.cut++;
      return;
    }
    let extra = 0;
    if (!clientLink && this.bursts.length > 0) {
      const type = this.classify(payload);
      for (const b of this.bursts) {
        if (b.from !== null && b.from !== from) continue;
        if (b.to !== null && b.to !== to) continue;
        if (b.types !== null && !b.types.has(type)) continue;
        if (b.loss > 0 && this.prng.chance(b.loss)) {
          this.stats.burstLost++;
          return;
        }
        if (b.delay > 0) extra += this.prng.int(b.delay + 1);
      }
    }
    if (f.loss > 0 && this.prng.chance(f.loss)) {
      this.stats.lost++;
      return;
    }
    const copies = f.dup > 0 && this.prng.chance(f.dup) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = this.prng.range(f.delayMin, f.delayMax) + extra;
      if (f.spike > 0 && this.prng.chance(f.spike)) delay += this.prng.range(1, f.spikeMax);
      this.schedule(pkt, now + Math.max(1, delay));
    }
  }

  private schedule(p: Packet<P>, at: number): void {
    let bucket = this.buckets.get(at);
    if (!bucket) this.buckets.set(at, (bucket = []));
    bucket.push(p);
  }

  private remember(p: Packet<P>): void {
    const cap = this.replay.archive;
    if (cap <= 0) return;
    this.archived++;
    if (this.archive.length < cap) this.archive.push(p);
    else {
      const j = this.prng.int(this.archived);
      if (j < cap) this.archive[j] = p;
    }
  }

  /**
   * Re-deliver old datagrams (called once per step): with probability
   * replay.rate, 1..burst archived packets (possibly the same one twice) are
   * scheduled again, each within replay.delayMax ticks. `want` narrows the
   * choice (targeted schedules), falling back to any packet.
   */
  reinject(now: number, want?: (p: Packet<P>) => boolean): number {
    const r = this.replay;
    if (this.archive.length === 0 || r.rate <= 0 || !this.prng.chance(r.rate)) return 0;
    const k = this.prng.range(1, r.burst);
    for (let i = 0; i < k; i++) this.redeliver(now, r.delayMax, want);
    return k;
  }

  /** Schedule one archived packet again (targeted schedules call this directly). */
  redeliver(now: number, delayMax: number, want?: (p: Packet<P>) => boolean): Packet<P> | null {
    if (this.archive.length === 0) return null;
    let p = this.archive[this.prng.int(this.archive.length)];
    if (want) {
      // A few tries for a matching packet; then any (the draw count stays bounded).
      for (let t = 0; t < 8 && !want(p); t++) p = this.archive[this.prng.int(this.archive.length)];
    }
    this.stats.replayed++;
    this.schedule(p, now + this.prng.range(1, Math.max(1, delayMax)));
    return p;
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

/**
 * Is there a connected majority: >= quorum nodes with every link between them
 * working both ways? Returns the largest such set (empty if none). n <= 7, so
 * trying every subset is cheap.
 */
export function connectedMajority(
  sids: readonly number[],
  quorum: number,
  isCut: (from: number, to: number) => boolean,
): number[] {
  let best: number[] = [];
  const n = sids.length;
  for (let mask = 1; mask < 1 << n; mask++) {
    const set = sids.filter((_, i) => mask & (1 << i));
    if (set.length < quorum || set.length <= best.length) continue;
    let ok = true;
    for (const a of set) {
      for (const b of set) if (a !== b && isCut(a, b)) ok = false;
      if (!ok) break;
    }
    if (ok) best = set;
  }
  return best;
}
