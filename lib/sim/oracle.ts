import type { AppliedEntry, Configuration, Member, Msg, Value } from '../core/types';
import { KvStateMachine } from '../sm/kv';
import { describeMembers } from '../sm/membership';
import { withoutDigest } from '../sm/statehash';

/** An invariant violation: the run stops and the runner reports seed, invariant and trace. */
export class SimFailure extends Error {
  constructor(
    readonly invariant: string,
    readonly detail: string,
  ) {
    super(`${invariant}: ${detail}`);
  }
}

export function fail(invariant: string, detail: string): never {
  throw new SimFailure(invariant, detail);
}

/**
 * Identity of a value: its commands' cid:seq list. The simulated clients never
 * reuse a cid:seq for a different operation, so this is exact and cheap.
 */
export function valueKey(v: Value): string {
  if (v.length === 0) return '-';
  let s = '';
  for (let i = 0; i < v.length; i++) s += (i > 0 ? ',' : '') + v[i].cid + ':' + v[i].seq;
  return s;
}

/** Membership mode: the bootstrap configuration, alpha and the universe of sids (as the replicas get them). */
export interface OracleMembership {
  members: Member[];
  alpha: number;
  sids: readonly number[];
}

interface Proposal {
  key: string;
  value: Value;
}

interface Chosen {
  key: string;
  value: Value;
  /** Lowest ballot at which a quorum accepted it. */
  ballot: number;
}

/**
 * Global ("ghost") knowledge of the run, fed by the driver with every message
 * that actually leaves a node (after its persist) and every applied entry:
 *
 *  - a leader proposes one value per (slot, ballot);
 *  - a slot is chosen once a quorum of acceptors has sent `accepted` for one
 *    (slot, ballot); two different values are never chosen for one slot;
 *    in membership mode (issue 13) the quorum is a majority of the voters of
 *    the configuration that governs the slot, learned from the chosen log by a
 *    ghost state machine (the newest configuration applied at or below
 *    slot - alpha): a slot's acks wait until the chosen prefix reaches
 *    slot - alpha, and a learner's or a non-member's accept never counts;
 *  - every replica's configurations are those of the chosen log, and the one it
 *    says governs its next slots is the log's (checkConfigurations);
 *  - P2b: once V is chosen at ballot c, every proposal at a ballot > c is V;
 *  - one value per (slot, ballot) over the whole run, across restarts and lost
 *    disks: every accept message ever sent is recorded (proposer side);
 *  - a value applied anywhere is never replaced (by any node, at any time);
 *  - a node applies only chosen values, and every node applying a slot writes
 *    the same order-log lines (same state machine state, same session table);
 *  - every snapshot of one slot, taken or installed, is byte-identical.
 */
export class Oracle {
  private readonly proposals = new Map<number, Map<number, Proposal>>();
  private readonly acks = new Map<number, Map<number, Set<number>>>();
  readonly chosen = new Map<number, Chosen>();
  private readonly lines = new Map<number, string>();
  /**
   * Compare order-log lines and snapshots across nodes (off once a divergence
   * was injected on purpose: the state hash, in both, differs by design).
   */
  compareStates = true;
  readonly snapshots = new Map<number, Uint8Array>();
  maxApplied = 0;
  /**
   * cid:seq -> every execution of that command in the log (first application of
   * its slot anywhere), with the logical time and result: the log order is a
   * candidate linearization, used to tell a checker false positive from a bug.
   */
  readonly executions = new Map<string, { time: number; result: string; effect: boolean }[]>();
  /** Logical clock shared with the clients' call/return stamps. */
  clock: () => number = () => 0;
  /** Told of each new choice: slot, ballot, the acceptors that made it. */
  onChosen: (slot: number, ballot: number, ackers: number[]) => void = () => undefined;
  /** Highest ballot at which a quorum accepted anything so far. */
  maxChosenBallot = 0;
  /** Slot -> the value first applied there by any node (a value applied is never replaced). */
  private readonly appliedKey = new Map<number, string>();

  /** Membership mode: the ghost state machine that applies the chosen prefix, for the configurations. */
  private readonly ghost: KvStateMachine | null = null;
  /** Chosen prefix the ghost applied. */
  ghostThrough = 0;
  /** Every configuration of the chosen log, oldest first (the bootstrap one at slot 0). */
  readonly configHistory: Configuration[] = [];
  /** Slots with acks whose governing configuration is not known yet. */
  private readonly waiting = new Set<number>();
  private advancing = false;

