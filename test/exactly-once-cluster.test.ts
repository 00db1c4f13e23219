// Exactly-once on a real in-process cluster (issue 15): one test per failure
// that made a request run twice or made replicas disagree, each built from what
// UDP does (duplicates, late copies, lost replies) or what an operator does
// (config files that differ between nodes), driving the real PaxosClient.
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { PaxosClientError } from '../lib/client';
import { ClientProxy, effects, InProcCluster, type SeenRequest } from './exactly-once-harness';
import { sleep } from './helpers/cluster';

/** The order log of `sid`, as the commands that took effect on key `key`. */
function effectsOn(c: InProcCluster, sid: number, key: string): string[] {
  return effects(c.orderLog(sid))
    .filter((e) => e.text.includes(JSON.stringify(key)))
    .map((e) => e.text);
}

async function threeNodes(
  t: Test,
  name: string,
  limits: (sid: number) => Record<string, number>,
  clientKey?: Buffer,
): Promise<InProcCluster> {
  const c = await InProcCluster.start({ n: 3, name, limits, clientKey });
  t.teardown(() => c.stop());
  const leader = await c.waitLeader(10_000);
  t.equal(leader, 0, 'sid 0 leads (bully order), as the scenario needs');
  return c;
}

t.test(
  'a duplicated, delayed cas answered session_expired after an eviction is not re-run by the client',
  async (t) => {
    // sessionsMax 2: two other sessions evict the cas's session.
    const c = await threeNodes(t, 'eo-cas', () => ({ sessionsMax: 2 }));
    const proxy = new ClientProxy(c, c.clientKeys);
    await proxy.start();
    t.teardown(() => proxy.close());
    // The client retries only after 3 s: the late copy's answer arrives first,
    // on its first attempt (what the old client took as "never ran").
    const x = c.client({ ports: proxy.ports, retryMs: 3000, timeoutMs: 6000 });
    const others = c.client();
    t.teardown(() => (x.close(), others.close()));
    let casRequest: string | null = null;
    let dropReplies = false;
    proxy.policy = {
      up: (r: SeenRequest) => {
        const cas = r.ops.find((o) => o.kind === 'cas');
        if (!cas) return 'pass';
        const id = `${cas.cid}:${cas.seq}`;
        if (casRequest === null) {
          // UDP duplicated it: one copy runs, the other is delivered late.
          casRequest = id;
          proxy.held.push(r);
          dropReplies = true;
          return 'pass';
        }
        // Retransmissions of that request are lost; anything else passes (a
        // client that re-sends the cas as a new request gets it through).
        return id === casRequest ? 'drop' : 'pass';
      },
      // The answer to the copy that ran is lost.
      down: () => (dropReplies ? 'drop' : 'pass'),
    };
    const sx = x.session();
    await sx.put('warm', 'up'); // opens sx's session (if sessions are registered)
    const cas = sx.cas('k', null, 'x').then(
      (r) => ({ r }),
      (e: Error) => ({ e }),
    );
    // Wait until the cas ran, then let other clients evict its session and delete k.
    for (let i = 0; i < 200 && effectsOn(c, 0, 'k').length === 0; i++) await sleep(10);
    t.same(effectsOn(c, 0, 'k'), ['cas "k" <none> "x" ok'], 'the first copy ran');
    const a = others.session();
    const b = others.session();
    await a.put('a', '1');
    await b.put('b', '1');
    t.match(await a.del('k'), { ok: true }, 'another client deletes k');
    // The late copy arrives now; its answer reaches the client.
    dropReplies = false;
    t.equal(proxy.held.length, 1, 'one late copy held');
    proxy.held[0].send();
    const out = await cas;
    t.ok('e' in out, 'the client does not report a result for the cas');
    if ('e' in out) {
      t.ok(out.e instanceof PaxosClientError && out.e.code === 'unknown', 'outcome unknown');
      t.match(out.e.message, /\d+:\d+/, 'naming the request cid:seq');
    }
    await sleep(200);
    t.match(await a.get('k'), { ok: true, value: null }, 'k stays deleted');
    await c.waitSameApplied(5000);
    for (const sid of [0, 1, 2])
      t.same(
        effectsOn(c, sid, 'k'),
        ['cas "k" <none> "x" ok', 'del "k"'],
        `sid ${sid}: the cas ran once`,
      );
  },
);

/**
 * Capture the datagram of a session's first write, let other sessions evict
 * the session and overwrite the key, then deliver the captured bytes again.
 */
