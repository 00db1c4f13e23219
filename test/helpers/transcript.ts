// Transcript tests (etcd-raft's interaction tests, for paxosd's pure core): a
// minimal datadriven parser and an environment that drives real `Replica`
// objects by hand and prints every step in one stable line format.
//
// File format (cockroachdb/datadriven, as etcd-raft uses it):
//   # comments and blank lines between cases are kept as they are
//   command arg arg
//   ----
//   expected output, one or more lines (no blank line inside)
//   <blank line>
// Commands are listed in TranscriptEnv.handle. test/transcript.test.ts replays
// every test/testdata/*.txt; REWRITE=1 rewrites the expected outputs instead.
//
// The driver contract is the daemon's (lib/daemon.ts handle/emit), never a
// kinder one: a sync = true message waits until every record written by its
// ready() and every earlier one is synced (chosen markers and learned values
// included); a sync is due only while a mustSync record or a waiting message is
// unsynced; messages to self are stepped back at once (after the sync, if they
// wait for one) and the node's ready() is drained again.
import { formatBallot } from '../../lib/core/ballot';
import { Replica } from '../../lib/core/replica';
import type { Cmd, DurableRecord, Msg, Outbound, PromiseEntry, Value } from '../../lib/core/types';
import { CORE_OPTS, makeReplica } from './core-net';

// ======================= datadriven parser =======================

export interface Case {
  /** Comment and blank lines before the command, kept verbatim for rewriting. */
  preamble: string[];
  /** 1-based line of the command. */
  line: number;
  cmd: string;
  expected: string;
}

export function parseTranscript(text: string, file = 'transcript'): Case[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const cases: Case[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const l = lines[i];
    if (l.trim() === '' || l.startsWith('#')) {
      preamble.push(l);
      i++;
      continue;
    }
    const line = i + 1;
    if (lines[i + 1] !== '----') throw new Error(`${file}:${line}: expected ---- after '${l}'`);
    i += 2;
    const out: string[] = [];
    while (i < lines.length && lines[i] !== '') out.push(lines[i++]);
    i++; // the blank line that ends the output
    cases.push({ preamble, line, cmd: l, expected: out.join('\n') });
    preamble = [];
  }
  if (preamble.length > 0) cases.push({ preamble, line: 0, cmd: '', expected: '' });
  return cases;
}

/** The file text for `cases` with `outputs[i]` as case i's output. */
export function formatTranscript(cases: Case[], outputs: string[]): string {
  const out: string[] = [];
  cases.forEach((c, i) => {
    out.push(...c.preamble);
    if (c.cmd === '') return;
    out.push(c.cmd, '----', outputs[i], '');
  });
  while (out.at(-1) === '') out.pop();
  return out.join('\n') + '\n';
}

// ======================= printing =======================

function ballot(b: number): string {
  return formatBallot(b);
}

export function cmdStr(c: Cmd): string {
  return `${c.cid}:${c.seq} ${Buffer.from(c.op).toString('utf8')}`;
}

export function valueStr(v: Value): string {
  return v.length === 0 ? 'no-op' : `[${v.map(cmdStr).join('; ')}]`;
}

/** Incarnation pairs [sid, inc, ...] as "sid:inc,..." ("-": every node's original one). */
function incs(pairs: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) out.push(`${pairs[i]}:${pairs[i + 1]}`);
  return out.length === 0 ? '-' : out.join(',');
}

function list(xs: readonly number[]): string {
  return xs.join(',');
}

function hex(b: Uint8Array | undefined): string {
  return b === undefined ? '-' : Buffer.from(b).toString('hex').slice(0, 8);
}

function promiseEntry([slot, b, v]: PromiseEntry): string {
  return `${slot}@${b === -1 ? 'chosen' : ballot(b)} ${valueStr(v)}`;
}

