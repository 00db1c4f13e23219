// Operating paxosd (issue 11): every tool answers --help, --version and an
// unknown flag at once without reading stdin; misconfiguration is named (wrong
// cluster id, wrong peer key, no quorum) instead of a silent timeout; stdin mode
// takes flags and quoted values and stops once the cluster is unreachable; a
// second paxos-cluster on the same config fails; paxosd logs with timestamps
// and levels and says when it stops.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { BIN, Cluster, ROOT, runBin, waitFor, type RunResult } from './helpers/cluster';

const CLUSTER_BIN = path.join(ROOT, 'bin', 'paxos-cluster');

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  ms: r.ms,
  stdout: r.stdout.slice(0, 600),
  stderr: r.stderr.slice(0, 600),
});

/** Run with stdin left open (a tool that reads it would hang until killed). */
function runOpenStdin(script: string, args: string[], timeoutMs = 5000): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const version = (
  JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    version: string;
  }
).version;

t.test('every CLI: --help, --version, unknown flag -> exit 2, without reading stdin', async (t) => {
  // Every file in bin/ (a new tool is covered without editing this list), and the
  // tools run through npm scripts. [name, script, what its usage line starts with]
  const binDir = path.join(ROOT, 'bin');
  const tools: [string, string, string][] = fs
    .readdirSync(binDir)
    .sort()
    .map((name) => [name, path.join(binDir, name), `usage: ${name}`]);
  t.ok(tools.length >= 5, `bin/ holds ${tools.map((x) => x[0]).join(', ')}`);
  tools.push(
    ['sim', path.join(ROOT, 'dist', 'lib', 'cli', 'sim.js'), 'usage: npm run sim'],
    ['explore', path.join(ROOT, 'dist', 'lib', 'cli', 'explore.js'), 'usage: node dist/lib'],
  );
  // "At once": within 1 s more than node itself takes to start and exit here, then
  // (the slower of a run before and one after: the machine may be loaded); a tool
  // that read stdin would wait for the kill (5 s).
  const baseBefore = await runOpenStdin('-e', ['0']);
  const slowest: [string, number][] = [];
  for (const [name, bin, usage] of tools) {
    const help = await runOpenStdin(bin, ['--help']);
    t.equal(help.code, 0, `${name} --help: exit 0`, show(help));
    t.ok(help.stdout.startsWith(usage), `${name} --help prints its usage`, show(help));
    const h = await runOpenStdin(bin, ['-h']);
    t.equal(h.code, 0, `${name} -h: exit 0`, show(h));
    const v = await runOpenStdin(bin, ['--version']);
    t.equal(v.code, 0, `${name} --version: exit 0`, show(v));
    t.equal(v.stdout, `${name} ${version}\n`, `${name} --version prints the version`);
    const bad = await runOpenStdin(bin, ['--timout', '100']);
    t.equal(bad.code, 2, `${name} --timout: exit 2`, show(bad));
    t.match(bad.stderr, /unknown option --timout/, `${name} names the unknown flag`);
    t.notMatch(bad.stderr, /\n\s+at /, `${name}: no stack trace`);
    slowest.push([name, Math.max(help.ms, h.ms, v.ms, bad.ms)]);
  }
  const base = Math.max(baseBefore.ms, (await runOpenStdin('-e', ['0'])).ms);
  for (const [name, ms] of slowest)
    t.ok(
      ms <= base + 1000,
      `${name}: each answers in ${ms} ms <= ${base + 1000} ms (node alone: ${base} ms)`,
    );
  const client = await runOpenStdin(BIN.client, ['--timout', '100', 'get', 'k']);
  t.equal(client.code, 2, 'paxos-client --timout 100 get k: exit 2', show(client));
  const cfg = await runOpenStdin(BIN.paxosd, ['--config']);
  t.equal(cfg.code, 2, 'paxosd --config without a value: exit 2', show(cfg));
  t.match(cfg.stderr, /--config needs a value/);
  const tmo = await runOpenStdin(BIN.client, ['get', 'k', '--timeout']);
  t.equal(tmo.code, 2, 'paxos-client --timeout without a value: exit 2', show(tmo));
});

