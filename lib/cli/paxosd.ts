import * as path from 'node:path';
import {
  ConfigError,
  loadNodeConfig,
  resolveSid,
  type NodeConfig,
  type ServerAddr,
} from '../io/config';
import { fetchServers, JoinError, loadJoined, parsePeer, saveJoined, withServers } from '../join';
import { SID_MAX, SID_MIN } from '../limits';
import { StorageError } from '../io/recordlog';
import { ClusterMismatchError } from '../io/storage';
import { BackupError, restoreDataDir } from '../backup';
import { DirLockError } from '../io/dirlock';
import { formatLogLine, PaxosNode, type LogFormat } from '../daemon';
import { handleCommonFlags, packageVersion, parseFlags } from './common';
import { loadKeyring, writeKeyFile } from '../io/keys';
import { parseListen } from '../metrics';

const USAGE = `usage: paxosd [--config conf/paxos.config.json] [--sid N] [--data-dir DIR]
              [--log-dir DIR] [--init] [--no-sync] [--metrics HOST:PORT]
              [--log-format text|json] [--join HOST:CLIENTPORT]
       paxosd keygen FILE      write a fresh cluster key file (mode 0600)
       paxosd restore FILE --data-dir DIR [--cluster-id ID] [--no-sync]
                               seed an empty data directory from a snapshot file
                               (paxos-client snapshot save): the node starts at its
                               slot, a voter of a NEW cluster (default id: the
                               source's + "-r" + 8 hex digits of the file's checksum,
                               the same for every node restored from one file)
       paxosd --help | --version

  --sid       this node's SID (else $PAXOS_SID, else the config's "sid")
  --join      start a node that is in no config file's servers: first run
              \`paxos-client member add SID HOST PEERPORT CLIENTPORT\` (the log
              carries the address to every node), then \`paxosd --join
              HOST:CLIENTPORT --sid SID\` with any member's client address and a
              config file of the cluster (clusterId, keys, timing). The node takes
              the member's servers list, keeps it in its data directory (later
              starts need no --join) and follows as a learner until \`member
              promote SID\`.
  --init      bootstrap a NEW cluster: a node with an empty data directory may
              vote at once. Without it an empty node waits until it is safe
              (it may have lost a disk holding promises).

A server marked "spare": true in the config's servers is not in the bootstrap
configuration: started, it follows the log as a non-member until
\`paxos-client member add SID\` (a learner) and \`member promote SID\` (a voter).
The config files give the configuration at slot 0 only; after that the log's
member changes hold (keep every file's spare marks as at the cluster's creation).
  --metrics   serve Prometheus metrics at http://HOST:PORT/metrics (off by default)
  --log-format  text (default: ISO time, level, sid, message) or json (one
              object per line: ts, level, sid, msg)
  --no-sync   skip fdatasync (benchmarks only: acknowledged writes can be lost)

exit codes: 0 stopped by signal (SIGTERM/SIGINT), or removed from the configuration
            (paxos-client member remove: once the new configuration governs),
            1 runtime/storage failure or
            cannot bind, 2 usage or config error, or the data directory is in
            use by another process (its lock names the pid)`;