/** One message's fields; every field of the type is printed (a change shows). */
export function msgStr(m: Msg): string {
  switch (m.t) {
    case 'prepare':
      return `prepare ${ballot(m.ballot)} from=${m.from}${m.handoff ? ` handoff of=${ballot(m.of ?? 0)} until=${m.until}` : ''}`;
    case 'handoff':
      // echo: the tick of the target's newest heartbeat the leader had (its life is random).
      return `handoff ${ballot(m.ballot)} chosen=${m.chosen} tick=${m.tick} until=${m.until} echo=${m.echoTick}`;
    case 'promise': {
      const hi = m.hi === 0 ? 'inf' : String(m.hi);
      const es = m.entries.length === 0 ? 'none' : m.entries.map(promiseEntry).join(', ');
      return `promise ${ballot(m.ballot)} from=${m.from} slots=[${m.lo},${hi}) base=${m.base} incs=${incs(m.incs)} entries: ${es}`;
    }
    case 'accept': {
      const es = m.entries.map(([s, v]) => `${s}=${valueStr(v)}`).join(', ');
      return `accept ${ballot(m.ballot)} commit=${m.commit} ${es}`;
    }
    case 'accepted':
      return `accepted ${ballot(m.ballot)} slots=${list(m.slots)} incs=${incs(m.incs)}`;
    case 'nack':
      return `nack ${ballot(m.ballot)} promised=${ballot(m.promised)}`;
    case 'settled':
      return `settled ${m.slot}`;
    case 'commit':
      return `commit ${ballot(m.ballot)} through=${m.through}`;
    case 'heartbeat': {
      const flags = [m.leading && 'leading', m.eligible && 'eligible', m.voter && 'voter'];
      const echo = m.echoLife === undefined ? '-' : `${m.echoLife}@${m.echoTick}`;
      const hash = m.hashSlot === undefined ? '' : ` hash=${m.hashSlot}:${hex(m.hash)}`;
      return (
        `heartbeat ${ballot(m.promised)} ${flags.filter(Boolean).join(' ') || '-'}` +
        ` chosen=${m.chosen} next=${m.next} heard=${list(m.heard) || '-'} leader=${m.leader}` +
        ` tick=${m.tick}${hash} life=${m.life ?? '-'} echo=${echo}`
      );
    }
    case 'rejoinReq':
      return `rejoinReq nonce=${m.nonce} inc=${m.inc}${m.act ? ' act' : ''}`;
    case 'rejoinResp':
      return (
        `rejoinResp nonce=${m.nonce} inc=${m.inc}${m.act ? ' act' : ''} known=${m.known}` +
        ` promised=${ballot(m.promised)} next=${m.next} incs=${incs(m.incs)} res=${incs(m.res ?? [])}`
      );
    case 'confirm':
    case 'confirmed':
      return `${m.t} ${ballot(m.ballot)} round=${m.round}`;
    case 'catchupReq':
      return `catchupReq from=${m.from} to=${m.to}`;
    case 'catchupResp':
      return (
        `catchupResp from=${m.from} snapshot=${m.snapshot} snapshotBytes=${m.snapshotBytes}` +
        ` entries: ${m.entries.map(valueStr).join(', ') || 'none'}`
      );
    case 'snapshotReq':
      return `snapshotReq slot=${m.slot} offset=${m.offset}`;
    case 'snapshotResp':
      return `snapshotResp slot=${m.slot} offset=${m.offset} total=${m.total} bytes=${m.data.length}`;
  }
}

export function recordStr(r: DurableRecord): string {
  switch (r.t) {
    case 'promise':
      return `promise ${ballot(r.ballot)}`;
    case 'accept':
      return `accept ${r.slot}@${ballot(r.ballot)} ${valueStr(r.value)}`;
    case 'chosen':
      return `chosen ${r.slot}@${ballot(r.ballot)}`;
    case 'learn':
      return `learn ${r.slot} ${valueStr(r.value)}`;
    case 'voter':
      return 'voter';
    case 'incarnation':
      return `incarnation ${r.sid}=${r.inc}${r.reserve ? ' reserve' : ''}`;
    case 'snapshot':
      return `snapshot ${r.slot}`;
  }
}

// ======================= the environment =======================

interface Env {
  from: number;
  to: number;
  msg: Msg;
}

interface Node {
  sid: number;
  replica: Replica;
  /** Written records; records[0..synced) survive a power loss. */
  records: DurableRecord[];
  synced: number;
  snapshot: { slot: number; data: Uint8Array } | null;
  /** records.length after the last ready() with mustSync: a sync is due up to it. */
  mustSyncAt: number;
  /** sync = true messages and the record count they wait for. */
  held: { out: Outbound; needs: number }[];
  down: boolean;
  paused: boolean;
}

const TRANSCRIPT_OPTS = { ...CORE_OPTS, windowSlots: 8 };