  constructor(
    readonly quorum: number,
    readonly membership: OracleMembership | null = null,
  ) {
    if (!membership) return;
    this.ghost = this.newMachine();
    this.configHistory.push(copyConfig(this.ghost.configurations()[0]));
  }

  /** A fresh state machine, bootstrapped as the replicas bootstrap theirs. */
  newMachine(): KvStateMachine {
    const sm = new KvStateMachine();
    const m = this.membership;
    if (m) sm.bootstrapMembers(m.members, m.alpha, m.sids);
    return sm;
  }

  /**
   * The configuration that governs `slot` (undefined: not known yet, the chosen
   * prefix has not reached slot - alpha), or null outside membership mode.
   */
  governing(slot: number): Configuration | null | undefined {
    const m = this.membership;
    if (!m) return null;
    if (slot - m.alpha > this.ghostThrough) return undefined;
    const h = this.configHistory;
    for (let i = h.length - 1; i > 0; i--) if (h[i].slot + m.alpha <= slot) return h[i];
    return h[0];
  }

  /** The newest configuration of the chosen prefix (membership mode). */
  get newestConfig(): Configuration {
    return this.configHistory[this.configHistory.length - 1];
  }

  /** Has `set` (acceptors of one ballot) a majority of the voters that govern `slot`? */
  private quorate(slot: number, set: Set<number>): boolean | undefined {
    const c = this.governing(slot);
    if (c === undefined) return undefined;
    if (c === null) return set.size >= this.quorum;
    return majorityOf(c, set);
  }

  /**
   * Evidence runs only (SimRunOptions.lenientQuorum): what is chosen is not
   * judged (no 'apply only chosen values', 'one value chosen per slot' or P2b);
   * the chosen log is what the replicas apply, and only a real disagreement
   * fails: two replicas applying different values at one slot ('a value
   * applied is never replaced', 'identical order logs'), or the state not a
   * replay of the applied log. What a broken window leaves of safety when
   * a leader may count the majority of a configuration other than the slot's.
   */
  lenient = false;

  /**
   * A replica's configurations against the chosen log's: each one it keeps is
   * the log's of that slot, its newest is the log's newest at or below what it
   * applied, and the configuration it says governs the slots it may propose or
   * accept next (applied + 1 .. applied + alpha) is the log's for each of them:
   * every replica agrees on which configuration governs a slot.
   */
  checkConfigurations(
    sid: number,
    applied: number,
    cs: readonly Configuration[],
    configOf: (slot: number) => Configuration,
  ): void {
    const m = this.membership;
    if (!m || cs.length === 0) return;
    const h = this.configHistory;
    const show = (c: Configuration) => `slot ${c.slot}: ${describeMembers(c.members)}`;
    for (let i = 0; i < cs.length; i++) {
      const c = cs[i];
      // Superseded within its own slot (two changes applied at one slot: only the
      // last one can govern; the one-at-a-time rule refuses the second).
      if (cs[i + 1]?.slot === c.slot) continue;
      const log = h.find((x) => x.slot === c.slot);
      if (!log || describeMembers(log.members) !== describeMembers(c.members))
        fail(
          'configurations of the chosen log',
          `node ${sid} (applied ${applied}) keeps configuration ${show(c)}, the chosen log has ${log ? show(log) : 'no change there'}`,
        );
    }
    let newest = h[0];
    for (const c of h) if (c.slot <= applied) newest = c;
    const mine = cs[cs.length - 1];
    if (mine.slot !== newest.slot)
      fail(
        'configurations of the chosen log',
        `node ${sid} applied ${applied} with newest configuration ${show(mine)}, the chosen log's is ${show(newest)}`,
      );
    for (let s = applied + 1; s <= applied + m.alpha; s++) {
      const want = this.governing(s);
      if (!want) continue;
      const got = configOf(s);
      if (got.slot !== want.slot || describeMembers(got.members) !== describeMembers(want.members))
        fail(
          'one configuration per slot',
          `node ${sid} (applied ${applied}) says ${show(got)} governs slot ${s}; by the chosen log (alpha ${m.alpha}) it is ${show(want)}`,
        );
    }
  }

