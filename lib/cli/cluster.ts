import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import minimist from 'minimist';
import { ConfigError, loadNodeConfig } from '../io/config';
import { OrderLog } from '../io/orderlog';
import { writeKeyFile } from '../io/keys';

/**
 * `npm start`: run every node of conf/paxos.config.json as its own paxosd
 * process on this machine, prefix their output, and stop them all on Ctrl-C.
 * A brand-new cluster (no data directory exists yet) is bootstrapped with --init.
 */
function main(): void {
  const argv = minimist(process.argv.slice(2), {
    string: ['config'],
    default: { config: 'conf/paxos.config.json' },
  });
  let cfg;
  try {
    cfg = loadNodeConfig(argv.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`bad config: ${e.message}\n`);
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
  const bin = path.join(__dirname, '..', '..', '..', 'bin', 'paxosd');
  const children: ChildProcess[] = [];
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
    const args = [bin, '--config', argv.config, '--sid', String(s.sid)];
    if (fresh) args.push('--init');
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const prefix = `[${s.sid}] `;
    const pipe = (stream: NodeJS.ReadableStream | null, out: NodeJS.WriteStream): void => {
      let buf = '';
      stream?.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) out.write(prefix + l + '\n');
      });
    };
    pipe(child.stdout, process.stdout);
    pipe(child.stderr, process.stderr);
    child.on('exit', (code, sig) => {
      process.stdout.write(`${prefix}exited (${sig ?? code})\n`);
      if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) process.exit(0);
    });
    children.push(child);
  }
  const stop = (): void => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main();
