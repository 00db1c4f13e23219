// Membership through the log (issue 13), on real Replica objects: a change is a
// command; the configuration applied at slot j governs slots from j + alpha;
// a leader proposes only slots whose configuration it knows and its Phase 1
// covered. Agreement and one value per (slot, ballot) are checked on every step
// by CoreNet, with datagrams lost, duplicated and re-delivered late.
import t from 'tap';
import type { Replica } from '../lib/core/replica';
import { cmd, CoreNet, type Env } from './helpers/core-net';

const ALPHA = 4;
const voters = (...sids: number[]) => sids.map((sid) => ({ sid, voter: true }));

/** Spare sids 4.. are in the servers list but not members until added. */
function cluster(seed: number, sids = [1, 2, 3, 4, 5, 6], members = [1, 2, 3]): CoreNet {
  return new CoreNet(sids, { members: voters(...members), alphaSlots: ALPHA }, seed);
}

let cid = 1000;
/** Write through whoever leads until `n` writes were taken (bounded); returns how many. */
function writes(net: CoreNet, n: number, maxTicks = 400): number {
  let done = 0;
  for (let i = 0; i < maxTicks && done < n; i++) {
    const l = net.leader();
    net.tick(1);
    if (l && net.submit(l.sid, cmd(cid++, 1, `w${cid}`)) === 'queued') done++;
  }
  return done;
}

/** Submit a change at the leader and run until every live member applied it (bounded). */
function change(net: CoreNet, text: string, maxTicks = 600): number {
  for (let i = 0; i < maxTicks; i++) {
    const l = net.leader();
    if (l) {
      const before = l.configuration.slot;
      net.submit(l.sid, cmd(cid++, 1, text));
      const ok = net.tickUntil(() => l.configuration.slot !== before, 100) <= 100;
      if (ok) {
        // Let the alpha window pass so that it governs, then let everyone catch up.
        net.tickUntil(
          () => net.leader()?.configOf(net.leader()!.applied + 1) === net.leader()?.configuration,
          200,
        );
        return l.configuration.slot;
      }
    }
    net.tick(1);
  }
  return -1;
}

const progress = (net: CoreNet, ticks: number): number => {
  const before = Math.max(...[...net.nodes.values()].map((r) => r.chosenThrough));
  writes(net, 20, ticks);
  return Math.max(...[...net.nodes.values()].map((r) => r.chosenThrough)) - before;
};

const describe = (r: Replica): string =>
  r.configuration.members.map((m) => (m.voter ? `${m.sid}` : `+${m.sid}`)).join(' ');

t.test('grow 3 to 5: the new majority decides once two of the first three are gone', async (t) => {
  for (const seed of [1, 2, 3]) {
    const net = cluster(seed);
    t.ok(net.tickUntil(() => net.leader() !== undefined, 200) <= 200, `seed ${seed}: a leader`);
    for (const c of ['member add 4', 'member promote 4', 'member add 5', 'member promote 5'])
      t.ok(change(net, c) > 0, `seed ${seed}: ${c} applied`);
    writes(net, 10);
    for (const s of [1, 2, 3, 4, 5])
      t.equal(
        describe(net.node(s)),
        '1 2 3 4 5',
        `seed ${seed}: sid ${s} has the new configuration`,
      );
    // Keep the leader if it is one of 1..3; stop the two others of the first three.
    const l = net.leader()!.sid;
    const gone = [1, 2, 3].filter((s) => s !== l).slice(0, 2);
    if (gone.length < 2) gone.push([1, 2, 3].find((s) => !gone.includes(s) && s !== l) ?? 1);
    for (const s of gone) net.crash(s);
    t.ok(progress(net, 600) > 0, `seed ${seed}: 3 of 5 voters (${gone} down) still choose`);
    t.same(net.violations, [], `seed ${seed}: no safety violation`);
  }
});

t.test('control: without the change, two of three down stops progress', async (t) => {
  const net = cluster(1);
  net.tickUntil(() => net.leader() !== undefined, 200);
  const l = net.leader()!.sid;
  for (const s of [1, 2, 3].filter((x) => x !== l)) net.crash(s);
  t.equal(progress(net, 300), 0, 'one of three voters chooses nothing');
  t.same(net.violations, []);
});

t.test('a learner receives the log but never counts', async (t) => {
  const net = cluster(4);
  net.tickUntil(() => net.leader() !== undefined, 200);
  t.ok(change(net, 'member add 4') > 0, 'sid 4 added as a learner');
  writes(net, 10);
  t.equal(describe(net.node(1)), '1 2 3 +4');
  t.ok(net.node(4).chosenThrough >= net.leader()!.chosenThrough - 4, 'the learner caught up');
  t.equal(net.node(4).role, 'follower', 'a learner never campaigns');
  const l = net.leader()!.sid;
  for (const s of [1, 2, 3].filter((x) => x !== l)) net.crash(s);
  t.equal(progress(net, 300), 0, 'leader + learner are no majority');
  t.same(net.violations, []);
});

