/**
 * Types shared by the protocol core, its drivers (daemon, simulator) and the wire
 * codec. The core treats a client operation as opaque bytes; only the state
 * machine decodes it, once, when it applies it.
 */

/** One client command: (client id, sequence) makes retries idempotent. */
export interface Cmd {
  cid: number;
  seq: number;
  op: Uint8Array;
}

/** A slot's value: a batch of commands. An empty batch is a no-op (fills holes). */
export type Value = Cmd[];

/** Sentinel ballot in promise entries: the acceptor knows the slot is chosen. */
export const CHOSEN_BALLOT = -1;

/** [slot, ballot, value]: what an acceptor reports in a promise. */
export type PromiseEntry = [number, number, Value];

/** Peer messages. Every one is safe to receive twice or out of order. */
export type Msg =
  /**
   * Phase 1a for every slot >= from. handoff: the campaign was asked for by the
   * live leader itself (leadership transfer), so leader stickiness does not apply
   * while that hand-off is live: of is the asking leader's ballot, until the
   * hand-off's end by its clock (absent: an older sender; stickiness applies).
   */
  | {
      t: 'prepare';
      ballot: number;
      from: number;
      handoff?: boolean;
      of?: number;
      until?: number;
    }
  /**
   * Leadership transfer: the leader of `ballot` asks the receiver to campaign at
   * once; it has stopped proposing and everything it chose is <= chosen. tick: the
   * leader's tick when the hand-off started; until: the leader's tick when it gives
   * the hand-off up (its own election timeout later: the target's may differ).
   * echoLife/echoTick: the receiver's newest heartbeat the leader had when it sent
   * this copy (the receiver acts only on a copy echoing a heartbeat it sent after
   * it first saw this hand-off: proof the hand-off was live after that moment).
   */
  | {
      t: 'handoff';
      ballot: number;
      chosen: number;
      tick: number;
      until: number;
      echoLife: number;
      echoTick: number;
    }
  /**
   * Phase 1b, possibly in several chunks; each chunk covers slots [lo, hi)
   * (hi = 0 means "to infinity"). base: slots <= base are chosen and compacted.
   */
  | {
      t: 'promise';
      ballot: number;
      from: number;
      lo: number;
      hi: number;
      base: number;
      entries: PromiseEntry[];
      /** The sender's view of every node's incarnation: [sid, inc, ...], nonzero ones only. */
      incs: number[];
    }
  /** Phase 2a for several slots, with the leader's contiguous chosen prefix. */
  | { t: 'accept'; ballot: number; entries: [number, Value][]; commit: number }
  /** Phase 2b for several slots; incs as in promise. */
  | { t: 'accepted'; ballot: number; slots: number[]; incs: number[] }
  /** Refusal: the sender has promised `promised`, higher than `ballot`. */
  | { t: 'nack'; ballot: number; promised: number }
  /** Slots <= through are chosen; those accepted at `ballot` are chosen with that value. */
  | { t: 'commit'; ballot: number; through: number }
  /** Liveness and progress gossip from every node. */
  | {
      t: 'heartbeat';
      promised: number;
      leading: boolean;
      chosen: number;
      next: number;
      /** May lead: votes, caught up with its two-way peers, two-way contact with a majority. */
      eligible: boolean;
      voter: boolean;
      /** SIDs the sender heard within an election timeout (two-way contact is judged from it). */
      heard: number[];
      /** 1 + SID of the live leader the sender follows (pre-vote), 0 if none. */
      leader: number;
      /** The sender's tick count: a leader's heartbeats are news only if it grows. */
      tick: number;
      /**
       * The sender's rolling state hash at its last applied slot (absent: unknown,
       * or an older sender). Replicas that applied the same slots must agree.
       */
      hashSlot?: number;
      hash?: Uint8Array;
      /**
       * Freshness (absent: an older sender, whose heartbeats prove nothing fresh):
       * `life` is random per process life of the sender; `echoLife`/`echoTick` are
       * the recipient's `life` and `tick` in the newest heartbeat the sender got
       * from it. A heartbeat echoing one the recipient sent within an election
       * timeout answers a request of the current period, so a re-delivered old copy
       * cannot vouch for contact, votes or a live leader.
       */
      life?: number;
      echoLife?: number;
      echoTick?: number;
    }
  /**
   * Lost-disk rejoin (PML): a non-voter asks voters for their promise, with a nonce
   * drawn after its restart, so that only answers made after the restart count.
   */
  /**
   * inc = 0: "which incarnation of me do you know?"; inc > 0: "record this as my
   * incarnation" (the answer then comes after that record is durable).
   */
  | {
      t: 'rejoinReq';
      nonce: number;
      inc: number;
      /** inc > 0: false = reserve it, true = activate it (after n - quorum + 1 reserved it). */
      act?: boolean;
    }
  /**
   * inc: the incarnation the sender recorded for the requester (0: none recorded
   * by this request); known: the incarnation it knows for the requester; next:
   * above every slot the sender accepted (and, if it leads, proposed).
   */
  | {
      t: 'rejoinResp';
      nonce: number;
      inc: number;
      known: number;
      promised: number;
      next: number;
      /** The sender's whole incarnation table: a rejoining node re-learns what its disk held. */
      incs: number[];
      /** Answers an activation (else a reservation or step 1). */
      act?: boolean;
      /** The sender's reserved incarnations ([sid, inc, ...] as incs). */
      res?: number[];
    }
  /** Read index: is `ballot` still the highest this acceptor promised? (batched reads) */
  | { t: 'confirm'; ballot: number; round: number }
  | { t: 'confirmed'; ballot: number; round: number }
  /**
   * To a removed node: the configuration applied at `slot` is in force here,
   * durably (every slot before the one it governs from is chosen and synced).
   */
  | { t: 'settled'; slot: number }
  | { t: 'catchupReq'; from: number; to: number }
  /** Chosen values from `from` on; snapshot > 0 means "below that, ask for the snapshot". */
  | { t: 'catchupResp'; from: number; entries: Value[]; snapshot: number; snapshotBytes: number }
  | { t: 'snapshotReq'; slot: number; offset: number }
  | { t: 'snapshotResp'; slot: number; offset: number; total: number; data: Uint8Array };

