// Operating paxosd (issue 11): `paxos-client health` is what an orchestrator
// probes (exit 0 only when the cluster can commit and serve a linearizable
// read), and `status --watch` redraws the table until stopped.
import { spawn } from 'node:child_process';
import t from 'tap';
import { BIN, Cluster, runBin, sleep, type RunResult } from './helpers/cluster';

const show = (r: RunResult): { stdout: string; stderr: string } => ({
  stdout: r.stdout,
  stderr: r.stderr,
});

t.test('health: 0 on a healthy cluster, 3 with the reason otherwise', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-ops-health' });
  await c.waitWritable();
  const cli = (args: string[]): Promise<RunResult> =>
    runBin(BIN.client, ['--config', c.clientConfigFile, '--timeout', '1500', ...args], {
      timeoutMs: 20_000,
    });

  const ok = await cli(['health']);
  t.equal(ok.code, 0, 'healthy: exit 0', show(ok));
  t.match(
    ok.stdout,
    /^healthy: leader \d \(3 of 3 servers answered\), linearizable read in \d+ ms\n$/,
  );
  const js = await cli(['--json', 'health']);
  const doc = JSON.parse(js.stdout) as { healthy: boolean; answered: number; readMs: number };
  t.equal(js.code, 0);
  t.same([doc.healthy, doc.answered], [true, 3], '--json says the same');

  const st = await cli(['status']);
  t.match(
    st.stdout,
    /^sid\s+role\s+ballot\s+leader\s+chosen\s+applied\s+lag\s+syncs\s+voter\s+reachable$/m,
  );

  // Two of three down: no quorum, named, within the timeout.
  const leader = await c.waitLeader();
  const others = c.sids.filter((s) => s !== leader);
  await c.kill(others[0]);
  await c.kill(others[1]);
  const bad = await cli(['health']);
  t.equal(bad.code, 3, 'one of three up: exit 3', show(bad));
  t.match(bad.stderr, /unhealthy: no quorum: 1 of 3 servers answered/);
  t.ok(bad.ms < 10_000, `answered in ${bad.ms} ms`);
  const badJs = await cli(['--json', 'health']);
  t.equal(badJs.code, 3);
  t.match(JSON.parse(badJs.stdout), { healthy: false, answered: 1, problem: /no quorum/ });
});

t.test('status --watch redraws until stopped; bad uses are usage errors', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-ops-watch' });
  await c.waitWritable();
  const child = spawn(
    process.execPath,
    [BIN.client, '--config', c.clientConfigFile, 'status', '--watch', '0.2'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise((r) => child.once('close', r));
  for (let i = 0; i < 100 && (out.match(/every 0\.2 s/g) ?? []).length < 3; i++) await sleep(50);
  child.kill('SIGINT');
  await exited;
  t.ok((out.match(/every 0\.2 s/g) ?? []).length >= 3, 'redrawn at least three times');
  t.ok((out.match(/^sid\s+role/gm) ?? []).length >= 3, 'the table each time');

  const wrong = await runBin(BIN.client, ['--config', c.clientConfigFile, 'health', '--watch']);
  t.equal(wrong.code, 2, '--watch without status: exit 2');
  const bad = await runBin(BIN.client, ['--config', c.clientConfigFile, 'status', '--watch', 'x']);
  t.equal(bad.code, 2, '--watch x: exit 2');
});
