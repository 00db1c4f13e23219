import * as fs from 'node:fs';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startLoad, verifyReadable } from './helpers/cluster';
import {
  lastOrderLines,
  patchStorageConfig,
  restartAll,
  rng,
  startPacedLoad,
  stderrText,
} from './helpers/faults';

// Durability: crash, restart and carry on. SIGKILL is a process crash (the page
// cache survives, so this is not a power-loss test). A node answers a promise or
// an accept only after its WAL write is fdatasync'ed, and a client only hears
// back once a majority did: nothing acknowledged may be lost.

const SEED = Number(process.env.PAXOS_SEED ?? Date.now() % 1_000_000);

t.test('restart loop: SIGKILL a random node 20 times under load', async (t) => {
  const random = rng(SEED);
  t.comment(`seed ${SEED} (set PAXOS_SEED to repeat)`);
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-restart' });
  // Snapshots (and WAL rotations) every 1,000 slots, so that kills also land
  // during and between compactions.
  patchStorageConfig(c, { snapshotEverySlots: 1000 });
  await restartAll(c);
  await c.waitLeader();
  await c.waitWritable();
  const client = c.client({ timeoutMs: 5000 });
  // Paced and capped at 30,000 distinct keys: a snapshot of more than 35,000
  // keys cannot be loaded (cbor-x maxArraySize 70,000, set globally in
  // lib/wire/peer.ts); durability-bigsnapshot.test.ts covers that bug.
  const load = startPacedLoad(client, {
    sessions: 8,
    durationMs: 80_000,
    totalOps: 30_000,
    opsPerSec: 450,
  });

  const ROUNDS = 20;
  const kills: string[] = [];
  let restartMsMax = 0;
  const loopStart = Date.now();
  for (let i = 0; i < ROUNDS; i++) {
    await sleep(1500 + Math.floor(random() * 1500));
    const sid = c.sids[Math.floor(random() * c.sids.length)];
    const st = await c.status(sid);
    await c.kill(sid, 'SIGKILL');
    // Sometimes come back at once, sometimes after the others noticed.
    await sleep(Math.floor(random() * 400));
    const at = Date.now();
    await c.restart(sid);
    restartMsMax = Math.max(restartMsMax, Date.now() - at);
    kills.push(`${sid}${st?.role === 'leader' ? 'L' : ''}@${load.acks()}`);
  }
  const loopMs = Date.now() - loopStart;
  load.stop();
  const r = await load.done;
  const snapshots = c.sids.map(
    (s) =>
      (stderrText(c, s).match(/snapshot at slot \d+ \(\d+ bytes\) (taken|installed)/g) ?? [])
        .length,
  );
  t.comment(`kills (sid, L = was leader, @ acks so far): ${kills.join(' ')}`);
  t.comment(`snapshots taken or installed per node during the run: ${snapshots.join(', ')}`);
  t.comment(
    `${ROUNDS} kill/restart rounds in ${loopMs} ms (slowest restart to ready: ${restartMsMax} ms)`,
  );
  t.comment(
    `load: ${r.records.length} puts in ${r.elapsedMs} ms: ${r.acked.length} acked (${r.ackPerSec.toFixed(0)} acks/s), ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  t.ok(r.acked.length > 1000, `writes kept being acknowledged (${r.acked.length})`);
  // Progress across the whole loop, not only at its start.
  const lastQuarter = r.startedAt + (3 * r.elapsedMs) / 4;
  t.ok(
    r.acked.some((x) => x.endAt >= lastQuarter),
    'writes were still acknowledged in the last quarter of the loop',
  );

  await c.waitLeader(15_000);
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

  const applied = await c.waitSameApplied(c.sids, 30_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree after all nodes caught up: ${cmp.message}`);
  // A node that caught up by snapshot lacks the lines below it, and says so.
  const most = Math.max(...cmp.counts);
  for (const s of c.sids) {
    const text = fs.readFileSync(c.orderLogFile(s), 'utf8');
    const lines = cmp.counts[s];
    if (lines < most)
      t.match(
        text,
        /^# snapshot installed through slot \d+/m,
        `sid ${s}'s order log is short (${lines} of ${most} lines) only where it marks a snapshot`,
      );
  }
  const tails = c.sids.map((s) => lastOrderLines(c.orderLogFile(s), 50).join('\n'));
  t.ok(
    tails.every((x) => x === tails[0] && x.length > 0),
    'the last 50 lines of every order log are identical',
  );
  t.comment(`all nodes at slot ${applied}; order log lines ${cmp.counts.join(', ')}`);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});

t.test('SIGKILL all three at once mid-load, restart all (no --init)', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-killall' });
  await c.waitLeader();
  await c.waitWritable();
  const client = c.client({ timeoutMs: 8000 });
  const load = startLoad(client, { sessions: 8, durationMs: 9000, totalOps: 100_000 });
  await sleep(2000);
  const acksBefore = load.acks();
  const killAt = Date.now();
  await Promise.all(c.sids.map((s) => c.kill(s, 'SIGKILL')));
  const downAt = Date.now();
  t.comment(
    `SIGKILLed all 3 nodes after ${acksBefore} acknowledged writes (${downAt - killAt} ms)`,
  );
  await sleep(500);
  const restartAt = Date.now();
  await Promise.all(c.sids.map((s) => c.restart(s)));
  const leader = await c.waitLeader(15_000);
  const upMs = Date.now() - restartAt;
  t.comment(`all 3 restarted and sid ${leader} leads ${upMs} ms after the restart`);
  const r = await load.done;
  t.comment(
    `load: ${r.records.length} puts in ${r.elapsedMs} ms: ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.ok(acksBefore > 0, 'writes were acknowledged before the crash');
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  const ackedBeforeKill = r.acked.filter((x) => x.endAt <= killAt);
  const ackedAfter = r.acked.filter((x) => x.endAt > restartAt);
  t.ok(
    ackedAfter.length > 0,
    `writes are acknowledged again after the restart (${ackedAfter.length})`,
  );

  const read = await verifyReadable(client, r, 16);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    errors: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, 'every acknowledged write (before and after) is still there', {
    mismatches: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written', {
    bad: read.badUnknown.slice(0, 5),
  });
  t.comment(
    `${ackedBeforeKill.length} writes acknowledged before the crash, ${ackedAfter.length} after the restart; ${read.unknownApplied} of ${r.unknown.length} unknown took effect`,
  );
  await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.equal(new Set(cmp.counts).size, 1, 'every order log has every line', { counts: cmp.counts });
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
