/**
 * Configuration loader for paxosd nodes and clients.
 *
 * Two kinds of file are understood:
 *
 * - Node config (`conf/paxos.config.json`): cluster membership, timing, limits,
 *   storage and directories.  `clusterId` and `servers` are required; `timing`,
 *   `limits`, `storage`, `dataDir` and `logDir` are optional and every missing
 *   field takes its default individually (see DEFAULT_TIMING, DEFAULT_LIMITS,
 *   DEFAULT_STORAGE, DEFAULT_DATA_DIR, DEFAULT_LOG_DIR).
 * - Client config (`conf/client.config.json`): the servers' client ports, an
 *   optional leader hint and timeouts.  The order of `servers` is the order in
 *   which a client falls back when the leader hint does not answer.
 *
 * Path handling:
 * - `dataDir` / `logDir`: a relative path is resolved against the process's
 *   current working directory at load time (`path.resolve(dir)`), NOT against the
 *   config file's directory, so `"data"` means `./data` wherever the daemon is
 *   started from.  The resolved absolute path is returned.
 * - `keyFile` / `clientKeyFile`: a relative path is resolved against the
 *   directory containing the config file.  Only the type is validated here; the
 *   files are not read.
 *
 * Validation is strict: unknown fields (at the top level and inside `servers[i]`,
 * `timing`, `limits` and `storage`) are rejected so that typos do not silently
 * fall back to defaults.  Every problem is reported as a ConfigError whose
 * message is `<file>: <field path>: <problem>`; the first problem found is thrown.
 *
 * Untrusted objects are only read through own-property checks
 * (Object.prototype.hasOwnProperty.call), never with `in` or prototype lookups,
 * so keys like `__proto__` cannot influence the result (they are rejected as
 * unknown fields).
 */

import * as fs from 'fs';
import * as path from 'path';
import { PAYLOAD_BYTES_MAX, SERVERS_MAX, SID_MAX, SID_MIN } from '../limits';

/** A bad config file, reported as `file: field: problem` (the CLIs exit 2 on it). */
export class ConfigError extends Error {
  readonly file: string;
  readonly field: string;
  readonly problem: string;

  constructor(file: string, field: string, problem: string) {
    super(`${file}: ${field}: ${problem}`);
    this.name = 'ConfigError';
    this.file = file;
    this.field = field;
    this.problem = problem;
  }
}

/** One server as the node config names it: its SID and both UDP ports. */
export interface ServerAddr {
  sid: number;
  host: string;
  peerPort: number;
  clientPort: number;
  /**
   * Not in the bootstrap configuration (`"spare": true`): listed so that every
   * node knows its address and sid (`member add SID` needs no address for it),
   * a member only once `paxos-client member add` is chosen. Bootstrap
   * input only: after the first start the configuration in the log wins.
   */
  spare?: boolean;
  /**
   * Known from the log only (a `member add` with an address), not a config
   * file's server: set by paxosd --join for itself and other added nodes. The
   * servers list every node must share is the others (membership decides by it).
   */
  fromLog?: boolean;
}

/**
 * The node's clock: one tick every `tickMs`; every other duration counts ticks
 * (the core has no clock of its own).
 */
export interface Timing {
  tickMs: number;
  heartbeatTicks: number;
  electionTicks: number;
  retransmitTicks: number;
  retransmitMaxTicks: number;
}

/** Per-node bounds handed to the replica and daemon (ReplicaOptions says what each one bounds). */
export interface Limits {
  windowSlots: number;
  batchBytesMax: number;
  pendingMax: number;
  /**
   * sessionsMax and valueBytesMax decide what applying a command does, so they are
   * the cluster's, not this node's: the first leader of a new cluster records its
   * own in the log, and later these fields only serve to report a mismatch
   * (status `limitsMismatch`). See lib/sm/kv.ts SmLimits.
   */
  sessionsMax: number;
  valueBytesMax: number;
  catchupBytesMax: number;
  /** Client requests per second accepted from one source address:port (token bucket). */
  clientRatePerSource: number;
}

/** Durability and compaction of the data directory. */
export interface StorageConf {
  /** fdatasync before acknowledging; false skips every sync (power loss may lose acked writes). */
  sync: boolean;
  snapshotEverySlots: number;
  /** Also snapshot once this many bytes of commands were applied since the last one. */
  snapshotEveryBytes: number;
}

