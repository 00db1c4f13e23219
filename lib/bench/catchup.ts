import { performance } from 'node:perf_hooks';
import { sleep, statusOf, waitForLeader } from './cluster';
import { Load } from './load';
import { fmtInt, fmtMs, note } from './log';
import { procCpuS } from './procstat';
import type { Env } from './run';

// The catch-up experiment (--catchup).

/** The catch-up experiment's figures (JSON field order is the report's). */
export interface CatchupResult {
  follower: number;
  leader: number;
  /** Writes acknowledged while the follower was stopped. */
  commands: number;
  /** Slots the follower had to learn after SIGCONT. */
  slotsBehind: number;
  writeOpsPerSec: number;
  writeUnknown: number;
  caughtUp: boolean;
  catchupMs: number | null;
  commandsPerSec: number | null;
  slotsPerSec: number | null;
  followerCpuPct: number | null;
}

/**
 * SIGSTOP a follower, write `--catchup` operations, SIGCONT it and time how long
 * it takes to apply what the leader had applied (at most 120 s).
 */
export async function catchup(env: Env): Promise<CatchupResult> {
  const cluster = env.cluster!;
  const sids = cluster.nodes.map((n) => n.sid);
  const n = env.opts.catchup!;
  const leader = await waitForLeader(env.ctl, sids);
  env.target.leader = leader;
  const follower = sids.find((s) => s !== leader)!;
  const before = (await statusOf(env.ctl, follower))!;
  cluster.signal(follower, 'SIGSTOP');
  note(
    `  catch-up: SIGSTOP follower ${follower} (applied ${before.applied}); writing ${fmtInt(n)} ops`,
  );

  const load = new Load(
    env.target,
    env.opts.catchupClients,
    'put',
    env.keyNames,
    env.opts.valueBytes,
    false,
  );
  let written = 0;
  let unknown = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  load.onDone = (ok) => {
    if (ok) written++;
    else unknown++;
    if (written >= n) done();
  };
  const w0 = performance.now();
  load.start();
  const progress = setInterval(
    () => note(`  catch-up: ${fmtInt(written)}/${fmtInt(n)} written`),
    1000,
  );
  await finished;
  const writeS = (performance.now() - w0) / 1000;
  clearInterval(progress);
  await load.stop();

  const ls = (await statusOf(env.ctl, leader))!;
  const goal = ls.applied;
  const cpu0 = cluster.nodes[follower].pid ? procCpuS(cluster.nodes[follower].pid!) : null;
  const t0 = performance.now();
  cluster.signal(follower, 'SIGCONT');
  let caughtMs: number | null = null;
  let last = before.applied;
  let lastNote = t0;
  while (performance.now() - t0 < 120_000) {
    const s = await statusOf(env.ctl, follower, 200);
    if (s) last = s.applied;
    if (s && s.applied >= goal) {
      caughtMs = performance.now() - t0;
      break;
    }
    if (performance.now() - lastNote >= 1000) {
      lastNote = performance.now();
      note(`  catch-up: follower ${follower} applied ${last} of ${goal}`);
    }
    await sleep(5);
  }
  const cpu1 = cluster.nodes[follower].pid ? procCpuS(cluster.nodes[follower].pid!) : null;
  const cmds = written;
  const slots = goal - before.applied;
  const res: CatchupResult = {
    follower,
    leader,
    commands: cmds,
    slotsBehind: slots,
    writeOpsPerSec: Math.round(cmds / writeS),
    writeUnknown: unknown,
    caughtUp: caughtMs !== null,
    catchupMs: caughtMs === null ? null : Math.round(caughtMs),
    commandsPerSec: caughtMs === null ? null : Math.round(cmds / (caughtMs / 1000)),
    slotsPerSec: caughtMs === null ? null : Math.round(slots / (caughtMs / 1000)),
    followerCpuPct:
      caughtMs !== null && cpu0 !== null && cpu1 !== null
        ? Math.round(((cpu1 - cpu0) / (caughtMs / 1000)) * 1000) / 10
        : null,
  };
  note(
    caughtMs === null
      ? `  catch-up: follower ${follower} did NOT catch up within 120 s (applied ${last} of ${goal})`
      : `  catch-up: follower ${follower} applied ${fmtInt(slots)} slots (${fmtInt(cmds)} commands) in ${fmtMs(caughtMs)} ms`,
  );
  return res;
}
