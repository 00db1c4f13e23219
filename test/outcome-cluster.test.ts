// Outcome lookup on a real in-process 3-node cluster (issue 12): a write whose
// replies are lost (the client times out with OUTCOME UNKNOWN) is found applied
// with its first answer; a write that never reached the cluster is found not
// applied, and its late copies can no longer run; once the session is evicted
// the answer is unknown. Asked through the library (PaxosClient.outcome) and
// the CLI (paxos-client outcome CID:SEQ).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { PaxosClientError } from '../lib/client';
import { ClientProxy, InProcCluster } from './exactly-once-harness';
import { BIN, sleep } from './helpers/cluster';

/** The request id (cid:seq) an OUTCOME UNKNOWN error names. */
async function unknownRequest(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  if (!(e instanceof PaxosClientError) || e.code !== 'unknown' || !e.request)
    throw new Error(`expected OUTCOME UNKNOWN, got ${String(e)}`);
  return e.request;
}

t.test('outcome: a lost reply, a request that never arrived, an evicted session', async (t) => {
  const c = await InProcCluster.start({
    n: 3,
    name: 'outcome',
    limits: () => ({ sessionsMax: 4 }),
  });
  t.teardown(() => c.stop());
  await c.waitLeader(10_000);
  const proxy = new ClientProxy(c, c.clientKeys);
  await proxy.start();
  t.teardown(() => proxy.close());
  const x = c.client({ ports: proxy.ports, timeoutMs: 800 });
  const y = c.client();
  t.teardown(() => (x.close(), y.close()));
  const cfgFile = path.join(c.dir, 'client.json');
  fs.writeFileSync(
    cfgFile,
    JSON.stringify({
      clusterId: 'outcome',
      servers: c.configs[0].servers.map(({ sid, host, clientPort }) => ({ sid, host, clientPort })),
      leader: 0,
      timeoutMs: 3000,
      retryMs: 50,
    }),
  );
  const cli = (args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((resolve) =>
      execFile(BIN.client, ['--config', cfgFile, ...args], (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code) : 0, out: stdout + stderr }),
      ),
    );

  // 1. The write runs; every answer to it is lost.
  const s1 = x.session();
  await s1.put('warm', 'up'); // opens the session
  let dropReplies = true;
  proxy.policy = { down: () => (dropReplies ? 'drop' : 'pass') };
  const lost = await unknownRequest(s1.put('k', 'first'));
  dropReplies = false;
  t.match(await y.get('k'), { ok: true, value: 'first' }, 'it ran');
  t.same(
    await y.outcome(lost),
    { request: lost, outcome: 'applied', result: { ok: true } },
    `${lost}: applied, with its first answer`,
  );
  const a = await cli(['outcome', lost]);
  t.equal(a.code, 0, `CLI: exit 0 (${a.out.trim()})`);
  t.match(a.out, new RegExp(`APPLIED ${lost}: first answer \\{"ok":true\\}`));

  // 2. The write never reaches the cluster (the proxy holds it), then arrives late.
  const s2 = x.session();
  await s2.put('warm2', 'up');
  proxy.policy = { up: (r) => (r.ops.some((o) => o.kind === 'put') ? 'hold' : 'pass') };
  const never = await unknownRequest(s2.put('k2', 'late'));
  proxy.policy = {};
  t.same(
    await y.outcome(never),
    { request: never, outcome: 'not_applied' },
    `${never}: not applied`,
  );
  t.ok(proxy.held.length > 0, `its ${proxy.held.length} datagrams were held`);
  for (const h of proxy.held) h.send(); // the late copies arrive now
  await sleep(300);
  t.match(await y.get('k2'), { ok: true, value: null }, 'a late copy no longer runs');
  const n = await cli(['outcome', never]);
  t.equal(n.code, 1, `CLI: exit 1 (${n.out.trim()})`);
  t.match(n.out, new RegExp(`NOT APPLIED ${never}`));

  // 3. sessionsMax 4: new sessions evict the first; the table no longer remembers.
  for (let i = 0; i < 5; i++) await y.session().put(`e${i}`, 'x');
  const ev = await y.outcome(lost);
  t.match(ev, { request: lost, outcome: 'unknown', why: /no longer in the exactly-once table/ });
  const u = await cli(['outcome', lost]);
  t.equal(u.code, 3, `CLI: exit 3 (${u.out.trim()})`);
  t.match(u.out, new RegExp(`UNKNOWN ${lost}`));
  const bad = await cli(['outcome', 'nonsense']);
  t.equal(bad.code, 2, 'a malformed request id: usage error');
});