t.test('remove the leader, then a follower: the rest elect a leader among them', async (t) => {
  for (const seed of [5, 6, 7]) {
    const net = cluster(seed, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5]);
    net.tickUntil(() => net.leader() !== undefined, 200);
    const first = net.leader()!.sid;
    t.ok(change(net, `member remove ${first}`) > 0, `seed ${seed}: leader ${first} removed`);
    net.tickUntil(() => net.leader() !== undefined && net.leader()!.sid !== first, 400);
    const next = net.leader();
    t.ok(next && next.sid !== first, `seed ${seed}: a new leader (${next?.sid})`);
    const other = [1, 2, 3, 4, 5].find((s) => s !== first && s !== next!.sid)!;
    t.ok(change(net, `member remove ${other}`) > 0, `seed ${seed}: follower ${other} removed`);
    t.ok(progress(net, 400) > 0, `seed ${seed}: the three left choose`);
    // The removed nodes never lead again, even with everyone else gone quiet for a while.
    const removedLed = [first, other].some((s) => net.node(s).role !== 'follower');
    t.notOk(removedLed, `seed ${seed}: removed nodes follow`);
    t.ok(
      net.events.some(
        (e) =>
          e.includes(`sid ${first}: configuration of slot`) && e.includes('this node was removed'),
      ),
      `seed ${seed}: the removed leader says it was removed`,
    );
    t.same(net.violations, [], `seed ${seed}: no safety violation`);
  }
});

t.test('replace a node whose disk was lost: remove it, add a fresh one, promote it', async (t) => {
  const net = cluster(8);
  net.tickUntil(() => net.leader() !== undefined, 200);
  writes(net, 10);
  const l = net.leader()!.sid;
  const dead = [1, 2, 3].find((s) => s !== l)!;
  net.crash(dead);
  t.ok(change(net, `member remove ${dead}`) > 0, `sid ${dead} removed`);
  t.ok(change(net, 'member add 6') > 0, 'sid 6 added');
  t.ok(change(net, 'member promote 6') > 0, 'sid 6 promoted');
  const rest = [1, 2, 3].filter((s) => s !== dead);
  t.equal(describe(net.node(l)), [...rest, 6].sort().join(' '));
  const other = rest.find((s) => s !== net.leader()!.sid)!;
  net.crash(other);
  t.ok(progress(net, 600) > 0, `with ${other} down too, leader + 6 choose`);
  t.same(net.violations, []);
});

t.test(
  'alpha: the change of slot j governs from j + alpha on every node; one at a time',
  async (t) => {
    const net = cluster(9);
    net.tickUntil(() => net.leader() !== undefined, 200);
    const l = net.leader()!;
    // Two changes in one batch: the second is refused (one change at a time).
    net.submit(l.sid, cmd(cid++, 1, 'member add 4'));
    net.submit(l.sid, cmd(cid++, 1, 'member add 5'));
    net.tickUntil(() => l.configuration.slot > 0, 100);
    writes(net, 2 * ALPHA);
    const j = l.configuration.slot;
    t.equal(describe(l), '1 2 3 +4', 'only the first change applied');
    for (const s of [1, 2, 3, 4]) {
      const r = net.node(s);
      t.equal(r.configOf(j + ALPHA - 1).slot, 0, `sid ${s}: slot j + alpha - 1 has the old one`);
      t.equal(r.configOf(j + ALPHA).slot, j, `sid ${s}: slot j + alpha has the new one`);
    }
    // The leader never proposed a slot beyond its applied prefix + alpha.
    t.same(net.violations, []);
  },
);

t.test(
  'random schedules: changes under loss, duplication, late re-delivery and crashes',
  async (t) => {
    const seeds = 40;
    let changes = 0;
    let changed = 0;
    for (let seed = 100; seed < 100 + seeds; seed++) {
      const net = cluster(seed);
      let x = seed;
      const rnd = (n: number): number => {
        x = (x * 1103515245 + 12345) % 2147483648;
        return x % n;
      };
      net.drop = () => rnd(100) < 10;
      const plan = [
        'member add 4',
        'member promote 4',
        'member remove 1',
        'member add 5',
        'member promote 5',
        'member remove 2',
        'member add 6',
      ];
      for (let step = 0; step < 400; step++) {
        net.tick(1);
        const l = net.leader();
        if (l && rnd(4) === 0) net.submit(l.sid, cmd(cid++, 1, `w${cid}`));
        // The next change of the plan (one within alpha of the last is refused: fine).
        if (l && rnd(25) === 0 && plan.length > 0) {
          net.submit(l.sid, cmd(cid++, 1, plan.shift()!));
          changes++;
        }
        // Late re-delivery of an old datagram.
        if (rnd(10) === 0 && net.history.length > 0) {
          const e: Env = net.history[rnd(net.history.length)];
          net.queue.push({ ...e });
        }
        // A crash and restart (kill: the page cache survives).
        if (rnd(80) === 0) net.restart(1 + rnd(6), 'kill');
      }
      net.drop = () => false;
      net.tick(300);
      const r = net.leader();
      if (r && r.configuration.slot > 0) changed++;
      if (net.violations.length > 0) {
        t.fail(`seed ${seed}: ${net.violations.join('; ')}`);
        break;
      }
    }
    t.ok(changes > seeds, `${changes} changes submitted over ${seeds} seeds, no violation`);
    t.ok(changed > seeds / 2, `${changed} of ${seeds} seeds ended in a changed configuration`);
  },
);

