// Heartbeat facts need proof of freshness (findings F2, F3, F4 of the second
// attack review). UDP may re-deliver any old heartbeat at any time; facts whose
// stale value hurts progress ("it hears us", "it votes", "it follows no live
// leader", "our leader is alive") are taken only from a heartbeat that echoes one
// of ours sent within the last election timeout: it answers a request of the
// current period, as a Paxos Made Live lease or an etcd heartbeat response does.
// Each schedule drives real `Replica` objects (test/helpers/core-net.ts) and
// asserts the healthy outcome; each failed on the code before the echo rule
// (checked by running this file against a scratch copy of that code: F2 took
// 428 and 1628 ticks, F3 never chose, F4 campaigned and deposed the leader).
import t from 'tap';
import type { Msg } from '../lib/core/types';
import { cmd, CoreNet, type Env } from './helpers/core-net';

type Heartbeat = Extract<Msg, { t: 'heartbeat' }>;

/** An election period of CORE_OPTS (timeout plus its largest jitter). */
const PERIOD = 10 + Math.floor(10 / 3);

function isHeartbeat(e: Env): boolean {
  return e.msg.t === 'heartbeat';
}

/**
 * F2: A = 0 leads for `ledTicks`, then dies; F = 1 restarts at that moment (its
 * "newest leader tick" starts over, so every old heartbeat of A is news). A's old
 * heartbeats to F arrive again in tick order, one every 8 ticks. Returns the ticks
 * to a leader among {F, Z = 2} (max + 1 if none).
 */
function replayedLeaderHeartbeats(replay: boolean, ledTicks: number, max: number): number {
  const net = new CoreNet([0, 1, 2]);
  const F = 1;
  net.tick(15);
  if (net.leader()?.sid !== 0) return -1;
  net.tick(ledTicks);
  const old = net
    .sent((e) => e.from === 0 && e.to === F && isHeartbeat(e) && (e.msg as Heartbeat).leading)
    .sort((a, b) => (a.msg as Heartbeat).tick - (b.msg as Heartbeat).tick);
  net.crash(0);
  net.restart(F, 'kill');
  let i = 0;
  let n = 0;
  return net.tickUntil(() => {
    if (replay && ++n % 8 === 0 && i < old.length) net.deliver(old[i++]);
    return net.leaders().length > 0;
  }, max);
}

for (const led of [100, 400]) {
  t.test(
    `F2: a follower restarted when its leader died is not kept following it by the dead leader's old heartbeats (led ${led} ticks)`,
    async (t) => {
      const max = 20 * led;
      const control = replayedLeaderHeartbeats(false, led, max);
      t.ok(
        control > 0 && control <= 2 * PERIOD,
        `without replays: a new leader after ${control} ticks`,
      );
      const attacked = replayedLeaderHeartbeats(true, led, max);
      // Same budget: a heartbeat that echoes nothing of F's new life proves nothing.
      t.ok(attacked <= 2 * PERIOD, `with replays: a new leader after ${attacked} ticks`);
    },
  );
}

/**
 * F3: 5 nodes, L = 0 leads, D = 4 crashes, L-C cut both ways, L -> B lost (B -> L
 * works). L can reach only A = 1, so it can choose nothing. One old heartbeat of
 * B (from when it heard L) is re-delivered to L every `every` ticks. Returns the
 * ticks until a command is applied at A, B and C (max + 1 if never).
 */
function staleHearsUs(replay: boolean, every: number, max: number): number {
  const net = new CoreNet([0, 1, 2, 3, 4]);
  const [L, B, C, D] = [0, 2, 3, 4];
  net.tick(15);
  if (net.leader()?.sid !== L) return -1;
  const stale = net
    .sent(
      (e) => e.from === B && e.to === L && isHeartbeat(e) && (e.msg as Heartbeat).heard.includes(L),
    )
    .pop()!;
  net.crash(D);
  net.drop = (e) =>
    (e.from === L && e.to === C) || (e.from === C && e.to === L) || (e.from === L && e.to === B);
  let n = 0;
  let seq = 0;
  return net.tickUntil(() => {
    if (replay && ++n % every === 0) net.deliver(stale);
    const l = net.leader();
    if (l) net.submit(l.sid, cmd(8, ++seq, 'f3'));
    return [1, 2, 3].every((s) =>
      [...net.applied.get(s)!.values()].some((v) => v.startsWith('8:')),
    );
  }, max);
}

