import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { encodeBackupFile, writeBackupFile } from '../backup';
import {
  describeHeard,
  parseMembers,
  PaxosClient,
  PaxosClientError,
  SnapshotSaveError,
  type OpResult,
  type OutcomeReport,
  type ServerHeard,
  type TransferReport,
} from '../client';
import { ConfigError, loadClientConfig, type ClientConfig } from '../io/config';
import { loadKeyring } from '../io/keys';
import type { MemberAddr } from '../core/types';
import type { KvOp } from '../sm/kv';
import { badMemberAddr, memberAddr } from '../sm/membership';
import { handleCommonFlags, parseFlags } from './common';

const USAGE = `usage: paxos-client [--config conf/client.config.json] [--json] [--timeout MS] COMMAND
       paxos-client --help | --version
  put KEY VALUE          set KEY
  get KEY                print KEY's value
  del KEY                delete KEY
  cas KEY EXPECTED NEW   set KEY to NEW if it holds EXPECTED (--absent: if it is unset)
  put KEY --value-file F, cas KEY EXPECTED --value-file F
                         the value (NEW) is the bytes of file F (- for stdin), any
                         bytes; get prints them back as they were, --json as
                         {"base64": ...} when they are not UTF-8 text
  status                 one row per server: sid, role, ballot, leader, chosen, applied,
                         lag (slots behind the leader's chosen), syncs, drops; then the
                         configuration unless it is every server as a voter (--json:
                         per row configuration "0 1 2 +3" (+: learner),
                         configurationSlot, configurationFrom, member);
                         exit 3 with "no quorum" / "no leader" when the cluster cannot
                         commit (a majority of the configuration's voters)
  status --watch [S]     the same table, refreshed every S seconds (default 1) until Ctrl-C
  health                 exit 0 only if a majority names one leader and a linearizable
                         read completes within the timeout; else exit 3 with the reason
  outcome CID:SEQ        was request CID:SEQ (named by OUTCOME UNKNOWN) applied? Asked
                         through the log: APPLIED and its first answer (exit 0), NOT
                         APPLIED (exit 1: it never ran, and a late copy no longer can),
                         UNKNOWN (exit 3: the exactly-once table no longer remembers it)
  transfer-leader SID    hand leadership to SID (etcd's move-leader): exit 0 once SID
                         leads; 1 refused (unknown_sid, not_voter, handoff_timeout:
                         SID did not take over in time, the leader leads on)
  member list            the configuration as the leader applied it: each member, voter
                         or learner, and the slot it governs from
  member add SID [HOST PEERPORT CLIENTPORT] [--learner]
                         make SID a learner: it gets the log, never votes (the only
                         mode). A sid the config files do not list needs its
                         address: the log carries it to every node; then start
                         it with paxosd --join (a "spare": true server needs none)
  member promote SID     make learner SID a voter (once it caught up: status lag)
  member remove SID      drop member SID; it exits once the change governs (a leader
                         hands leadership over first). One change at a time: each
                         governs from its slot + alpha (256). add, promote and
                         remove return once the change is in force on every voter
                         of the new configuration (each applied up to the slot it
                         governs from; at most --wait-ms, default 30000;
                         --no-wait: once applied);
                         only then may voters of the previous one be lost. Exit 0
                         done, 1 refused (member: why), 3 no answer (member list
                         tells), 5 applied but not in force on every voter in time
  snapshot save FILE     write a consistent snapshot of the cluster (every write
                         acknowledged before the save began, its slot and state
                         hash) to FILE, atomically; --max-bytes N refuses a larger
                         one (default 1 GiB). Restore it with paxosd restore.
                         Exit 1 too large or FILE cannot be written, 3 no answer
  -                      read one command per line from stdin (also without a
                         command when stdin is not a terminal). A line takes the
                         same words and flags (cas --absent K V); quote values
                         with spaces ("a b" or 'a b'); # starts a comment line.
                         The batch stops when no server answers.

exit codes: 0 success, 1 refused (cas mismatch, invalid operation),
            2 usage or config error (also: the servers say "wrong cluster id" or
            refuse the client key), 3 no definite answer: OUTCOME UNKNOWN (a
            write may or may not have taken effect; the message names the
            request cid:seq to look up in the order logs) or NOT SENT (no
            server answered before the write could be sent), 4 not found`;

const EXIT = { ok: 0, refused: 1, usage: 2, unknown: 3, notFound: 4, notInForce: 5 } as const;

/**
 * Split a stdin line into words as a shell would for simple cases: blanks
 * separate words, '...' and "..." group (a backslash escapes the next
 * character inside "..." and outside quotes). Returns an error message for an
 * unclosed quote.
 */
