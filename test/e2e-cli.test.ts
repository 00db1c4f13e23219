import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { BIN, Cluster, freeUdpPorts, runBin, type RunResult } from './helpers/cluster';

// The command-line tools against a real 3-node cluster: paxos-client commands
// and exit codes, stdin mode, status; paxosd config errors; value limits;
// paxos-logcmp.

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  signal: r.signal,
  stdout: r.stdout.slice(0, 500),
  stderr: r.stderr.slice(0, 500),
});

t.test('paxosd rejects bad configs with exit 2 naming file and field', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-e2e-badconf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ports = await freeUdpPorts(6);
  const good = {
    clusterId: 'bad',
    servers: [0, 1, 2].map((sid) => ({
      sid,
      host: '127.0.0.1',
      peerPort: ports[2 * sid],
      clientPort: ports[2 * sid + 1],
    })),
    dataDir: path.join(dir, 'data'),
    logDir: path.join(dir, 'logs'),
  };
  const write = (name: string, cfg: unknown): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, JSON.stringify(cfg, null, 2));
    return f;
  };
  const missing: Record<string, unknown> = { ...good };
  delete missing.clusterId;
  const dup = structuredClone(good);
  dup.servers[2].peerPort = dup.servers[0].peerPort;
  const cases: [string, string, string[], RegExp][] = [
    [
      'missing clusterId',
      write('missing.json', missing),
      ['--sid', '0'],
      /: clusterId: missing required field/,
    ],
    [
      'duplicate port',
      write('dup.json', dup),
      ['--sid', '0'],
      /: servers\[2\]\.peerPort: duplicate address/,
    ],
    ['unknown sid', write('good.json', good), ['--sid', '9'], /: sid: --sid: unknown own sid 9/],
  ];
  for (const [what, file, args, field] of cases) {
    const r = await runBin(BIN.paxosd, ['--config', file, ...args, '--init'], {
      timeoutMs: 10_000,
    });
    t.equal(r.code, 2, `${what}: exit 2`, show(r));
    t.ok(r.stderr.includes(file), `${what}: stderr names the file`, show(r));
    t.match(r.stderr, field, `${what}: stderr names the field`, show(r));
  }
  t.notOk(fs.existsSync(path.join(dir, 'data')), 'no data directory was created');
});

