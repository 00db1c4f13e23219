// Leadership hand-off (issue 11: graceful stop and transfer-leader), on real
// replicas: the target leads within a few round trips (no election timeout),
// nothing proposed is lost, and an old or re-delivered hand-off request deposes
// nobody.
import t from 'tap';
import { cmd, CoreNet } from './helpers/core-net';

function elect(net: CoreNet): number {
  net.tickUntil(() => net.leader() !== undefined, 200);
  const l = net.leader();
  if (!l) throw new Error('no leader');
  // Heartbeats tell everyone who hears whom (two-way contact, voters).
  net.tick(3 * net.opts.heartbeatTicks);
  return l.status().sid;
}

t.test(
  'transferLeadership: the target leads within a few ticks, with every chosen slot',
  async (t) => {
    for (const n of [3, 5]) {
      const net = new CoreNet(
        Array.from({ length: n }, (_, i) => i),
        {},
        7 + n,
      );
      const old = elect(net);
      for (let i = 0; i < 10; i++) net.submit(old, cmd(1, i + 1, `w${i}`));
      net.tick(2);
      const target = net.node(old).handoffTarget();
      t.not(target, null, `${n} nodes: a target`);
      // Commands submitted during the hand-off are refused with busy (retried later).
      t.equal(net.node(old).transferLeadership(target!), null, 'hand-off starts');
      t.equal(net.submit(old, cmd(2, 1, 'late')), 'busy', 'no new proposals while handing off');
      const ticks = net.tickUntil(() => net.node(target!).status().role === 'leader', 100);
      t.ok(
        ticks <= net.opts.electionTicks / 2,
        `${n} nodes: target leads after ${ticks} ticks (election timeout ${net.opts.electionTicks})`,
      );
      t.equal(net.node(old).status().role, 'follower', 'the old leader follows');
      net.tick(5);
      t.equal(net.node(old).status().leader, target, 'and names the new leader');
      for (let i = 0; i < 10; i++) t.not(net.submit(target!, cmd(3, i + 1, `x${i}`)), 'redirect');
      net.tick(10);
      const applied = [...net.applied.get(target!)!.values()].join(' ');
      for (let i = 0; i < 10; i++) {
        t.match(applied, `1:${i + 1}:w${i}`, `w${i} (proposed before the hand-off) chosen`);
        t.match(applied, `3:${i + 1}:x${i}`, `x${i} (after) chosen`);
      }
      t.same(net.violations, [], 'no safety violation');
    }
  },
);

t.test('a hand-off that cannot finish times out and the leader leads on', async (t) => {
  const net = new CoreNet([0, 1, 2], {}, 3);
  const old = elect(net);
  const target = net.node(old).handoffTarget()!;
  // The target never hears the request.
  net.drop = (e) => e.msg.t === 'handoff';
  t.equal(net.node(old).transferLeadership(target), null);
  net.tick(net.opts.electionTicks + 2);
  t.equal(net.node(old).status().role, 'leader', 'still leading');
  t.match(net.events.join('\n'), /hand-off to \d timed out; leading on/);
  t.not(net.submit(old, cmd(1, 1, 'after')), 'busy', 'proposing again');
  net.tick(5);
  t.match([...net.applied.get(old)!.values()].join(' '), '1:1:after');
});

t.test('an old hand-off request, re-delivered later, deposes nobody', async (t) => {
  const net = new CoreNet([0, 1, 2], {}, 5);
  const old = elect(net);
  const target = net.node(old).handoffTarget()!;
  // The request is lost the first time; the leader gives up and leads on.
  net.drop = (e) => e.msg.t === 'handoff';
  net.node(old).transferLeadership(target);
  net.tick(net.opts.electionTicks + 2);
  net.drop = () => false;
  t.equal(net.node(old).status().role, 'leader');
  const copies = net.sent((e) => e.msg.t === 'handoff' && e.to === target);
  t.ok(copies.length > 0, 'the leader asked');
  // Much later (its heartbeats moved on), a copy arrives.
  net.tick(3 * net.opts.electionTicks);
  for (const e of copies) net.deliver(e);
  net.tick(3);
  t.equal(net.node(old).status().role, 'leader', 'the leader still leads');
  t.equal(net.node(target).status().role, 'follower', 'the target did not campaign');
  t.same(net.violations, []);
});

t.test(
  'a hand-off prepare is promised by followers of the live leader (stickiness bypassed)',
  async (t) => {
    const net = new CoreNet([0, 1, 2, 3, 4], {}, 11);
    const old = elect(net);
    const target = net.node(old).handoffTarget()!;
    net.node(old).transferLeadership(target);
    const before = net.node(old).status().promised;
    net.tickUntil(() => net.node(target).status().role === 'leader', 50);
    t.equal(net.node(target).status().role, 'leader');
    for (const s of net.sids)
      t.ok(net.node(s).status().promised > before, `sid ${s} promised the new ballot`);
    t.same(net.violations, []);
  },
);
