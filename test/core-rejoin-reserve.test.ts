// Lost-disk rejoin (issue 9, second attack review, finding F1): an incarnation
// abandoned half-way (a crash, or a request delivered late) must never void a
// later life's votes. Rule: a new incarnation is first reserved, and activated
// (named in votes) only once n - quorum + 1 voters reserved it, so every later
// rejoin sees it and draws above it; a reservation alone voids nothing.
import t from 'tap';
import { cmd, CoreNet, type Env } from './helpers/core-net';

const PERIOD = 10 + Math.floor(10 / 3);

/** The newest incarnation of `sid` that `holder` knows, active or reserved. */
function knownInc(net: CoreNet, holder: number, sid: number): number {
  const r = net.node(holder);
  return Math.max(r.incs[sid], r.reserved[sid]);
}

const isIncReq = (e: Env, from: number): boolean =>
  e.from === from && e.msg.t === 'rejoinReq' && e.msg.inc > 0;

/** Ticks until a command submitted to whoever leads is applied at node 0 (max + 1 if never). */
function ticksToChoose(net: CoreNet): number {
  let seq = 0;
  return net.tickUntil(() => {
    const l = net.leader();
    if (l) net.submit(l.sid, cmd(9, ++seq, 'after'));
    return [...net.applied.get(0)!.values()].some((v) => v.startsWith('9:'));
  }, 40 * PERIOD);
}

t.test(
  '3 nodes: a late request of an abandoned incarnation does not void the rejoined node',
  async (t) => {
    let below = 0;
    for (const kind of ['power', 'disk'] as const)
      for (let seed = 1; seed <= 8; seed++) {
        const net = new CoreNet([0, 1, 2], {}, seed);
        const Z = 2;
        net.tick(15);
        t.equal(net.leader()?.status().sid, 0, 'setup: 0 leads');
        net.wipe(Z);
        if (kind === 'power') net.manualSync.add(Z);
        // Every request carrying an incarnation is delayed (kept for later).
        net.drop = (e) => isIncReq(e, Z);
        net.tickUntil(() => knownInc(net, Z, Z) > 0, 60);
        const za = knownInc(net, Z, Z);
        t.ok(za > 0, 'setup: Z drew an incarnation');
        const late = net.sent((e) => isIncReq(e, Z) && e.to !== Z);
        if (kind === 'power') {
          net.restart(Z, 'power');
          net.manualSync.delete(Z);
        } else net.wipe(Z);
        net.drop = () => false;
        t.ok(net.tickUntil(() => net.node(Z).voter, 300) <= 300, `${kind} ${seed}: Z rejoined`);
        const zb = knownInc(net, Z, Z);
        if (zb < za) below++;
        for (const e of late) net.deliver(e);
        net.run();
        net.tick(5);
        net.crash(1);
        const took = ticksToChoose(net);
        t.ok(
          took <= 40 * PERIOD,
          `${kind} ${seed}: {0, Z} choose (after ${took} ticks; Za ${za}, Zb ${zb})`,
        );
        t.same(net.violations, []);
      }
    // The dangerous case (a later life drawing below the abandoned one) happened.
    t.ok(below >= 4, `${below} of 16 runs drew Zb < Za`);
  },
);

t.test('5 nodes, no re-delivery: an incarnation only one voter holds voids nothing', async (t) => {
  for (let seed = 1; seed <= 8; seed++) {
    const net = new CoreNet([0, 1, 2, 3, 4], {}, seed);
    const [U, Z] = [3, 4];
    net.tick(15);
    t.equal(net.leader()?.status().sid, 0, 'setup: 0 leads');
    net.wipe(Z);
    net.manualSync.add(Z);
    // Only U records Z's first incarnation, and its answer is lost.
    net.drop = (e) =>
      (isIncReq(e, Z) && e.to !== U) || (e.from === U && e.to === Z && e.msg.t === 'rejoinResp');
    net.tickUntil(() => knownInc(net, U, Z) > 0, 60);
    const za = knownInc(net, U, Z);
    t.ok(za > 0, 'setup: U holds Za');
    net.restart(Z, 'power');
    net.manualSync.delete(Z);
    // Z rejoins with 0, 1, 2 while U is cut off.
    net.drop = (e) => e.from === U || e.to === U;
    t.ok(net.tickUntil(() => net.node(Z).voter, 300) <= 300, `seed ${seed}: Z rejoined`);
    net.drop = () => false;
    net.tick(5);
    net.crash(1);
    net.crash(2);
    const took = ticksToChoose(net);
    t.ok(took <= 40 * PERIOD, `seed ${seed}: {0, U, Z} choose (after ${took} ticks)`);
    t.same(net.violations, []);
  }
});

t.test('a reserved incarnation survives a restart as reserved, not as active', async (t) => {
  const net = new CoreNet([0, 1, 2], {}, 4);
  net.tick(15);
  net.wipe(2);
  // Step 1 is answered by both; the reservation reaches 0 only, so it is never activated.
  net.drop = (e) => e.msg.t === 'rejoinReq' && e.msg.inc > 0 && (e.to === 1 || e.msg.act === true);
  net.tickUntil(() => net.node(0).reserved[2] > 0, 60);
  const za = net.node(0).reserved[2];
  t.ok(za > 0);
  t.equal(net.node(0).incs[2], 0, 'reserved, not active');
  net.restart(0, 'kill');
  t.equal(net.node(0).reserved[2], za, 'the reservation is durable');
  t.equal(net.node(0).incs[2], 0, 'and still voids nothing');
});
