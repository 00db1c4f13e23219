import minimist from 'minimist';

// paxos-bench's command line: the usage text and its parser.

export const USAGE = `usage: paxos-bench [options]

Starts a local 3-node paxosd cluster in a temporary directory (or uses a running
one with --target-config), runs closed-loop clients and prints throughput,
latency percentiles, errors and CPU use per client count.

  --op get|put|mix       operation (default put; mix = 50% get, 50% put)
  --clients 1,16,64      logical client counts to run, one after another
  --duration S           measured seconds per client count (default 5)
  --warmup S             discarded seconds before each measurement (default 1)
  --value-bytes N        value size (default 64)
  --key-bytes N          key size (default 12)
  --keys N               key space (default 1000; get/mix preload every key)
  --json                 print one JSON document on stdout (no progress lines)
  --svg FILE             also write a latency-percentile plot (SVG) to FILE
  --no-sync              start the nodes with --no-sync (no fdatasync; compare only)
  --hmac                 give the local cluster a peer key (HMAC-SHA256 on every peer datagram)
  --target-config FILE   use a running cluster (client config, e.g. conf/client.config.json)
  --failover             SIGKILL the leader under load 5 times (restarting it each time)
                         and report the time until the next committed write
  --catchup [N]          SIGSTOP a follower, write N ops (default 100000), SIGCONT
                         it and measure how fast it catches up with the leader
  --catchup-clients N    logical clients writing during --catchup (default 128)
  --no-sweep             skip the throughput sweep (with --failover / --catchup)
  --node-arg=ARG         extra node.js flag for the spawned daemons (repeatable),
                         e.g. --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof
  --keep                 keep the temporary cluster directory

exit codes: 0 done, 1 the cluster failed or the bench could not run, 2 usage error`;

export type OpKind = 'get' | 'put' | 'mix';

export class UsageError extends Error {}

export interface Options {
  op: OpKind;
  clients: number[];
  durationS: number;
  warmupS: number;
  valueBytes: number;
  keyBytes: number;
  keys: number;
  json: boolean;
  svg: string | null;
  sync: boolean;
  /** Local cluster with a peer key file: every peer datagram HMAC-SHA256 signed. */
  hmac: boolean;
  targetConfig: string | null;
  failover: boolean;
  failoverRounds: number;
  catchup: number | null;
  catchupClients: number;
  sweep: boolean;
  nodeArgs: string[];
  keep: boolean;
}

export function parseOptions(args: string[]): Options | null {
  const argv = minimist(args, {
    string: [
      'op',
      'clients',
      'duration',
      'warmup',
      'value-bytes',
      'key-bytes',
      'keys',
      'svg',
      'target-config',
      'catchup-clients',
      'node-arg',
      'failover-rounds',
    ],
    boolean: ['json', 'sync', 'failover', 'sweep', 'keep', 'help', 'version', 'hmac'],
    alias: { h: 'help' },
    default: { op: 'put', clients: '1,16,64', duration: '5', warmup: '1', sync: true, sweep: true },
    unknown: (a) => {
      if (a.startsWith('-') && !/^--catchup(=|$)/.test(a))
        throw new UsageError(`unknown option ${a}`);
      return true;
    },
  });
  if (argv.help || argv.version) return null;
  const num = (name: string, v: unknown, min: number, int = true): number => {
    const n = Number(v);
    if (
      typeof v === 'boolean' ||
      v === '' ||
      !Number.isFinite(n) ||
      n < min ||
      (int && !Number.isInteger(n))
    )
      throw new UsageError(
        `--${name} must be ${int ? 'an integer' : 'a number'} >= ${min}, got ${String(v)}`,
      );
    return n;
  };
  const op = String(argv.op);
  if (op !== 'get' && op !== 'put' && op !== 'mix')
    throw new UsageError(`--op must be get, put or mix, got ${op}`);
  const clients = String(argv.clients)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => num('clients', s, 1));
  const keys = num('keys', argv.keys ?? 1000, 1);
  const keyBytes = num('key-bytes', argv['key-bytes'] ?? 12, 1);
  if (String(keys - 1).length + 1 > keyBytes)
    throw new UsageError(`--key-bytes ${keyBytes} is too small for ${keys} keys`);
  // minimist leaves "--catchup" (no value) as true and "--catchup 5000" as "5000";
  // a bare "--catchup" followed by another option is also true.
  let catchup: number | null = null;
  if (argv.catchup !== undefined && argv.catchup !== false) {
    if (argv.catchup === true || argv.catchup === 'true') catchup = 100_000;
    else catchup = num('catchup', argv.catchup, 1);
  }
  const nodeArgs = ([] as unknown[]).concat(argv['node-arg'] ?? []).map(String);
  if (argv._.length > 0) throw new UsageError(`unexpected argument ${String(argv._[0])}`);
  const o: Options = {
    op,
    clients,
    durationS: num('duration', argv.duration, 0.01, false),
    warmupS: num('warmup', argv.warmup, 0, false),
    valueBytes: num('value-bytes', argv['value-bytes'] ?? 64, 0),
    keyBytes,
    keys,
    json: argv.json === true,
    svg: argv.svg ? String(argv.svg) : null,
    sync: argv.sync !== false,
    hmac: argv.hmac === true,
    targetConfig: argv['target-config'] ? String(argv['target-config']) : null,
    failover: argv.failover === true,
    failoverRounds: num('failover-rounds', argv['failover-rounds'] ?? 5, 1),
    catchup,
    catchupClients: num('catchup-clients', argv['catchup-clients'] ?? 128, 1),
    sweep: argv.sweep !== false,
    nodeArgs,
    keep: argv.keep === true,
  };
  if (o.sweep && clients.length === 0) throw new UsageError('--clients needs at least one count');
  if (o.targetConfig && (o.failover || o.catchup !== null))
    throw new UsageError('--failover and --catchup need the local cluster (no --target-config)');
  if (o.targetConfig && (!o.sync || o.nodeArgs.length > 0))
    throw new UsageError('--no-sync and --node-arg only apply to the local cluster');
  return o;
}
