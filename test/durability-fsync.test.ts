import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startLoad, verifyReadable, waitFor, withTimeout } from './helpers/cluster';
import {
  dataDirOf,
  lastRun,
  requireOrSkip,
  spawnWrapped,
  stderrText,
  straceWorks,
  straceWrapper,
  walSegments,
  which,
} from './helpers/faults';

// Injection needs ptrace; a container may forbid it even when strace exists.
const TRACE = ['-e', 'trace=fdatasync'];
const usable = straceWorks(TRACE, false);
const seccomp = usable && straceWorks(TRACE, true);
const skip = requireOrSkip(
  t,
  'fdatasync EIO',
  !which('strace')
    ? 'needs strace (apt-get install strace)'
    : !usable
      ? 'strace cannot trace here (ptrace not permitted)'
      : false,
);

/**
 * Wall-clock time (ms) at which the first injected EIO of fdatasync/fsync
 * returned, from a `strace -ttt` log ("PID SECONDS.MICROS fdatasync(N) = -1 EIO
 * ... (INJECTED)"), or null if there is none.
 */
function firstInjectedEio(traceFile: string): number | null {
  let text = '';
  try {
    text = fs.readFileSync(traceFile, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const m = /^(?:\d+\s+)?(\d+\.\d+)\s+f(?:data)?sync\(.*= -1 EIO.*INJECTED/.exec(line);
    if (m) return Number(m[1]) * 1000;
  }
  return null;
}

/**
 * Answers in flight when the failure happened may still arrive: the node learns
 * of the failure on its next event-loop turn, and the client's own loop is busy
 * with the load. Anything later than this is an answer given after the failure.
 */
const LATE_MS = 100;

// The fdatasync of the WAL fails with EIO from the WHEN-th call on. strace counts
// per thread and the syncs run on libuv's 4 pool threads, so the first failure
// comes after WHEN to ~4*WHEN syncs: well inside the load.
const WHEN = 150;

// fsync failure: the leader's WAL fdatasync starts failing with EIO (strace
// fault injection). It must stop at once (exit 1, "FATAL storage failure"),
// never retrying the sync and acknowledging nothing whose sync failed; the
// other two elect a new leader and every acknowledged write is still readable.
t.test(
  'fdatasync EIO on the leader: it stops, nothing acknowledged is lost',
  { skip },
  async (t) => {
    const c = await Cluster.start(t, { n: 3, name: 'paxos-dur-fsync' });
    await c.waitLeader();
    await c.waitWritable();
    const victim = 0;
    const segs = walSegments(dataDirOf(c, victim));
    t.equal(segs.length, 1, 'one WAL segment (no snapshot is due at the default interval)');
    const wal = segs[0];
    await Promise.all(c.sids.map((s) => c.kill(s, 'SIGKILL')));

    // SID 0 under strace first: it ranks highest, so it wins the election once a
    // peer is up.
    const traceFile = path.join(c.dir, 'strace-fsync.log');
    const wrapper = straceWrapper(
      [
        '-e',
        'trace=fdatasync,fsync',
        '-e',
        `inject=fdatasync,fsync:error=EIO:when=${WHEN}+`,
        '-P',
        wal,
      ],
      { seccomp, out: traceFile },
    );
    const node = spawnWrapped(t, c, victim, wrapper);
    t.comment(`sid ${victim}: ${wrapper.join(' ')} node bin/paxosd ...`);
    await node.ready;
    await Promise.all(c.sids.filter((s) => s !== victim).map((s) => c.restart(s)));
    const others = c.sids.filter((s) => s !== victim);
    const leads = async (): Promise<boolean> => {
      const rows = await c.statuses([victim, ...others]);
      return rows.length === 3 && rows.every((r) => r.leader === victim);
    };
    let ok = await waitFor('sid 0 to lead', leads, 8000, 50).catch(() => false);
    if (!ok) {
      // Someone else won: freeze them until sid 0 takes over.
      const l = await c.waitLeader(5000, [victim]).catch(() => -1);
      if (l >= 0 && l !== victim) {
        c.stop(l);
        await waitFor(
          'sid 0 to lead',
          async () => (await c.status(victim))?.role === 'leader',
          8000,
        );
        c.cont(l);
        ok = await waitFor('sid 0 to lead', leads, 8000, 50).catch(() => false);
      }
    }
    t.ok(ok, `sid ${victim} (under strace) leads`);

    const client = c.client({ timeoutMs: 5000 });
    const load = startLoad(client, { sessions: 8, durationMs: 40_000, totalOps: 100_000 });
    const exited = await withTimeout(node.exited, 30_000);
    const failAt = Date.now();
    const acksAtFail = load.acks();
    t.ok(exited, `sid ${victim} stopped by itself`);
    await sleep(2000);
    load.stop();
    const r = await load.done;
    t.comment(
      `sid ${victim} exited ${JSON.stringify(node.exit)} after ${acksAtFail} acks (${failAt - r.startedAt} ms of load); load: ${r.records.length} puts in ${r.elapsedMs} ms: ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
    );
    t.equal(node.exit?.code, 1, 'it exited with code 1 (strace passes the status on)');
    const err = lastRun(stderrText(c, victim));
    t.match(err, /FATAL storage failure \(ESYNC\)/, 'stderr says FATAL storage failure (ESYNC)');
    t.match(err, /fdatasync failed: EIO/, 'naming the failed fdatasync and EIO');
    t.match(err, new RegExp(wal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'and the WAL file');
    t.comment(
      `stderr: ${err
        .split('\n')
        .filter((l) => /FATAL/.test(l))
        .join(' | ')}`,
    );
    t.equal((err.match(/FATAL/g) ?? []).length, 1, 'one fatal error: the sync was not retried');

    // The failure point is when the first injected EIO returned (strace's clock
    // is the wall clock, as is the client's endAt), not when the process was
    // seen to exit: a node that carried on after a failed sync and exited later
    // would pass a check against its exit time.
    const eioAt = firstInjectedEio(traceFile);
    t.ok(eioAt !== null, `strace logged the injected EIO (${traceFile})`);
    const failPoint = eioAt ?? failAt;
    t.comment(
      `first injected EIO at ${new Date(failPoint).toISOString()}, exit seen ${Math.round(failAt - failPoint)} ms later`,
    );
    const byVictim = r.acked.filter((x) => x.sid === victim);
    t.ok(
      byVictim.filter((x) => x.endAt <= failPoint).length > 0,
      `sid ${victim} acknowledged writes before the failure (${byVictim.length})`,
    );
    const late = byVictim.filter((x) => x.endAt > failPoint + LATE_MS);
    const lastAck = Math.max(...byVictim.map((x) => x.endAt));
    t.equal(
      late.length,
      0,
      `no write was acknowledged by sid ${victim} after its fdatasync failed (its last answer came ${Math.round(lastAck - failPoint)} ms after the failure; ${LATE_MS} ms allowed for answers in flight)`,
      { late: late.slice(0, 5).map((x) => `${x.key} +${Math.round(x.endAt - failPoint)} ms`) },
    );
    t.equal(r.failed.length, 0, 'no write was refused or failed', { failed: r.failed.slice(0, 5) });
    const after = r.acked.filter((x) => x.startAt > failAt);
    t.ok(after.length > 0, `a new leader took over (${after.length} writes after the failure)`);

    const read = await verifyReadable(client, r, 16);
    t.equal(read.readErrors.length, 0, 'every read got an answer', {
      errors: read.readErrors.slice(0, 5),
    });
    t.equal(
      read.mismatches.length,
      0,
      `every acknowledged write reads back (${read.checked} keys)`,
      {
        mismatches: read.mismatches.slice(0, 5),
      },
    );
    t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written', {
      bad: read.badUnknown.slice(0, 5),
    });
    const applied = await c.waitSameApplied(others, 15_000);
    const cmp = compareLogs(c.orderLogFiles());
    t.ok(
      cmp.ok,
      `order logs agree (sid ${victim}'s as far as it goes) at slot ${applied}: ${cmp.message}`,
    );
    t.ok(fs.existsSync(wal), 'the WAL file is still there');

    // Restarted normally (the "disk" works again), it recovers and catches up.
    await c.restart(victim);
    const all = await c.waitSameApplied(c.sids, 20_000, applied);
    const cmp2 = compareLogs(c.orderLogFiles());
    t.ok(cmp2.ok, `after its restart all three agree at slot ${all}: ${cmp2.message}`);
    t.same(c.unexpectedExits(), [], 'no harness-managed node exited unexpectedly');
  },
);