function splitLine(line: string): string[] | string {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === ' ' || ch === '\t') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else if (ch === "'" || ch === '"') {
      const end = ch === "'" ? line.indexOf("'", i + 1) : closingQuote(line, i + 1);
      if (end < 0) return `unclosed ${ch} quote`;
      const body = line.slice(i + 1, end);
      cur += ch === '"' ? body.replace(/\\(.)/g, '$1') : body;
      inWord = true;
      i = end;
    } else if (ch === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

function closingQuote(line: string, from: number): number {
  for (let i = from; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === '"') return i;
  }
  return -1;
}

/**
 * Values are strings in the store. Bytes from --value-file that are UTF-8 text
 * (not starting with U+0000, which no command-line word can hold) are stored as
 * that text; any other bytes as BINARY_MARK + base64, which this tool turns back
 * into the bytes. Base64 takes 4 bytes per 3: such a value may hold 3/4 of
 * limits.valueBytesMax.
 */
const BINARY_MARK = '\u0000base64:';

function valueFromBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (!text.startsWith('\u0000') && Buffer.from(text, 'utf8').equals(bytes)) return text;
  return BINARY_MARK + bytes.toString('base64');
}

function valueBytes(value: string): Buffer {
  return value.startsWith(BINARY_MARK)
    ? Buffer.from(value.slice(BINARY_MARK.length), 'base64')
    : Buffer.from(value, 'utf8');
}

/** A value for --json: its text, or {base64} for bytes that are not UTF-8 text. */
function jsonValue(value: string | null | undefined): unknown {
  return value?.startsWith(BINARY_MARK) ? { base64: value.slice(BINARY_MARK.length) } : value;
}

function jsonOp(op: KvOp): unknown {
  if (op.kind === 'put') return { ...op, value: jsonValue(op.value) };
  if (op.kind === 'cas')
    return { ...op, expected: jsonValue(op.expected), value: jsonValue(op.value) };
  return op;
}