t.test('paxos-client and paxos-logcmp against a running cluster', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-e2e-cli' });
  await c.waitLeader();
  const cli = (args: string[], input?: string, timeoutMs = 15_000): Promise<RunResult> =>
    runBin(BIN.client, ['--config', c.clientConfigFile, ...args], { input, timeoutMs });

  t.test('single commands and exit codes', async (t) => {
    let r = await cli(['put', 'k', 'v1']);
    t.equal(r.code, 0, 'put: exit 0', show(r));
    t.equal(r.stdout, 'OK\n', 'put prints OK');
    r = await cli(['get', 'k']);
    t.equal(r.code, 0, 'get: exit 0', show(r));
    t.equal(r.stdout, 'v1\n', 'get prints the value');
    r = await cli(['get', 'missing-key']);
    t.equal(r.code, 4, 'get of an unset key: exit 4', show(r));
    t.match(r.stderr, /not found/, 'says not found');
    r = await cli(['cas', 'k', 'wrong', 'v2']);
    t.equal(r.code, 1, 'cas mismatch: exit 1', show(r));
    t.match(r.stdout, /mismatch: current value is "v1"/, 'cas mismatch shows the current value');
    r = await cli(['cas', 'k', 'v1', 'v2']);
    t.equal(r.code, 0, 'cas match: exit 0', show(r));
    r = await cli(['--absent', 'cas', 'fresh', 'x']);
    t.equal(r.code, 0, 'cas --absent on an unset key: exit 0', show(r));
    r = await cli(['get', 'k']);
    t.equal(r.stdout, 'v2\n', 'cas took effect');
    r = await cli(['del', 'k']);
    t.equal(r.code, 0, 'del: exit 0', show(r));
    r = await cli(['get', 'k']);
    t.equal(r.code, 4, 'get after del: exit 4', show(r));
    r = await cli(['--json', 'get', 'fresh']);
    t.equal(r.code, 0, 'get --json: exit 0', show(r));
    t.match(JSON.parse(r.stdout), { ok: true, value: 'x' }, 'get --json prints a JSON result');
  });

  t.test('usage errors exit 2', async (t) => {
    for (const args of [['frobnicate'], ['put', 'only-key'], ['get'], ['cas', 'a', 'b']]) {
      const r = await cli(args);
      t.equal(r.code, 2, `${args.join(' ')}: exit 2`, show(r));
      t.match(r.stderr, /usage: paxos-client/, 'prints the usage');
    }
    const r = await cli(['--timeout', 'soon', 'get', 'k']);
    t.equal(r.code, 2, 'bad --timeout: exit 2', show(r));
    const r2 = await runBin(BIN.client, ['--config', path.join(c.dir, 'nope.json'), 'get', 'k']);
    t.equal(r2.code, 2, 'missing client config: exit 2', show(r2));
    t.match(r2.stderr, /nope\.json/, 'names the missing file');
  });

  t.test('stdin mode runs one command per line', async (t) => {
    const r = await cli([], '# a comment\nput s 1\nget s\n\ncas s 1 2\nget s\ndel s\nget s\n');
    t.equal(r.code, 0, 'exit 0 (a not-found get does not count as failure)', show(r));
    t.equal(r.stdout, 'OK\n1\nOK\n2\nOK\n', 'outputs in order');
    t.match(r.stderr, /not found/, 'the final get reports not found');
    const j = await cli(['--json'], 'put s2 a\ncas s2 b c\nget s2\n');
    t.equal(j.code, 1, 'worst exit code of the lines (cas mismatch: 1)', show(j));
    const rows = j.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    t.equal(rows.length, 3, 'one JSON line per command');
    t.match(rows, [{ ok: true }, { ok: false, value: 'a' }, { ok: true, value: 'a' }]);
    const bad = await cli([], 'put x\nget s2\n');
    t.equal(bad.code, 2, 'a bad line makes the exit code 2', show(bad));
    t.match(bad.stderr, /skipped: put takes KEY VALUE/, 'and is reported');
    t.equal(bad.stdout, 'a\n', 'later lines still run');
  });

  t.test('status', async (t) => {
    const r = await cli(['status', '--json']);
    t.equal(r.code, 0, 'status --json: exit 0', show(r));
    const rows = JSON.parse(r.stdout) as {
      sid: number;
      role: string;
      reachable: boolean;
      leader: number;
    }[];
    t.equal(rows.length, 3, 'one row per server');
    t.ok(
      rows.every((x) => x.reachable),
      'all reachable',
    );
    const leaders = rows.filter((x) => x.role === 'leader');
    t.equal(leaders.length, 1, 'exactly one leader', { rows });
    t.ok(
      rows.every((x) => x.leader === leaders[0]?.sid),
      'everyone names it',
    );
    const plain = await cli(['status']);
    t.equal(plain.code, 0, 'status: exit 0');
    t.match(plain.stdout, /^sid\s+role\s+ballot\s+leader/, 'status prints a table');
    t.equal(plain.stdout.trim().split('\n').length, 4, 'header + 3 rows');
  });

  t.test('value size limit', async (t) => {
    const v16 = 'x'.repeat(16 * 1024 - 3) + 'end';
    let r = await cli(['put', 'big16', v16]);
    t.equal(r.code, 0, 'a 16 KiB value is accepted', show(r));
    r = await cli(['get', 'big16']);
    t.equal(r.code, 0, 'and read back');
    t.ok(r.stdout === v16 + '\n', `read back intact (${r.stdout.length - 1} bytes)`);
    r = await cli(['put', 'big32', 'y'.repeat(32768)]);
    t.equal(r.code, 0, 'exactly valueBytesMax (32768) is accepted', show(r));
    r = await cli(['put', 'over', 'z'.repeat(32769)]);
    t.equal(r.code, 1, 'a value over the limit is refused: exit 1', show(r));
    t.match(r.stderr, /value exceeds the limit of 32768 bytes/, 'the error names the limit');
    r = await cli(['get', 'over']);
    t.equal(r.code, 4, 'the refused value was not stored', show(r));
    // Larger than a UDP datagram: the request cannot even be sent.
    r = await cli(['--timeout', '1000', 'put', 'huge', 'h'.repeat(70_000)], undefined, 10_000);
    t.equal(r.code, 1, 'a value over 64 KiB is refused at once with a clear error', show(r));
    t.match(r.stderr, /too_large: .*limit/, 'naming the limit');
    // An empty key names nothing: refused by the leader, writes and reads alike.
    for (const args of [
      ['put', '', 'v'],
      ['get', ''],
    ]) {
      r = await cli(args);
      t.equal(r.code, 1, `${args[0]} of the empty key is refused: exit 1`, show(r));
      t.match(r.stderr, /bad_op: the key is empty/, 'the error says why');
    }
  });

  t.test('paxos-logcmp', async (t) => {
    await c.waitSameApplied(c.sids, 10_000);
    const logs = c.orderLogFiles();
    t.equal(logs.length, 3, 'three order logs');
    const ok = await runBin(BIN.logcmp, logs);
    t.equal(ok.code, 0, 'cluster logs agree: exit 0', show(ok));
    t.match(ok.stdout, /3 logs agree/, 'says so');

    const a = path.join(c.dir, 'a.log');
    const b = path.join(c.dir, 'b.log');
    const p = path.join(c.dir, 'prefix.log');
    const common = '1.0 11:1 put "a" "1"\n2.0 11:2 put "b" "2"\n2.1 12:1 get "a"\n';
    fs.writeFileSync(a, common + '3.0 11:3 put "c" "3"\n4.0 12:2 del "a"\n');
    fs.writeFileSync(b, common + '3.0 12:2 put "c" "4"\n4.0 11:3 del "a"\n');
    fs.writeFileSync(p, common);
    const agree = await runBin(BIN.logcmp, [a, p]);
    t.equal(agree.code, 0, 'a log and its prefix agree: exit 0', show(agree));
    const div = await runBin(BIN.logcmp, [a, b]);
    t.equal(div.code, 1, 'diverging logs: exit 1', show(div));
    t.match(div.stderr, /first divergence at 3\.0/, 'names the first divergence');
    t.ok(div.stderr.includes(a) && div.stderr.includes(b), 'and both files');
    const usage = await runBin(BIN.logcmp, []);
    t.equal(usage.code, 2, 'no files: exit 2', show(usage));
  });

  t.test('all servers down: outcome unknown, exit 3', async (t) => {
    await Promise.all(c.sids.map((s) => c.kill(s)));
    const r = await cli(['--timeout', '300', 'put', 'k', 'v']);
    t.equal(r.code, 3, 'exit 3', show(r));
    // No server answers the session registration: the write is never sent.
    t.match(r.stderr, /OUTCOME UNKNOWN|NOT SENT/, 'says OUTCOME UNKNOWN or NOT SENT');
    t.ok(r.ms < 5000, `gave up after the 300 ms timeout (${r.ms} ms including node start-up)`);
    const s = await cli(['--timeout', '300', 'status']);
    t.equal(s.code, 3, 'status with no server reachable: exit 3', show(s));
  });
});