async function replayFirstWrite(
  t: Test,
  name: string,
  clientKey: Buffer | undefined,
): Promise<void> {
  const c = await threeNodes(t, name, () => ({ sessionsMax: 2 }), clientKey);
  const proxy = new ClientProxy(c, c.clientKeys);
  await proxy.start();
  t.teardown(() => proxy.close());
  const x = c.client({ ports: proxy.ports });
  const others = c.client();
  t.teardown(() => (x.close(), others.close()));
  const captured: SeenRequest[] = [];
  proxy.policy = {
    up: (r) => {
      captured.push(r);
      return 'pass';
    },
  };
  const sx = x.session();
  t.match(await sx.put('k', 'x1'), { ok: true }, 'first write of a session acknowledged');
  // (Retransmissions, if the answer was slow, are copies of the same request.)
  const first = captured.filter((r) => r.ops.some((o) => o.kind === 'put'));
  t.ok(first.length >= 1, 'its datagram was captured');
  t.same(
    new Set(first.map((r) => `${r.ops[0].cid}:${r.ops[0].seq}`)).size,
    1,
    'one request (cid:seq)',
  );
  t.equal(first[0].ops[0].seq, 1, 'it is the session’s seq 1');
  // Newer sessions push it out of the table; one of them overwrites k.
  for (let i = 0; i < 3; i++) t.match(await others.session().put(`o${i}`, 'v'), { ok: true });
  t.match(await others.session().put('k', 'y'), { ok: true }, 'k overwritten');
  await c.waitSameApplied(5000);
  // Every captured datagram again (the authentic bytes; with a client key they
  // pass the HMAC), a few times, to every server.
  for (let round = 0; round < 3; round++) {
    for (const r of captured) r.send();
    await sleep(100);
  }
  await sleep(300);
  t.match(await others.get('k'), { ok: true, value: 'y' }, 'k keeps the newer value');
  await c.waitSameApplied(5000);
  for (const sid of [0, 1, 2]) {
    const puts = effectsOn(c, sid, 'k').filter((e) => e.includes('"x1"'));
    t.equal(puts.length, 1, `sid ${sid}: the captured put ran once`);
  }
}

t.test('a late copy of a session’s first request after its eviction is refused', (t) =>
  replayFirstWrite(t, 'eo-late', undefined),
);

t.test(
  'a captured, authentic (HMAC) seq-1 request replayed after its session was evicted is refused',
  (t) => replayFirstWrite(t, 'eo-hmac', randomBytes(32)),
);

t.test(
  'mixed local limits: no acknowledged write is lost across a failover, and status shows the mismatch',
  async (t) => {
    // As during a rolling config change: sid 0 has the larger limits.
    const c = await threeNodes(t, 'eo-mixed', (sid) =>
      sid === 0
        ? { sessionsMax: 100, valueBytesMax: 32768 }
        : { sessionsMax: 2, valueBytesMax: 16384 },
    );
    const client = c.client({ timeoutMs: 8000 });
    t.teardown(() => client.close());
    const big = 'b'.repeat(20_000);
    const acked: [string, string][] = [];
    const a = client.session();
    const put = async (s: ReturnType<typeof client.session>, k: string, v: string) => {
      const r = await s.put(k, v);
      t.match(r, { ok: true }, `put ${k} (${v.length} bytes) acknowledged`);
      if (r.ok) acked.push([k, v]);
    };
    await put(a, 'big', big);
    await put(a, 'k2', 'a1');
    // Three other sessions: with sessionsMax 2, a's session would be evicted on
    // sids 1-2 but not on sid 0, if each node used its own file's limit.
    for (let i = 0; i < 3; i++) await put(client.session(), `o${i}`, 'v');
    await put(a, 'k2', 'a2');
    await c.waitSameApplied(5000);
    const st = (sid: number) => c.nodes.get(sid)!.status() as unknown as Record<string, unknown>;
    t.equal(st(0).limitsMismatch, null, 'sid 0 agrees with the cluster');
    for (const sid of [1, 2]) {
      t.match(
        st(sid).limitsMismatch,
        /sessionsMax 2 .*valueBytesMax 16384/,
        `sid ${sid} status shows the mismatch`,
      );
      t.ok(
        c.logs.get(sid)!.some((l) => /limits differ/.test(l)),
        `sid ${sid} said so in its log`,
      );
    }
    const statusOverWire = await client.status(1);
    t.match(statusOverWire?.limitsMismatch, /sessionsMax/, 'the status reply carries it');
    // The leader dies; the others take over.
    await c.stopNode(0);
    const next = await c.waitLeader(10_000);
    t.not(next, 0, `sid ${next} leads`);
    for (const [k, v] of acked.filter(([k]) => k !== 'k2'))
      t.match(await client.get(k), { ok: true, value: v }, `${k} reads back after failover`);
    t.match(
      await client.get('k2'),
      { ok: true, value: 'a2' },
      'k2 holds the last acknowledged write',
    );
    // A restarted node says so at start, from its own recovered state.
    await c.stopNode(2);
    c.logs.get(2)!.length = 0;
    await c.startNode(2, false);
    t.ok(
      c.logs.get(2)!.some((l) => /limits differ/.test(l)),
      'sid 2 says so again right at its restart',
    );
    await c.waitLeader(10_000);
    // The cluster's limits still hold under the new leader.
    t.match(
      await client.session().put('big2', big),
      { ok: true },
      'a 20,000-byte put is admitted by the new leader',
    );
  },
);