async function main(): Promise<number> {
  const argv = parseFlags(process.argv.slice(2), {
    string: ['config', 'data-dir', 'log-dir', 'sid', 'metrics', 'log-format', 'cluster-id', 'join'],
    boolean: ['init', 'sync', 'help', 'version'],
    alias: { h: 'help' },
    default: { config: 'conf/paxos.config.json', sync: true },
  });
  const early = handleCommonFlags('paxosd', USAGE, argv);
  if (early !== null || typeof argv === 'string') return early ?? 2;
  if (argv._[0] === 'keygen') return keygen(argv._[1]);
  if (argv._[0] === 'restore')
    return restore(argv._.slice(1).map(String), argv['data-dir'], argv['cluster-id'], argv.sync);
  if (argv['cluster-id'] !== undefined) {
    process.stderr.write(`paxosd: --cluster-id goes with restore\n${USAGE}\n`);
    return 2;
  }
  if (argv._.length > 0) {
    process.stderr.write(`paxosd: unexpected argument ${argv._[0]}\n${USAGE}\n`);
    return 2;
  }
  const metrics = argv.metrics === undefined ? undefined : parseListen(String(argv.metrics));
  if (typeof metrics === 'string') {
    process.stderr.write(`paxosd: ${metrics}\n${USAGE}\n`);
    return 2;
  }
  const logFormat = (argv['log-format'] ?? 'text') as LogFormat;
  if (logFormat !== 'text' && logFormat !== 'json') {
    process.stderr.write(`paxosd: --log-format must be text or json\n${USAGE}\n`);
    return 2;
  }
  let node: PaxosNode;
  let sid = -1;
  let joined: ServerAddr[] | null = null;
  try {
    let config = loadNodeConfig(argv.config);
    // A node in no config file: its servers list from a member (--join) or from
    // its data directory (kept by an earlier join).
    const outside = outsideSid(config, argv.sid);
    if (argv.join !== undefined) {
      if (outside === null) {
        process.stderr.write(
          `paxosd: --join takes --sid N of a node the config's servers do not list\n${USAGE}\n`,
        );
        return 2;
      }
      const peer = parsePeer(argv.join);
      if (typeof peer === 'string') {
        process.stderr.write(`paxosd: ${peer}\n${USAGE}\n`);
        return 2;
      }
      const keys = config.clientKeyFile
        ? loadKeyring(config.clientKeyFile, config.file, 'clientKeyFile')
        : undefined;
      joined = await fetchServers(config, outside, peer, keys, JOIN_TIMEOUT_MS);
      config = withServers(config, joined);
    } else if (outside !== null) {
      const kept = loadJoined(argv['data-dir'] || path.join(config.dataDir, String(outside)));
      if (kept) config = withServers(config, kept);
    }
    sid = resolveSid(config, argv.sid, process.env);
    node = await PaxosNode.start({
      config,
      sid,
      dataDir: argv['data-dir'] || undefined,
      logDir: argv['log-dir'] || undefined,
      init: argv.init,
      metrics,
      log: (line, level) =>
        process.stderr.write(formatLogLine(sid, level, line, new Date(), logFormat) + '\n'),
      sync: argv.sync === false ? false : undefined,
      peerKeys: config.keyFile ? loadKeyring(config.keyFile, config.file, 'keyFile') : undefined,
      clientKeys: config.clientKeyFile
        ? loadKeyring(config.clientKeyFile, config.file, 'clientKeyFile')
        : undefined,
      onFatal: () => setTimeout(() => process.exit(1), 50),
      // Removed from the configuration and the new one governs: the node has
      // stopped (and said why); exit 0, as after SIGTERM.
      onRemoved: () => process.exit(0),
    });
    if (joined) saveJoined(node.dataDir, joined);
  } catch (e) {
    return startFailure(e, sid, logFormat);
  }
  runUntilSignal(node, String(argv.config), logFormat);
  return -1;
}

/** `paxosd keygen FILE`: its exit code. */
function keygen(file: unknown): number {
  if (!file) {
    process.stderr.write(`paxosd keygen: missing FILE\n${USAGE}\n`);
    return 2;
  }
  try {
    writeKeyFile(String(file));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(
      err.code === 'EEXIST'
        ? `paxosd keygen: ${file} already exists; not overwriting a key\n`
        : `paxosd keygen: cannot write ${file}: ${err.message}\n`,
    );
    return 1;
  }
  process.stdout.write(`wrote a new key to ${file} (mode 0600)\n`);
  return 0;
}

