import * as fs from 'node:fs';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, waitFor } from './helpers/cluster';
import {
  dataDirOf,
  dirBytes,
  lastOrderLines,
  lastRun,
  patchStorageConfig,
  replayDataDir,
  restartAll,
  startOverwriteLoad,
  stderrText,
  verifyFinalValues,
  walSegments,
} from './helpers/faults';

const TOTAL = 50_000;
const SNAPSHOT_EVERY = 50;

// Compaction: with a snapshot every 50 slots (batches hold ~64 commands), 50,000 overwriting writes leave
// each data directory far smaller than the history, and a follower that was
// down past the compaction point catches up through a snapshot transfer.
t.test(
  'compaction under 50,000 writes; a follower down past the compaction point catches up by snapshot',
  async (t) => {
    const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-compact' });
    patchStorageConfig(c, { snapshotEverySlots: SNAPSHOT_EVERY });
    await restartAll(c);
    const leader = await c.waitLeader();
    await c.waitWritable();
    const lagger = c.sids.find((s) => s !== leader)!;
    const client = c.client({ timeoutMs: 5000 });

    // 64 sessions x 16 keys each, 24-byte values: the state stays ~1,000 keys.
    const load = startOverwriteLoad(client, {
      sessions: 64,
      totalOps: TOTAL,
      durationMs: 60_000,
      keysPerSession: 16,
      valueBytes: 24,
    });
    let loadDone = false;
    void load.done.then(() => (loadDone = true));
    await waitFor('15% of the writes', () => load.issued() >= TOTAL * 0.15 || loadDone, 30_000, 20);
    // SIGKILL rather than SIGSTOP: a frozen process keeps its socket buffer
    // (up to 4 MB here) full of accepts and often catches up from those alone.
    const before = await c.status(lagger);
    await c.kill(lagger, 'SIGKILL');
    const stopAt = Date.now();
    t.comment(`SIGKILL sid ${lagger} at slot ${before?.applied} (${load.acks()} acks so far)`);
    // Keep it down until the leader has compacted well past it (and a while longer).
    const passed = await waitFor(
      'the leader to compact past the killed follower',
      async () => {
        const s = await c.status(leader);
        const far = s !== null && s.base > (before?.applied ?? 0) + 2 * SNAPSHOT_EVERY;
        return far && (load.issued() >= TOTAL * 0.6 || loadDone) ? s : undefined;
      },
      45_000,
      50,
    );
    await c.restart(lagger);
    const downMs = Date.now() - stopAt;
    t.comment(
      `restarted sid ${lagger} after ${downMs} ms; leader at slot ${passed.applied}, compacted through ${passed.base}`,
    );
    t.ok(passed.base > (before?.applied ?? 0), 'the leader compacted past the killed follower');

    const r = await load.done;
    const mbps = r.bytesIssued / 1e6;
    t.comment(
      `load: ${r.ops.length} puts (${mbps.toFixed(2)} MB of keys+values) in ${r.elapsedMs} ms: ${r.acked} acked (${r.ackPerSec.toFixed(0)} acks/s), ${r.unknown} unknown, ${r.failed.length} failed`,
    );
    // The claim is 50,000 writes: a slow run that issued fewer must not pass as
    // if it had done them. Only a follower is killed, so no outcome is unknown.
    t.equal(r.ops.length, TOTAL, `all ${TOTAL} writes were issued within 60 s`);
    t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
    t.equal(r.acked, TOTAL, `all ${TOTAL} writes were acknowledged (${r.unknown} unknown)`);

    const applied = await c.waitSameApplied(c.sids, 30_000);
    const err = lastRun(stderrText(c, lagger));
    const fetch = /fetching snapshot at slot (\d+) \((\d+) bytes\) from (\d+)/.exec(err);
    const installed = /installed snapshot at slot (\d+)/.exec(err);
    t.ok(fetch, `sid ${lagger} says it is fetching a snapshot`, { stderr: err.slice(-2000) });
    t.ok(installed, `sid ${lagger} says it installed the snapshot`);
    t.match(
      err,
      /snapshot \d+ from \d+: \d+\/\d+ bytes \(100%\)/,
      'transfer progress reached 100%',
    );
    if (fetch)
      t.comment(
        `sid ${lagger}: fetched snapshot at slot ${fetch[1]} (${fetch[2]} bytes) from sid ${fetch[3]}`,
      );
    const snaps = (stderrText(c, leader).match(/snapshot at slot \d+ \(\d+ bytes\) taken/g) ?? [])
      .length;
    t.comment(`leader sid ${leader} took ${snaps} snapshots`);
    t.ok(snaps >= 10, 'the leader took many snapshots');

    const files = c.orderLogFiles();
    const cmp = compareLogs(files);
    t.ok(cmp.ok, `order logs agree at slot ${applied}: ${cmp.message}`);
    const lagText = fs.readFileSync(c.orderLogFile(lagger), 'utf8');
    t.match(
      lagText,
      /^# snapshot installed through slot \d+/m,
      `sid ${lagger}'s order log marks the snapshot install`,
    );
    const tails = c.sids.map((s) => lastOrderLines(c.orderLogFile(s), 50).join('\n'));
    t.ok(
      tails.every((x) => x === tails[0] && x.length > 0),
      'the last 50 lines of every order log are identical',
    );

    const read = await verifyFinalValues(client, r.expected, 16);
    t.equal(read.readErrors.length, 0, 'every read got an answer', {
      errors: read.readErrors.slice(0, 5),
    });
    t.equal(read.wrong.length, 0, `every key holds its last acknowledged value (${read.checked})`, {
      wrong: read.wrong.slice(0, 5),
    });

    // Sizes: the directory holds one snapshot plus the WAL since it.
    const sizes = c.sids.map((s) => dirBytes(dataDirOf(c, s)));
    const segs = c.sids.map((s) => walSegments(dataDirOf(c, s)).length);
    t.comment(
      `data dirs: ${sizes.map((b, i) => `sid ${i} ${(b / 1024).toFixed(0)} KiB (${segs[i]} WAL segment)`).join(', ')}; history ${(r.bytesIssued / 1024).toFixed(0)} KiB`,
    );
    for (const [i, b] of sizes.entries())
      t.ok(
        b * 4 < r.bytesIssued,
        `sid ${i}: data dir (${b} bytes) is under a quarter of the history (${r.bytesIssued} bytes)`,
      );

    // Same state: stop everyone, recover each data dir offline, compare. (Reads
    // are commands too: they moved the slot on.)
    const final = await c.waitSameApplied(c.sids, 15_000, applied);
    await Promise.all(c.sids.map((s) => c.kill(s, 'SIGTERM')));
    const replays = c.sids.map((s) => replayDataDir(c.configFile, s, dataDirOf(c, s)));
    t.comment(
      `offline replay: ${replays.map((x, i) => `sid ${i} applied ${x.applied} (snapshot ${x.snapshotSlot} + ${x.walRecords} records, ${x.keys} keys, ${x.stateHash.slice(0, 12)})`).join('; ')}`,
    );
    t.ok(
      replays.every((x) => x.applied === final),
      `every data dir recovers to slot ${final}`,
    );
    t.ok(
      replays.every((x) => x.stateHash === replays[0].stateHash),
      'every data dir recovers to the same key-value state',
    );
    t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
  },
);
