// Online membership changes on real processes (issue 13): six servers listed in
// every node's config, three bootstrap voters (0 1 2) and three spares (3 4 5,
// "spare": true). Under a steady write load: spares 3 and 4 are added as
// learners and promoted (5 voters); the leader and then one follower are removed
// (3 voters; each exits 0 on its own once the change governs); then a voter
// whose data directory was deleted is replaced: removed, spare 5 (on ports no
// node used so far) added and promoted. Checked: no failed or unknown write, every
// acknowledged write reads back, the order logs agree (paxos-logcmp), the
// refusals are named, status and member list show the configuration; the write
// pause of each change (the longest gap between acknowledged writes around it)
// is printed.
//
// Documented windows: none is needed in this run. A write in flight to a node
// that exits gets no answer from it; the client retries the same request (same
// session and sequence: exactly once) at the next server, so it is acknowledged
// late, not failed. The pauses below are those late acknowledgements.
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { parseOrderLine } from '../lib/io/orderlog';
import { encodeMember } from '../lib/sm/kv';
import { decodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, Kind, NO_KEYS, open, seal } from '../lib/wire/envelope';
import {
  BIN,
  Cluster,
  runBin,
  sleep,
  startLoad,
  verifyReadable,
  waitFor,
  type OpRecord,
  type RunResult,
} from './helpers/cluster';

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  ms: r.ms,
  stdout: r.stdout.slice(0, 800),
  stderr: r.stderr.slice(0, 800),
});

interface Change {
  name: string;
  /** When the successful request was sent and answered (ms since the epoch). */
  t0: number;
  t1: number;
  /** Extra time after t1 the change may still affect writes (a removed node's exit). */
  until?: number;
}

/** Longest gap between consecutive acknowledgements that touches [from, to]. */
function maxGap(ackTimes: number[], from: number, to: number): number {
  let gap = 0;
  for (let i = 1; i < ackTimes.length; i++) {
    if (ackTimes[i] < from || ackTimes[i - 1] > to) continue;
    gap = Math.max(gap, ackTimes[i] - ackTimes[i - 1]);
  }
  return gap;
}

/** The highest slot any line of an order log names (commands, gap markers, hash lines). */
function lastLoggedSlot(file: string): number {
  let last = 0;
  for (const l of fs.readFileSync(file, 'utf8').split('\n')) {
    const p = parseOrderLine(l);
    if (p && 'slot' in p && typeof p.slot === 'number') last = Math.max(last, p.slot);
  }
  return last;
}