t.test('an IPv6 host is refused by the config check, without a stack trace', async (t) => {
  const dir = fs.mkdtempSync(path.join(ROOT, '.tmp-ops-ipv6-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'v6.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      clusterId: 'v6',
      servers: [{ sid: 0, host: '::1', peerPort: 17000, clientPort: 17100 }],
      dataDir: path.join(dir, 'data'),
    }),
  );
  const r = await runBin(BIN.paxosd, ['--config', file, '--sid', '0', '--init']);
  t.equal(r.code, 2, 'exit 2', show(r));
  t.match(r.stderr, /servers\[0\]\.host: IPv6 addresses are not supported/, 'names the field');
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('misconfiguration is named; stdin mode; no quorum', async (t) => {
  const key = (b: number): string => Buffer.alloc(32, b).toString('hex') + '\n';
  const c = await Cluster.start(t, { n: 3, name: 'paxos-ops-cli', keyFile: key(1) });
  await c.waitWritable();
  const cli = (args: string[], input?: string, config = c.clientConfigFile): Promise<RunResult> =>
    runBin(BIN.client, ['--config', config, ...args], { input, timeoutMs: 20_000 });

  t.test('log lines: ISO timestamp, level, sid', async (t) => {
    t.match(
      c.stderrOf(0),
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO sid=0 paxosd \S+ started: config /m,
      'a startup line with timestamp, level and sid',
    );
  });

  t.test('stdin mode: flags per line, quoted values', async (t) => {
    const r = await cli(
      ['-'],
      'cas --absent q "a b"\nget q\ncas q \'a b\' "say \\"hi\\""\nget q\nput x\nput y "open\n',
    );
    t.equal(r.stdout, 'OK\na b\nOK\nsay "hi"\n', 'flags and quoted values', show(r));
    t.match(r.stderr, /skipped: put takes KEY VALUE \(line 5\)/);
    t.match(r.stderr, /skipped: unclosed " quote \(line 6\)/);
    t.equal(r.code, 2, 'a bad line: exit 2');
  });

  t.test('a client with another clusterId is told so; the server logs it', async (t) => {
    const wrong = path.join(c.dir, 'wrong-cluster.json');
    const cc = JSON.parse(fs.readFileSync(c.clientConfigFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(wrong, JSON.stringify({ ...cc, clusterId: 'not-' + c.clusterId }));
    const r = await cli(['--timeout', '2000', 'put', 'k', 'v'], undefined, wrong);
    t.equal(r.code, 2, 'exit 2', show(r));
    t.match(r.stderr, /wrong cluster id/, 'says wrong cluster id', show(r));
    t.notMatch(r.stderr, /OUTCOME UNKNOWN/, 'not OUTCOME UNKNOWN');
    await waitFor(
      'a wrong-cluster log line',
      () =>
        c.sids.some((s) =>
          /WARN .*client datagrams from 127\.0\.0\.1: wrong cluster/.test(c.stderrOf(s)),
        ),
      5000,
    );
    // Rate-limited: many more requests, still one line per source per 10 s.
    await cli(['--timeout', '500', 'put', 'k', 'v'], undefined, wrong);
    for (const s of c.sids) {
      const n = (c.stderrOf(s, 1 << 20).match(/wrong cluster/g) ?? []).length;
      t.ok(n <= 1, `sid ${s}: at most one wrong-cluster line (${n})`);
    }
    // Every command names which servers it tried and what each said.
    const commands = [
      ['put', 'k', 'v'],
      ['get', 'k'],
      ['cas', 'k', 'a', 'b'],
      ['outcome', '1:1'],
      ['status'],
      ['transfer-leader', '1'],
    ];
    const runs = await Promise.all(
      commands.map((cmd) => cli(['--timeout', '1000', ...cmd], undefined, wrong)),
    );
    for (const [i, run] of runs.entries()) {
      t.match(
        run.stderr,
        /0\/3 answered, 3 said wrong_cluster \(sid 0 127\.0\.0\.1:\d+ x\d+: wrong_cluster; sid 1 /,
        `${commands[i][0]}: 0/3 answered, 3 said wrong_cluster`,
        show(run),
      );
      t.not(run.code, 0, `${commands[i][0]}: not exit 0`);
    }
    const st = await cli(['status', '--json']);
    t.equal(st.code, 0, 'status --json: exit 0', show(st));
    const rows = JSON.parse(st.stdout) as { drops?: string }[];
    t.ok(
      rows.some((r) => /\bclient_wrong_cluster=\d+/.test(r.drops ?? '')),
      'status --json counts the drops by reason',
      { rows },
    );
    const plain = await cli(['status']);
    t.match(plain.stdout, /sid \d: dropped: .*client_wrong_cluster=\d+/, 'status shows them');
  });

  t.test('a node with another peer key is named in the others logs', async (t) => {
    c.setKeyFile(2, key(2));
    await c.restart(2);
    const from = `127.0.0.1:${c.servers[2].peerPort}`;
    await waitFor(
      'a bad-HMAC log line naming sid 2',
      () => c.stderrOf(0).includes(`peer datagrams from ${from}: bad HMAC`),
      5000,
    );
    t.pass(`sid 0 logged bad HMAC from ${from}`);
    c.setKeyFile(2, key(1));
    await c.restart(2);
  });

  t.test('status without a quorum; a batch stops when the cluster is unreachable', async (t) => {
    await c.kill(1);
    await c.kill(2);
    const s = await cli(['--timeout', '300', 'status']);
    t.equal(s.code, 3, 'exit 3', show(s));
    t.match(s.stderr, /no quorum: 1 of 3 servers answered \(a majority is 2\)/, 'says no quorum');
    await c.kill(0);
    const r = await cli(['--timeout', '300', '-'], 'put a 1\nput b 2\nput c 3\n');
    t.equal(r.code, 3, 'exit 3', show(r));
    t.match(r.stderr, /stopping the batch at line 1: the cluster is unreachable/, show(r));
    t.match(r.stderr, /0\/3 answered, 3 silent \(sid 0 \S+ x\d+: no answer; /, 'names each server');
    t.equal((r.stderr.match(/NOT SENT|OUTCOME UNKNOWN/g) ?? []).length, 1, 'one line tried');
  });
});

t.test(
  'a second paxos-cluster on the same config exits non-zero; SIGTERM stops nodes with a line',
  async (t) => {
    // Cluster.start only to get free ports and a config; its own nodes are stopped first.
    const c = await Cluster.start(t, { n: 3, name: 'paxos-ops-npmstart' });
    await Promise.all(c.sids.map((s) => c.kill(s, 'SIGTERM')));
    const first = spawn(process.execPath, [CLUSTER_BIN, '--config', c.configFile], {
      cwd: c.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    first.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    first.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => first.on('exit', (code) => r(code)));
    t.teardown(() => {
      if (first.exitCode === null) first.kill('SIGKILL');
    });
    await waitFor(
      'three ready lines',
      () => (out.match(/paxosd sid=\d ready/g) ?? []).length === 3,
      15_000,
    );
    const second = await runBin(CLUSTER_BIN, ['--config', c.configFile], { timeoutMs: 15_000 });
    t.equal(second.code, 1, 'the second paxos-cluster exits 1', show(second));
    t.match(second.stderr, /in use by pid \d+/, 'its nodes name the lock holder');
    t.match(second.stderr, /could not start sid/, 'and it says it could not start');
    first.kill('SIGTERM');
    t.equal(await exited, 0, 'the first stops with exit 0 on SIGTERM');
    t.match(out, /INFO sid=0 sid 0: SIGTERM: stopping/, 'each node logs the signal');
    t.match(out, /INFO sid=0 sid 0: stopped/, 'and that it stopped');
  },
);