export class TranscriptEnv {
  private nodes = new Map<number, Node>();
  private sids: number[] = [];
  private seed = 1;
  private built = 0;
  /** In flight, in send order. */
  private queue: Env[] = [];
  /** For paused nodes: delivered on resume. */
  private parked: Env[] = [];
  private isolated = new Set<number>();
  private hidden = new Set<string>();
  private hiddenCount = new Map<string, number>();
  private out: string[] = [];
  private indent = '';
  private clientSeq = 0;
  /** Highest slot seen in any accept or promise (bounds `log`). */
  private maxSlot = 0;
  /** slot -> first applied value text anywhere (agreement check). */
  private firstApplied = new Map<number, string>();

  /** Run one command; returns its output (never empty: 'ok'). */
  handle(line: string): string {
    this.out = [];
    this.indent = '';
    this.hiddenCount.clear();
    const [cmd, ...args] = line.trim().split(/\s+/);
    try {
      this.dispatch(cmd, args);
    } catch (e) {
      this.print(`error: ${(e as Error).message}`);
    }
    if (this.hiddenCount.size > 0)
      this.out.push(
        `(not shown: ${[...this.hiddenCount].map(([t, n]) => `${n} ${t}`).join(', ')})`,
      );
    return this.out.length === 0 ? 'ok' : this.out.join('\n');
  }

  private dispatch(cmd: string, a: string[]): void {
    const sid = (i: number): number => {
      const s = Number(a[i]);
      if (!this.nodes.has(s)) throw new Error(`no node ${a[i]}`);
      return s;
    };
    const count = (i: number): number => (a[i] === undefined ? 1 : Number(a[i]));
    switch (cmd) {
      case 'add-nodes': // add-nodes N [seed=S]: voters 1..N, bootstrapped and synced
        return this.addNodes(Number(a[0]), a[1]);
      case 'tick': // tick SID|all [N]: N ticks; output stays in the network
        for (let i = 0; i < count(1); i++) this.tickNodes(a[0] === 'all' ? null : sid(0));
        return;
      case 'run': // run [N]: N times (tick all, stabilize)
        for (let i = 0; i < count(0); i++) {
          this.tickNodes(null);
          this.stabilize();
        }
        return;
      case 'campaign': // campaign SID: run until SID campaigns (its prepares not delivered)
        return this.campaign(sid(0));
      case 'propose': // propose SID op...: a client command (cid 1, next seq) at SID
        return this.propose(sid(0), a.slice(1).join(' '));
      case 'transfer': // transfer FROM TO: transferLeadership
        return this.transfer(sid(0), sid(1));
      case 'deliver': // deliver [A->B]: one round of what is queued now (* for any)
        return this.deliverRound(this.link(a[0]));
      case 'drop': // drop [A->B]: lose what is queued now
        return this.drop(this.link(a[0]));
      case 'sync': // sync SID: the due fsync completes
        return this.sync(sid(0), true);
      case 'stabilize': // deliver and sync until quiet
        return this.stabilize();
      case 'crash': // crash SID kill|power
        return this.crash(sid(0), a[1]);
      case 'restart': // restart SID: from what its disk holds
        return this.restart(sid(0));
      case 'wipe': // wipe SID: restart with an empty disk (lost disk)
        return this.wipe(sid(0));
      case 'pause': // pause SID: not ticked, messages to it wait (SIGSTOP)
        this.node(sid(0)).paused = true;
        return;
      case 'resume':
        return this.resume(sid(0));
      case 'isolate': // isolate SID: every message to or from it is lost until heal
        this.isolated.add(sid(0));
        return;
      case 'heal':
        this.isolated.clear();
        return;
      case 'hide': // hide TYPE...: do not print these message types (counted)
        for (const t of a) this.hidden.add(t);
        return;
      case 'show':
        for (const t of a) this.hidden.delete(t);
        return;
      case 'status': // status SID|all
        for (const s of a[0] === 'all' || a.length === 0 ? this.sids : [sid(0)]) this.status(s);
        return;
      case 'log': // log SID: accepted and chosen entries in memory
        return this.log(sid(0));
      case 'disk': // disk SID: written records and the synced mark
        return this.disk(sid(0));
      case 'queue': // the network queue and the messages waiting for syncs
        return this.showQueue();
      default:
        throw new Error(`unknown command ${cmd}`);
    }
  }

  // ---------------- printing ----------------

  private print(line: string): void {
    this.out.push(this.indent + line);
  }

  private nested(f: () => void): void {
    const before = this.indent;
    this.indent += '  ';
    try {
      f();
    } finally {
      this.indent = before;
    }
  }