  onAccept(sid: number, m: Extract<Msg, { t: 'accept' }>): void {
    for (const [slot, value] of m.entries) {
      const key = valueKey(value);
      let per = this.proposals.get(slot);
      if (!per) this.proposals.set(slot, (per = new Map()));
      const prev = per.get(m.ballot);
      if (prev) {
        if (prev.key !== key)
          fail(
            'one value per ballot',
            `slot ${slot} ballot ${m.ballot}: node ${sid} proposed [${key}], earlier [${prev.key}]`,
          );
        continue;
      }
      per.set(m.ballot, { key, value });
      const ch = this.chosen.get(slot);
      if (ch && m.ballot > ch.ballot && ch.key !== key)
        fail(
          'P2b: proposals above a chosen ballot carry the chosen value',
          `slot ${slot}: [${ch.key}] chosen at ballot ${ch.ballot}, node ${sid} proposed [${key}] at ballot ${m.ballot}`,
        );
    }
  }

  onAccepted(sid: number, m: Extract<Msg, { t: 'accepted' }>): void {
    for (const slot of m.slots) {
      let per = this.acks.get(slot);
      if (!per) this.acks.set(slot, (per = new Map()));
      let set = per.get(m.ballot);
      if (!set) per.set(m.ballot, (set = new Set()));
      set.add(sid);
      this.judge(slot, m.ballot, set);
    }
    this.advance();
  }

  /** Is (slot, ballot) chosen by the acceptors `set`? Later if its configuration is not known yet. */
  private judge(slot: number, ballot: number, set: Set<number>): void {
    const q = this.quorate(slot, set);
    if (q === undefined) {
      this.waiting.add(slot);
      return;
    }
    if (!q) return;
    if (ballot > this.maxChosenBallot) this.maxChosenBallot = ballot;
    const p = this.proposals.get(slot)?.get(ballot);
    if (!p)
      fail(
        'acks answer proposals',
        `slot ${slot} ballot ${ballot}: a quorum acked a ballot nobody proposed`,
      );
    const fresh = !this.chosen.has(slot);
    this.markChosen(slot, ballot, p);
    if (fresh) this.onChosen(slot, ballot, [...set]);
  }

  /**
   * Membership mode: the ghost applies the chosen prefix (its configurations are
   * the log's); slots whose configuration became known are judged again.
   */
  private advance(): void {
    const g = this.ghost;
    if (!g || this.advancing) return;
    this.advancing = true;
    try {
      for (let progress = true; progress;) {
        progress = false;
        for (let ch = this.chosen.get(this.ghostThrough + 1); ch;) {
          const slot = ++this.ghostThrough;
          g.apply(slot, ch.value);
          const cs = g.configurations();
          const c = cs[cs.length - 1];
          if (c.slot !== this.newestConfig.slot) this.configHistory.push(copyConfig(c));
          ch = this.chosen.get(this.ghostThrough + 1);
          progress = true;
        }
        for (const slot of [...this.waiting]) {
          if (this.governing(slot) === undefined) continue;
          this.waiting.delete(slot);
          progress = true;
          for (const [ballot, set] of this.acks.get(slot) ?? []) this.judge(slot, ballot, set);
        }
      }
    } finally {
      this.advancing = false;
    }
  }

  private markChosen(slot: number, ballot: number, p: Proposal): void {
    if (this.lenient) return;
    const ch = this.chosen.get(slot);
    if (ch) {
      if (ch.key !== p.key)
        fail(
          'one value chosen per slot',
          `slot ${slot}: [${ch.key}] chosen at ballot ${ch.ballot} and [${p.key}] at ballot ${ballot}`,
        );
      if (ballot >= ch.ballot) return;
      ch.ballot = ballot;
    } else {
      this.chosen.set(slot, { key: p.key, value: p.value, ballot });
    }
    for (const [b, q] of this.proposals.get(slot)!)
      if (b > ballot && q.key !== p.key)
        fail(
          'P2b: proposals above a chosen ballot carry the chosen value',
          `slot ${slot}: [${p.key}] chosen at ballot ${ballot}, but [${q.key}] was proposed at ballot ${b}`,
        );
  }

