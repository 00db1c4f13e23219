import { Prng } from '../core/prng';
import type { LinkFaults } from './network';

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
  limits: {
    windowSlots: number;
    batchBytesMax: number;
    pendingMax: number;
    catchupBytesMax: number;
    snapshotEverySlots: number;
    keepSlots: number | undefined;
    sessionsMax: number;
    valueBytesMax: number;
  };
  net: LinkFaults;
  clientNet: LinkFaults;
  /** Per-step probabilities during the fault phase. */
  faults: {
    crash: number;
    /** Per ready() handled: crash part-way (torn persist, snapshot or sends lost). */
    crashInReady: number;
    pause: number;
    slowDisk: number;
    partition: number;
    /** Step at which one node loses its disk (restarts without bootstrap), or -1. */
    wipeAt: number;
    /** A second lost disk later on (another node, once the first one votes again), or -1. */
    wipeAgainAt: number;
  };
  /** Per node (same order as sids): ticks per step, e.g. 0.9 = a slow clock. */
  clockRates: number[];
  /** Probability of running ready() after each delivered message (vs once per step). */
  flushPerMessage: number;
  clients: number;
  keys: number;
  thinkMax: number;
  clientTimeout: [number, number];
  /** Deliberately broken driver, to check that the invariants catch it (tests only). */
  sabotage: Sabotage;
  /** Gets take the leader's read-index path (submitRead) instead of a log slot. */
  readIndex: boolean;
}

export type Sabotage = 'none' | 'drop-promise-records' | 'drop-accept-records';

export interface SimOverrides {
  nodes?: number;
  faultSteps?: number;
  liveSteps?: number;
  snapshotEverySlots?: number;
  clients?: number;
  wipe?: boolean;
  sabotage?: Sabotage;
}

export const NODE_COUNTS = [3, 5, 7] as const;

/** The run's one PRNG: the configuration is its first draws, then the run itself. */
export function runPrng(seed: number): Prng {
  return new Prng(seed);
}