/** A validated node config: every field present, defaults applied, paths absolute. */
export interface NodeConfig {
  /** The config file name as given to the loader (used in error messages). */
  file: string;
  clusterId: string;
  /** Own SID from the file (multi-host deployments); see resolveSid. */
  sid?: number;
  /** Servers in file order. */
  servers: ServerAddr[];
  timing: Timing;
  limits: Limits;
  storage: StorageConf;
  /** Absolute; a relative value in the file is resolved against process.cwd(). */
  dataDir: string;
  /** Absolute; a relative value in the file is resolved against process.cwd(). */
  logDir: string;
  /** Absolute; a relative value in the file is resolved against the file's directory. */
  keyFile?: string;
  /** Absolute; a relative value in the file is resolved against the file's directory. */
  clientKeyFile?: string;
}

/** What a client needs of a server: where its client port is. */
export interface ClientServerAddr {
  sid: number;
  host: string;
  clientPort: number;
}

/** A validated client config (see parseClientConfig). */
export interface ClientConfig {
  file: string;
  /** Leader hint: the sid tried first.  Always one of `servers`. */
  leader?: number;
  /** Fallback order. */
  servers: ClientServerAddr[];
  timeoutMs: number;
  retryMs: number;
  /** Must match the servers' clusterId (it is part of every datagram's header). */
  clusterId: string;
  /** Absolute; a relative value in the file is resolved against the file's directory. */
  clientKeyFile?: string;
}

// Defaults for the optional fields, applied field by field (see the header).
export const DEFAULT_TIMING: Timing = Object.freeze({
  tickMs: 10,
  heartbeatTicks: 5,
  electionTicks: 30,
  retransmitTicks: 3,
  retransmitMaxTicks: 40,
});

export const DEFAULT_LIMITS: Limits = Object.freeze({
  windowSlots: 32,
  batchBytesMax: 60000,
  pendingMax: 20000,
  sessionsMax: 100000,
  valueBytesMax: 32768,
  catchupBytesMax: 60000,
  clientRatePerSource: 50000,
});

export const DEFAULT_STORAGE: StorageConf = Object.freeze({
  sync: true,
  snapshotEverySlots: 20000,
  snapshotEveryBytes: 4 * 1024 * 1024,
});

export const DEFAULT_DATA_DIR = 'data';
export const DEFAULT_LOG_DIR = 'logs';
export const DEFAULT_CLIENT_TIMEOUT_MS = 5000;
export const DEFAULT_CLIENT_RETRY_MS = 20;

// ---------------------------------------------------------------------------
// Generic helpers

type Obj = Record<string, unknown>;

function hasOwn(o: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

function getOwn(o: Obj, key: string): unknown {
  return hasOwn(o, key) ? o[key] : undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (!Number.isFinite(v)) return String(v);
    return `number ${v}`;
  }
  if (typeof v === 'string')
    return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  return typeof v;
}

function join(prefix: string, key: string): string {
  return prefix === '' ? key : `${prefix}.${key}`;
}

class Validator {
  constructor(readonly file: string) {}

  fail(field: string, problem: string): never {
    throw new ConfigError(this.file, field, problem);
  }

