import * as fs from 'node:fs';
import * as os from 'node:os';
import { PaxosClient } from '../client';
import { ConfigError, loadClientConfig } from '../io/config';
import { loadKeyring } from '../io/keys';
import { parseOptions, UsageError, USAGE, type Options } from '../bench/args';
import { packageVersion } from './common';
import { catchup } from '../bench/catchup';
import { LocalCluster, sleep, waitForLeader } from '../bench/cluster';
import { fmtProbe, probeDisk } from '../bench/diskprobe';
import { failover } from '../bench/failover';
import { CLIENTS_PER_SOCKET, preload, type Target } from '../bench/load';
import { fmtInt, fmtMs, note, setQuiet } from '../bench/log';
import { printReport, svgPlot, type BenchDoc } from '../bench/render';
import { runOnce, type Env, type RunResult } from '../bench/run';

/*
 * paxos-bench: options (lib/bench/args.ts), a target cluster (its own local one,
 * lib/bench/cluster.ts, or a running one), the throughput sweep (run.ts over
 * load.ts), the failover and catch-up experiments, then the report (render.ts).
 */

/** The local cluster to kill if the process dies before main's own cleanup. */
let activeCluster: LocalCluster | null = null;
let keepDir = false;

function emergencyCleanup(): void {
  if (!activeCluster) return;
  activeCluster.killAllSync();
  if (!keepDir) {
    try {
      activeCluster.removeDir();
    } catch {
      // best effort
    }
  }
  activeCluster = null;
}

/** The options, or the exit code when there is nothing to run (--help: 0, usage error: 2). */
function options(args: string[]): Options | number {
  let opts: Options | null;
  try {
    opts = parseOptions(args);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`paxos-bench: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  if (!opts) {
    // --help or --version: nothing to run.
    process.stdout.write(
      args.includes('--version') ? `paxos-bench ${packageVersion()}\n` : USAGE + '\n',
    );
    return 0;
  }
  return opts;
}

/** The running cluster of --target-config, or a new local one; exit code 2 for a bad config. */
async function openTarget(
  opts: Options,
): Promise<{ target: Target; cluster: LocalCluster | null } | number> {
  if (opts.targetConfig) {
    try {
      const cfg = loadClientConfig(opts.targetConfig);
      const keys = cfg.clientKeyFile
        ? loadKeyring(cfg.clientKeyFile, cfg.file, 'clientKeyFile')
        : undefined;
      return { target: { clientConfig: cfg, keys }, cluster: null };
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`paxos-bench: bad config: ${e.message}\n`);
        return 2;
      }
      throw e;
    }
  }
  const cluster = await LocalCluster.create(opts.sync, opts.nodeArgs, opts.hmac);
  activeCluster = cluster;
  note(
    `paxos-bench: starting 3 paxosd nodes in ${cluster.dir}${opts.sync ? '' : ' (--no-sync)'}${opts.hmac ? ' (peer HMAC on)' : ''}`,
  );
  return { target: { clientConfig: cluster.clientConfig }, cluster };
}

/** Start the cluster, run the sweep and the experiments asked for; the document and the runs. */
async function measure(env: Env): Promise<{ doc: BenchDoc; results: RunResult[] }> {
  const { opts, target, cluster, ctl } = env;
  const doc: BenchDoc = {
    tool: 'paxos-bench',
    config: {
      op: opts.op,
      clients: opts.clients,
      durationS: opts.durationS,
      warmupS: opts.warmupS,
      valueBytes: opts.valueBytes,
      keyBytes: opts.keyBytes,
      keys: opts.keys,
      sync: opts.sync,
      target: opts.targetConfig ?? 'local 3-node cluster',
      clientsPerSocket: CLIENTS_PER_SOCKET,
    },
    host: { cpus: os.cpus().length, node: process.version, platform: process.platform },
  };
  if (cluster) {
    await cluster.start();
    doc.nodes = cluster.nodes.map((n) => ({ sid: n.sid, pid: n.pid }));
  }
  const leader = await waitForLeader(
    ctl,
    target.clientConfig.servers.map((s) => s.sid),
  );
  target.leader = leader;
  note(`paxos-bench: leader is sid ${leader}`);
  const results: RunResult[] = [];
  if (cluster) {
    doc.diskFdatasync = { before: probeDisk(cluster.dir) };
    note(`paxos-bench: disk write+fdatasync ${fmtProbe(doc.diskFdatasync.before!)}`);
  }
  if (opts.sweep) {
    if (opts.op !== 'put') {
      note(`paxos-bench: preloading ${fmtInt(opts.keys)} keys`);
      await preload(target, env.keyNames, opts.valueBytes);
    }
    for (const c of opts.clients) {
      const r = await runOnce(env, c);
      results.push(r);
      note(
        `clients=${c}: ${fmtInt(r.opsPerSec)} ops/s  p50 ${fmtMs(r.latencyMs.p50)}  p99 ${fmtMs(r.latencyMs.p99)} ms`,
      );
      await sleep(200);
    }
  }
  if (cluster && opts.sweep) doc.diskFdatasync!.after = probeDisk(cluster.dir);
  doc.results = results.map(({ curve: _curve, ...rest }) => rest);
  if (opts.failover) doc.failover = await failover(env);
  if (opts.catchup !== null) doc.catchup = await catchup(env);
  return { doc, results };
}

async function main(): Promise<number> {
  const opts = options(process.argv.slice(2));
  if (typeof opts === 'number') return opts;
  setQuiet(opts.json);
  keepDir = opts.keep;
  const opened = await openTarget(opts);
  if (typeof opened === 'number') return opened;
  const { target, cluster } = opened;
  const ctl = PaxosClient.fromConfig(target.clientConfig, { keys: target.keys });
  const keyNames = Array.from(
    { length: opts.keys },
    (_, i) => 'k' + String(i).padStart(opts.keyBytes - 1, '0'),
  );
  let code = 0;
  try {
    const { doc, results } = await measure({ opts, target, cluster, ctl, keyNames });
    if (opts.svg && results.length > 0) {
      fs.writeFileSync(
        opts.svg,
        svgPlot(
          results,
          `paxosd ${opts.op} latency, ${opts.valueBytes}-byte values, ${opts.sync ? 'fdatasync on' : 'no sync'}`,
        ),
      );
      note(`paxos-bench: wrote ${opts.svg}`);
    }
    if (opts.json) process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    else printReport(doc, results, opts, (s) => void process.stdout.write(s + '\n'));
  } catch (e) {
    process.stderr.write(`paxos-bench: ${(e as Error).message}\n`);
    code = 1;
  } finally {
    ctl.close();
    if (cluster) {
      await cluster.stop();
      if (opts.keep) note(`paxos-bench: kept ${cluster.dir}`);
      else cluster.removeDir();
      activeCluster = null;
    }
  }
  return code;
}

process.on('exit', emergencyCleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.on(sig, () => {
    emergencyCleanup();
    process.exit(130);
  });

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`paxos-bench: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