/** The bytes of --value-file F ('-': all of stdin), or an error message. */
function readValueFile(file: string): Buffer | string {
  try {
    return fs.readFileSync(file === '-' ? 0 : file);
  } catch (e) {
    return `--value-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/** `fileValue`: the value --value-file gave (then put and cas take one word less). */
function parseOp(words: string[], absent: boolean, fileValue?: string): KvOp | string {
  const [cmd, ...a] = words;
  if (fileValue !== undefined) {
    if (cmd !== 'put' && cmd !== 'cas') return '--value-file goes with put and cas';
    a.push(fileValue);
    const op = parseOp([cmd, ...a], absent);
    return typeof op === 'string' ? `${op}; --value-file gives the value` : op;
  }
  switch (cmd) {
    case 'put':
      return a.length === 2 ? { kind: 'put', key: a[0], value: a[1] } : 'put takes KEY VALUE';
    case 'get':
      return a.length === 1 ? { kind: 'get', key: a[0] } : 'get takes KEY';
    case 'del':
      return a.length === 1 ? { kind: 'del', key: a[0] } : 'del takes KEY';
    case 'cas':
      if (absent && a.length === 2) return { kind: 'cas', key: a[0], expected: null, value: a[1] };
      return a.length === 3
        ? { kind: 'cas', key: a[0], expected: a[1], value: a[2] }
        : 'cas takes KEY EXPECTED NEW (or --absent KEY NEW)';
    default:
      return `unknown command ${JSON.stringify(cmd ?? '')}`;
  }
}

/**
 * What the servers said before reading a request (wrong cluster id, wrong
 * key), as a message naming the config to fix; null if they said nothing.
 */
function refusalMessage(client: PaxosClient, cfg: ClientConfig): string | null {
  const r = client.refusals;
  if (r.wrong_cluster)
    return `wrong cluster id: the servers said clusterId "${cfg.clusterId}" (${cfg.file}) is not theirs; nothing was run`;
  if (r.auth)
    return `unauthenticated: the servers refused this client's key (clientKeyFile in ${cfg.file}); nothing was run`;
  return null;
}

async function runOne(
  client: PaxosClient,
  cfg: ClientConfig,
  op: KvOp,
  json: boolean,
): Promise<number> {
  let r: OpResult;
  try {
    r = await client.session().run(op);
  } catch (e) {
    const refused = refusalMessage(client, cfg);
    const notSent = e instanceof PaxosClientError && e.notSent;
    const request = e instanceof PaxosClientError ? e.request : undefined;
    const msg = (e as Error).message;
    const servers = e instanceof PaxosClientError ? e.servers : [];
    if (refused && client.stats.replies === 0) {
      // The servers refused every datagram unread: the request never ran.
      const why = `${refused} (${describeHeard(servers, cfg.servers.length)})`;
      if (json)
        process.stdout.write(
          JSON.stringify({ op, outcome: 'refused', error: why, servers }) + '\n',
        );
      else process.stderr.write(`paxos-client: ${why}\n`);
      return EXIT.usage;
    }
    // Never re-run a write here: an unknown outcome is reported, with the
    // request's cid:seq, so that it can be looked up.
    const outcome = notSent ? 'not_sent' : 'unknown';
    if (json)
      process.stdout.write(JSON.stringify({ op, outcome, request, error: msg, servers }) + '\n');
    else process.stderr.write(`${notSent ? 'NOT SENT' : 'OUTCOME UNKNOWN'}: ${msg}\n`);
    return EXIT.unknown;
  }
  let code: number = EXIT.ok;
  if (!r.ok) code = EXIT.refused;
  else if (op.kind === 'get' && r.value === null) code = EXIT.notFound;
  if (json) {
    process.stdout.write(
      JSON.stringify({
        op: jsonOp(op),
        ok: r.ok,
        value: jsonValue(r.value),
        error: r.err,
        sid: r.sid,
        attempts: r.attempts,
      }) + '\n',
    );
  } else if (r.err) {
    process.stderr.write(`refused: ${r.err}\n`);
  } else if (op.kind === 'get') {
    if (r.value === null) process.stderr.write('(not found)\n');
    else process.stdout.write(Buffer.concat([valueBytes(r.value!), Buffer.from('\n')]));
  } else if (op.kind === 'cas' && !r.ok) {
    process.stdout.write(
      `mismatch: current value is ${r.value === null ? '(unset)' : JSON.stringify(jsonValue(r.value))}\n`,
    );
  } else {
    process.stdout.write('OK\n');
  }
  return code;
}

/** The status row with the newest configuration (highest configurationSlot), or null (older nodes). */
function newestConfiguration(rows: StatusRow[]): Record<string, unknown> | null {
  let best: Record<string, unknown> | null = null;
  for (const r of rows)
    if (
      r &&
      typeof r.configurationSlot === 'number' &&
      (!best || r.configurationSlot > (best.configurationSlot as number))
    )
      best = r;
  return best;
}

/**
 * The cluster as the servers' answers show it: the leader a majority of the
 * voters names (null if none), and why the cluster cannot commit (null if it
 * can). The voters are those of the newest configuration a server reports
 * (spares and learners do not count; nodes of an older build report none: then
 * every configured server). A quorum is a majority of them (Paxos Made Simple);
 * a leader counts only if a majority of them names it.
 */
function clusterView(
  rows: StatusRow[],
  sids: number[],
): {
  leader: number | null;
  problem: string | null;
} {
  const newest = newestConfiguration(rows);
  const members = newest ? parseMembers(String(newest.configuration ?? '')) : null;
  const voters = members ? members.filter((m) => m.voter).map((m) => m.sid) : sids;
  const counted = rows.filter((r, i) => r !== null && voters.includes(sids[i]));
  const majority = Math.floor(voters.length / 2) + 1;
  const up = counted.length;
  const votes = new Map<number, number>();
  for (const r of counted)
    if (r && typeof r.leader === 'number') votes.set(r.leader, (votes.get(r.leader) ?? 0) + 1);
  const leader = [...votes].find(([, n]) => n >= majority)?.[0] ?? null;
  // "servers" while every configured server votes (the wording of older builds).
  const who = voters.length === sids.length ? 'servers' : 'voters';
  let problem: string | null = null;
  if (up < majority)
    problem = `no quorum: ${up} of ${voters.length} ${who} answered (a majority is ${majority})`;
  else if (leader === null)
    problem = `no leader: no sid is named leader by a majority (${majority}) of the ${who}`;
  return { leader, problem };
}

/** The key `health` reads (any key would do: the read index, not the value, is the check). */
const HEALTH_KEY = 'paxosd.health';

/**
 * A health check as an orchestrator wants it: the cluster can commit (a majority
 * answers and names one leader) and serves a linearizable read (a read-index
 * round trip through that leader) within the timeout.
 */
async function health(
  client: PaxosClient,
  cfg: ClientConfig,
  json: boolean,
  timeoutMs: number,
): Promise<number> {
  const rows = await Promise.all(cfg.servers.map((s) => client.status(s.sid)));
  const view = clusterView(
    rows,
    cfg.servers.map((s) => s.sid),
  );
  let problem = refusalMessage(client, cfg) ?? view.problem;
  let readMs: number | null = null;
  if (!problem) {
    const started = Date.now();
    try {
      await client.get(HEALTH_KEY);
      readMs = Date.now() - started;
    } catch (e) {
      problem = `no linearizable read within ${timeoutMs} ms (${(e as Error).message})`;
    }
  }
  const answered = rows.filter((r) => r !== null).length;
  const leader = view.leader;
  if (json)
    process.stdout.write(
      JSON.stringify({
        healthy: !problem,
        leader,
        answered,
        servers: rows.length,
        readMs,
        problem,
      }) + '\n',
    );
  else if (problem) process.stderr.write(`paxos-client: unhealthy: ${problem}\n`);
  else
    process.stdout.write(
      `healthy: leader ${leader} (${answered} of ${rows.length} servers answered), linearizable read in ${readMs} ms\n`,
    );
  return problem ? EXIT.unknown : EXIT.ok;
}

/** `status`, redrawn every `everyS` seconds until interrupted (bounded by nothing else: a terminal tool). */
async function watch(client: PaxosClient, cfg: ClientConfig, everyS: number): Promise<number> {
  for (;;) {
    const rows = await Promise.all(cfg.servers.map((s) => client.status(s.sid)));
    // Clear the screen and home the cursor, then the same table as `status`.
    process.stdout.write(
      '\x1b[2J\x1b[H' + `${new Date().toISOString()}  every ${everyS} s, Ctrl-C to stop\n`,
    );
    printStatus(cfg, rows, false);
    await new Promise((r) => setTimeout(r, everyS * 1000));
  }
}

type StatusRow = Awaited<ReturnType<PaxosClient['status']>>;

async function status(client: PaxosClient, cfg: ClientConfig, json: boolean): Promise<number> {
  const since = client.now();
  const rows = await Promise.all(cfg.servers.map((s) => client.status(s.sid)));
  const code = printStatus(cfg, rows, json, client);
  // Nobody answered: say what each server said, if anything (a wrong cluster id or key).
  if (rows.every((r) => r === null)) {
    const heard = cfg.servers
      .map((s) => client.statusHeard(s.sid, since))
      .filter((h): h is ServerHeard => h !== null);
    process.stderr.write(`paxos-client: ${describeHeard(heard, cfg.servers.length)}\n`);
  }
  return code;
}

/** A `member` command's words, checked: list, or an action and a sid. */
type MemberWords =
  { action: 'list' } | { action: 'add' | 'promote' | 'remove'; sid: number; addr?: MemberAddr };

function memberArgs(words: string[]): MemberWords | string {
  const [, action, sid, ...rest] = words;
  if (action === 'list')
    return rest.length > 0 || sid !== undefined ? 'member list takes no argument' : { action };
  if (action !== 'add' && action !== 'promote' && action !== 'remove')
    return 'member takes list, add SID [HOST PEERPORT CLIENTPORT], promote SID or remove SID';
  if (!/^\d{1,3}$/.test(sid ?? '') || Number(sid) > 255)
    return `member ${action} takes a sid (0-255)`;
  if (action === 'add' && rest.length > 0) {
    const [host, peerPort, clientPort, ...more] = rest;
    if (clientPort === undefined)
      return 'member add SID takes HOST PEERPORT CLIENTPORT, or nothing';
    if (more.length > 0) return `unexpected argument ${more[0]}`;
    const num = (x: string) => (/^\d{1,5}$/.test(x) ? Number(x) : NaN);
    const raw = [host, num(peerPort), num(clientPort)];
    const why = badMemberAddr(raw);
    if (why) return `member add ${sid}: ${why}`;
    return { action, sid: Number(sid), addr: memberAddr(raw) };
  }
  if (rest.length > 0) return `unexpected argument ${rest[0]}`;
  return { action, sid: Number(sid) };
}

/** How long `member add|promote|remove` waits for the change to be in force on every voter. */
const MEMBER_IN_FORCE_WAIT_MS = 30_000;

/** `member list|add|promote|remove`: exit 0 done, 1 refused, 3 no answer, 5 applied but not in force in time. */
async function member(
  client: PaxosClient,
  cfg: ClientConfig,
  w: MemberWords,
  json: boolean,
  wait: boolean,
  waitMs: number,
): Promise<number> {
  if (w.action === 'list') {
    const m = await client.members();
    if (!m) {
      const msg = refusalMessage(client, cfg) ?? 'no server answered status';
      if (json) process.stdout.write(JSON.stringify({ error: msg }) + '\n');
      else process.stderr.write(`paxos-client: ${msg}\n`);
      return EXIT.unknown;
    }
    if (json) {
      process.stdout.write(JSON.stringify(m) + '\n');
      return EXIT.ok;
    }
    // This client config's addresses; a member it does not list (added through
    // the log) at the address the cluster knows.
    const addr = new Map(cfg.servers.map((s) => [s.sid, `${s.host}:${s.clientPort}`]));
    for (const [sid, a] of m.addresses) {
      const [host, peer, client] = a.split(':');
      if (!addr.has(sid)) addr.set(sid, `${host}:${client} (peer port ${peer})`);
    }
    const applied = m.slot === 0 ? 'the bootstrap configuration' : `applied at slot ${m.slot}`;
    process.stdout.write(
      `configuration ${applied}, governs from slot ${m.from} (as sid ${m.sid} knows it; leader ${m.leader ?? '-'})\n`,
    );
    for (const x of m.members)
      process.stdout.write(
        `${String(x.sid).padEnd(4)}${(x.voter ? 'voter' : 'learner').padEnd(9)}${addr.get(x.sid) ?? '(not in this client config)'}\n`,
      );
    return EXIT.ok;
  }
  let r: OpResult;
  try {
    r = await client.member(w.action, w.sid, w.addr);
  } catch (e) {
    const servers = e instanceof PaxosClientError ? e.servers : [];
    const refused = refusalMessage(client, cfg);
    const msg = refused
      ? `${refused} (${describeHeard(servers, cfg.servers.length)})`
      : `member ${w.action} ${w.sid} got no answer: ${(e as Error).message}; the change may or may not be in the log (member list tells)`;
    if (json) process.stdout.write(JSON.stringify({ ...w, ok: null, error: msg, servers }) + '\n');
    else process.stderr.write(`${refused ? 'paxos-client: ' : 'OUTCOME UNKNOWN: '}${msg}\n`);
    return refused ? EXIT.usage : EXIT.unknown;
  }
  // Done only once the change is in force on every voter of the new
  // configuration (memberInForce): then losing outgoing voters cannot stall a
  // majority of the new one. --no-wait returns when the change is applied.
  const slot = r.ok ? /configuration of slot (\d+)/.exec(r.value ?? '') : null;
  const inForce =
    slot && wait
      ? await client.memberInForce(Number(slot[1]), waitMs)
      : { from: null, lagging: [] };
  const ok = r.ok && inForce.lagging.length === 0;
  if (json)
    process.stdout.write(
      JSON.stringify({
        ...w,
        ok: r.ok,
        value: r.value ?? null,
        error: r.err ?? null,
        sid: r.sid,
        inForce: r.ok && wait ? ok : null,
        lagging: inForce.lagging,
      }) + '\n',
    );
  else if (!r.ok)
    process.stderr.write(`paxos-client: member ${w.action} ${w.sid} refused: ${r.err}\n`);
  else if (ok)
    process.stdout.write(
      `member ${w.action} ${w.sid}: ${r.value}${wait ? '; in force on every voter' : ''}\n`,
    );
  else
    process.stderr.write(
      `paxos-client: member ${w.action} ${w.sid}: ${r.value}, but after ${waitMs} ms not in force on ${inForce.lagging.map((x) => `sid ${x.sid} (applied ${x.applied ?? 'no answer'})`).join(', ')}: until it is, keep a majority of the previous configuration up (member list and status tell)\n`,
    );
  return !r.ok ? EXIT.refused : ok ? EXIT.ok : EXIT.notInForce;
}

/** `transfer-leader SID`: exit 0 once SID leads, 1 refused, 3 no answer. */
async function transferLeader(
  client: PaxosClient,
  cfg: ClientConfig,
  sid: number,
  json: boolean,
): Promise<number> {
  let r: TransferReport;
  try {
    r = await client.transferLeader(sid);
  } catch (e) {
    const servers = e instanceof PaxosClientError ? e.servers : [];
    const refused = refusalMessage(client, cfg);
    const msg = refused
      ? `${refused} (${describeHeard(servers, cfg.servers.length)})`
      : `transfer-leader got no answer: ${(e as Error).message}; leadership may or may not have moved (status shows the leader)`;
    if (json)
      process.stdout.write(JSON.stringify({ to: sid, code: null, error: msg, servers }) + '\n');
    else process.stderr.write(`paxos-client: ${msg}\n`);
    return refused ? EXIT.usage : EXIT.unknown;
  }
  if (json) process.stdout.write(JSON.stringify({ to: sid, ...r }) + '\n');
  else if (r.ok) process.stdout.write(`leader is sid ${r.leader}: ${r.message}\n`);
  else process.stderr.write(`paxos-client: transfer-leader refused: ${r.code}: ${r.message}\n`);
  return r.ok ? EXIT.ok : EXIT.refused;
}

function printStatus(
  cfg: ClientConfig,
  rows: StatusRow[],
  json: boolean,
  client?: PaxosClient,
): number {
  const servers = cfg.servers;
  const problem = clusterView(
    rows,
    servers.map((s) => s.sid),
  ).problem;
  const refused = client && rows.every((r) => r === null) ? refusalMessage(client, cfg) : null;
  // Lag: slots behind the highest chosen slot any server reports (the leader's, normally).
  const top = Math.max(0, ...rows.map((r) => (r && typeof r.chosen === 'number' ? r.chosen : 0)));
  if (json) {
    const out = servers.map((s, i) => ({
      sid: s.sid,
      reachable: rows[i] !== null,
      ...(rows[i] ?? {}),
    }));
    process.stdout.write(JSON.stringify(out) + '\n');
  } else {
    const head = [
      'sid',
      'role',
      'ballot',
      'leader',
      'chosen',
      'applied',
      'lag',
      'syncs',
      'voter',
      'reachable',
    ];
    const table = servers.map((s, i) => {
      const r = rows[i];
      if (!r) return [String(s.sid), '-', '-', '-', '-', '-', '-', '-', '-', 'no'];
      return [
        String(s.sid),
        String(r.role),
        String(r.ballot),
        r.leader === null ? '-' : String(r.leader),
        String(r.chosen),
        String(r.applied),
        typeof r.applied === 'number' ? String(Math.max(0, top - r.applied)) : '-',
        String(r.syncs ?? '-'),
        String(r.voter),
        'yes',
      ];
    });
    const widths = head.map((h, c) => Math.max(h.length, ...table.map((row) => row[c].length)));
    for (const row of [head, ...table])
      process.stdout.write(row.map((v, c) => v.padEnd(widths[c])).join('  ') + '\n');
    // The configuration, once it is not simply every configured server as a
    // voter (spares, learners, a change): the table alone does not show it.
    const cfgRow = newestConfiguration(rows);
    const everyone = servers
      .map((x) => x.sid)
      .sort((a, b) => a - b)
      .join(' ');
    if (cfgRow && (cfgRow.configurationSlot !== 0 || cfgRow.configuration !== everyone))
      process.stdout.write(
        `configuration: ${String(cfgRow.configuration) || '-'} (slot ${String(cfgRow.configurationSlot)}, governs from slot ${String(cfgRow.configurationFrom)}; +SID: learner; not listed: not a member)\n`,
      );
    // The cluster's limits decide (they are in the log); a config file that
    // disagrees is an operator's mistake or a change in progress: show it.
    for (const [i, r] of rows.entries())
      if (r && typeof r.limitsMismatch === 'string')
        process.stdout.write(`sid ${servers[i].sid}: limits mismatch: ${r.limitsMismatch}\n`);
    // A node whose state hash differs from its leader's has stopped serving clients.
    for (const [i, r] of rows.entries()) {
      if (r && typeof r.diverged === 'string')
        process.stdout.write(`sid ${servers[i].sid}: ${r.diverged} (not serving clients)\n`);
      // divergedPeers; a node of an older build names the list followersDiverged.
      const peers = r?.divergedPeers ?? r?.followersDiverged;
      if (typeof peers === 'string')
        process.stdout.write(`sid ${servers[i].sid}: peers DIVERGED (sid@slot): ${peers}\n`);
    }
    // Datagrams a node dropped, by reason (wrong_cluster, bad_tag: a config to fix).
    for (const [i, r] of rows.entries())
      if (r && typeof r.drops === 'string' && r.drops !== '')
        process.stdout.write(`sid ${servers[i].sid}: dropped: ${r.drops}\n`);
  }
  if (refused) process.stderr.write(`paxos-client: ${refused}\n`);
  else if (rows.every((r) => r === null))
    process.stderr.write(
      `paxos-client: no server answered: check the addresses, clusterId ("${cfg.clusterId}") and clientKeyFile in ${cfg.file}\n`,
    );
  if (problem) process.stderr.write(`paxos-client: ${problem}\n`);
  return problem ? EXIT.unknown : EXIT.ok;
}

/** `outcome CID:SEQ`: one line, exit 0 applied, 1 not applied, 3 unknown or no answer. */
async function outcome(client: PaxosClient, request: string, json: boolean): Promise<number> {
  let o: OutcomeReport;
  try {
    o = await client.outcome(request);
  } catch (e) {
    const msg = `the outcome query got no answer: ${(e as Error).message}`;
    if (json) process.stdout.write(JSON.stringify({ request, outcome: null, error: msg }) + '\n');
    else process.stderr.write(`paxos-client: ${msg}\n`);
    return EXIT.unknown;
  }
  if (json) process.stdout.write(JSON.stringify(o) + '\n');
  else if (o.outcome === 'applied')
    process.stdout.write(`APPLIED ${request}: first answer ${JSON.stringify(o.result)}\n`);
  else if (o.outcome === 'not_applied')
    process.stdout.write(`NOT APPLIED ${request}: it never ran, and a late copy no longer can\n`);
  else process.stdout.write(`UNKNOWN ${request}: ${o.why}\n`);
  return o.outcome === 'applied'
    ? EXIT.ok
    : o.outcome === 'not_applied'
      ? EXIT.refused
      : EXIT.unknown;
}

/**
 * Check `snapshot save FILE` and --max-bytes: the byte limit (undefined: the
 * library's default), or null after saying what is wrong.
 */
function snapshotArgs(words: string[], maxBytesFlag: unknown): number | undefined | null {
  if (words[0] === 'snapshot' && (words[1] !== 'save' || !words[2] || words.length > 3)) {
    process.stderr.write(`paxos-client: snapshot takes: save FILE\n${USAGE}\n`);
    return null;
  }
  if (maxBytesFlag === undefined) return undefined;
  if (words[0] !== 'snapshot') {
    process.stderr.write(`paxos-client: --max-bytes goes with snapshot save\n${USAGE}\n`);
    return null;
  }
  const maxBytes = Number(maxBytesFlag);
  if (!(Number.isSafeInteger(maxBytes) && maxBytes > 0)) {
    process.stderr.write(`paxos-client: --max-bytes takes a positive number of bytes\n`);
    return null;
  }
  return maxBytes;
}

/** `snapshot save FILE`: 0 saved, 1 too large or FILE not written, 2 refused unread, 3 no answer. */
async function snapshotSave(
  client: PaxosClient,
  cfg: ClientConfig,
  file: string,
  maxBytes: number | undefined,
  json: boolean,
): Promise<number> {
  const fail = (code: number, msg: string, extra: object = {}): number => {
    if (json)
      process.stdout.write(JSON.stringify({ file, ok: false, error: msg, ...extra }) + '\n');
    else process.stderr.write(`paxos-client: snapshot save: ${msg}\n`);
    return code;
  };
  let saved;
  try {
    saved = await client.snapshotSave({ maxBytes });
  } catch (e) {
    if (!(e instanceof SnapshotSaveError)) throw e;
    const refused = refusalMessage(client, cfg);
    if (refused && client.stats.replies === 0 && e.code === 'no_answer')
      return fail(EXIT.usage, `${refused} (${describeHeard(e.servers, cfg.servers.length)})`);
    const code = e.code === 'no_answer' || e.code === 'expired' ? EXIT.unknown : EXIT.refused;
    return fail(code, `${e.code}: ${e.message}; ${file} was not written`, { code: e.code });
  }
  try {
    writeBackupFile(file, encodeBackupFile(saved, cfg.clusterId, Date.now()));
  } catch (e) {
    return fail(EXIT.refused, (e as Error).message);
  }
  const hash = saved.hash ? saved.hash.toString('hex') : null;
  if (json)
    process.stdout.write(
      JSON.stringify({
        file,
        ok: true,
        slot: saved.slot,
        hash,
        bytes: saved.data.length,
        sid: saved.sid,
        clusterId: cfg.clusterId,
      }) + '\n',
    );
  else
    process.stdout.write(
      `saved snapshot at slot ${saved.slot} (${saved.data.length} bytes, state hash ${hash ?? 'unknown'}) from sid ${saved.sid} to ${file}\n`,
    );
  return EXIT.ok;
}

/** One stdin line: its words and flags (the same as on the command line). */
function parseLine(line: string): { op: KvOp } | { error: string } | null {
  const words = splitLine(line.trim());
  if (typeof words === 'string') return { error: words };
  if (words.length === 0 || words[0].startsWith('#')) return null;
  const argv = parseFlags(words, { boolean: ['absent'], string: ['value-file'] });
  if (typeof argv === 'string') return { error: argv };
  const file = argv['value-file'] as string | undefined;
  // Stdin holds the commands here: a value cannot come from it too.
  if (file === '-') return { error: '--value-file - is not possible in stdin mode' };
  const bytes = file === undefined ? undefined : readValueFile(file);
  if (typeof bytes === 'string') return { error: bytes };
  const op = parseOp(argv._.map(String), argv.absent, bytes && valueFromBytes(bytes));
  return typeof op === 'string' ? { error: op } : { op };
}

async function batch(client: PaxosClient, cfg: ClientConfig, json: boolean): Promise<number> {
  let worst = EXIT.ok as number;
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  let lineNo = 0;
  for await (const line of rl) {
    lineNo++;
    const parsed = parseLine(line);
    if (parsed === null) continue;
    if ('error' in parsed) {
      process.stderr.write(`skipped: ${parsed.error} (line ${lineNo})\n`);
      worst = Math.max(worst, EXIT.usage);
      continue;
    }
    const repliesBefore = client.stats.replies;
    const code = await runOne(client, cfg, parsed.op, json);
    if (code !== EXIT.notFound) worst = Math.max(worst, code);
    // Not one answer during a whole timeout: every later line would wait as
    // long. Stop (the lines not run are named by number).
    if ((code === EXIT.unknown || code === EXIT.usage) && client.stats.replies === repliesBefore) {
      process.stderr.write(
        `paxos-client: stopping the batch at line ${lineNo}: the cluster is unreachable (no server answered); later lines were not run\n`,
      );
      rl.close();
      break;
    }
  }
  return worst;
}

async function main(): Promise<number> {
  const argv = parseFlags(process.argv.slice(2), {
    string: ['config', 'timeout', 'watch', 'value-file', 'max-bytes', 'wait-ms'],
    boolean: ['json', 'help', 'absent', 'version', 'learner', 'wait'],
    alias: { h: 'help' },
    default: { config: process.env.PAXOS_CLIENT_CONFIG || 'conf/client.config.json', wait: true },
  });
  const early = handleCommonFlags('paxos-client', USAGE, argv);
  if (early !== null || typeof argv === 'string') return early ?? EXIT.usage;
  const words = argv._.map(String);
  // Stdin only when asked for, or when it is not a terminal (a pipe or a file):
  // never wait silently on a terminal.
  const fromStdin = words[0] === '-' || (words.length === 0 && !process.stdin.isTTY);
  if (words.length === 0 && !fromStdin) {
    process.stderr.write(
      `paxos-client: no command (use - to read commands from stdin)\n${USAGE}\n`,
    );
    return EXIT.usage;
  }
  let op: KvOp | null = null;
  const admin = ['status', 'health', 'outcome', 'transfer-leader', 'snapshot', 'member'].includes(
    words[0],
  );
  const memberWords = words[0] === 'member' ? memberArgs(words) : null;
  if (typeof memberWords === 'string') {
    process.stderr.write(`paxos-client: ${memberWords}
${USAGE}
`);
    return EXIT.usage;
  }
  const maxBytes = snapshotArgs(words, argv['max-bytes']);
  if (maxBytes === null) return EXIT.usage;
  if (words[0] === 'outcome' && !/^\d+:\d+$/.test(words[1] ?? '')) {
    process.stderr.write(`paxos-client: outcome takes a request id CID:SEQ\n${USAGE}\n`);
    return EXIT.usage;
  }
  if (words[0] === 'transfer-leader' && !/^\d{1,3}$/.test(words[1] ?? '')) {
    process.stderr.write(`paxos-client: transfer-leader takes a sid (0-255)\n${USAGE}\n`);
    return EXIT.usage;
  }
  if (argv.watch !== undefined && words[0] !== 'status') {
    process.stderr.write(`paxos-client: --watch goes with status\n${USAGE}\n`);
    return EXIT.usage;
  }
  const watchS = argv.watch === undefined || argv.watch === '' ? 1 : Number(argv.watch);
  if (!(watchS >= 0.1 && watchS <= 3600)) {
    process.stderr.write(`paxos-client: --watch takes seconds between 0.1 and 3600\n`);
    return EXIT.usage;
  }
  if (!fromStdin && !admin) {
    const file = argv['value-file'] as string | undefined;
    const bytes = file === undefined ? undefined : readValueFile(file);
    if (typeof bytes === 'string') {
      process.stderr.write(`paxos-client: ${bytes}\n`);
      return EXIT.usage;
    }
    const parsed = parseOp(words, argv.absent, bytes && valueFromBytes(bytes));
    if (typeof parsed === 'string') {
      process.stderr.write(`paxos-client: ${parsed}\n${USAGE}\n`);
      return EXIT.usage;
    }
    op = parsed;
  } else if (
    words[0] !== 'snapshot' &&
    words[0] !== 'member' &&
    words.length > (words[0] === 'outcome' || words[0] === 'transfer-leader' ? 2 : 1)
  ) {
    process.stderr.write(`paxos-client: unexpected argument ${words.at(-1)}\n${USAGE}\n`);
    return EXIT.usage;
  }
  let cfg: ClientConfig;
  try {
    cfg = loadClientConfig(argv.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`paxos-client: bad config: ${e.message}\n`);
      return EXIT.usage;
    }
    throw e;
  }
  const timeoutMs = argv.timeout ? Number(argv.timeout) : cfg.timeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    process.stderr.write(`paxos-client: --timeout must be a positive number of ms\n`);
    return EXIT.usage;
  }
  const keys = cfg.clientKeyFile
    ? loadKeyring(cfg.clientKeyFile, cfg.file, 'clientKeyFile')
    : undefined;
  const client = PaxosClient.fromConfig(cfg, { timeoutMs, keys });
  try {
    if (words[0] === 'status' && argv.watch !== undefined) return await watch(client, cfg, watchS);
    if (words[0] === 'status') return await status(client, cfg, argv.json);
    if (words[0] === 'health') return await health(client, cfg, argv.json, timeoutMs);
    if (words[0] === 'outcome') return await outcome(client, words[1], argv.json);
    if (words[0] === 'transfer-leader')
      return await transferLeader(client, cfg, Number(words[1]), argv.json);
    if (memberWords) {
      const waitMs =
        argv['wait-ms'] === undefined ? MEMBER_IN_FORCE_WAIT_MS : Number(argv['wait-ms']);
      if (!Number.isSafeInteger(waitMs) || waitMs < 0) {
        process.stderr.write(`paxos-client: --wait-ms takes milliseconds\n${USAGE}\n`);
        return EXIT.usage;
      }
      return await member(client, cfg, memberWords, argv.json, argv.wait !== false, waitMs);
    }
    if (words[0] === 'snapshot')
      return await snapshotSave(client, cfg, words[2], maxBytes, argv.json);
    if (op) return await runOne(client, cfg, op, argv.json);
    // The seed's "submit an operation" flow: one command per line.
    return await batch(client, cfg, argv.json);
  } finally {
    client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`paxos-client: ${(e as Error).stack ?? e}\n`);
    process.exit(EXIT.usage);
  },
);
