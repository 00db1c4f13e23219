// paxosd --join: start a node that is in no config file. The operator first
// runs `paxos-client member add SID HOST PEERPORT CLIENTPORT` (the address goes
// through the log to every node, as etcd's `member add` precedes the new
// member's start); the new node then asks one member for the cluster's servers
// and bootstrap configuration and starts with them as its servers list, an
// empty data directory and no vote until the lost-disk rule lets it (it is a
// learner until `member promote`). The list is kept in the data directory, so
// later starts need neither --join nor a reachable peer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PaxosClient } from './client';
import type { NodeConfig, ServerAddr } from './io/config';
import type { Keyring } from './wire/envelope';
import { SID_MAX, SID_MIN } from './limits';
import { badMemberAddr } from './sm/membership';

/** The file in a data directory that keeps a joined node's servers list. */
export const JOINED_FILE = 'joined-servers.json';

export class JoinError extends Error {}

const PEER_PLACEHOLDER = SID_MIN;

/** "1 2 3" as sids, or null. */
function sidList(raw: unknown): Set<number> | null {
  if (typeof raw !== 'string') return null;
  const out = new Set<number>();
  for (const w of raw.split(' ').filter((x) => x !== '')) {
    if (!/^[0-9]{1,3}$/.test(w) || Number(w) > SID_MAX) return null;
    out.add(Number(w));
  }
  return out;
}

/**
 * A status reply's `servers` ("sid=host:peer:client ...": every address the
 * member knows), `configServers` (its config files' servers list, "0 1 2") and
 * `bootstrap` ("0 1 2", no learners at slot 0) as a servers list: members of
 * the bootstrap configuration are not spare, every other sid is; a sid outside
 * the config files' list is `fromLog` (membership decides by that list, so the
 * joined node must keep the cluster's, not one with itself in it). Null if
 * malformed.
 */
export function serversFromStatus(
  servers: unknown,
  configServers: unknown,
  bootstrap: unknown,
): ServerAddr[] | null {
  const boot = sidList(bootstrap);
  const listed = sidList(configServers);
  if (typeof servers !== 'string' || !boot || !listed) return null;
  const out: ServerAddr[] = [];
  for (const w of servers.split(' ').filter((x) => x !== '')) {
    const m = /^([0-9]{1,3})=([^:\s]+):([0-9]{1,5}):([0-9]{1,5})$/.exec(w);
    if (!m) return null;
    const sid = Number(m[1]);
    const addr = [m[2], Number(m[3]), Number(m[4])];
    if (sid < SID_MIN || sid > SID_MAX || badMemberAddr(addr) !== null) return null;
    if (out.some((s) => s.sid === sid)) return null;
    const s: ServerAddr = { sid, host: m[2], peerPort: Number(m[3]), clientPort: Number(m[4]) };
    if (!boot.has(sid)) s.spare = true;
    if (!listed.has(sid)) s.fromLog = true;
    out.push(s);
  }
  const has = (x: number) => out.some((s) => s.sid === x && !s.fromLog);
  if (boot.size === 0 || ![...boot].every(has) || ![...listed].every(has)) return null;
  return out.sort((a, b) => a.sid - b.sid);
}

/** `host:port` of a member's client port, or why not. */
export function parsePeer(raw: unknown): { host: string; clientPort: number } | string {
  const m = typeof raw === 'string' ? /^([^:\s]+):([0-9]{1,5})$/.exec(raw) : null;
  if (!m) return `--join takes HOST:CLIENTPORT of a running member, not ${JSON.stringify(raw)}`;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return `--join: port ${port} is not in 1-65535`;
  return { host: m[1], clientPort: port };
}

/**
 * Ask `peer` for the cluster's servers (one status round trip, retried until
 * `timeoutMs`); the list must hold `sid` with the address a `member add` gave.
 */
export async function fetchServers(
  cfg: NodeConfig,
  sid: number,
  peer: { host: string; clientPort: number },
  keys: Keyring | undefined,
  timeoutMs: number,
): Promise<ServerAddr[]> {
  // The peer's own sid is not known yet: a placeholder addresses it (the client
  // keys its servers by sid and takes only valid ones).
  const client = new PaxosClient({
    servers: [{ sid: PEER_PLACEHOLDER, host: peer.host, clientPort: peer.clientPort }],
    timeoutMs,
    retryMs: 100,
    clusterId: cfg.clusterId,
    keys,
  });
  try {
    const until = Date.now() + timeoutMs;
    let st: Record<string, unknown> | null = null;
    while (st === null && Date.now() < until) st = await client.status(PEER_PLACEHOLDER, 500);
    if (st === null)
      throw new JoinError(
        `no answer from ${peer.host}:${peer.clientPort} in ${timeoutMs} ms: check the address, clusterId ("${cfg.clusterId}") and clientKeyFile in ${cfg.file}`,
      );
    const servers = serversFromStatus(st.servers, st.configServers, st.bootstrap);
    if (!servers)
      throw new JoinError(
        `${peer.host}:${peer.clientPort} (sid ${String(st.sid)}) gave no servers list: is it a paxosd of this version?`,
      );
    const self = servers.find((s) => s.sid === sid);
    if (!self)
      throw new JoinError(
        `sid ${sid} has no address in the cluster (${describe(servers)}): run paxos-client member add ${sid} HOST PEERPORT CLIENTPORT first`,
      );
    return servers;
  } finally {
    client.close();
  }
}

/** The node config with `servers` as its servers list (everything else as the file says). */
export function withServers(cfg: NodeConfig, servers: ServerAddr[]): NodeConfig {
  return { ...cfg, servers: servers.map((s) => ({ ...s })) };
}

/** Keep a joined node's servers list in its data directory (written whole, synced). */
export function saveJoined(dataDir: string, servers: ServerAddr[]): void {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, JOINED_FILE);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ servers }, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  // The rename is durable only once the directory is synced.
  const dfd = fs.openSync(dataDir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/** A joined node's kept servers list, or null if it never joined. Throws if unreadable. */
export function loadJoined(dataDir: string): ServerAddr[] | null {
  const file = path.join(dataDir, JOINED_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const raw = JSON.parse(text) as { servers?: unknown };
  if (!Array.isArray(raw.servers)) throw new JoinError(`${file}: no servers list`);
  const servers = raw.servers as ServerAddr[];
  for (const s of servers)
    if (
      !Number.isSafeInteger(s.sid) ||
      badMemberAddr([s.host, s.peerPort, s.clientPort]) !== null ||
      (s.spare !== undefined && typeof s.spare !== 'boolean') ||
      (s.fromLog !== undefined && typeof s.fromLog !== 'boolean')
    )
      throw new JoinError(`${file}: bad server ${JSON.stringify(s)}`);
  return servers;
}

function describe(servers: ServerAddr[]): string {
  return servers.map((s) => `${s.sid}=${s.host}:${s.peerPort}`).join(' ');
}
