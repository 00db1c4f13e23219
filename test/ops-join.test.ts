// A node in no config file joins a running cluster (issue 13): addresses go
// through the log. A 3-node cluster (sids 0 1 2, no spares) under a write load:
// `member add 9` without an address is refused (9 is in no servers list);
// `paxosd --join` before the add is refused and says what to run; `member add 9
// HOST PEERPORT CLIENTPORT` is chosen; `paxosd --join HOST:CLIENTPORT --sid 9`
// starts it with a copy of the cluster's config file (which does not list 9);
// it catches up as a learner and is promoted. Four voters: with one of 0..2
// killed, writes go on only because 9 votes. Then 9 restarts without --join
// (its servers list is kept in its data directory). Checked: no failed or
// unknown write, every acknowledged write reads back, order logs agree.
import * as dgram from 'node:dgram';
import * as os from 'node:os';
import t from 'tap';
import { PaxosClient } from '../lib/client';
import { JOINED_FILE } from '../lib/join';
import { compareLogs } from '../lib/logcmp';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BIN,
  Cluster,
  freeUdpPorts,
  runBin,
  sleep,
  startLoad,
  verifyReadable,
  waitFor,
  type RunResult,
} from './helpers/cluster';

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  stdout: r.stdout.slice(0, 800),
  stderr: r.stderr.slice(0, 800),
});

const NEW = 9;

/** `count` free UDP ports on 127.0.0.1 below the ephemeral range (32768 on Linux). */
async function freeFixedPorts(count: number): Promise<number[]> {
  const out: number[] = [];
  for (let tries = 0; out.length < count && tries < 200; tries++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (out.includes(port)) continue;
    const s = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((r) => s.close(() => r()));
    if (ok) out.push(port);
  }
  if (out.length < count) throw new Error('no free UDP ports in 20000-32000');
  return out;
}

