// Divergence detection on a real in-process 3-node cluster (issue 12): one
// follower is made to apply a different command through a test-only fault hook
// (its state machine object, reachable only from inside this process, never
// from the wire). Within 2 s it logs the divergence at ERROR naming the slot
// and both hashes, status says DIVERGED, it stops answering clients, and the
// other two keep serving.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { PaxosClient } from '../lib/client';
import { PaxosNode, type LogLevel } from '../lib/daemon';
import { clientConfigFromNode, parseNodeConfig, type NodeConfig } from '../lib/io/config';
import { compareLogs } from '../lib/logcmp';
import { encodeOp } from '../lib/sm/kv';
import { freeUdpPorts, sleep } from './helpers/cluster';

const N = 3;
const VICTIM = 2;

t.test('a follower that applies a different command stops serving; the others go on', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diverge-'));
  const ports = await freeUdpPorts(2 * N);
  const servers = Array.from({ length: N }, (_, sid) => ({
    sid,
    host: '127.0.0.1',
    peerPort: ports[2 * sid],
    clientPort: ports[2 * sid + 1],
  }));
  const configs: NodeConfig[] = servers.map((_, sid) =>
    parseNodeConfig(`inline-${sid}`, {
      clusterId: 'diverge',
      servers,
      storage: { sync: false },
      dataDir: path.join(dir, 'data'),
      logDir: path.join(dir, 'logs'),
    }),
  );
  const logs = new Map<number, { at: number; level: LogLevel; line: string }[]>();
  const nodes = await Promise.all(
    configs.map((config, sid) => {
      logs.set(sid, []);
      return PaxosNode.start({
        config,
        sid,
        init: true,
        seed: 77 + sid,
        log: (line, level = 'INFO') => logs.get(sid)!.push({ at: Date.now(), level, line }),
      });
    }),
  );
  const clients: PaxosClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  /** A client that knows only the servers `sids`. */
  const client = (sids: number[], timeoutMs = 3000): PaxosClient => {
    const cfg = clientConfigFromNode(configs[0]);
    const c = new PaxosClient({
      servers: cfg.servers.filter((s) => sids.includes(s.sid)),
      leader: sids[0],
      timeoutMs,
      retryMs: 50,
      clusterId: cfg.clusterId,
    });
    clients.push(c);
    return c;
  };
  const waitFor = async (what: string, ms: number, ok: () => boolean): Promise<void> => {
    for (const until = Date.now() + ms; Date.now() < until; await sleep(10)) if (ok()) return;
    throw new Error(`${what}: not within ${ms} ms`);
  };
  await waitFor('a leader', 10_000, () => nodes.some((n) => n.status().role === 'leader'));
  const leader = nodes.findIndex((n) => n.status().role === 'leader');
  t.not(leader, VICTIM, `sid ${leader} leads; sid ${VICTIM} is a follower`);

  const s = client([0, 1, 2]).session();
  for (let i = 0; i < 5; i++) await s.put(`k${i}`, 'v'.repeat(100));
  await waitFor('same applied', 5000, () =>
    nodes.every((n) => n.status().applied === nodes[0].status().applied),
  );
  t.equal(nodes[VICTIM].status().diverged, null, 'no divergence before the fault');
  t.ok(
    [...logs.values()].flat().every((l) => !/DIVERGED/.test(l.line)),
    'no divergence logged before the fault',
  );

  // The fault hook: the victim's next slot applies its commands with the
  // value of every put replaced (a corrupted apply).
  const sm = nodes[VICTIM].sm;
  const apply = sm.apply.bind(sm);
  let faultSlot = -1;
  sm.apply = (slot, cmds) => {
    if (faultSlot >= 0 || cmds.length === 0) return apply(slot, cmds);
    faultSlot = slot;
    const bad = cmds.map((c) => ({
      ...c,
      op: encodeOp({ kind: 'put', key: 'x', value: 'WRONG' }),
    }));
    return apply(slot, bad);
  };
  const faultAt = Date.now();
  await s.put('x', 'right');
  await waitFor('the fault applied', 2000, () => faultSlot > 0);
  t.equal(sm.data.get('x'), 'WRONG', `sid ${VICTIM} applied the wrong value at slot ${faultSlot}`);

  // Within 2 s: the ERROR line naming the slot and both hashes.
  const errorLine = () =>
    logs.get(VICTIM)!.find((l) => l.level === 'ERROR' && /^sid \d+: DIVERGED at slot/.test(l.line));
  await waitFor('the victim logs the divergence', 2000, () => errorLine() !== undefined);
  const e = errorLine()!;
  t.comment(`detected ${e.at - faultAt} ms after the faulty write was sent: ${e.line}`);
  t.ok(e.at - faultAt <= 2000, 'within 2 s');
  t.match(
    e.line,
    /DIVERGED at slot (\d+): state hash here [0-9a-f]{64}, leader \d has [0-9a-f]{64}/,
  );
  const slot = Number(/at slot (\d+)/.exec(e.line)![1]);
  t.ok(
    slot >= faultSlot,
    `names slot ${slot} (the fault was at ${faultSlot}; a later heartbeat's slot shows it too)`,
  );

  // status, in process and over the client protocol.
  t.match(nodes[VICTIM].status().diverged, /^DIVERGED at slot \d+$/);
  const st = await client([VICTIM]).status(VICTIM, 1000);
  t.match(st?.diverged, /^DIVERGED at slot \d+$/, 'status over the wire shows it');

  // The victim answers no client: a get sent only to it gets no answer.
  const only = client([VICTIM], 600).session();
  const r = await only.get('x').then(
    (v) => ({ v }),
    (err: Error) => ({ err }),
  );
  t.ok(
    'err' in r,
    `the diverged node does not answer a read (${'err' in r ? r.err.message : 'answered'})`,
  );
  t.ok(
    (nodes[VICTIM].counters.dropped.client_diverged ?? 0) > 0,
    'its client datagrams are dropped',
  );

  // The others keep serving, with the right value.
  const good = client([0, 1].filter((x) => x !== VICTIM)).session();
  t.match(
    await good.get('x'),
    { ok: true, value: 'right' },
    'the others answer with the right value',
  );
  await good.put('after', 'yes');
  t.match(await good.get('after'), { ok: true, value: 'yes' }, 'and keep taking writes');
  for (const sid of [0, 1])
    t.equal(nodes[sid].status().diverged, null, `sid ${sid} did not stop itself`);
  t.match(
    nodes[leader].status().divergedPeers ?? '',
    new RegExp(`\\b${VICTIM}@\\d+`),
    'the leader lists the bad follower',
  );
  t.ok(
    logs.get(leader)!.some((l) => l.level === 'ERROR' && /peer 2 DIVERGED at slot/.test(l.line)),
    'and logged it at ERROR',
  );

  // The order logs show it too: paxos-logcmp names the slot.
  await sleep(100);
  const cmp = compareLogs(nodes.map((n) => n.orderLog.file));
  t.notOk(cmp.ok, 'paxos-logcmp finds the divergence');
  t.match(cmp.message, new RegExp(`first divergence at ${faultSlot}\\.0 \\(slot ${faultSlot}\\)`));
});
