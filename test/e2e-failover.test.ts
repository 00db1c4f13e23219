import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startLoad, verifyReadable } from './helpers/cluster';

// 3 nodes, 8 sessions writing; SIGKILL the leader ~1 s into the load. Writes
// must resume on a new leader, every acknowledged write must be readable, the
// order logs must agree, and the killed node must catch up after a restart.
t.test('leader SIGKILL under load', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-e2e-failover' });
  const leader = await c.waitLeader();
  await c.waitWritable();
  const client = c.client({ timeoutMs: 5000 });

  const load = startLoad(client, { sessions: 8, durationMs: 3500, totalOps: 30_000 });
  await sleep(1000);
  const acksBeforeKill = load.acks();
  const killAt = Date.now();
  await c.kill(leader, 'SIGKILL');
  t.comment(`killed leader sid ${leader} after ${acksBeforeKill} acknowledged writes`);
  const r = await load.done;

  t.ok(acksBeforeKill > 0, 'writes were acknowledged before the kill');
  t.equal(r.failed.length, 0, 'no write was refused or failed', {
    failed: r.failed.slice(0, 5),
  });
  const after = r.acked.filter((x) => x.endAt >= killAt && x.sid !== leader);
  t.ok(after.length > 0, `acks resumed after the kill (${after.length} from other nodes)`);
  const firstAfter = Math.min(...after.map((x) => x.endAt));
  const gapMs = firstAfter - killAt;
  const sids = [...new Set(after.map((x) => x.sid))];
  t.comment(
    `load: ${r.records.length} puts in ${r.elapsedMs} ms: ${r.acked.length} acked (${r.ackPerSec.toFixed(0)} acks/s), ${r.unknown.length} outcome unknown, ${r.failed.length} failed`,
  );
  t.comment(`kill -> next acknowledged write: ${gapMs} ms (answered by sid ${sids.join(',')})`);
  t.ok(gapMs < 5000, 'a new leader answered within 5 s of the kill');

  const survivors = c.sids.filter((s) => s !== leader);
  const newLeader = await c.waitLeader(10_000);
  t.not(newLeader, leader, `a new leader (sid ${newLeader})`);

  const read = await verifyReadable(client, r, 16);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    errors: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, 'every acknowledged write reads back its value', {
    mismatches: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written', {
    bad: read.badUnknown.slice(0, 5),
  });
  t.comment(
    `read back ${read.checked} keys; ${read.unknownApplied} of ${r.unknown.length} unknown writes took effect`,
  );

  const applied = await c.waitSameApplied(survivors, 10_000);
  const cmpSurvivors = compareLogs(c.orderLogFiles(survivors));
  t.ok(cmpSurvivors.ok, `surviving order logs agree: ${cmpSurvivors.message}`);
  const cmpAll = compareLogs(c.orderLogFiles());
  t.ok(cmpAll.ok, `the killed node's log agrees as far as it goes: ${cmpAll.message}`);

  const restartAt = Date.now();
  await c.restart(leader);
  const caught = await c.waitSameApplied(c.sids, 20_000, applied);
  t.comment(`restarted sid ${leader} caught up to slot ${caught} in ${Date.now() - restartAt} ms`);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `all order logs agree after the restart: ${cmp.message}`);
  t.equal(new Set(cmp.counts).size, 1, 'the restarted node has every line', {
    counts: cmp.counts,
  });
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
