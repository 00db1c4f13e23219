import * as fs from 'node:fs';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startLoad, verifyReadable, type NodeStatus } from './helpers/cluster';
import { dataDirOf, lastRun, stderrText } from './helpers/faults';

// Lost disk: a node whose data directory is gone may have promised ballots it
// no longer remembers. Restarted without --init it must not vote (nor lead)
// until it has heard the promises of enough peers and learned a slot chosen
// after it came back (Paxos Made Live). Under load the whole time.
t.test('a node restarted with an empty data dir votes only when safe', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-lostdisk' });
  const leader = await c.waitLeader();
  await c.waitWritable();
  const client = c.client({ timeoutMs: 5000 });
  const load = startLoad(client, { sessions: 8, durationMs: 14_000, totalOps: 60_000 });
  await sleep(2500);

  // Lose the leader's disk: the others must take over, then it comes back empty.
  const victim = leader;
  await c.kill(victim, 'SIGKILL');
  fs.rmSync(dataDirOf(c, victim), { recursive: true, force: true });
  t.comment(`SIGKILL sid ${victim} (the leader) after ${load.acks()} acks; removed its data dir`);
  const others = c.sids.filter((s) => s !== victim);
  const newLeader = await c.waitLeader(10_000, [victim]);
  await sleep(1000);
  // Freeze the other survivor: the empty node can then hear only one peer (it
  // needs two), so it must stay a non-voter, and the leader alone plus a
  // non-voter must not choose anything.
  const frozen = others.find((s) => s !== newLeader)!;
  c.stop(frozen);
  t.comment(`sid ${newLeader} leads; froze sid ${frozen} (SIGSTOP)`);

  // Poll the victim's status from before it binds, so the first answer comes
  // within milliseconds of its start.
  const rows: (NodeStatus & { at: number })[] = [];
  let polling = true;
  const poller = (async () => {
    for (let i = 0; i < 20_000 && polling; i++) {
      void c.status(victim, 250).then((s) => {
        if (s) rows.push({ ...s, at: Date.now() });
      });
      await sleep(5);
    }
  })();
  const startAt = Date.now();
  await c.restart(victim);
  const err0 = lastRun(stderrText(c, victim));
  t.match(err0, /empty data directory .*joining as a non-voter/, 'it says it joins as a non-voter');
  await sleep(300);
  const atReturn = await c.status(newLeader);
  t.ok(atReturn, 'the leader answers status');
  const chosenAtReturn = atReturn?.chosen ?? 0;
  await sleep(1500);
  const stalled = await c.status(newLeader);
  const frozenRows = rows.filter((r) => r.at <= Date.now());
  t.ok(frozenRows.length >= 10, `samples while sid ${frozen} is frozen (${frozenRows.length})`);
  t.ok(
    frozenRows.every((r) => !r.voter && r.role === 'follower'),
    'meanwhile it stays a non-voting follower',
  );
  t.equal(
    stalled?.chosen,
    chosenAtReturn,
    `its vote does not count: the leader chose nothing in 1.5 s (stuck at slot ${chosenAtReturn})`,
  );
  const thawAt = Date.now();
  c.cont(frozen);

  // Wait (bounded) until it reports voter=true, then keep sampling a little.
  for (let i = 0; i < 300 && !rows.some((r) => r.voter); i++) await sleep(50);
  await sleep(500);
  polling = false;
  await poller;
  await sleep(300);
  rows.sort((a, b) => a.at - b.at);
  const becameVoter = rows.find((r) => r.voter);
  if (becameVoter)
    t.comment(
      `sid ${victim} became a voter ${becameVoter.at - thawAt} ms after sid ${frozen} was thawed`,
    );

  t.ok(rows.length > 0, `the restarted node answered status (${rows.length} samples)`);
  const first = rows[0];
  t.equal(
    first?.voter,
    false,
    `its first status says voter=false (${first?.at - startAt} ms after spawn)`,
  );
  const firstVoter = rows.find((r) => r.voter);
  t.ok(firstVoter, 'later it reports voter=true');
  const nonVoterRows = rows.filter((r) => !r.voter);
  t.ok(
    nonVoterRows.every((r) => r.role === 'follower'),
    'while a non-voter it never campaigns or leads',
    { roles: [...new Set(nonVoterRows.map((r) => r.role))] },
  );
  t.ok(
    rows.every((r, i) => i === 0 || !rows[i - 1].voter || r.voter),
    'once a voter it stays a voter',
  );
  const err = lastRun(stderrText(c, victim));
  const rejoin = /rejoined as a voter after slot (\d+)/.exec(err);
  t.ok(rejoin, 'it logs that it rejoined as a voter', { stderr: err.slice(-1500) });
  const joinSlot = Number(rejoin?.[1] ?? 0);
  t.ok(
    joinSlot > chosenAtReturn,
    `the slot it waited for (${joinSlot}) began after it came back (cluster had chosen ${chosenAtReturn})`,
  );
  if (firstVoter) {
    t.ok(
      firstVoter.chosen >= joinSlot,
      `when first seen as a voter it had learned slot ${joinSlot} (chosen ${firstVoter.chosen})`,
    );
    t.comment(
      `sid ${victim}: voter=false for ${firstVoter.at - (first?.at ?? startAt)} ms (${nonVoterRows.length} samples, chosen ${first?.chosen} -> ${nonVoterRows[nonVoterRows.length - 1]?.chosen}); voter=true at chosen ${firstVoter.chosen}; waited for slot ${joinSlot}`,
    );
  }

  const r = await load.done;
  t.comment(
    `load: ${r.records.length} puts in ${r.elapsedMs} ms: ${r.acked.length} acked (${r.ackPerSec.toFixed(0)} acks/s), ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  t.ok(
    r.acked.some((x) => x.startAt > startAt + 1000),
    'writes kept being acknowledged after it came back',
  );
  const read = await verifyReadable(client, r, 16);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    errors: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, `every acknowledged write reads back (${read.checked} keys)`, {
    mismatches: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written', {
    bad: read.badUnknown.slice(0, 5),
  });

  const applied = await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree at slot ${applied}: ${cmp.message}`);
  t.equal(new Set(cmp.counts).size, 1, 'every order log has every line', { counts: cmp.counts });
  t.comment(`survivors ${others.join(',')}; all at slot ${applied}`);

  // As a voter again it counts: with one of the others down, writes still go through.
  const current = await c.waitLeader(10_000);
  const stopped = others.find((s) => s !== current)!;
  c.stop(stopped);
  const w = await c.waitWritable(10_000).catch((e: Error) => e);
  t.type(w, 'number', `with sid ${stopped} frozen, sid ${victim}'s vote makes a majority`);
  c.cont(stopped);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