  object(field: string, v: unknown): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      this.fail(field, `expected an object, got ${describe(v)}`);
    }
    return v as Obj;
  }

  /** Reject own keys not in `allowed` (reports the first in key order). */
  noUnknown(prefix: string, o: Obj, allowed: readonly string[], what: string): void {
    for (const key of Object.keys(o)) {
      if (!allowed.includes(key)) {
        this.fail(join(prefix, key), `unknown ${what} field (allowed: ${allowed.join(', ')})`);
      }
    }
  }

  required(prefix: string, o: Obj, key: string): unknown {
    if (!hasOwn(o, key) || o[key] === undefined) {
      this.fail(join(prefix, key), 'missing required field');
    }
    return o[key];
  }

  int(field: string, v: unknown, min: number, max: number): number {
    if (typeof v !== 'number') this.fail(field, `expected an integer, got ${describe(v)}`);
    if (!Number.isInteger(v)) this.fail(field, `must be an integer, got ${describe(v)}`);
    if (v < min || v > max) {
      this.fail(field, `out of range: must be between ${min} and ${max}, got ${v}`);
    }
    return v;
  }

  bool(field: string, v: unknown): boolean {
    if (typeof v !== 'boolean') this.fail(field, `expected a boolean, got ${describe(v)}`);
    return v;
  }

  str(field: string, v: unknown): string {
    if (typeof v !== 'string') this.fail(field, `expected a string, got ${describe(v)}`);
    return v;
  }

  nonEmptyStr(field: string, v: unknown): string {
    const s = this.str(field, v);
    if (s.length === 0) this.fail(field, 'must not be empty');
    return s;
  }

  host(field: string, v: unknown): string {
    const s = this.nonEmptyStr(field, v);
    if (s.length > 253 || /[\s/]/.test(s)) {
      this.fail(field, `not a valid host name or address: ${JSON.stringify(s)}`);
    }
    // The sockets are IPv4 (udp4): an IPv6 literal would fail at bind time.
    if (s.includes(':'))
      this.fail(
        field,
        `IPv6 addresses are not supported (use an IPv4 address or a host name): ${s}`,
      );
    return s;
  }

  port(field: string, v: unknown): number {
    return this.int(field, v, 1, 65535);
  }

  sid(field: string, v: unknown): number {
    return this.int(field, v, SID_MIN, SID_MAX);
  }

  /** Optional integer with a default. */
  optInt(prefix: string, o: Obj, key: string, def: number, min: number, max: number): number {
    const v = getOwn(o, key);
    return v === undefined ? def : this.int(join(prefix, key), v, min, max);
  }

  serverList(field: string, v: unknown): unknown[] {
    if (!Array.isArray(v)) this.fail(field, `expected an array, got ${describe(v)}`);
    if (v.length < 1) this.fail(field, 'at least 1 server is required, got 0');
    if (v.length > SERVERS_MAX) {
      this.fail(field, `too many servers: at most ${SERVERS_MAX} allowed, got ${v.length}`);
    }
    return v;
  }
}

function hostKey(host: string, port: number): string {
  return `${host.toLowerCase()}:${port}`;
}

// ---------------------------------------------------------------------------
// Node config

const NODE_KEYS = [
  'clusterId',
  'sid',
  'servers',
  'timing',
  'limits',
  'storage',
  'dataDir',
  'logDir',
  'keyFile',
  'clientKeyFile',
] as const;
const SERVER_KEYS = ['sid', 'host', 'peerPort', 'clientPort', 'spare'] as const;
const TIMING_KEYS = [
  'tickMs',
  'heartbeatTicks',
  'electionTicks',
  'retransmitTicks',
  'retransmitMaxTicks',
] as const;
const LIMITS_KEYS = [
  'windowSlots',
  'batchBytesMax',
  'pendingMax',
  'sessionsMax',
  'valueBytesMax',
  'catchupBytesMax',
  'clientRatePerSource',
] as const;
const STORAGE_KEYS = ['sync', 'snapshotEverySlots', 'snapshotEveryBytes'] as const;

/** A cluster id: in config files, and recorded in each data directory (lib/io/storage.ts). */
export const CLUSTER_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

function parseServers(v: Validator, raw: unknown): ServerAddr[] {
  const list = v.serverList('servers', raw);
  const servers: ServerAddr[] = [];
  const sids = new Map<number, number>();
  const endpoints = new Map<string, string>();
  list.forEach((item, i) => {
    const p = `servers[${i}]`;
    const o = v.object(p, item);
    v.noUnknown(p, o, SERVER_KEYS, 'server');
    const sid = v.sid(`${p}.sid`, v.required(p, o, 'sid'));
    const host = v.host(`${p}.host`, v.required(p, o, 'host'));
    const peerPort = v.port(`${p}.peerPort`, v.required(p, o, 'peerPort'));
    const clientPort = v.port(`${p}.clientPort`, v.required(p, o, 'clientPort'));
    const prev = sids.get(sid);
    if (prev !== undefined) v.fail(`${p}.sid`, `duplicate sid ${sid} (also servers[${prev}].sid)`);
    sids.set(sid, i);
    for (const [key, port] of [
      ['peerPort', peerPort],
      ['clientPort', clientPort],
    ] as const) {
      const field = `${p}.${key}`;
      const ep = hostKey(host, port);
      const other = endpoints.get(ep);
      if (other !== undefined) {
        v.fail(field, `duplicate address ${host}:${port} (also used by ${other})`);
      }
      endpoints.set(ep, field);
    }
    const spare = getOwn(o, 'spare');
    const server: ServerAddr = { sid, host, peerPort, clientPort };
    if (spare !== undefined && v.bool(`${p}.spare`, spare)) server.spare = true;
    servers.push(server);
  });
  if (servers.every((s) => s.spare))
    v.fail('servers', 'every server is a spare: the bootstrap configuration needs a voter');
  return servers;
}

