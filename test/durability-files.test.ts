import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import {
  BIN,
  Cluster,
  runBin,
  sleep,
  startLoad,
  verifyReadable,
  waitFor,
  type LoadResult,
} from './helpers/cluster';
import {
  dataDirOf,
  flipByte,
  lastRun,
  patchStorageConfig,
  restartAll,
  stderrText,
  walFrames,
  walSegments,
} from './helpers/faults';

async function checkReadable(t: tap.Test, c: Cluster, r: LoadResult): Promise<void> {
  const read = await verifyReadable(c.client({ timeoutMs: 5000 }), r, 16);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    errors: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, `every acknowledged write reads back (${read.checked} keys)`, {
    mismatches: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written', {
    bad: read.badUnknown.slice(0, 5),
  });
}

async function checkCaughtUp(
  t: tap.Test,
  c: Cluster,
  what: string,
  complete = true,
): Promise<void> {
  const applied = await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `${what}: order logs agree at slot ${applied}: ${cmp.message}`);
  if (complete)
    t.equal(new Set(cmp.counts).size, 1, `${what}: every order log has every line`, {
      counts: cmp.counts,
    });
}

t.test('torn tail: the last WAL record cut short is dropped, the node recovers', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-torn' });
  const leader = await c.waitLeader();
  await c.waitWritable();
  const victim = c.sids.find((s) => s !== leader)!;
  const client = c.client({ timeoutMs: 5000 });
  const load = startLoad(client, { sessions: 8, durationMs: 6000, totalOps: 20_000 });
  await sleep(1500);
  // A crash in the middle of an append leaves part of the last frame on disk.
  await c.kill(victim, 'SIGKILL');
  const segs = walSegments(dataDirOf(c, victim));
  const newest = segs[segs.length - 1];
  const { frames, size, rest } = walFrames(newest);
  t.equal(rest, 0, 'the WAL ends on a frame boundary after SIGKILL');
  t.ok(
    frames.every((f) => f.crcOk),
    'every record is intact before the cut',
  );
  t.ok(frames.length >= 2, `the newest segment has records (${frames.length})`);
  const last = frames[frames.length - 1];
  const cut = 3;
  fs.truncateSync(newest, size - cut);
  const torn = 8 + last.len - cut;
  t.comment(
    `sid ${victim}: cut ${cut} bytes off ${path.basename(newest)} (${size} bytes, ${frames.length} records; last record at offset ${last.offset}, ${8 + last.len} bytes)`,
  );

  await c.restart(victim);
  const err = lastRun(stderrText(c, victim));
  t.match(
    err,
    new RegExp(`cut a torn record of ${torn} bytes at the end of the log`),
    `the node says it cut a torn record of ${torn} bytes`,
  );
  // It is live and appending again: the torn bytes must be gone, i.e. the file
  // ends at the cut or a valid record starts there, and no bad record is left.
  const w = walFrames(newest);
  t.ok(
    w.size === last.offset || w.frames.some((f) => f.offset === last.offset && f.crcOk),
    'the torn record was truncated away on disk',
    { size: w.size, cutAt: last.offset },
  );
  t.ok(
    w.frames.slice(0, -1).every((f) => f.crcOk),
    'every record in the segment is intact',
  );
  const r = await load.done;
  t.comment(
    `load: ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed in ${r.elapsedMs} ms`,
  );
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  await checkReadable(t, c, r);
  await checkCaughtUp(t, c, 'after the torn-tail restart');
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});