export type MsgType = Msg['t'];

/** What must be on disk before any message that depends on it leaves the node. */
export type DurableRecord =
  | { t: 'promise'; ballot: number }
  | { t: 'accept'; slot: number; ballot: number; value: Value }
  /** The value accepted at `ballot` for `slot` is chosen. */
  | { t: 'chosen'; slot: number; ballot: number }
  /** Chosen value learned without accepting it (catch-up). */
  | { t: 'learn'; slot: number; value: Value }
  /** This node may vote (bootstrap, or the Paxos Made Live rejoin rule passed). */
  | { t: 'voter' }
  /** Node `sid` (this one or a peer) is at incarnation `inc` (it lost its disk before). */
  | { t: 'incarnation'; sid: number; inc: number; reserve?: boolean }
  /** Checkpoint head: the snapshot file for `slot` is durable. */
  | { t: 'snapshot'; slot: number };

/**
 * One outgoing message. `sync` is the driver contract (etcd-raft's
 * messages-after-append): a message with sync = true vouches for this node's
 * durable state (a promise, an accepted, a confirmed), so it must not leave the
 * node (nor be stepped back into it, when addressed to itself) before every
 * record handed out by this and every earlier ready() is durable. Messages with
 * sync = false may leave at once. Daemon, simulator and tests all obey this one
 * flag; none of them decides by message type on its own.
 */
export interface Outbound {
  to: number;
  msg: Msg;
  sync: boolean;
}

/**
 * Message types that must wait for the sync (see Outbound.sync). Each one tells a
 * peer something that a power loss must not undo:
 * - promise: "I will not accept below this ballot" (PMS phase 1b);
 * - accepted: "I accepted this value" (counted towards a choice, PMS phase 2b);
 * - confirmed: "I have promised nothing higher" (a read-index vote; PML leases).
 */
export const SYNC_BEFORE_SEND: ReadonlySet<Msg['t']> = new Set([
  'promise',
  'accepted',
  'confirmed',
  // "The old configuration's slots are chosen here, for good": a removed node
  // leaves on a majority of these (Replica.mayLeave).
  'settled',
  // "I recorded your new incarnation": from then on my votes name it.
  'rejoinResp',
]);

