import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startLoad, verifyReadable } from './helpers/cluster';

// 5 nodes: writes succeed; SIGKILL the leader and one follower (2 of 5) during a
// load; the remaining majority of 3 keeps accepting writes; logs agree.
t.test('5 nodes survive losing 2', async (t) => {
  const c = await Cluster.start(t, { n: 5, name: 'paxos-e2e-5node' });
  const leader = await c.waitLeader();
  const client = c.client({ timeoutMs: 5000 });

  const r1 = await startLoad(client, {
    sessions: 8,
    totalOps: 1000,
    durationMs: 10_000,
    prefix: 'a-',
  }).done;
  t.equal(r1.acked.length, 1000, 'all 1,000 writes acknowledged with 5 nodes', {
    unknown: r1.unknown.length,
    failed: r1.failed.slice(0, 5),
  });
  t.comment(
    `5 nodes: ${r1.acked.length} acks in ${r1.elapsedMs} ms (${r1.ackPerSec.toFixed(0)}/s)`,
  );

  const victim = c.sids.find((s) => s !== leader)!;
  const load = startLoad(client, { sessions: 8, durationMs: 3000, prefix: 'b-', totalOps: 20_000 });
  await sleep(700);
  const killAt = Date.now();
  await Promise.all([c.kill(leader), c.kill(victim)]);
  t.comment(`SIGKILL leader sid ${leader} and follower sid ${victim}`);
  const r2 = await load.done;
  const survivors = c.sids.filter((s) => s !== leader && s !== victim);
  const after = r2.acked.filter((x) => x.endAt >= killAt && survivors.includes(x.sid!));
  t.equal(r2.failed.length, 0, 'no write refused or failed', { failed: r2.failed.slice(0, 5) });
  t.ok(after.length > 0, `writes acknowledged by the 3 survivors after the kill (${after.length})`);
  if (after.length > 0)
    t.comment(
      `kill -> next acknowledged write: ${Math.min(...after.map((x) => x.endAt)) - killAt} ms; load ${r2.acked.length} acks, ${r2.unknown.length} unknown (${r2.ackPerSec.toFixed(0)} acks/s)`,
    );

  const newLeader = await c.waitLeader(10_000);
  t.ok(survivors.includes(newLeader), `new leader sid ${newLeader} is a survivor`);
  const r3 = await startLoad(client, {
    sessions: 8,
    totalOps: 500,
    durationMs: 10_000,
    prefix: 'c-',
  }).done;
  t.equal(r3.acked.length, 500, 'all 500 writes acknowledged with 3 of 5 nodes', {
    unknown: r3.unknown.length,
    failed: r3.failed.slice(0, 5),
  });

  const read = await verifyReadable(
    client,
    {
      acked: [...r1.acked, ...r2.acked, ...r3.acked],
      unknown: [...r1.unknown, ...r2.unknown, ...r3.unknown],
    },
    16,
  );
  t.equal(read.readErrors.length, 0, 'every read answered', { e: read.readErrors.slice(0, 5) });
  t.equal(read.mismatches.length, 0, 'every acknowledged write readable', {
    m: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes absent or as written');

  await c.waitSameApplied(survivors, 10_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `all 5 order logs agree: ${cmp.message}`);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
