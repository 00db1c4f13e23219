import type { StateMachine } from './types';

/**
 * Two replicas whose rolling state hashes differ at one slot: they applied
 * different commands, or the same commands with different results, at or
 * before that slot. Paxos chooses one value per slot, so this is a bug or a
 * corruption, never a legal state.
 */
export interface Divergence {
  slot: number;
  peer: number;
  mine: Uint8Array;
  theirs: Uint8Array;
  /**
   * True when this node distrusts its own state (fail-stop): it differs from
   * its leader, or from a majority of the cluster. False when it reports a peer.
   */
  self: boolean;
  /** Set when this node found itself in the minority: the peers that differ. */
  outvotedBy?: number[];
}

/** Length of a SHA-256 hash; anything else from a peer is not compared. */
const HASH_BYTES = 32;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compares the rolling state hash peers report in heartbeats with our own at
 * the same slot. Pure bytes equality, no clocks: deterministic like the rest
 * of lib/core. A report for a slot we have not applied yet waits (one per
 * peer, the newest) until we apply it; one for a slot too old to be remembered
 * is skipped, so a comparison never guesses.
 */
export class StateCheck {
  /** This node's first divergence from its leader (sticky until a restart). */
  self: Divergence | null = null;
  /** Peers found to differ from this node, by sid. */
  readonly peers = new Map<number, Divergence>();
  private readonly waiting = new Map<
    number,
    { slot: number; hash: Uint8Array; fromLeader: boolean }
  >();

  /**
   * `quorum`: a node whose hash differs from this many voters' is in the
   * minority (with itself, fewer than a quorum agree with it): it distrusts
   * itself rather than them. A function when the membership can change: the
   * majority of the newest configuration, and `votes` says who is a voter in it
   * (a learner's or a removed node's report is kept, never counted).
   */
  constructor(
    private readonly sm: StateMachine,
    private readonly quorum: number | (() => number),
    private readonly votes: (sid: number) => boolean = () => true,
  ) {}

  /** Our (slot, hash) for a heartbeat; empty while unknown. */
  ours(): { hashSlot?: number; hash?: Uint8Array } {
    const d = this.sm.digest?.();
    return d ? { hashSlot: d.slot, hash: d.hash } : {};
  }

  /**
   * A peer's report. `fromLeader`: it leads, at or above our promise (a
   * mismatch makes this node distrust itself); any other peer's mismatch is
   * reported as the peer's, until a majority differs from us. Every node
   * compares every peer: a node cut off from its leader is still compared by
   * the nodes it hears. Returns a new divergence, or null.
   */
  heard(
    from: number,
    fromLeader: boolean,
    slot: number | undefined,
    hash: Uint8Array | undefined,
    applied: number,
  ): Divergence | null {
    if (slot === undefined || hash === undefined || hash.length !== HASH_BYTES) return null;
    if (this.unknown() && slot === applied) {
      this.sm.adoptDigest?.(slot, hash);
      return null;
    }
    if (slot > applied) {
      this.waiting.set(from, { slot, hash, fromLeader });
      return null;
    }
    return this.compare(from, fromLeader, slot, hash);
  }

  /**
   * Our chain is unknown (restored from a snapshot without a hash): nothing to
   * compare; a peer's hash of exactly our last applied slot is adopted instead.
   */
  private unknown(): boolean {
    return this.sm.digest?.() === null;
  }

  /** After applying through `applied`: reports that waited for it. */
  appliedThrough(applied: number): Divergence[] {
    const out: Divergence[] = [];
    for (const [from, w] of this.waiting) {
      if (w.slot > applied) continue;
      this.waiting.delete(from);
      if (this.unknown()) {
        if (w.slot === applied) this.sm.adoptDigest?.(w.slot, w.hash);
        continue;
      }
      const d = this.compare(from, w.fromLeader, w.slot, w.hash);
      if (d) out.push(d);
    }
    return out;
  }

  private compare(
    from: number,
    fromLeader: boolean,
    slot: number,
    theirs: Uint8Array,
  ): Divergence | null {
    const mine = this.sm.hashAt?.(slot);
    if (mine === undefined) return null;
    if (sameBytes(mine, theirs)) {
      this.peers.delete(from); // a follower restored by its operator agrees again
      return null;
    }
    const d: Divergence = { slot, peer: from, mine, theirs, self: fromLeader };
    if (this.self) return null;
    if (fromLeader) return (this.self = d);
    if (this.peers.has(from)) return null;
    this.peers.set(from, d);
    const against = [...this.peers.keys()].filter(this.votes);
    const quorum = typeof this.quorum === 'number' ? this.quorum : this.quorum();
    if (against.length < quorum) return d;
    return (this.self = { ...d, self: true, outvotedBy: against });
  }
}

function hexOf(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** The event line: slot and both hashes, and what happens next. */
export function describeDivergence(d: Divergence): string {
  const stop =
    'this node stops answering clients until an operator restarts it (README: Diagnostics)';
  if (d.outvotedBy)
    return `DIVERGED at slot ${d.slot}: state hash here ${hexOf(d.mine)} differs from peers ${d.outvotedBy.join(', ')} (a majority; peer ${d.peer} has ${hexOf(d.theirs)}); ${stop}`;
  return d.self
    ? `DIVERGED at slot ${d.slot}: state hash here ${hexOf(d.mine)}, leader ${d.peer} has ${hexOf(d.theirs)}; ${stop}`
    : `peer ${d.peer} DIVERGED at slot ${d.slot}: its state hash ${hexOf(d.theirs)}, ours ${hexOf(d.mine)}`;
}

/** True for a divergence event line, this node's or a peer's (the daemon logs it as ERROR). */
export function isDivergenceEvent(line: string): boolean {
  return line.includes('DIVERGED at slot');
}