function parseTiming(v: Validator, raw: unknown): Timing {
  if (raw === undefined) return { ...DEFAULT_TIMING };
  const p = 'timing';
  const o = v.object(p, raw);
  v.noUnknown(p, o, TIMING_KEYS, 'timing');
  const d = DEFAULT_TIMING;
  const tickMs = v.optInt(p, o, 'tickMs', d.tickMs, 1, 1000);
  const heartbeatTicks = v.optInt(p, o, 'heartbeatTicks', d.heartbeatTicks, 1, 10000);
  const electionTicks = v.optInt(p, o, 'electionTicks', d.electionTicks, 1, 100000);
  if (electionTicks <= 2 * heartbeatTicks) {
    v.fail(
      'timing.electionTicks',
      `must exceed 2 * heartbeatTicks (${2 * heartbeatTicks}), got ${electionTicks}`,
    );
  }
  const retransmitTicks = v.optInt(p, o, 'retransmitTicks', d.retransmitTicks, 1, 10000);
  const retransmitMaxTicks = v.optInt(p, o, 'retransmitMaxTicks', d.retransmitMaxTicks, 1, 100000);
  if (retransmitMaxTicks < retransmitTicks) {
    v.fail(
      'timing.retransmitMaxTicks',
      `must be at least retransmitTicks (${retransmitTicks}), got ${retransmitMaxTicks}`,
    );
  }
  // A campaign gives up after 3 election timeouts and a catch-up or snapshot
  // source is abandoned after one unanswered retransmission: a backoff longer
  // than two election timeouts would leave a lost prepare or chunk unrepeated.
  if (retransmitMaxTicks > 2 * electionTicks) {
    v.fail(
      'timing.retransmitMaxTicks',
      `must be at most 2 * electionTicks (${2 * electionTicks}), got ${retransmitMaxTicks}`,
    );
  }
  return { tickMs, heartbeatTicks, electionTicks, retransmitTicks, retransmitMaxTicks };
}

function parseLimits(v: Validator, raw: unknown): Limits {
  if (raw === undefined) return { ...DEFAULT_LIMITS };
  const p = 'limits';
  const o = v.object(p, raw);
  v.noUnknown(p, o, LIMITS_KEYS, 'limits');
  const d = DEFAULT_LIMITS;
  const windowSlots = v.optInt(p, o, 'windowSlots', d.windowSlots, 1, 1024);
  const batchBytesMax = v.optInt(p, o, 'batchBytesMax', d.batchBytesMax, 1024, PAYLOAD_BYTES_MAX);
  const pendingMax = v.optInt(p, o, 'pendingMax', d.pendingMax, 1, 10_000_000);
  const sessionsMax = v.optInt(p, o, 'sessionsMax', d.sessionsMax, 1, 10_000_000);
  const valueBytesMax = v.optInt(p, o, 'valueBytesMax', d.valueBytesMax, 16384, PAYLOAD_BYTES_MAX);
  if (valueBytesMax >= batchBytesMax - 1024) {
    v.fail(
      'limits.valueBytesMax',
      `must be less than batchBytesMax - 1024 (${batchBytesMax - 1024}), got ${valueBytesMax}`,
    );
  }
  const catchupBytesMax = v.optInt(
    p,
    o,
    'catchupBytesMax',
    d.catchupBytesMax,
    1024,
    PAYLOAD_BYTES_MAX,
  );
  const clientRatePerSource = v.optInt(
    p,
    o,
    'clientRatePerSource',
    d.clientRatePerSource,
    1,
    10_000_000,
  );
  return {
    windowSlots,
    batchBytesMax,
    pendingMax,
    sessionsMax,
    valueBytesMax,
    catchupBytesMax,
    clientRatePerSource,
  };
}

function parseStorage(v: Validator, raw: unknown): StorageConf {
  if (raw === undefined) return { ...DEFAULT_STORAGE };
  const p = 'storage';
  const o = v.object(p, raw);
  v.noUnknown(p, o, STORAGE_KEYS, 'storage');
  const rawSync = getOwn(o, 'sync');
  const sync = rawSync === undefined ? DEFAULT_STORAGE.sync : v.bool('storage.sync', rawSync);
  const snapshotEverySlots = v.optInt(
    p,
    o,
    'snapshotEverySlots',
    DEFAULT_STORAGE.snapshotEverySlots,
    1,
    0x7fffffff,
  );
  const snapshotEveryBytes = v.optInt(
    p,
    o,
    'snapshotEveryBytes',
    DEFAULT_STORAGE.snapshotEveryBytes,
    65536,
    Number.MAX_SAFE_INTEGER,
  );
  return { sync, snapshotEverySlots, snapshotEveryBytes };
}