/** Result of applying one command, as returned to the client. */
export interface CmdResult {
  ok: boolean;
  value?: string | null;
  err?: string;
}

export interface AppliedEntry {
  slot: number;
  cmds: Value;
  results: CmdResult[];
  /** One order-log line per command, identical on every node. */
  lines: string[];
}

/** The rolling state hash after applying `slot` (see lib/sm/statehash.ts). */
export interface StateDigest {
  slot: number;
  hash: Uint8Array;
}

/** One member of a configuration: a voter, or a learner (receives the log, never counted). */
export interface Member {
  sid: number;
  voter: boolean;
  /**
   * Where it listens, when a `member add` gave it (the log then carries it to
   * every node: a node not in the config files is reached through it).
   */
  addr?: MemberAddr;
}

/** A member's address, as `member add SID HOST PEERPORT CLIENTPORT` gives it. */
export interface MemberAddr {
  host: string;
  peerPort: number;
  clientPort: number;
}

/**
 * A configuration (membership) as the log decided it: applied at `slot` (0: the
 * bootstrap one, from the config files). It governs slots from `slot + alpha`
 * on (ReplicaOptions.alphaSlots), so a leader that knows every chosen slot up
 * to s - alpha knows who votes on s (Lamport's alpha window, PMS section 3).
 */
export interface Configuration {
  slot: number;
  members: Member[];
}

/** The deterministic replicated state machine. */
export interface StateMachine {
  /** Apply one chosen batch; results[i] answers cmds[i]. */
  apply(slot: number, cmds: Value): { results: CmdResult[]; lines: string[] };
  /** The cached answer for a retried request, if the session table still has it. */
  cached(cid: number, seq: number): CmdResult | undefined;
  snapshot(): Uint8Array;
  restore(data: Uint8Array): void;
  /**
   * The rolling hash over every applied slot, at the last applied slot (null:
   * unknown). Optional: a state machine without it is never compared.
   */
  digest?(): StateDigest | null;
  /** The rolling hash at a recent applied `slot`, if still remembered. */
  hashAt?(slot: number): Uint8Array | undefined;
  /**
   * While digest() is null (restored from a snapshot written before the hash),
   * take a peer's hash of the last applied `slot`. Returns whether it was taken.
   */
  adoptDigest?(slot: number, hash: Uint8Array): boolean;
  /**
   * Membership through the log (optional: without it the bootstrap members
   * govern for ever). The bootstrap configuration, alpha and every sid that may
   * ever be a member, set once by the replica before anything is applied or
   * restored; a snapshot's own configurations win.
   */
  bootstrapMembers?(members: Member[], alphaSlots: number, sids: readonly number[]): void;
  /** The configurations still relevant (oldest first; the last one is the newest applied). */
  configurations?(): readonly Configuration[];
}

export interface SnapshotOut {
  slot: number;
  data: Uint8Array;
  /** Records that rebuild the live state above the snapshot (the WAL head after rotation). */
  checkpoint: DurableRecord[];
  /** True when received from a peer (catch-up), false when taken locally. */
  installed: boolean;
}

/** Everything the driver must do, in this order: persist, snapshot, send, reply. */
export interface Ready {
  persist: DurableRecord[];
  /**
   * True when `persist` holds a record whose loss would break a promise made to
   * peers (promise, accept, voter, incarnation): the driver must fsync before releasing
   * sync = true messages. Chosen markers and learned values may ride along with
   * the next sync: a majority holds them already.
   */
  mustSync: boolean;
  snapshot: SnapshotOut | null;
  messages: Outbound[];
  applied: AppliedEntry[];
  /** Human-readable progress lines (snapshot transfer, elections). */
  events: string[];
  /**
   * Read ids (from submitRead) that may now be answered from the state machine:
   * leadership was confirmed by a majority after the read arrived, and every slot
   * proposed before it arrived has been applied.
   */
  reads: number[];
}

export type SubmitResult =
  | { kind: 'queued' }
  | { kind: 'cached'; result: CmdResult }
  | { kind: 'redirect'; leader: number | null }
  | { kind: 'busy' };
