import * as readline from 'node:readline';
import minimist from 'minimist';
import { PaxosClient, PaxosClientError, type OpResult } from '../client';
import { ConfigError, loadClientConfig } from '../io/config';
import { loadKeyring } from '../io/keys';
import type { KvOp } from '../sm/kv';

const USAGE = `usage: paxos-client [--config conf/client.config.json] [--json] [--timeout MS] COMMAND
  put KEY VALUE          set KEY
  get KEY                print KEY's value
  del KEY                delete KEY
  cas KEY EXPECTED NEW   set KEY to NEW if it holds EXPECTED (--absent: if it is unset)
  status                 one row per server: sid, role, ballot, leader, chosen, applied
  (no command)           read one command per line from stdin

exit codes: 0 success, 1 refused (cas mismatch, invalid operation),
            2 usage or config error, 3 no definite answer: OUTCOME UNKNOWN (a
            write may or may not have taken effect; the message names the
            request cid:seq to look up in the order logs) or NOT SENT (no
            server answered before the write could be sent), 4 not found`;

const EXIT = { ok: 0, refused: 1, usage: 2, unknown: 3, notFound: 4 } as const;

function parseOp(words: string[], absent: boolean): KvOp | string {
  const [cmd, ...a] = words;
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

async function runOne(client: PaxosClient, op: KvOp, json: boolean): Promise<number> {
  let r: OpResult;
  try {
    r = await client.session().run(op);
  } catch (e) {
    const notSent = e instanceof PaxosClientError && e.notSent;
    const request = e instanceof PaxosClientError ? e.request : undefined;
    const msg = (e as Error).message;
    // Never re-run a write here: an unknown outcome is reported, with the
    // request's cid:seq, so that it can be looked up.
    const outcome = notSent ? 'not_sent' : 'unknown';
    if (json) process.stdout.write(JSON.stringify({ op, outcome, request, error: msg }) + '\n');
    else process.stderr.write(`${notSent ? 'NOT SENT' : 'OUTCOME UNKNOWN'}: ${msg}\n`);
    return EXIT.unknown;
  }
  let code: number = EXIT.ok;
  if (!r.ok) code = EXIT.refused;
  else if (op.kind === 'get' && r.value === null) code = EXIT.notFound;
  if (json) {
    process.stdout.write(
      JSON.stringify({
        op,
        ok: r.ok,
        value: r.value,
        error: r.err,
        sid: r.sid,
        attempts: r.attempts,
      }) + '\n',
    );
  } else if (r.err) {
    process.stderr.write(`refused: ${r.err}\n`);
  } else if (op.kind === 'get') {
    if (r.value === null) process.stderr.write('(not found)\n');
    else process.stdout.write(`${r.value}\n`);
  } else if (op.kind === 'cas' && !r.ok) {
    process.stdout.write(
      `mismatch: current value is ${r.value === null ? '(unset)' : JSON.stringify(r.value)}\n`,
    );
  } else {
    process.stdout.write('OK\n');
  }
  return code;
}

async function status(
  client: PaxosClient,
  servers: { sid: number }[],
  json: boolean,
): Promise<number> {
  const rows = await Promise.all(servers.map((s) => client.status(s.sid)));
  if (json) {
    const out = servers.map((s, i) => ({
      sid: s.sid,
      reachable: rows[i] !== null,
      ...(rows[i] ?? {}),
    }));
    process.stdout.write(JSON.stringify(out) + '\n');
  } else {
    const head = ['sid', 'role', 'ballot', 'leader', 'chosen', 'applied', 'voter', 'reachable'];
    const table = servers.map((s, i) => {
      const r = rows[i];
      if (!r) return [String(s.sid), '-', '-', '-', '-', '-', '-', 'no'];
      return [
        String(s.sid),
        String(r.role),
        String(r.ballot),
        r.leader === null ? '-' : String(r.leader),
        String(r.chosen),
        String(r.applied),
        String(r.voter),
        'yes',
      ];
    });
    const widths = head.map((h, c) => Math.max(h.length, ...table.map((row) => row[c].length)));
    for (const row of [head, ...table])
      process.stdout.write(row.map((v, c) => v.padEnd(widths[c])).join('  ') + '\n');
    // The cluster's limits decide (they are in the log); a config file that
    // disagrees is an operator's mistake or a change in progress: show it.
    for (const [i, r] of rows.entries())
      if (r && typeof r.limitsMismatch === 'string')
        process.stdout.write(`sid ${servers[i].sid}: limits mismatch: ${r.limitsMismatch}\n`);
  }
  return rows.some((r) => r !== null) ? EXIT.ok : EXIT.unknown;
}

async function main(): Promise<number> {
  const argv = minimist(process.argv.slice(2), {
    string: ['config', 'timeout'],
    boolean: ['json', 'help', 'absent'],
    default: { config: 'conf/client.config.json' },
  });
  if (argv.help) {
    process.stdout.write(USAGE + '\n');
    return EXIT.ok;
  }
  let cfg;
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
    const words = argv._.map(String);
    if (words[0] === 'status') return await status(client, cfg.servers, argv.json);
    if (words.length > 0) {
      const op = parseOp(words, argv.absent);
      if (typeof op === 'string') {
        process.stderr.write(`paxos-client: ${op}\n${USAGE}\n`);
        return EXIT.usage;
      }
      return await runOne(client, op, argv.json);
    }
    // The seed's "submit an operation" flow: one command per line.
    let worst = EXIT.ok as number;
    const rl = readline.createInterface({ input: process.stdin, terminal: false });
    for await (const line of rl) {
      const w = line.trim().split(/\s+/).filter(Boolean);
      if (w.length === 0 || w[0].startsWith('#')) continue;
      const op = parseOp(w, false);
      const code =
        typeof op === 'string'
          ? (process.stderr.write(`skipped: ${op}\n`), EXIT.usage)
          : await runOne(client, op, argv.json);
      if (code !== EXIT.notFound) worst = Math.max(worst, code);
    }
    return worst;
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
