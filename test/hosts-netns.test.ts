/**
 * Three hosts, following the README's "Running on several hosts" steps: each
 * node runs in its own network namespace with its own address (10.231.x.y on a
 * bridge in a hub namespace), every host has its own copy of the same config
 * file with its own `"sid"`, and its own copy of one cluster key. A client in a
 * fourth namespace uses the fallback list. The test restarts a node (kill, then
 * a plain start without --init) and checks that it catches up and that the
 * three order logs agree.
 *
 * Nothing here touches the root namespace's interfaces or sends traffic
 * outside the namespaces the test creates; teardown removes them all.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { BIN, ROOT, sleep, waitFor } from './helpers/cluster';
import { requireOrSkip, which } from './helpers/faults';

const N = 3;
const tag = `px${process.pid % 100000}`;
const NS = {
  hub: `${tag}-hub`,
  host: (i: number) => `${tag}-h${i}`,
  client: `${tag}-cl`,
};
// A /24 unlikely to be in use; it exists only inside the namespaces.
const NET = `10.231.${process.pid % 200}`;
const addr = (i: number): string => `${NET}.${i + 1}`;
const CLIENT_ADDR = `${NET}.100`;

function missing(): string | false {
  if (process.platform !== 'linux') return 'not Linux';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root';
  if (!which('ip')) return 'no ip (iproute2)';
  const probe = `${tag}-probe`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `ip netns add failed: ${r.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return false;
}

const why = requireOrSkip(t, 'multi-host test in network namespaces', missing());

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}
const nsip = (ns: string, ...args: string[]): void => ip('netns', 'exec', ns, 'ip', ...args);

const namespaces = [NS.hub, ...Array.from({ length: N }, (_, i) => NS.host(i)), NS.client];

function teardownNet(): void {
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
}

/** Hub with a bridge; each host and the client on a veth pair into it. */
function buildNet(): void {
  for (const ns of namespaces) {
    ip('netns', 'add', ns);
    nsip(ns, 'link', 'set', 'lo', 'up');
  }
  nsip(NS.hub, 'link', 'add', 'br0', 'type', 'bridge');
  nsip(NS.hub, 'link', 'set', 'br0', 'up');
  const attach = (ns: string, k: number, address: string): void => {
    // Created inside the hub with its peer placed straight into `ns`: no
    // interface ever appears in the root namespace.
    nsip(NS.hub, 'link', 'add', `v${k}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    nsip(NS.hub, 'link', 'set', `v${k}`, 'master', 'br0');
    nsip(NS.hub, 'link', 'set', `v${k}`, 'up');
    nsip(ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
    nsip(ns, 'link', 'set', 'eth0', 'up');
  };
  for (let i = 0; i < N; i++) attach(NS.host(i), i, addr(i));
  attach(NS.client, 99, CLIENT_ADDR);
}

interface Host {
  sid: number;
  dir: string;
  config: string;
  proc: ChildProcess | null;
  stderr: string;
}

t.test(
  'a cluster across three network namespaces, as the README says',
  { skip: why },
  async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-hosts-'));
    const hosts: Host[] = [];
    t.teardown(async () => {
      for (const h of hosts) h.proc?.kill('SIGKILL');
      await sleep(100);
      teardownNet();
      if (t.passing()) fs.rmSync(tmp, { recursive: true, force: true });
      else t.comment(`kept ${tmp}`);
    });
    teardownNet(); // leftovers of a killed earlier run with the same pid
    buildNet();

    // Step 2: one key, made once, copied to every host with mode 0600.
    const key = path.join(tmp, 'cluster.key');
    const kg = spawnSync(process.execPath, [BIN.paxosd, 'keygen', key], { encoding: 'utf8' });
    t.equal(kg.status, 0, `keygen: ${kg.stderr}`);

    // Step 1: the same server list on every host, each with its own "sid".
    const servers = Array.from({ length: N }, (_, i) => ({
      sid: i,
      host: addr(i),
      peerPort: 7000 + i,
      clientPort: 7100 + i,
    }));
    for (let i = 0; i < N; i++) {
      const dir = path.join(tmp, `host${i}`);
      fs.mkdirSync(path.join(dir, 'conf'), { recursive: true });
      fs.copyFileSync(key, path.join(dir, 'conf', 'cluster.key'));
      fs.chmodSync(path.join(dir, 'conf', 'cluster.key'), 0o600);
      const config = path.join(dir, 'conf', 'paxos.config.json');
      fs.writeFileSync(
        config,
        JSON.stringify({
          sid: i,
          keyFile: 'cluster.key',
          clusterId: 'hosts',
          servers,
          timing: { tickMs: 10, heartbeatTicks: 5, electionTicks: 30 },
          dataDir: path.join(dir, 'data'),
          logDir: path.join(dir, 'logs'),
        }),
      );
      hosts.push({ sid: i, dir, config, proc: null, stderr: '' });
    }

    const start = async (h: Host, init: boolean): Promise<void> => {
      const args = ['netns', 'exec', NS.host(h.sid), process.execPath, BIN.paxosd];
      args.push('--config', h.config, ...(init ? ['--init'] : []));
      // `ip netns exec` execs the command: the child's pid is paxosd's.
      const p = spawn('ip', args, { cwd: h.dir, stdio: ['ignore', 'pipe', 'pipe'] });
      h.proc = p;
      let out = '';
      p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
      p.stderr!.setEncoding('utf8').on('data', (d: string) => (h.stderr += d));
      await waitFor(
        `host ${h.sid} ready (stderr: ${h.stderr.slice(-300)})`,
        () => /ready/.test(out),
        15_000,
      );
      t.match(out, new RegExp(`peer=${addr(h.sid).replace(/\./g, '\\.')}:${7000 + h.sid}`));
    };

    // Step 3: --init on each host for a new cluster.
    await Promise.all(hosts.map((h) => start(h, true)));

    // Step 4: the client's own config, servers in fallback order.
    const clientConfig = path.join(tmp, 'client.config.json');
    fs.writeFileSync(
      clientConfig,
      JSON.stringify({
        clusterId: 'hosts',
        leader: 0,
        servers: servers.map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort })),
        timeoutMs: 5000,
        retryMs: 20,
      }),
    );
    const client = (...args: string[]): { code: number | null; out: string; err: string } => {
      const r = spawnSync(
        'ip',
        [
          'netns',
          'exec',
          NS.client,
          process.execPath,
          BIN.client,
          '--config',
          clientConfig,
          ...args,
        ],
        { encoding: 'utf8', cwd: ROOT, timeout: 20_000, input: '' },
      );
      return { code: r.status, out: r.stdout, err: r.stderr };
    };

    const statusOk = await waitFor(
      'a leader known to every node',
      () => {
        const r = client('--json', 'status');
        if (r.code !== 0) return false;
        const rows = JSON.parse(r.out) as { reachable: boolean; leader: number | null }[];
        return rows.every((x) => x.reachable && x.leader !== null) ? rows : false;
      },
      20_000,
      200,
    );
    t.equal(statusOk.length, N, 'status lists the three hosts');

    for (let k = 0; k < 5; k++) {
      const r = client('put', `k${k}`, `v${k}`);
      t.equal(r.code, 0, `put k${k}: ${r.err}`);
    }

    // A node restart: host 0 (first in the client's fallback list) is killed;
    // writes go on through the others; it comes back with a plain start.
    const h0 = hosts[0];
    h0.proc!.kill('SIGKILL');
    await new Promise((r) => h0.proc!.once('close', r));
    h0.proc = null;
    for (let k = 5; k < 10; k++) {
      const r = client('put', `k${k}`, `v${k}`);
      t.equal(r.code, 0, `put k${k} with host 0 down (fallback list): ${r.err}`);
    }
    await start(h0, false);
    for (let k = 10; k < 12; k++) t.equal(client('put', `k${k}`, `v${k}`).code, 0, `put k${k}`);

    // Host 0 catches up: its applied slot reaches the others'.
    await waitFor(
      'host 0 caught up',
      () => {
        const r = client('--json', 'status');
        if (r.code !== 0) return false;
        const rows = JSON.parse(r.out) as { applied: number }[];
        return rows.every((x) => x.applied === rows[0].applied) && rows[0].applied > 0;
      },
      20_000,
      200,
    );
    for (let k = 0; k < 12; k++) {
      const r = client('get', `k${k}`);
      t.equal(r.code, 0, `get k${k}`);
      t.match(r.out, `v${k}`, `k${k} reads back`);
    }

    // The applied order, compared across the three hosts' order logs.
    const logs = hosts.flatMap((h) =>
      fs
        .readdirSync(path.join(h.dir, 'logs'))
        .filter((f) => f.endsWith('.log'))
        .map((f) => path.join(h.dir, 'logs', f)),
    );
    t.equal(logs.length, N, 'one order log per host');
    const cmp = spawnSync(process.execPath, [BIN.logcmp, ...logs], { encoding: 'utf8' });
    t.equal(cmp.status, 0, `paxos-logcmp: ${cmp.stdout}${cmp.stderr}`);
    t.match(cmp.stdout + cmp.stderr, /agree/i);
  },
);