/** Validate an already-parsed JSON value as a node config. */
export function parseNodeConfig(file: string, raw: unknown): NodeConfig {
  const v = new Validator(file);
  const o = v.object('(root)', raw);
  v.noUnknown('', o, NODE_KEYS, 'top-level');

  const clusterId = v.nonEmptyStr('clusterId', v.required('', o, 'clusterId'));
  if (!CLUSTER_ID_RE.test(clusterId)) {
    v.fail('clusterId', 'must be 1-64 characters from [A-Za-z0-9._-]');
  }
  const servers = parseServers(v, v.required('', o, 'servers'));

  let sid: number | undefined;
  const rawSid = getOwn(o, 'sid');
  if (rawSid !== undefined) {
    sid = v.sid('sid', rawSid);
    if (!servers.some((s) => s.sid === sid)) {
      v.fail('sid', `unknown own sid ${sid}: not in servers (${sidList(servers)})`);
    }
  }

  const timing = parseTiming(v, getOwn(o, 'timing'));
  const limits = parseLimits(v, getOwn(o, 'limits'));
  const storage = parseStorage(v, getOwn(o, 'storage'));

  const dirOf = (key: 'dataDir' | 'logDir', def: string): string => {
    const r = getOwn(o, key);
    return path.resolve(r === undefined ? def : v.nonEmptyStr(key, r));
  };
  const dataDir = dirOf('dataDir', DEFAULT_DATA_DIR);
  const logDir = dirOf('logDir', DEFAULT_LOG_DIR);

  const cfg: NodeConfig = { file, clusterId, servers, timing, limits, storage, dataDir, logDir };
  if (sid !== undefined) cfg.sid = sid;
  const baseDir = path.dirname(path.resolve(file));
  for (const key of ['keyFile', 'clientKeyFile'] as const) {
    const r = getOwn(o, key);
    if (r !== undefined) cfg[key] = path.resolve(baseDir, v.nonEmptyStr(key, r));
  }
  return cfg;
}

function sidList(servers: readonly { sid: number }[]): string {
  return 'known: ' + servers.map((s) => s.sid).join(', ');
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(file, '(file)', `cannot read: ${err.code ?? err.message}`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ConfigError(file, '(file)', `invalid JSON: ${(e as Error).message}`);
  }
}

/** Read, JSON.parse and validate a node config file. */
export function loadNodeConfig(file: string): NodeConfig {
  return parseNodeConfig(file, readJson(file));
}

// ---------------------------------------------------------------------------
// Client config

const CLIENT_KEYS = [
  'leader',
  'servers',
  'timeoutMs',
  'retryMs',
  'clusterId',
  'clientKeyFile',
] as const;
const CLIENT_SERVER_KEYS = ['sid', 'host', 'clientPort'] as const;