t.test(
  'a node in nobody servers list joins through the log: added with its address, caught up, promoted, it votes',
  async (t) => {
    for (const seed of [11, 12, 13]) {
      const net = new CoreNet([1, 2, 3], { members: voters(1, 2, 3), alphaSlots: ALPHA }, seed);
      t.ok(net.tickUntil(() => net.leader() !== undefined, 200) <= 200, `seed ${seed}: a leader`);
      writes(net, 10);
      const j = net.join(9);
      t.notOk(j.voter, `seed ${seed}: the joiner starts as a non-voter (empty disk)`);
      t.notOk(net.node(1).sids.includes(9), `seed ${seed}: before the add, nobody talks to 9`);
      t.ok(change(net, 'member add 9 10.0.0.9 7009 8009') > 0, `seed ${seed}: 9 added`);
      for (const s of [1, 2, 3]) {
        t.ok(net.node(s).sids.includes(9), `seed ${seed}: sid ${s} now talks to 9`);
        const m = net.node(s).configuration.members.find((x) => x.sid === 9);
        t.same(
          m?.addr,
          { host: '10.0.0.9', peerPort: 7009, clientPort: 8009 },
          `seed ${seed}: sid ${s} has 9's address from the log`,
        );
      }
      writes(net, 10);
      const l = net.leader()!;
      t.ok(j.chosenThrough >= l.chosenThrough - 4, `seed ${seed}: the joiner caught up`);
      t.ok(change(net, 'member promote 9') > 0, `seed ${seed}: 9 promoted`);
      t.ok(net.tickUntil(() => j.voter, 400) <= 400, `seed ${seed}: 9 passed the rejoin rule`);
      t.equal(describe(net.node(l.sid)), '1 2 3 9');
      // Four voters: a majority is three. With one of 1..3 down, the other two
      // choose only with 9's votes.
      const down = [1, 2, 3].find((s) => s !== net.leader()!.sid)!;
      net.crash(down);
      t.ok(progress(net, 600) > 0, `seed ${seed}: with ${down} down, 9's vote makes the majority`);
      net.crash(9);
      t.equal(progress(net, 300), 0, `seed ${seed}: control: with 9 down too, no majority`);
      t.same(net.violations, [], `seed ${seed}: no safety violation`);
    }
  },
);

t.test(
  'strict reconfiguration check: a remove or promote that would leave the new configuration without a majority in contact waits',
  async (t) => {
    const net = cluster(21);
    t.ok(net.tickUntil(() => net.leader() !== undefined, 200) <= 200, 'a leader');
    t.ok(change(net, 'member add 4') > 0, '4 added as a learner');
    writes(net, 5);
    const l = net.leader()!;
    const [a, b] = [1, 2, 3].filter((s) => s !== l.sid);
    t.equal(l.reconfigRefusal('promote', 4), null, 'promoting a caught-up voting learner: fine');
    net.crash(b);
    net.crash(4);
    net.tick(3 * net.opts.electionTicks);
    t.equal(net.leader()?.sid, l.sid, 'the leader leads on with one follower');
    t.match(
      l.reconfigRefusal('remove', a),
      new RegExp(
        `member remove ${a} refused for now: .* 1 in contact with the leader, 2 needed \\(not in contact: ${b}\\)`,
      ),
      `removing live ${a} would leave ${l.sid} and down ${b}: refused`,
    );
    t.equal(l.reconfigRefusal('remove', b), null, `removing down ${b} is fine`);
    t.match(
      l.reconfigRefusal('promote', 4),
      /member promote 4 refused for now: sid 4 does not vote yet/,
      'promoting a learner that is down: refused',
    );
    t.equal(l.reconfigRefusal('add', 5), null, 'an add changes no voter');
    t.equal(net.node(a).reconfigRefusal('remove', b), null, 'a follower does not judge');
    t.same(net.violations, []);
  },
);