/**
 * Draw a run's configuration from the run's PRNG. Every value is drawn even when
 * an override replaces it, so an override never shifts the rest of the stream.
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
  const heartbeatTicks = p.range(2, 5);
  const electionTicks = Math.max(4 * heartbeatTicks, p.range(12, 36));
  const retransmitTicks = p.range(2, 4);
  const retransmitMaxTicks = p.range(3 * retransmitTicks, 40);
  const snapEvery = p.pick([3, 5, 8, 16, 40]);
  const catchupBytesMax = p.pick([64, 200, 1000, 60000]);
  // Tiny catch-up chunks (multi-part snapshot transfers) only with frequent
  // snapshots: replaying hundreds of slots one per round trip is merely slow.
  const snapshots = pin(
    o.snapshotEverySlots,
    p.chance(0.5) || catchupBytesMax < 200 ? snapEvery : 1 << 30,
  );
  const keepSlots = p.chance(0.5) ? undefined : p.pick([0, 1, 2, 5]);
  const loss = p.chance(0.15) ? 0 : p.next() * 0.3;
  const delayMax = p.range(1, 6);
  const net: LinkFaults = {
    loss,
    dup: p.chance(0.5) ? p.next() * 0.1 : 0,
    delayMin: 1,
    delayMax,
    spike: p.chance(0.5) ? p.next() * 0.05 : 0,
    // Now and then a packet arrives very late (long after a leader change).
    spikeMax: p.range(5, p.chance(0.2) ? 30 * electionTicks : 4 * electionTicks),
  };
  const clientNet: LinkFaults = { ...net, loss: loss / 2, spikeMax: electionTicks };
  const faultSteps = pin(o.faultSteps, p.range(600, 1600));
  const clients = pin(o.clients, p.range(1, 5));
  const wipeAt = p.range(faultSteps >> 2, faultSteps - 1);
  const wipe = pin(o.wipe, p.chance(0.2));
  const wipeAgain = p.chance(0.3);
  // Storms: a fifth of the runs get several times the crash and partition rates.
  const storm = p.chance(0.2) ? p.range(3, 5) : 1;
  const drift = p.chance(0.3);
  const clockRates = sids.map(() => (drift ? (80 + p.int(41)) / 100 : 1));
  const clientTimeout: [number, number] = [2 * electionTicks, 3 * electionTicks];
  // After the heal: a new leader within a few election periods (bully order, a
  // candidate that may have to catch up first), then each client may need a
  // timeout or two to find it. Generous, but finite: a stuck cluster fails.
  const liveBound = 12 * electionTicks + 4 * retransmitMaxTicks + 2 * clientTimeout[1];
  return {
    seed,
    sids,
    faultSteps,
    liveSteps: pin(o.liveSteps, p.range(100, 300)),
    liveBound,
    timing: { heartbeatTicks, electionTicks, retransmitTicks, retransmitMaxTicks },
    limits: {
      windowSlots: p.pick([1, 2, 4, 8, 32]),
      batchBytesMax: p.pick([120, 300, 1000, 60000]),
      pendingMax: p.pick([2, 8, 1000]),
      catchupBytesMax,
      snapshotEverySlots: snapshots,
      keepSlots,
      sessionsMax: 1000,
      valueBytesMax: 1000,
    },
    net,
    clientNet,
    faults: {
      crash: p.pick([0, 0.002, 0.005, 0.01]) * storm,
      crashInReady: p.pick([0, 0.0005, 0.002]) * storm,
      pause: p.pick([0, 0.002, 0.005]),
      slowDisk: p.pick([0, 0.002, 0.005]),
      partition: p.pick([0, 0.004, 0.01, 0.02]) * storm,
      wipeAt: wipe ? wipeAt : -1,
      wipeAgainAt: wipe && wipeAgain ? p.range(wipeAt + 1, faultSteps) : -1,
    },
    clockRates,
    flushPerMessage: p.pick([0, 0.3, 1]),
    clients,
    keys: p.range(1, 3),
    thinkMax: p.pick([0, 3, 10]),
    clientTimeout,
    sabotage: o.sabotage ?? 'none',
    readIndex: p.chance(0.5),
  };
}

function pin<T>(override: T | undefined, drawn: T): T {
  return override === undefined ? drawn : override;
}

export function describeConfig(c: SimConfig): string {
  const f = c.faults;
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  return [
    `seed=${c.seed} nodes=${c.sids.length} sids=[${c.sids.join(',')}] steps=${c.faultSteps}+${c.liveSteps}+${c.liveBound}`,
    `  timing hb=${c.timing.heartbeatTicks} election=${c.timing.electionTicks} rtx=${c.timing.retransmitTicks}..${c.timing.retransmitMaxTicks}`,
    `  limits window=${c.limits.windowSlots} batch=${c.limits.batchBytesMax}B pending=${c.limits.pendingMax} catchup=${c.limits.catchupBytesMax}B snapshotEvery=${c.limits.snapshotEverySlots >= 1 << 30 ? 'never' : c.limits.snapshotEverySlots} keep=${c.limits.keepSlots ?? 'default'}`,
    `  net loss=${pct(c.net.loss)} dup=${pct(c.net.dup)} delay=${c.net.delayMin}..${c.net.delayMax} spikes=${pct(c.net.spike)} up to ${c.net.spikeMax}`,
    `  faults/step crash=${pct(f.crash)} crashInReady=${pct(f.crashInReady)} pause=${pct(f.pause)} slowDisk=${pct(f.slowDisk)} partition=${pct(f.partition)} wipe=${f.wipeAt >= 0 ? `@${f.wipeAt}${f.wipeAgainAt >= 0 ? `,@${f.wipeAgainAt}` : ''}` : 'no'}`,
    `  clock rates ${c.clockRates.some((r) => r !== 1) ? c.clockRates.join(' ') : 'exact'}`,
    `  clients=${c.clients} keys=${c.keys} think<=${c.thinkMax} flushPerMessage=${c.flushPerMessage} reads=${c.readIndex ? 'read-index' : 'log'}${c.sabotage !== 'none' ? ` SABOTAGE=${c.sabotage}` : ''}`,
  ].join('\n');
}