  private visible(m: Msg): boolean {
    if (!this.hidden.has(m.t)) return true;
    this.hiddenCount.set(m.t, (this.hiddenCount.get(m.t) ?? 0) + 1);
    return false;
  }

  private envStr(e: Env): string {
    return `${e.from}->${e.to} ${msgStr(e.msg)}`;
  }

  // ---------------- nodes ----------------

  private node(sid: number): Node {
    return this.nodes.get(sid)!;
  }

  private build(sid: number): Replica {
    // Trace lines say why a node changed role; 'leader ballot' repeats an event.
    return makeReplica(sid, this.sids, this.seed, this.built++, TRANSCRIPT_OPTS, (l) => {
      const line = l.replace(/^t=\d+ sid=\d+ /, '');
      if (!line.startsWith('leader ballot')) this.print(`${sid}: ${line}`);
    });
  }

  private addNodes(n: number, seedArg?: string): void {
    if (this.nodes.size > 0) throw new Error('add-nodes once per file');
    if (seedArg?.startsWith('seed=')) this.seed = Number(seedArg.slice(5));
    this.sids = Array.from({ length: n }, (_, i) => i + 1);
    for (const sid of this.sids) {
      const replica = this.build(sid);
      replica.bootstrap();
      this.nodes.set(sid, {
        sid,
        replica,
        records: [],
        synced: 0,
        snapshot: null,
        mustSyncAt: 0,
        held: [],
        down: false,
        paused: false,
      });
    }
    for (const sid of this.sids) this.turn(sid);
    for (const sid of this.sids) this.sync(sid, false);
  }

  /**
   * Drain one node's ready() as the daemon does: persist, snapshot, send (a
   * sync = true message waits for the sync of everything written so far), apply,
   * events; messages to itself are stepped back in and ready() runs again.
   */
  private turn(sid: number): void {
    const n = this.node(sid);
    for (let round = 0; round < 64; round++) {
      const rd = n.replica.ready();
      for (const r of rd.persist) this.print(`${sid}: persist ${recordStr(r)}`);
      n.records.push(...rd.persist);
      if (rd.mustSync) n.mustSyncAt = n.records.length;
      if (rd.snapshot) {
        // Rotation syncs the new segment, which holds all live state.
        this.print(
          `${sid}: snapshot ${rd.snapshot.slot}${rd.snapshot.installed ? ' installed' : ''}`,
        );
        n.snapshot = { slot: rd.snapshot.slot, data: rd.snapshot.data };
        n.records = [...rd.snapshot.checkpoint];
        n.synced = n.mustSyncAt = n.records.length;
        for (const h of n.held) h.needs = Math.min(h.needs, n.synced);
      }
      const self: Msg[] = [];
      for (const o of rd.messages) {
        this.noteSlots(o.msg);
        if (o.sync && n.synced < n.records.length) {
          n.held.push({ out: o, needs: n.records.length });
          if (this.visible(o.msg))
            this.print(`${this.envStr({ from: sid, to: o.to, msg: o.msg })} (waits for sync)`);
        } else this.release(sid, o, self);
      }
      for (const a of rd.applied) this.applied(sid, a.slot, a.cmds);
      for (const e of rd.events) this.print(`${sid}: ${e.replace(/^sid \d+: /, '')}`);
      for (const id of rd.reads) this.print(`${sid}: read ${id} may be answered`);
      this.check(n);
      if (self.length === 0) return;
      for (const m of self) n.replica.step(sid, m);
    }
    throw new Error(`node ${sid} keeps sending itself messages`);
  }

  /** A message leaves node `sid`: to itself it is stepped back in, else it enters the network. */
  private release(sid: number, o: Outbound, self: Msg[]): void {
    const e = { from: sid, to: o.to, msg: o.msg };
    if (this.visible(o.msg)) this.print(this.envStr(e));
    if (o.to === sid) self.push(o.msg);
    else this.queue.push(e);
  }

  private check(n: Node): void {
    try {
      n.replica.checkInvariants();
    } catch (e) {
      this.print(`!! ${(e as Error).message}`);
    }
  }

  private applied(sid: number, slot: number, cmds: Value): void {
    const text = valueStr(cmds);
    this.print(`${sid}: apply ${slot} ${text}`);
    const first = this.firstApplied.get(slot);
    if (first === undefined) this.firstApplied.set(slot, text);
    else if (first !== text) this.print(`!! agreement: slot ${slot} was applied as ${first}`);
  }