  onApplied(sid: number, a: AppliedEntry): void {
    const key = valueKey(a.cmds);
    const first = this.appliedKey.get(a.slot);
    if (first === undefined) this.appliedKey.set(a.slot, key);
    else if (first !== key)
      fail(
        'a value applied is never replaced',
        `node ${sid} applied slot ${a.slot} [${key}], but [${first}] was applied there before`,
      );
    if (this.lenient && !this.chosen.has(a.slot)) {
      // The applied log is the chosen log (ballot: none, so no P2b comparison).
      this.chosen.set(a.slot, { key, value: a.cmds, ballot: Infinity });
      this.advance();
    }
    const ch = this.chosen.get(a.slot);
    if (!ch)
      fail('apply only chosen values', `node ${sid} applied slot ${a.slot} [${key}], never chosen`);
    if (ch.key !== key)
      fail(
        'apply only chosen values',
        `node ${sid} applied slot ${a.slot} [${key}], but [${ch.key}] was chosen`,
      );
    const text = a.lines.join('\n');
    const prev = this.lines.get(a.slot);
    if (prev === undefined) {
      this.lines.set(a.slot, text);
      const time = this.clock();
      for (let i = 0; i < a.cmds.length; i++) {
        const k = `${a.cmds[i].cid}:${a.cmds[i].seq}`;
        let l = this.executions.get(k);
        if (!l) this.executions.set(k, (l = []));
        const line = withoutDigest(a.lines[i]);
        const effect = !/ (duplicate|stale|session expired)$/.test(line);
        l.push({ time, result: JSON.stringify(a.results[i]), effect });
      }
    } else if (prev !== text && this.compareStates)
      fail(
        'identical order logs',
        `slot ${a.slot}: node ${sid} wrote\n    ${a.lines.join('\n    ')}\n  another node wrote\n    ${prev.split('\n').join('\n    ')}`,
      );
    if (a.slot > this.maxApplied) this.maxApplied = a.slot;
  }

  onSnapshot(sid: number, slot: number, data: Uint8Array, installed: boolean): void {
    const prev = this.snapshots.get(slot);
    if (!prev) {
      this.snapshots.set(slot, data);
      return;
    }
    if (!bytesEqual(prev, data) && this.compareStates)
      fail(
        'identical snapshots',
        `node ${sid} ${installed ? 'installed' : 'took'} a snapshot of slot ${slot} that differs from an earlier one`,
      );
  }

  /**
   * Replay the chosen sequence 1..through into a fresh state machine. `at(slot,
   * sm)` is called after each slot, for comparisons with nodes and snapshots.
   * Checks that no command takes effect twice.
   */
  replay(through: number, at: (slot: number, sm: KvStateMachine) => void): KvStateMachine {
    // No limits given: the replay learns them from the log's `limits` command, as every node does.
    const sm = this.newMachine();
    const effect = new Set<string>();
    at(0, sm);
    for (let s = 1; s <= through; s++) {
      const ch = this.chosen.get(s);
      if (!ch) fail('no holes', `slot ${s} is below the applied point ${through} but never chosen`);
      const { lines } = sm.apply(s, ch.value);
      const prev = this.lines.get(s);
      if (prev !== undefined && prev !== lines.join('\n') && this.compareStates)
        fail(
          'state = replay of the log',
          `slot ${s}: the replay wrote\n    ${lines.join('\n    ')}\n  the nodes wrote\n    ${prev.split('\n').join('\n    ')}`,
        );
      for (let i = 0; i < ch.value.length; i++) {
        const line = withoutDigest(lines[i]);
        const text = line.slice(line.indexOf(' ', line.indexOf(' ') + 1) + 1);
        if (
          text === 'duplicate' ||
          text === 'stale' ||
          text === 'session expired' ||
          // Opening a session changes no data; a late duplicate may open another.
          text.startsWith('register') ||
          text.startsWith('limits') ||
          text.startsWith('get ')
        )
          continue;
        const k = `${ch.value[i].cid}:${ch.value[i].seq}`;
        if (effect.has(k))
          fail('exactly once', `command ${k} took effect twice (again at slot ${s}: ${text})`);
        effect.add(k);
      }
      at(s, sm);
    }
    return sm;
  }
}

function majorityOf(c: Configuration, set: Set<number>): boolean {
  let voters = 0;
  let n = 0;
  for (const mb of c.members)
    if (mb.voter) {
      voters++;
      if (set.has(mb.sid)) n++;
    }
  return n >= Math.floor(voters / 2) + 1;
}

function copyConfig(c: Configuration): Configuration {
  return { slot: c.slot, members: c.members.map((m) => ({ ...m })) };
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