t.test('a node in no config file joins through the log and votes', async (t) => {
  let joinArgs: string[] = [];
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-ops-join',
    clientTimeoutMs: 5000,
    nodeArgs: (sid) => (sid === NEW ? joinArgs : []),
  });
  await c.waitWritable();
  const cli = (args: string[]): Promise<RunResult> =>
    runBin(BIN.client, ['--config', c.clientConfigFile, '--timeout', '4000', ...args], {
      timeoutMs: 20_000,
    });
  // Outside the kernel's ephemeral range: the clients this test starts later
  // bind ephemeral ports, and one of them could take the joiner's before it
  // starts (CI saw EADDRINUSE on all five attempts once).
  const [peerPort, clientPort] = await freeFixedPorts(2);
  // A client that also knows the new node's client port (its config file does not).
  const admin = new PaxosClient({
    ...c.clientConfig({ timeoutMs: 4000 }),
    servers: [
      ...c.servers.map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort })),
      { sid: NEW, host: '127.0.0.1', clientPort },
    ],
  });
  t.teardown(() => admin.close());
  type Row = Record<string, unknown> & { applied: number; configurationFrom: number };
  const statusOf = async (sid: number): Promise<Row | null> =>
    (await admin.status(sid, 300)) as Row | null;
  const governs = (): Promise<Row> =>
    waitFor(
      'the newest configuration to govern',
      async () => {
        const r = await statusOf(await c.waitLeader(10_000));
        return r && r.applied >= r.configurationFrom ? r : undefined;
      },
      20_000,
      50,
    );

  const load = startLoad(c.client(), { sessions: 4, durationMs: 40_000, prefix: 'j/' });
  await sleep(500);

  const noAddr = await cli(['member', 'add', String(NEW)]);
  t.equal(
    noAddr.code,
    1,
    'member add of an unlisted sid without its address: refused',
    show(noAddr),
  );
  t.match(noAddr.stdout + noAddr.stderr, /not in the servers list: give its address/);
  const badAddr = await cli(['member', 'add', String(NEW), '127.0.0.1', '7', '7']);
  t.equal(badAddr.code, 2, 'one port for both: a usage error', show(badAddr));
  t.match(badAddr.stderr, /must differ/);

  const early = await runBin(
    BIN.paxosd,
    [
      '--config',
      c.configFile,
      '--sid',
      String(NEW),
      '--join',
      `127.0.0.1:${c.servers[0].clientPort}`,
    ],
    { timeoutMs: 20_000 },
  );
  t.equal(early.code, 2, '--join before member add: exit 2', show(early));
  t.match(early.stderr, new RegExp(`run paxos-client member add ${NEW} HOST PEERPORT CLIENTPORT`));

  await governs();
  const add = await cli([
    'member',
    'add',
    String(NEW),
    '127.0.0.1',
    String(peerPort),
    String(clientPort),
  ]);
  t.equal(add.code, 0, 'member add with an address', show(add));
  const addedAt = Date.now();
  for (const sid of [0, 1, 2])
    await waitFor(
      `sid ${sid} to learn ${NEW}'s address`,
      async () =>
        String((await statusOf(sid))?.servers ?? '').includes(
          `${NEW}=127.0.0.1:${peerPort}:${clientPort}`,
        )
          ? true
          : undefined,
      10_000,
    );

  joinArgs = ['--join', `127.0.0.1:${c.servers[1].clientPort}`];
  await c.restart(NEW);
  t.match(
    fs.readFileSync(c.stderrFile(NEW), 'utf8'),
    /empty data directory .* joining as a non-voter/,
    'the joiner starts as a non-voter',
  );
  const caughtUp = await waitFor(
    `sid ${NEW} to catch up as a learner`,
    async () => {
      const [r, l] = [await statusOf(NEW), await statusOf(await c.waitLeader())];
      return r && l && r.member === 'learner' && r.applied >= l.applied - 64 ? r : undefined;
    },
    20_000,
  );
  t.equal(caughtUp.member, 'learner', `sid ${NEW} follows as a learner`);
  t.ok(
    fs.existsSync(path.join(c.dataDir, String(NEW), JOINED_FILE)),
    'the servers list is kept in its data directory',
  );

  await governs();
  const promote = await cli(['member', 'promote', String(NEW)]);
  t.equal(promote.code, 0, `member promote ${NEW}`, show(promote));
  t.match(promote.stdout, /; in force on every voter\n$/, 'promote returns once in force');
  await governs();
  const voter = await waitFor(
    `sid ${NEW} to vote`,
    async () => {
      const r = await statusOf(NEW);
      return r && r.member === 'voter' && r.voter === true ? r : undefined;
    },
    20_000,
  );
  t.equal(voter.configuration, `0 1 2 ${NEW}`, 'four voters');
  const list = await cli(['member', 'list']);
  t.match(
    list.stdout,
    new RegExp(`\\n${NEW} +voter +127\\.0\\.0\\.1:${clientPort} \\(peer port ${peerPort}\\)`),
  );

  // The joined node leads: clients whose config lists only 0..2 follow the
  // redirect to it (they learn its address from the redirecting node's status).
  const moved = await cli(['transfer-leader', String(NEW)]);
  t.equal(moved.code, 0, `transfer-leader ${NEW}`, show(moved));
  const acks0 = load.acks();
  const through = await waitFor(
    `writes with ${NEW} leading`,
    async () => {
      const r = await statusOf(NEW);
      return r && r.role === 'leader' && load.acks() > acks0 + 50 ? r : undefined;
    },
    15_000,
  );
  t.equal(
    through.role,
    'leader',
    `writes go on with ${NEW} leading (clients not configured with it)`,
  );
  // Back to a node the harness addresses (its waitLeader asks 0..2).
  const back0 = await cli(['transfer-leader', '0']);
  t.equal(back0.code, 0, 'transfer-leader 0', show(back0));

  // Four voters, a majority is three: with a follower of 0..2 killed, writes go
  // on only with 9's votes.
  const leader = await c.waitLeader();
  const down = [0, 1, 2].find((s) => s !== leader)!;
  await c.kill(down);
  const before = load.acks();
  await waitFor(
    'writes with one of the first three down',
    async () => (load.acks() > before + 50 ? true : undefined),
    15_000,
  );
  t.pass(`with sid ${down} down, writes go on (9 votes)`);

  // A restart needs no --join: the servers list is in the data directory.
  joinArgs = [];
  await c.restart(NEW);
  const back = await waitFor(
    `sid ${NEW} back after a restart without --join`,
    async () => {
      const r = await statusOf(NEW);
      return r && r.member === 'voter' && r.leader !== null ? r : undefined;
    },
    15_000,
  );
  t.equal(back.member, 'voter', `sid ${NEW} restarted from its kept servers list`);
  await c.restart(down);

  // A change is done only once it is in force on every voter of the new
  // configuration: with a voter frozen, member add returns 5 and names it.
  await governs();
  const current = await c.waitLeader();
  const frozen = [0, 1, 2].find((s) => s !== current)!;
  const [p2, c2] = await freeUdpPorts(2);
  c.stop(frozen);
  const notYet = await cli([
    'member',
    'add',
    '10',
    '127.0.0.1',
    String(p2),
    String(c2),
    '--wait-ms',
    '1500',
  ]);
  c.cont(frozen);
  t.equal(notYet.code, 5, 'applied, not in force on a frozen voter: exit 5', show(notYet));
  t.match(notYet.stderr, new RegExp(`not in force on sid ${frozen} \\(applied `));
  t.match(notYet.stderr, /keep a majority of the previous configuration up/);

  load.stop();
  const res = await load.done;
  t.equal(res.failed.length, 0, 'no failed write', { failed: res.failed.slice(0, 5) });
  t.equal(res.unknown.length, 0, 'no write of unknown outcome', {
    unknown: res.unknown.slice(0, 5),
  });
  t.ok(res.acked.length > 200, `${res.acked.length} writes acknowledged`);
  t.comment(
    `${res.acked.length} acks in ${res.elapsedMs} ms; join took ${Date.now() - addedAt} ms from the add; load average ${os.loadavg()[0].toFixed(2)}`,
  );
  const check = await verifyReadable(admin, res);
  t.equal(check.readErrors.length, 0, 'every read answered', {
    errors: check.readErrors.slice(0, 5),
  });
  t.same(check.mismatches, [], `all ${res.acked.length} acknowledged writes read back`);
  await sleep(500);
  const files = c.orderLogFiles([0, 1, 2, NEW]);
  const cmp = compareLogs(files);
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.same(c.unexpectedExits(), [], 'no node exited on its own');
});