  private noteSlots(m: Msg): void {
    if (m.t === 'accept') for (const [s] of m.entries) this.maxSlot = Math.max(this.maxSlot, s);
    if (m.t === 'promise') for (const [s] of m.entries) this.maxSlot = Math.max(this.maxSlot, s);
    if (m.t === 'catchupResp') this.maxSlot = Math.max(this.maxSlot, m.from + m.entries.length - 1);
  }

  private live(sid: number): boolean {
    const n = this.node(sid);
    return !n.down && !n.paused;
  }

  private tickNodes(only: number | null): void {
    for (const sid of only === null ? this.sids : [only]) {
      if (!this.live(sid)) continue;
      const before = this.out.length;
      this.print(`${sid}: tick`);
      this.nested(() => {
        this.node(sid).replica.tick();
        this.turn(sid);
      });
      if (this.out.length === before + 1) this.out.pop();
    }
  }

  private campaign(sid: number): void {
    const r = this.node(sid).replica;
    for (let i = 1; i <= 200; i++) {
      this.tickNodes(null);
      if (r.role !== 'follower') return this.print(`${sid} campaigned after ${i} ticks`);
      const other = this.sids.find((s) => this.live(s) && this.node(s).replica.role !== 'follower');
      if (other !== undefined) throw new Error(`${other} campaigned first`);
      this.stabilize();
    }
    throw new Error(`${sid} did not campaign in 200 ticks`);
  }

  private propose(sid: number, op: string): void {
    const c: Cmd = { cid: 1, seq: ++this.clientSeq, op: new TextEncoder().encode(op) };
    const res = this.node(sid).replica.submit(c);
    this.print(`${sid}: submit ${cmdStr(c)}: ${res.kind}`);
    // A refused request is retried by its client with the same sequence number.
    if (res.kind === 'busy' || res.kind === 'redirect') this.clientSeq--;
    this.turn(sid);
  }

  private transfer(from: number, to: number): void {
    const why = this.node(from).replica.transferLeadership(to);
    if (why !== null) this.print(`${from}: refused: ${why}`);
    this.turn(from);
  }

  // ---------------- network ----------------

  private link(spec: string | undefined): (e: Env) => boolean {
    if (spec === undefined) return () => true;
    const m = /^(\d+|\*)->(\d+|\*)$/.exec(spec);
    if (!m) throw new Error(`bad link ${spec} (want A->B, * for any)`);
    const [, a, b] = m;
    return (e) => (a === '*' || e.from === Number(a)) && (b === '*' || e.to === Number(b));
  }

  /** One delivery round of the messages queued now that `pick` selects. */
  private deliverRound(pick: (e: Env) => boolean): void {
    const batch = this.queue.filter(pick);
    this.queue = this.queue.filter((e) => !pick(e));
    for (const e of batch) this.deliver(e);
  }

  private deliver(e: Env): void {
    const to = this.node(e.to);
    const lost = to.down
      ? `${e.to} is down`
      : this.isolated.has(e.from) || this.isolated.has(e.to)
        ? 'isolated'
        : null;
    if (lost) {
      if (!this.hidden.has(e.msg.t)) this.print(`${this.envStr(e)} lost (${lost})`);
      return;
    }
    if (to.paused) {
      this.parked.push(e);
      return;
    }
    const before = this.out.length;
    const shown = !this.hidden.has(e.msg.t);
    this.print(this.envStr(e));
    this.nested(() => {
      to.replica.step(e.from, e.msg);
      this.turn(e.to);
    });
    if (!shown && this.out.length === before + 1) this.out.pop();
  }

  private drop(pick: (e: Env) => boolean): void {
    for (const e of this.queue.filter(pick))
      if (!this.hidden.has(e.msg.t)) this.print(`${this.envStr(e)} dropped`);
    this.queue = this.queue.filter((e) => !pick(e));
  }

  private syncDue(n: Node): boolean {
    const needs = Math.max(n.mustSyncAt, ...n.held.map((h) => h.needs));
    return !n.down && n.synced < needs;
  }

  /**
   * The node's due fsync completes: every record written so far is durable and
   * the messages that waited for it leave (to itself: stepped back in).
   */
  private sync(sid: number, explicit: boolean): void {
    const n = this.node(sid);
    if (!this.syncDue(n)) {
      if (explicit) this.print(`${sid}: no sync due`);
      return;
    }
    this.print(`${sid}: synced records ${n.synced + 1}..${n.records.length}`);
    n.synced = n.records.length;
    const ready = n.held.filter((h) => h.needs <= n.synced);
    n.held = n.held.filter((h) => h.needs > n.synced);
    const self: Msg[] = [];
    this.nested(() => {
      for (const h of ready) this.release(sid, h.out, self);
      for (const m of self) n.replica.step(sid, m);
      if (self.length > 0) this.turn(sid);
    });
  }

