import type { CmdResult, Configuration, Member, MemberAddr } from '../core/types';
import { SID_MAX, SID_MIN } from '../limits';

/**
 * A membership change: add a learner (with its address when the config files
 * do not list it), promote a learner to voter, remove a member.
 */
export interface MemberOp {
  kind: 'member';
  action: 'add' | 'promote' | 'remove';
  sid: number;
  addr?: MemberAddr;
}

/** Longest host name a member address may carry (DNS's limit). */
export const MEMBER_HOST_BYTES_MAX = 253;

/** Why `addr` is not a usable member address, or null. */
export function badMemberAddr(addr: unknown): string | null {
  if (!Array.isArray(addr) || addr.length !== 3)
    return 'an address is [host, peerPort, clientPort]';
  const [host, peerPort, clientPort] = addr as unknown[];
  if (typeof host !== 'string' || host === '' || Buffer.byteLength(host) > MEMBER_HOST_BYTES_MAX)
    return `the host must be a name or an IP address of 1-${MEMBER_HOST_BYTES_MAX} bytes`;
  if (!/^[A-Za-z0-9.-]+$/.test(host))
    return `host ${JSON.stringify(host)}: not a name or an IP address`;
  const port = (x: unknown) =>
    Number.isSafeInteger(x) && (x as number) >= 1 && (x as number) <= 65535;
  if (!port(peerPort) || !port(clientPort)) return 'ports must be integers in 1-65535';
  if (peerPort === clientPort) return 'the peer port and the client port must differ';
  return null;
}

/** A checked [host, peerPort, clientPort] as a MemberAddr. */
export function memberAddr(raw: unknown): MemberAddr {
  const why = badMemberAddr(raw);
  if (why) throw new Error(why);
  const [host, peerPort, clientPort] = raw as [string, number, number];
  return { host, peerPort, clientPort };
}

function sameEndpoint(a: MemberAddr, b: MemberAddr): boolean {
  return a.host === b.host && (a.peerPort === b.peerPort || a.clientPort === b.clientPort);
}

/**
 * Configurations a state machine keeps. One change at a time, each alpha slots
 * after the one before, so at most two govern the slots a leader may propose
 * (the one in force and the newest); the third is slack.
 */
export const CONFIGURATIONS_KEPT = 3;

/**
 * The membership part of a replicated state machine: which configurations the
 * log applied. Every check reads replicated state only (the configurations, the
 * bootstrap ones, alpha and the servers list, alike on every node), so every
 * replica applies a change alike.
 */
export class MembershipTable {
  /** The bootstrap configuration, or null: changes are refused. */
  private bootstrapConfig: Configuration | null = null;
  private alphaSlots = 0;
  /** The config files' servers: a sid outside needs an address in its `member add`. */
  private universe = new Set<number>();
  /** Configurations applied, oldest first. */
  private configs: Configuration[] = [];

  bootstrap(members: Member[], alphaSlots: number, sids: readonly number[]): void {
    this.bootstrapConfig = { slot: 0, members: members.map((m) => ({ ...m })) };
    this.alphaSlots = alphaSlots;
    this.universe = new Set(sids);
    if (this.configs.length === 0) this.configs = [this.bootstrapConfig];
  }

  configurations(): readonly Configuration[] {
    return this.configs;
  }

