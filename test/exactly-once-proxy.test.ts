// The real PaxosClient (lib/client.ts) against a real in-process cluster,
// through a UDP proxy that drops, delays and duplicates datagrams both ways
// (late copies up to 0.8 s), with sessionsMax 3 and seven sessions, so that
// sessions are evicted every few operations while late copies are in flight.
// Checked: no (cid, seq) takes effect twice on any replica, all replicas end in
// the same state, order logs agree, and the history is linearizable.
// The proxy's decisions are seeded (EO_SEED); timing is real, so a run is not
// replayable step by step, but each run is bounded (~15 s).
import t from 'tap';
import { checkLinearizable } from '../lib/check/linearizability';
import { compareLogs } from '../lib/logcmp';
import { ClientProxy, effects, InProcCluster, lossyPolicy } from './exactly-once-harness';
import { sleep, startHistoryLoad } from './helpers/cluster';

const SEED = Number(process.env.EO_SEED ?? 15);
const SESSIONS_MAX = 2;

t.test(
  `real client through a lossy, duplicating proxy, sessions evicted every few ops (seed ${SEED})`,
  async (t) => {
    const c = await InProcCluster.start({
      n: 3,
      name: 'eo-proxy',
      limits: () => ({ sessionsMax: SESSIONS_MAX }),
    });
    t.teardown(() => c.stop());
    await c.waitLeader(10_000);
    const proxy = new ClientProxy(c, c.clientKeys);
    await proxy.start();
    t.teardown(() => proxy.close());
    const stats: Record<string, number> = {};
    proxy.policy = lossyPolicy(proxy, SEED, stats);
    // Client 1 retransmits late (1.5 s): answers to late copies then reach it on
    // a request's first attempt, where "expired" looked like "never ran".
    const clients = [20, 1500].map((retryMs) =>
      c.client({ ports: proxy.ports, timeoutMs: 4000, retryMs }),
    );
    t.teardown(() => clients.forEach((x) => x.close()));
    const loads = clients.map((cl, i) =>
      startHistoryLoad(cl, {
        sessions: i === 0 ? 3 : 5,
        durationMs: 10_000,
        totalOps: 400,
        keys: 3,
        prefix: 'p/',
        valuePrefix: `c${i}`,
      }),
    );
    const results = await Promise.all(loads.map((l) => l.done));
    // Let late copies still in the proxy arrive, then stop it.
    await sleep(1000);
    proxy.close();
    const applied = await c.waitSameApplied(10_000);

    const history = results.flatMap((r, i) =>
      r.history.map((e) => ({ ...e, client: `c${i}-${e.client}` })),
    );
    const acked = results.reduce((n, r) => n + r.acked, 0);
    const unknown = results.reduce((n, r) => n + r.unknown, 0);
    const failed = results.reduce((n, r) => n + r.failed, 0);
    const lines = c.orderLog(0);
    const expired = lines.filter((l) =>
      / session expired( \[(?:v\d+:)?[0-9a-f]{16}\])?$/.test(l),
    ).length;
    const registered = lines.filter((l) =>
      / register -> \d+( \[(?:v\d+:)?[0-9a-f]{16}\])?$/.test(l),
    ).length;
    t.comment(
      `proxy ${JSON.stringify(stats)}; ${history.length} ops: ${acked} acked, ${unknown} unknown, ${failed} failed ${JSON.stringify(results.flatMap((r) => r.failures).slice(0, 3))}; ${registered} sessions registered, ${expired} requests refused as session expired; applied through slot ${applied}`,
    );
    t.ok(acked > 100, 'the load made progress');
    t.ok(
      (stats.upDuplicated ?? 0) > 0 && (stats.downDropped ?? 0) > 0,
      'the proxy duplicated and dropped',
    );
    t.ok(registered > 3 * SESSIONS_MAX, `sessions were evicted and re-registered (${registered})`);

    for (const sid of c.nodes.keys()) {
      const seen = new Map<string, number>();
      for (const e of effects(c.orderLog(sid))) {
        const k = `${e.cid}:${e.seq}`;
        seen.set(k, (seen.get(k) ?? 0) + 1);
      }
      const twice = [...seen].filter(([, n]) => n > 1);
      t.same(twice, [], `sid ${sid}: no (cid, seq) took effect twice (${seen.size} commands)`);
    }
    // Every put and cas writes a value unique in the run: a value written twice
    // means one operation ran twice, whatever (cid, seq) it was sent under (a
    // client that re-sends a write under a new session).
    for (const sid of c.nodes.keys()) {
      const writes = new Map<string, number>();
      for (const e of effects(c.orderLog(sid))) {
        const m = /^(?:put "[^"]*" ("[^"]*")|cas "[^"]*" \S+ ("[^"]*") ok)$/.exec(e.text);
        const v = m?.[1] ?? m?.[2];
        if (v) writes.set(v, (writes.get(v) ?? 0) + 1);
      }
      const twice = [...writes].filter(([, n]) => n > 1);
      t.same(twice, [], `sid ${sid}: no operation wrote its value twice (${writes.size} writes)`);
    }
    const snaps = [...c.nodes.values()].map((n) => Buffer.from(n.sm.snapshot()).toString('hex'));
    t.ok(
      snaps.every((s) => s === snaps[0]),
      'all replicas are in the same state (snapshot bytes)',
    );
    const cmp = compareLogs([0, 1, 2].map((s) => c.nodes.get(s)!.orderLog.file));
    t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
    const lin = checkLinearizable(history);
    t.ok(lin.ok, `history of ${history.length} operations is linearizable: ${lin.message}`);
  },
);