  private stabilize(): void {
    for (let i = 0; i < 1000; i++) {
      const due = this.sids.filter((s) => this.syncDue(this.node(s)) && !this.node(s).paused);
      if (this.queue.length === 0 && due.length === 0) return;
      this.deliverRound(() => true);
      for (const s of due) this.sync(s, false);
    }
    throw new Error('not stable after 1000 rounds');
  }

  // ---------------- faults ----------------

  private crash(sid: number, kind: string | undefined): void {
    if (kind !== 'kill' && kind !== 'power') throw new Error('crash SID kill|power');
    const n = this.node(sid);
    n.down = true;
    // Unsent output dies with the process.
    if (n.held.length > 0) this.print(`${sid}: messages waiting for sync lost: ${n.held.length}`);
    n.held = [];
    const unsynced = n.records.length - n.synced;
    if (kind === 'kill')
      this.print(`${sid}: killed; unsynced records survive (page cache): ${unsynced}`);
    else {
      n.records = n.records.slice(0, n.synced);
      this.print(`${sid}: power lost; unsynced records lost: ${unsynced}`);
    }
  }

  private restart(sid: number): void {
    const n = this.node(sid);
    if (!n.down) throw new Error(`${sid} is running`);
    // Opening the log syncs what it replays before anything is sent (the daemon's rule).
    n.synced = n.mustSyncAt = n.records.length;
    n.replica = this.build(sid);
    n.replica.restore(n.snapshot, n.records);
    n.down = false;
    n.paused = false;
    this.print(`${sid}: restarted from ${n.records.length} records`);
    this.turn(sid);
  }

  private wipe(sid: number): void {
    const n = this.node(sid);
    n.down = true;
    n.held = [];
    n.records = [];
    n.snapshot = null;
    this.print(`${sid}: disk lost`);
    this.restart(sid);
  }

  private resume(sid: number): void {
    const n = this.node(sid);
    n.paused = false;
    const mine = this.parked.filter((e) => e.to === sid);
    this.parked = this.parked.filter((e) => e.to !== sid);
    this.queue.unshift(...mine);
    if (mine.length > 0) this.print(`${sid}: messages that waited while paused: ${mine.length}`);
  }

  // ---------------- state ----------------

  private status(sid: number): void {
    const n = this.node(sid);
    const s = n.replica.status();
    const state = n.down ? ' down' : n.paused ? ' paused' : '';
    this.print(
      `${sid}: ${s.role}${state}${s.voter ? '' : ' non-voter'} promised=${s.ballot} leader=${s.leader ?? '-'}` +
        ` chosen=${s.chosen} applied=${s.applied} known=${s.known} base=${s.base}` +
        ` queued=${s.queued} inflight=${s.inflight} records=${n.records.length} synced=${n.synced}`,
    );
  }

  private log(sid: number): void {
    const r = this.node(sid).replica;
    const { base, applied } = r.status();
    let any = false;
    for (let s = base + 1; s <= this.maxSlot; s++) {
      const e = r.acceptedEntry(s);
      if (!e) continue;
      any = true;
      const how = e.chosen ? 'chosen' : `accepted ${ballot(e.ballot)}`;
      this.print(`${sid}: slot ${s} ${how} ${valueStr(e.value)}${s <= applied ? ' applied' : ''}`);
    }
    if (!any) this.print(`${sid}: empty log above ${base}`);
  }

  private disk(sid: number): void {
    const n = this.node(sid);
    n.records.forEach((r, i) => {
      if (i === n.synced) this.print(`${sid}: -- not synced --`);
      this.print(`${sid}: ${i + 1} ${recordStr(r)}`);
    });
    if (n.records.length === 0) this.print(`${sid}: no records`);
  }

  private showQueue(): void {
    for (const e of this.queue) this.print(`${this.envStr(e)}`);
    for (const e of this.parked) this.print(`${this.envStr(e)} (parked)`);
    for (const n of this.nodes.values())
      for (const h of n.held)
        this.print(
          `${this.envStr({ from: n.sid, to: h.out.to, msg: h.out.msg })} (waits for sync)`,
        );
  }
}