t.test(
  'F3: an old heartbeat of a follower, re-delivered to a leader that can choose nothing, does not keep it leading (check quorum needs an answer of the current period)',
  async (t) => {
    const max = 100 * PERIOD;
    const control = staleHearsUs(false, 9, max);
    t.ok(control <= 4 * PERIOD, `without replays: chosen after ${control} ticks`);
    for (const every of [1, 3, 9]) {
      const attacked = staleHearsUs(true, every, max);
      t.ok(attacked <= 4 * PERIOD, `replayed every ${every} ticks: chosen after ${attacked} ticks`);
    }
  },
);

/**
 * F4: 3 nodes, L = 0 leads; the L-N link (N = 2) fails both ways; F = 1 hears
 * both. A heartbeat F sent before L was elected ("I follow no leader") is
 * re-delivered to N every `every` ticks for ten election periods; then the link
 * heals and L gets a command.
 */
function replayedFreeHeartbeat(
  replay: boolean,
  every: number,
): { elections: number; promisedRounds: number; stepDowns: number; applied: boolean } {
  const net = new CoreNet([0, 1, 2]);
  const [L, F, N] = [0, 1, 2];
  net.tick(15);
  const stale = net
    .sent((e) => e.from === F && e.to === N && isHeartbeat(e) && (e.msg as Heartbeat).leader === 0)
    .shift()!;
  if (net.leader()?.sid !== L)
    return { elections: -1, promisedRounds: -1, stepDowns: -1, applied: false };
  const ballot = net.node(L).ballot;
  const downs = net.node(L).stats.stepDowns;
  const elections = net.node(N).stats.elections;
  net.drop = (e) => (e.from === L && e.to === N) || (e.from === N && e.to === L);
  for (let i = 1; i <= 10 * PERIOD; i++) {
    if (replay && i % every === 0) net.deliver(stale);
    net.tick(1);
  }
  const out = {
    elections: net.node(N).stats.elections - elections,
    promisedRounds: Math.floor(net.node(N).promised / 256) - Math.floor(ballot / 256),
    stepDowns: 0,
    applied: false,
  };
  net.drop = () => false;
  net.submit(L, cmd(1, 1, 'k'));
  net.tick(2 * PERIOD);
  out.stepDowns = net.node(L).stats.stepDowns - downs;
  out.applied = [...net.applied.get(N)!.values()].some((v) => v.startsWith('1:1:'));
  return out;
}

t.test(
  'F4: an old "I follow no leader" heartbeat does not defeat pre-vote: the node beyond a bridge neither campaigns nor deposes the healthy leader',
  async (t) => {
    const control = replayedFreeHeartbeat(false, 3);
    t.same(
      control,
      { elections: 0, promisedRounds: 0, stepDowns: 0, applied: true },
      'without replays: N never campaigns; L keeps leading',
    );
    for (const every of [1, 3]) {
      const attacked = replayedFreeHeartbeat(true, every);
      t.same(
        attacked,
        { elections: 0, promisedRounds: 0, stepDowns: 0, applied: true },
        `replayed every ${every} ticks: N never campaigns, its promise stays, L keeps leading`,
      );
    }
  },
);

t.test(
  'a restarted node re-establishes its facts within about one heartbeat round trip (new life, new echoes)',
  async (t) => {
    const net = new CoreNet([0, 1, 2]);
    net.tick(15);
    t.equal(net.leader()?.sid, 0, 'A leads');
    // The follower restarts: it judges the leader alive again once the leader's
    // heartbeat echoes one of its own (its first heartbeat, then the leader's next).
    net.restart(1, 'kill');
    const took = net.tickUntil(() => net.node(1).leader === 0, 10);
    t.ok(took <= 2 * net.opts.heartbeatTicks + 1, `B follows A again after ${took} ticks`);
    // The leader restarts: it counts its peers two-way again and is elected again
    // within an election period of its restart.
    net.crash(1);
    net.restart(0, 'kill');
    const back = net.tickUntil(() => net.leaders().length > 0, 4 * PERIOD);
    t.ok(back <= 3 * PERIOD, `{A, C} elect a leader ${back} ticks after A's restart`);
    net.submit(net.leader()!.sid, cmd(1, 1, 'x'));
    net.tick(3);
    t.ok(
      [...net.applied.get(2)!.values()].some((v) => v.startsWith('1:1:')),
      'and choose a command',
    );
    t.same(net.violations, [], 'no safety violation');
  },
);
