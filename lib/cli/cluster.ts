import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, loadNodeConfig } from '../io/config';
import { OrderLog } from '../io/orderlog';
import { writeKeyFile } from '../io/keys';
import { eachLine, launchNode } from '../launch';
import { handleCommonFlags, parseFlags } from './common';

const USAGE = `usage: paxos-cluster [--config conf/paxos.config.json]    (npm start)
       paxos-cluster --help | --version
Runs every node of the config as its own paxosd process on this machine, with
their output prefixed by [sid]; Ctrl-C (SIGINT) or SIGTERM stops them all. A new
cluster (no data directory yet) is started with --init.

exit codes: 0 stopped, 1 a node could not start (e.g. another paxos-cluster
            runs on the same data directories or ports), 2 usage or config error`;

/**
 * `npm start`: run every node of conf/paxos.config.json as its own paxosd
 * process on this machine, prefix their output, and stop them all on Ctrl-C.
 * A brand-new cluster (no data directory exists yet) is bootstrapped with --init.
 */
function main(): void {
  const argv = parseFlags(process.argv.slice(2), {
    string: ['config'],
    boolean: ['help', 'version'],
    alias: { h: 'help' },
    default: { config: 'conf/paxos.config.json' },
  });
  const early = handleCommonFlags('paxos-cluster', USAGE, argv);
  if (early !== null) process.exit(early);
  if (typeof argv === 'string') return;
  if (argv._.length > 0) {
    process.stderr.write(`paxos-cluster: unexpected argument ${argv._[0]}\n${USAGE}\n`);
    process.exit(2);
  }
  let cfg;
  try {
    cfg = loadNodeConfig(argv.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`paxos-cluster: bad config: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (cfg.keyFile && !fs.existsSync(cfg.keyFile)) {
    writeKeyFile(cfg.keyFile);
    process.stdout.write(`created the cluster key ${cfg.keyFile} (mode 0600)\n`);
  }
  const dirs = cfg.servers.map((s) => path.join(cfg.dataDir, String(s.sid)));
  const fresh = dirs.every((d) => !fs.existsSync(d));
  const children: ChildProcess[] = [];
  /** Nodes that exited with an error before their ready line. */
  const failed: string[] = [];
  let stopping = false;
  process.stdout.write(
    `starting ${cfg.servers.length} paxosd nodes from ${argv.config}${fresh ? ' (new cluster: --init)' : ''}\n`,
  );
  for (const s of cfg.servers) {
    process.stdout.write(
      `  sid ${s.sid}: peer ${s.host}:${s.peerPort}  client ${s.host}:${s.clientPort}  order log ${OrderLog.fileFor(cfg.logDir, s.sid)}\n`,
    );
  }
  process.stdout.write(
    `try:  bin/paxos-client put greeting hello && bin/paxos-client get greeting && bin/paxos-client status\n` +
      `      tail -f ${path.join(path.relative(process.cwd(), cfg.logDir) || '.', 'learned_ops*.log')}\nCtrl-C stops all nodes.\n`,
  );
  for (const s of cfg.servers) {
    const args = ['--config', argv.config, '--sid', String(s.sid)];
    if (fresh) args.push('--init');
    const child = launchNode({ args });
    const prefix = `[${s.sid}] `;
    let ready = false;
    const pipe = (stream: NodeJS.ReadableStream | null, out: NodeJS.WriteStream): void =>
      eachLine(stream, (l) => {
        if (l.startsWith('paxosd sid=')) ready = true;
        out.write(prefix + l + '\n');
      });
    pipe(child.stdout, process.stdout);
    pipe(child.stderr, process.stderr);
    child.on('exit', (code, sig) => {
      process.stdout.write(`${prefix}exited (${sig ?? code})\n`);
      if (!ready && !stopping && code !== 0) {
        // A node that cannot start (its data directory locked, its port taken)
        // makes the whole launch a failure: stop the others and say so.
        failed.push(`sid ${s.sid} (exit ${sig ?? code})`);
        stop();
      }
      if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) {
        if (failed.length > 0)
          process.stderr.write(
            `paxos-cluster: could not start ${failed.join(', ')}: see its lines above (is another paxos-cluster running with ${argv.config}?)\n`,
          );
        process.exit(failed.length > 0 ? 1 : 0);
      }
    });
    children.push(child);
  }
  function stop(): void {
    if (stopping) return;
    stopping = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    setTimeout(() => process.exit(failed.length > 0 ? 1 : 0), 3000).unref();
  }
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main();