/** `paxosd restore FILE --data-dir D`: 0 restored, 1 refused (corrupt file, non-empty dir, I/O), 2 usage. */
function restore(
  args: string[],
  dataDir: string | undefined,
  clusterId: string | undefined,
  sync: boolean,
): number {
  if (args.length !== 1 || !dataDir) {
    process.stderr.write(`paxosd restore: takes FILE and --data-dir DIR\n${USAGE}\n`);
    return 2;
  }
  try {
    const r = restoreDataDir(args[0], dataDir, { clusterId: clusterId || undefined, sync });
    process.stdout.write(
      `restored ${args[0]} into ${r.dataDir}: slot ${r.slot}, state hash ${r.hash ? r.hash.toString('hex') : 'unknown'}, ${r.bytes} bytes; cluster id "${r.clusterId}" (the backup came from "${r.sourceClusterId}"): set "clusterId": "${r.clusterId}" in this cluster's node and client configs, restore every node's data directory from the same file, then start the nodes\n`,
    );
    return 0;
  } catch (e) {
    if (!(e instanceof BackupError)) throw e;
    process.stderr.write(`paxosd restore: ${e.message}\n`);
    return e.code === 'bad_id' ? 2 : 1;
  }
}

/** How long --join waits for the member's answer. */
const JOIN_TIMEOUT_MS = 5000;

/** --sid as a number when the config's servers do not list it (a joining node), else null. */
function outsideSid(config: NodeConfig, raw: unknown): number | null {
  if (typeof raw !== 'string' || !/^[0-9]{1,3}$/.test(raw.trim())) return null;
  const sid = Number(raw.trim());
  if (sid < SID_MIN || sid > SID_MAX) return null;
  return config.servers.some((s) => s.sid === sid) ? null : sid;
}

/** Say why the node could not start; its exit code (see USAGE). Rethrows what is unexpected. */
function startFailure(e: unknown, sid: number, logFormat: LogFormat): number {
  if (e instanceof JoinError) {
    process.stderr.write(`paxosd: join: ${e.message}\n`);
    return 2;
  }
  if (e instanceof ConfigError) {
    process.stderr.write(`paxosd: bad config: ${e.message}\n`);
    return 2;
  }
  if (e instanceof ClusterMismatchError) {
    process.stderr.write(
      formatLogLine(sid, 'ERROR', `sid ${sid}: ${e.message}`, new Date(), logFormat) + '\n',
    );
    return 2;
  }
  if (e instanceof DirLockError) {
    process.stderr.write(`paxosd: ${e.message}\n`);
    return 2;
  }
  if (e instanceof StorageError) {
    process.stderr.write(`paxosd: storage: ${e.message}\n`);
    return 1;
  }
  const err = e as NodeJS.ErrnoException;
  if (
    err.syscall === 'bind' ||
    err.syscall === 'listen' ||
    err.code === 'EADDRINUSE' ||
    err.code === 'EADDRNOTAVAIL'
  ) {
    process.stderr.write(`paxosd: cannot bind: ${err.message}\n`);
    return 1;
  }
  throw e;
}

/** Announce the started node, then run until SIGTERM/SIGINT (a leader hands off first). */
function runUntilSignal(node: PaxosNode, configFile: string, logFormat: LogFormat): void {
  process.stdout.write(node.readyLine() + '\n');
  const sid = node.self.sid;
  const log = (line: string): void => {
    process.stderr.write(formatLogLine(sid, 'INFO', line, new Date(), logFormat) + '\n');
  };
  const self = node.self;
  log(
    `paxosd ${packageVersion()} started: config ${configFile}, data ${node.dataDir}, peer ${self.host}:${self.peerPort}, client ${self.host}:${self.clientPort}, order log ${node.orderLog.file}`,
  );
  let stopping = false;
  const stop = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`sid ${sid}: ${sig}: stopping`);
    // A leader hands off first, so clients see a round trip's pause instead of an
    // election timeout; then it stops.
    const handOff =
      node.replica.role === 'leader'
        ? node.handOff().then((h) => log(`sid ${sid}: ${h.message}`))
        : Promise.resolve();
    void handOff
      .then(() => node.stop())
      .then(() => {
        log(`sid ${sid}: stopped`);
        process.exit(0);
      });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e) => {
    process.stderr.write(`paxosd: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