t.test('a corrupt record with valid records after it: refuse to start', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-corrupt' });
  const leader = await c.waitLeader();
  await c.waitWritable();
  const victim = c.sids.find((s) => s !== leader)!;
  const client = c.client({ timeoutMs: 5000 });
  const load = startLoad(client, { sessions: 8, durationMs: 8000, totalOps: 20_000 });
  await sleep(1500);
  await c.kill(victim, 'SIGKILL');
  const segs = walSegments(dataDirOf(c, victim));
  const file = segs[segs.length - 1];
  const { frames } = walFrames(file);
  t.ok(frames.length >= 3, `the newest segment has records (${frames.length})`);
  const victimFrame = frames[Math.floor(frames.length / 2)];
  const at = victimFrame.offset + 8 + Math.floor(victimFrame.len / 2);
  const old = flipByte(file, at);
  t.comment(
    `flipped the byte at offset ${at} of ${file} (record at offset ${victimFrame.offset}, ${frames.length} records)`,
  );

  const run = await runBin(BIN.paxosd, ['--config', c.configFile, '--sid', String(victim)], {
    timeoutMs: 15_000,
  });
  t.equal(run.code, 1, 'paxosd exits with code 1', { stderr: run.stderr, signal: run.signal });
  t.match(run.stderr, file, 'stderr names the WAL file');
  t.match(
    run.stderr,
    new RegExp(`at offset ${victimFrame.offset}\\b`),
    `stderr names the offset of the bad record (${victimFrame.offset})`,
  );
  t.match(run.stderr, /bad checksum/, 'stderr says what is wrong');
  t.notMatch(run.stderr, /ready/, 'it did not start');
  t.comment(`stderr: ${run.stderr.trim()}`);

  // Repaired (byte restored), it starts and catches up.
  flipByte(file, at);
  t.equal(fs.readFileSync(file)[at], old, 'byte restored');
  await c.restart(victim);
  const r = await load.done;
  t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
  await checkReadable(t, c, r);
  await checkCaughtUp(t, c, 'after the repair');
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});

// A SIGKILL after DurableStore.saveSnapshot but before the order log is written
// (PaxosNode.handle: persist -> snapshot -> send -> order log) leaves a data
// directory whose snapshot is ahead of the order log. The restarted node starts
// from the snapshot, so those slots are never written: its order log must mark
// the gap (as after a snapshot install) instead of skipping slots silently,
// which paxos-logcmp reports as a divergence.
t.test('crash between snapshot and order-log write: the gap is marked', async (t) => {
  const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-snapgap' });
  patchStorageConfig(c, { snapshotEverySlots: 300 });
  await restartAll(c);
  const leader = await c.waitLeader();
  await c.waitWritable();
  const victim = c.sids.find((s) => s !== leader)!;
  const dir = dataDirOf(c, victim);
  const client = c.client({ timeoutMs: 5000 });
  const load = startLoad(client, { sessions: 16, durationMs: 20_000, totalOps: 6000 });
  const snapFile = await waitFor(
    `a snapshot on sid ${victim}`,
    () => fs.readdirSync(dir).find((f) => /^snap-\d{16}\.bin$/.test(f)),
    20_000,
    50,
  );
  load.stop();
  const r = await load.done;
  await c.waitSameApplied(c.sids, 10_000);
  await c.kill(victim, 'SIGKILL');
  const snaps = fs.readdirSync(dir).filter((f) => /^snap-\d{16}\.bin$/.test(f));
  const S = Math.max(...snaps.map((f) => Number(f.slice(5, 21))));
  t.comment(`first snapshot ${snapFile}; newest snapshot of sid ${victim} at slot ${S}`);
  // Cut the order log back to before slot S: what the crash would have left.
  const ol = c.orderLogFile(victim);
  const lines = fs.readFileSync(ol, 'utf8').split('\n');
  const keep = lines.filter((l) => {
    const m = /^(\d+)\./.exec(l);
    return !m || Number(m[1]) < S;
  });
  fs.writeFileSync(ol, keep.join('\n').replace(/\n*$/, '\n'));
  t.comment(
    `order log of sid ${victim}: ${lines.length - keep.length} lines of slots >= ${S} removed`,
  );

  await c.restart(victim);
  await sleep(200);
  const again = startLoad(client, { sessions: 8, durationMs: 1500, totalOps: 2000, prefix: 'b-' });
  const r2 = await again.done;
  t.equal(r.failed.length + r2.failed.length, 0, 'no write was refused or failed');
  // The lines of the slots through S are gone from this node's log for good.
  await checkCaughtUp(t, c, 'after the restart from the snapshot', false);
  const text = fs.readFileSync(ol, 'utf8');
  t.match(
    text,
    new RegExp(`^# snapshot installed through slot ${S}\\b`, 'm'),
    `the restarted node's order log marks the gap through slot ${S}`,
  );
  await checkReadable(t, c, {
    acked: [...r.acked, ...r2.acked],
    unknown: [...r.unknown, ...r2.unknown],
  } as LoadResult);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
});
