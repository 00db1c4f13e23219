import * as fs from 'node:fs';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, startLoad, waitFor } from './helpers/cluster';

// 3 nodes; freeze one follower (SIGSTOP), commit 2,000 writes with the other
// two, thaw it (SIGCONT): its order log must become byte-identical to theirs.
t.test('frozen follower catches up', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-e2e-catchup' });
  const leader = await c.waitLeader();
  await c.waitWritable();
  const follower = c.sids.find((s) => s !== leader)!;
  const others = c.sids.filter((s) => s !== follower);
  const before = await c.status(follower);
  t.ok(before, 'follower answers status before the freeze');

  c.stop(follower);
  t.comment(
    `SIGSTOP follower sid ${follower} (leader is sid ${leader}) at slot ${before?.applied}`,
  );
  const client = c.client({ timeoutMs: 5000 });
  const load = startLoad(client, { sessions: 16, totalOps: 2000, durationMs: 30_000 });
  const r = await load.done;
  t.comment(
    `load: ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed in ${r.elapsedMs} ms (${r.ackPerSec.toFixed(0)} acks/s, 2 of 3 nodes)`,
  );
  t.equal(r.records.length, 2000, '2,000 writes issued');
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  t.ok(r.acked.length >= 1900, `at least 1,900 of them acknowledged (${r.acked.length})`);

  const applied = await c.waitSameApplied(others, 10_000);
  t.ok(applied >= (before?.applied ?? 0) + 1, `leader and live follower at slot ${applied}`);
  const frozenLines = fs.existsSync(c.orderLogFile(follower))
    ? fs.readFileSync(c.orderLogFile(follower), 'utf8').split('\n').length - 1
    : 0;
  t.comment(`frozen follower's log has ${frozenLines} lines`);

  const contAt = Date.now();
  c.cont(follower);
  await c.waitSameApplied(c.sids, 30_000, applied);
  const [a, b, f] = [others[0], others[1], follower].map((s) => c.orderLogFile(s));
  const identical = await waitFor(
    'byte-identical order logs',
    () => {
      const [ba, bb, bf] = [a, b, f].map((x) => fs.readFileSync(x));
      return ba.length > 0 && ba.equals(bb) && ba.equals(bf) ? ba.length : undefined;
    },
    10_000,
    100,
  ).catch((e: Error) => e);
  const catchupMs = Date.now() - contAt;
  const cmp = compareLogs([a, b, f]);
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.type(identical, 'number', 'the thawed follower’s order log is byte-identical to the others', {
    sizes: [a, b, f].map((x) => fs.statSync(x).size),
  });
  t.comment(`SIGCONT -> identical order logs (${identical} bytes): ${catchupMs} ms`);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