t.test('membership changes under a write load', async (t) => {
  const c = await Cluster.start(t, {
    n: 6,
    spares: [3, 4, 5],
    name: 'paxos-ops-member',
    clientTimeoutMs: 5000,
  });
  await c.waitWritable();
  const cli = (args: string[]): Promise<RunResult> =>
    runBin(BIN.client, ['--config', c.clientConfigFile, '--timeout', '4000', ...args], {
      timeoutMs: 20_000,
    });
  const admin = c.client({ timeoutMs: 4000 });
  type Row = Record<string, unknown> & { sid: number; applied: number; chosen: number };
  const statusOf = async (sid: number): Promise<Row | null> =>
    (await admin.status(sid, 300)) as Row | null;
  const leaderRow = async (): Promise<Row> => {
    const l = await c.waitLeader(10_000);
    const r = await statusOf(l);
    if (!r) throw new Error(`leader ${l} did not answer status`);
    return r;
  };
  /** The newest change governs at the leader: the next one will not be refused for it. */
  const governs = (): Promise<Row> =>
    waitFor(
      'the newest configuration to govern',
      async () => {
        const r = await leaderRow();
        return r.applied >= (r.configurationFrom as number) ? r : undefined;
      },
      20_000,
      50,
    );
  const exitCode = (sid: number): string | undefined =>
    c.unexpectedExits().find((e) => e.startsWith(`sid ${sid} exited`));

  // Bootstrap: the config's non-spare servers are the voters.
  const list0 = await cli(['member', 'list']);
  t.equal(list0.code, 0, 'member list: exit 0', show(list0));
  t.match(list0.stdout, /^configuration the bootstrap configuration, governs from slot 1/);
  t.match(list0.stdout, /\n0 +voter +127\.0\.0\.1:\d+\n1 +voter .*\n2 +voter .*\n$/);
  const st0 = await cli(['status', '--json']);
  const rows0 = JSON.parse(st0.stdout) as Record<string, unknown>[];
  t.same(
    rows0.filter((r) => r.reachable).map((r) => [r.sid, r.configuration, r.configurationSlot]),
    [
      [0, '0 1 2', 0],
      [1, '0 1 2', 0],
      [2, '0 1 2', 0],
    ],
    'status --json: the configuration and its slot on every running node',
  );

  // Spares start without --init: they follow as non-members, never lead.
  await c.restart(3);
  await c.restart(4);
  const spare = await waitFor(
    'spare 3 to answer status',
    async () => (await statusOf(3)) ?? undefined,
    5000,
  );
  t.equal(spare.member, 'none', 'a spare is not a member');
  t.not(spare.role, 'leader', 'a spare does not lead');

  // Refusals, named (each a command through the log, refused alike everywhere).
  const refusals: [string[], RegExp][] = [
    [['member', 'add', '9'], /sid 9 is not in the servers list/],
    [['member', 'add', '0'], /sid 0 is a member already/],
    [['member', 'promote', '1'], /sid 1 is a voter already/],
    [['member', 'remove', '3'], /sid 3 is not a member/],
  ];
  for (const [args, why] of refusals) {
    const r = await cli(args);
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`, show(r));
    t.match(r.stderr, why, `${args.join(' ')}: says why`);
  }
  // From an address that never proved it receives (no token, no client key): a
  // validate reply, nothing submitted (the library answers it with the token).
  const leader0 = await c.waitLeader();
  const raw = dgram.createSocket('udp4');
  await new Promise<void>((r) => raw.bind(0, '127.0.0.1', () => r()));
  const cluster = clusterTag(c.clusterId);
  const got = new Promise<Buffer | null>((r) => {
    raw.once('message', (b) => r(b));
    setTimeout(() => r(null), 1000);
  });
  const body = encodeRequest({ t: 'op', cid: 1, seq: 1, op: Buffer.from(encodeMember('add', 3)) });
  raw.send(
    seal(Kind.ClientRequest, cluster, body, NO_KEYS),
    c.servers[leader0].clientPort,
    '127.0.0.1',
  );
  const reply = await got;
  raw.close();
  const opened = reply && open(reply, Kind.ClientReply, cluster, NO_KEYS);
  t.match(
    opened && !('error' in opened) ? decodeReply(opened.body) : opened,
    { t: 'validate', ops: [{ cid: 1, seq: 1 }] },
    'a member command without a token: a validate reply only',
  );
  const usage = await cli(['member', 'add', 'x']);
  t.equal(usage.code, 2, 'member add x: usage error', show(usage));

  const load = startLoad(c.client(), { sessions: 4, durationMs: 45_000, prefix: 'm/' });
  await sleep(1500);
  const baselineFrom = Date.now() - 1000;
  const changes: Change[] = [];
  const change = async (name: string, action: 'add' | 'promote' | 'remove', sid: number) => {
    await governs();
    const t0 = Date.now();
    const r = await admin.member(action, sid);
    const t1 = Date.now();
    t.ok(r.ok, `${name}: ${r.value ?? r.err}`);
    const ch: Change = { name, t0, t1 };
    changes.push(ch);
    return ch;
  };
  const caughtUp = (sid: number) =>
    waitFor(
      `sid ${sid} to catch up`,
      async () => {
        const [l, s] = [await leaderRow(), await statusOf(sid)];
        return s && s.applied >= l.applied - 64 ? s : undefined;
      },
      20_000,
      100,
    );

  // Grow: two learners, then two voters. The first two changes are sent
  // together: one is applied, the other refused (the previous change governs
  // only alpha slots later), and sent again once it governs.
  const before3 = await statusOf(3);
  const lead0 = await leaderRow();
  t.comment(`spare 3 before its add: applied ${before3?.applied} (leader ${lead0.applied})`);
  await governs();
  const t0 = Date.now();
  const both = await Promise.all([admin.member('add', 3), admin.member('add', 4)]);
  changes.push({ name: 'add 3 and 4 together', t0, t1: Date.now() });
  t.equal(both.filter((r) => r.ok).length, 1, 'two changes at once: one applied', { both });
  const refused = both.findIndex((r) => !r.ok);
  t.match(
    both[refused]?.err,
    /^member: .*one change at a time$/,
    'the other: one change at a time',
  );
  const again = refused === 0 ? 3 : 4;
  await change(`add ${again} (learner)`, 'add', again);
  const learner = await caughtUp(3);
  t.equal(learner.member, 'learner', 'sid 3 is a learner');
  await caughtUp(4);
  await change('promote 3', 'promote', 3);
  await change('promote 4', 'promote', 4);
  const five = await governs();
  t.equal(five.configuration, '0 1 2 3 4', 'five voters');

  // Shrink: the leader, then a follower; each exits 0 once the change governs.
  const removeAndExit = async (name: string, sid: number) => {
    const ch = await change(name, 'remove', sid);
    await waitFor(`sid ${sid} to exit`, () => exitCode(sid), 20_000, 20);
    ch.until = Date.now();
    t.equal(exitCode(sid), `sid ${sid} exited (code 0, signal null)`, `sid ${sid} exits 0`);
    const err = fs.readFileSync(c.stderrFile(sid), 'utf8');
    const m =
      /removed from the configuration \(member change at slot (\d+), governing from slot (\d+): [^)]*\); applied (\d+)/.exec(
        err,
      );
    t.ok(m, `sid ${sid} says why it exits`);
    if (m) {
      const from = Number(m[2]);
      // Not before the new configuration governs: it applied every slot the old
      // one decides (its own word), and its order log reaches there (the last
      // few slots may be no-ops, which write no line).
      t.ok(Number(m[3]) >= from - 1, `sid ${sid} applied ${m[3]} >= ${from - 1} before exiting`);
      const logged = lastLoggedSlot(c.orderLogFile(sid));
      t.ok(logged >= from - 8, `sid ${sid}'s order log reaches slot ${logged} (>= ${from - 8})`);
    }
  };
  const l1 = (await leaderRow()).sid;
  await removeAndExit(`remove leader ${l1}`, l1);
  t.match(
    fs.readFileSync(c.stderrFile(l1), 'utf8'),
    /hand-off before removing this node: handed leadership to \d+/,
    'the removed leader handed leadership over first',
  );
  // Started again, a removed node exits again (its data directory says it was removed).
  await c.restart(l1);
  await waitFor(
    `sid ${l1} to exit again`,
    () => c.unexpectedExits().filter((e) => e.startsWith(`sid ${l1} exited`)).length === 2,
    10_000,
    20,
  );
  t.same(
    c.unexpectedExits().filter((e) => e.startsWith(`sid ${l1} exited`)),
    [0, 0].map(() => `sid ${l1} exited (code 0, signal null)`),
    `sid ${l1}, started again, exits 0 again`,
  );
  const l2 = (await leaderRow()).sid;
  const follower = [0, 1, 2, 3, 4].find((s) => s !== l1 && s !== l2)!;
  await removeAndExit(`remove follower ${follower}`, follower);
  const three = await governs();
  const voters = String(three.configuration).split(' ').map(Number);
  t.equal(voters.length, 3, `three voters: ${three.configuration}`);

  // Replace a node that lost its disk by spare 5 on new ports.
  const lost = voters.filter((s) => s !== three.sid).at(-1)!;
  await c.kill(lost);
  fs.rmSync(path.join(c.dataDir, String(lost)), { recursive: true, force: true });
  await change(`remove ${lost} (disk lost)`, 'remove', lost);
  await c.restart(5);
  await change('add 5 (learner)', 'add', 5);
  await caughtUp(5);
  await change('promote 5', 'promote', 5);
  const last = await governs();
  const finalVoters = voters.filter((s) => s !== lost).concat(5);
  t.equal(
    last.configuration,
    finalVoters.sort((a, b) => a - b).join(' '),
    `the final configuration: ${last.configuration}`,
  );
  const list1 = await cli(['member', 'list']);
  t.match(list1.stdout, new RegExp(`applied at slot ${last.configurationSlot}, governs from`));
  const status1 = await cli(['status']);
  t.equal(status1.code, 0, 'status: exit 0 (a majority of the 3 voters answers)', show(status1));
  t.match(status1.stdout, /\nconfiguration: \d+ \d+ \d+ \(slot \d+, governs from slot \d+/);

  await sleep(1000);
  load.stop();
  const res = await load.done;
  const ackTimes = res.acked.map((r: OpRecord) => r.endAt).sort((a, b) => a - b);
  t.equal(res.failed.length, 0, 'no failed write', { failed: res.failed.slice(0, 5) });
  t.equal(res.unknown.length, 0, 'no write of unknown outcome', {
    unknown: res.unknown.slice(0, 5),
  });
  t.ok(res.acked.length > 500, `${res.acked.length} writes acknowledged`);
  const baseline = maxGap(ackTimes, baselineFrom, baselineFrom + 1000);
  t.comment(
    `write pauses (longest gap between acknowledged writes, ms); ${res.acked.length} acks in ${res.elapsedMs} ms, baseline ${baseline} ms, load average ${os.loadavg()[0].toFixed(2)}:`,
  );
  for (const ch of changes) {
    const end = Math.max(ch.t1, ch.until ?? 0);
    t.comment(
      `  ${ch.name.padEnd(24)} ${String(maxGap(ackTimes, ch.t0, end)).padStart(5)} ms (request answered in ${ch.t1 - ch.t0} ms${ch.until ? `, node exited ${ch.until - ch.t1} ms later` : ''})`,
    );
  }

  // A restart takes the live configuration from its data directory, not from
  // the config file (bootstrap input), and says that they differ.
  const again5 = finalVoters.find((s) => s !== last.sid)!;
  await c.restart(again5);
  const back = await waitFor(
    `sid ${again5} to rejoin`,
    async () => {
      const r = await statusOf(again5);
      return r && r.configurationSlot === last.configurationSlot && r.leader !== null
        ? r
        : undefined;
    },
    10_000,
  );
  t.equal(back.member, 'voter', `sid ${again5} is a voter again after its restart`);
  t.match(
    fs.readFileSync(c.stderrFile(again5), 'utf8'),
    new RegExp(
      `the live configuration \\(slot ${last.configurationSlot}: ${last.configuration}\\) is not the config file's bootstrap one \\(0 1 2\\); the live one holds`,
    ),
    'the restart logs that the live configuration differs from the config file',
  );

  const check = await verifyReadable(admin, res);
  t.equal(check.readErrors.length, 0, 'every read answered', {
    errors: check.readErrors.slice(0, 5),
  });
  t.same(check.mismatches, [], `all ${res.acked.length} acknowledged writes read back`);

  // Every order log (the removed nodes' and the lost disk's too) is a prefix of one order.
  const files = c.orderLogFiles();
  const cmp = compareLogs(files);
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  const bin = await runBin(BIN.logcmp, files);
  t.equal(bin.code, 0, 'paxos-logcmp agrees', show(bin));
  // No exit but the two removed nodes' (the lost disk was killed by the test).
  t.same(
    c.unexpectedExits().sort(),
    [l1, l1, follower].sort().map((s) => `sid ${s} exited (code 0, signal null)`),
    'only the removed nodes exited, with 0',
  );
});