/** Validate an already-parsed JSON value as a client config. */
export function parseClientConfig(file: string, raw: unknown): ClientConfig {
  const v = new Validator(file);
  const o = v.object('(root)', raw);
  v.noUnknown('', o, CLIENT_KEYS, 'top-level');

  const list = v.serverList('servers', v.required('', o, 'servers'));
  const servers: ClientServerAddr[] = [];
  const sids = new Map<number, number>();
  const endpoints = new Map<string, string>();
  list.forEach((item, i) => {
    const p = `servers[${i}]`;
    const so = v.object(p, item);
    v.noUnknown(p, so, CLIENT_SERVER_KEYS, 'server');
    const sid = v.sid(`${p}.sid`, v.required(p, so, 'sid'));
    const host = v.host(`${p}.host`, v.required(p, so, 'host'));
    const clientPort = v.port(`${p}.clientPort`, v.required(p, so, 'clientPort'));
    const prev = sids.get(sid);
    if (prev !== undefined) v.fail(`${p}.sid`, `duplicate sid ${sid} (also servers[${prev}].sid)`);
    sids.set(sid, i);
    const ep = hostKey(host, clientPort);
    const other = endpoints.get(ep);
    if (other !== undefined) {
      v.fail(`${p}.clientPort`, `duplicate address ${host}:${clientPort} (also used by ${other})`);
    }
    endpoints.set(ep, `${p}.clientPort`);
    servers.push({ sid, host, clientPort });
  });

  const cfg: ClientConfig = {
    file,
    servers,
    timeoutMs: v.optInt('', o, 'timeoutMs', DEFAULT_CLIENT_TIMEOUT_MS, 1, 3_600_000),
    retryMs: DEFAULT_CLIENT_RETRY_MS,
    clusterId: 'local',
  };
  const rawCluster = getOwn(o, 'clusterId');
  if (rawCluster !== undefined) cfg.clusterId = v.nonEmptyStr('clusterId', rawCluster);
  const rawKey = getOwn(o, 'clientKeyFile');
  if (rawKey !== undefined)
    cfg.clientKeyFile = path.resolve(path.dirname(file), v.nonEmptyStr('clientKeyFile', rawKey));
  cfg.retryMs = v.optInt('', o, 'retryMs', DEFAULT_CLIENT_RETRY_MS, 1, cfg.timeoutMs);

  const rawLeader = getOwn(o, 'leader');
  if (rawLeader !== undefined) {
    const leader = v.sid('leader', rawLeader);
    if (!sids.has(leader)) {
      v.fail('leader', `unknown sid ${leader}: not in servers (${sidList(servers)})`);
    }
    cfg.leader = leader;
  }
  return cfg;
}

/** Read, JSON.parse and validate a client config file. */
export function loadClientConfig(file: string): ClientConfig {
  return parseClientConfig(file, readJson(file));
}

// ---------------------------------------------------------------------------
// Helpers for daemons / tools

function sidFrom(cfg: NodeConfig, source: string, raw: unknown): number {
  const bad = (problem: string): never => {
    throw new ConfigError(cfg.file, 'sid', `${source}: ${problem}`);
  };
  let n: number;
  if (Array.isArray(raw)) return bad('given more than once');
  if (typeof raw === 'number') {
    n = raw;
  } else if (typeof raw === 'string') {
    const s = raw.trim();
    if (!/^[0-9]{1,3}$/.test(s)) return bad(`not a sid: ${JSON.stringify(raw)}`);
    n = Number(s);
  } else if (typeof raw === 'boolean') {
    return bad('missing value');
  } else {
    return bad(`not a sid: ${describe(raw)}`);
  }
  if (!Number.isInteger(n) || n < SID_MIN || n > SID_MAX) {
    return bad(`must be an integer between ${SID_MIN} and ${SID_MAX}, got ${describe(n)}`);
  }
  if (!cfg.servers.some((s) => s.sid === n)) {
    return bad(`unknown own sid ${n}: not in servers (${sidList(cfg.servers)})`);
  }
  return n;
}

/**
 * Determine this node's SID: `--sid` (argvSid, e.g. from minimist) wins over the
 * PAXOS_SID environment variable, which wins over the config file's `sid`.
 * An empty PAXOS_SID counts as unset.  The result must be one of cfg.servers,
 * otherwise (or if no source gives a sid) a ConfigError naming field 'sid' is thrown.
 */
export function resolveSid(cfg: NodeConfig, argvSid: unknown, env: NodeJS.ProcessEnv): number {
  if (argvSid !== undefined) return sidFrom(cfg, '--sid', argvSid);
  const envSid = hasOwn(env, 'PAXOS_SID') ? env.PAXOS_SID : undefined;
  if (envSid !== undefined && envSid.trim() !== '') return sidFrom(cfg, 'PAXOS_SID', envSid);
  if (cfg.sid !== undefined) return sidFrom(cfg, 'config', cfg.sid);
  throw new ConfigError(
    cfg.file,
    'sid',
    'own sid not given: pass --sid, set PAXOS_SID, or set "sid" in the config file',
  );
}

/** Client config addressing every server of a node config, in sid order, with default timeouts. */
export function clientConfigFromNode(cfg: NodeConfig): ClientConfig {
  return {
    file: cfg.file,
    servers: [...cfg.servers]
      .sort((a, b) => a.sid - b.sid)
      .map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort })),
    timeoutMs: DEFAULT_CLIENT_TIMEOUT_MS,
    retryMs: DEFAULT_CLIENT_RETRY_MS,
    clusterId: cfg.clusterId,
    clientKeyFile: cfg.clientKeyFile,
  };
}