  /**
   * Apply a change at `slot`. One at a time: refused until the previous change
   * governs (alpha slots after it), so at most two configurations govern the
   * slots a leader may propose.
   */
  apply(slot: number, op: MemberOp): { result: CmdResult; text: string } {
    const refuse = (why: string) => ({
      result: { ok: false, err: `member: ${why}` },
      text: `member ${op.action} ${op.sid} refused (${why})`,
    });
    const newest = this.configs[this.configs.length - 1];
    if (!newest) return refuse('membership changes are not enabled');
    if (newest.slot > 0 && slot < newest.slot + this.alphaSlots)
      return refuse(
        `the change at slot ${newest.slot} governs from slot ${newest.slot + this.alphaSlots}; one change at a time`,
      );
    const member = newest.members.find((m) => m.sid === op.sid);
    let members: Member[];
    if (op.action === 'add') {
      if (member) return refuse(`sid ${op.sid} is a member already`);
      if (!this.universe.has(op.sid) && !op.addr)
        return refuse(
          `sid ${op.sid} is not in the servers list: give its address (member add SID HOST PEERPORT CLIENTPORT)`,
        );
      // Two members at one address would make peers' datagrams ambiguous.
      const clash = op.addr && newest.members.find((m) => m.addr && sameEndpoint(m.addr, op.addr!));
      if (clash)
        return refuse(`sid ${clash.sid} listens at ${op.addr!.host} on one of these ports`);
      const added: Member = { sid: op.sid, voter: false };
      if (op.addr) added.addr = { ...op.addr };
      members = [...newest.members, added];
    } else if (!member) {
      return refuse(`sid ${op.sid} is not a member`);
    } else if (op.action === 'promote') {
      if (member.voter) return refuse(`sid ${op.sid} is a voter already`);
      members = newest.members.map((m) => (m.sid === op.sid ? { ...m, voter: true } : m));
    } else {
      members = newest.members.filter((m) => m.sid !== op.sid);
      if (!members.some((m) => m.voter)) return refuse('the last voter cannot be removed');
    }
    members.sort((a, b) => a.sid - b.sid);
    this.configs.push({ slot, members });
    if (this.configs.length > CONFIGURATIONS_KEPT) this.configs.shift();
    const from = slot + this.alphaSlots;
    const at = op.addr ? ` at ${op.addr.host}:${op.addr.peerPort}/${op.addr.clientPort}` : '';
    return {
      result: { ok: true, value: `configuration of slot ${slot} governs from slot ${from}` },
      text: `member ${op.action} ${op.sid}${at} -> ${describeMembers(members)} from slot ${from}`,
    };
  }

  /**
   * For a snapshot: [slot, sid, voter, addr, sid, voter, addr, ...] per
   * configuration (addr: [host, peerPort, clientPort] or null), or null while no
   * change was ever applied (the bootstrap one holds: a snapshot is then the
   * same bytes whoever made it, a replay without a bootstrap too).
   */
  snapshot(): unknown[] | null {
    if (!this.configs.some((c) => c.slot > 0)) return null;
    return this.configs.map((c) => [
      c.slot,
      ...c.members.flatMap((m) => [
        m.sid,
        m.voter,
        m.addr ? [m.addr.host, m.addr.peerPort, m.addr.clientPort] : null,
      ]),
    ]);
  }

  /**
   * A snapshot's configurations (null: a snapshot from before membership changes,
   * so the bootstrap one holds). Throws on anything malformed; changes nothing.
   * `width` 2: format 6 (sid, voter); 3: format 7 (sid, voter, addr).
   */
  parse(raw: unknown, width: 2 | 3 = 3): Configuration[] {
    if (raw === null) return this.bootstrapConfig ? [this.bootstrapConfig] : [];
    if (!Array.isArray(raw) || raw.length > CONFIGURATIONS_KEPT)
      throw new Error('snapshot: bad configurations');
    let last = -1;
    return raw.map((c: unknown) => {
      if (!Array.isArray(c) || c.length % width !== 1)
        throw new Error('snapshot: bad configuration');
      const slot = c[0] as unknown;
      if (!Number.isSafeInteger(slot) || (slot as number) <= last)
        throw new Error('snapshot: bad configuration slot');
      last = slot as number;
      const members: Member[] = [];
      for (let i = 1; i < c.length; i += width) {
        const sid = c[i] as unknown;
        if (!Number.isSafeInteger(sid) || (sid as number) < SID_MIN || (sid as number) > SID_MAX)
          throw new Error('snapshot: bad configuration member');
        if (typeof c[i + 1] !== 'boolean') throw new Error('snapshot: bad configuration member');
        const m: Member = { sid: sid as number, voter: c[i + 1] as boolean };
        if (width === 3 && c[i + 2] !== null) {
          if (badMemberAddr(c[i + 2]))
            throw new Error('snapshot: bad configuration member address');
          m.addr = memberAddr(c[i + 2]);
        }
        members.push(m);
      }
      return { slot: slot as number, members };
    });
  }

  /** Replace the configurations with parsed ones (parse first: it may throw). */
  restore(configs: Configuration[]): void {
    this.configs = configs;
  }
}

/** "1 2 3 +4" (a learner after a plus), for order-log lines. */
export function describeMembers(members: readonly Member[]): string {
  return members.map((m) => (m.voter ? String(m.sid) : `+${m.sid}`)).join(' ');
}
