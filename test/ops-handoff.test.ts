// Graceful stop (issue 11): SIGTERM on the leader hands leadership to a caught-up
// peer before the process exits, so writes pause for a round trip instead of an
// election timeout. Compared, in one run, with the pause after a SIGKILL.
import t from 'tap';
import { Cluster, sleep, startLoad, type OpRecord } from './helpers/cluster';

/** The longest time without a completed write from 0.5 s before `at` until `until`. */
function pauseAround(acked: OpRecord[], at: number, until: number): number {
  const ends = acked
    .map((r) => r.endAt)
    .filter((e) => e >= at - 500 && e <= until)
    .sort((a, b) => a - b);
  let worst = 0;
  for (let i = 1; i < ends.length; i++) worst = Math.max(worst, ends[i] - ends[i - 1]);
  return worst;
}

t.test(
  'SIGTERM on the leader: hand-off, no failed or unknown write, shorter pause than SIGKILL',
  async (t) => {
    const c = await Cluster.start(t, { n: 3, name: 'paxos-handoff' });
    await c.waitWritable();
    const load = startLoad(c.client(), { sessions: 8, durationMs: 60_000 });
    await sleep(1500);

    const first = await c.waitLeader();
    const termAt = Date.now();
    await c.kill(first, 'SIGTERM');
    t.match(c.stderrOf(first), /SIGTERM: stopping/, 'the stop is logged');
    t.match(c.stderrOf(first), /handed leadership to \d in \d+ ms/, 'the hand-off is logged');
    t.match(c.stderrOf(first), /stopped/, 'and the exit');
    await sleep(1500);
    // The SIGTERM window ends here: the restart and the SIGKILL below are not its pause.
    const restartAt = Date.now();
    await c.restart(first);
    await sleep(1500);

    const second = await c.waitLeader();
    const killAt = Date.now();
    await c.kill(second, 'SIGKILL');
    await sleep(2500);
    load.stop();
    const res = await load.done;

    t.equal(res.failed.length, 0, 'no failed write', { failed: res.failed.slice(0, 3) });
    t.equal(res.unknown.length, 0, 'no write with an unknown outcome');
    const term = pauseAround(res.acked, termAt, restartAt);
    const kill = pauseAround(res.acked, killAt, killAt + 2500);
    t.comment(
      `write pause: SIGTERM (hand-off) ${term} ms, SIGKILL ${kill} ms; ${res.acked.length} writes acknowledged`,
    );
    t.ok(term > 0 && kill > 0, 'writes completed around both events');
    t.ok(
      term < kill,
      `the hand-off pause (${term} ms) is shorter than the SIGKILL pause (${kill} ms)`,
    );
  },
);
