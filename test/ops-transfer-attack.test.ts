// Fifth adversarial review on real processes (5 nodes, no client key), two
// properties of transfer-leader:
// 1. (issue 9, H2) a hand-off target frozen (SIGSTOP) while the hand-off runs,
//    resumed after the leader gave it up and answered "handoff_timeout: the
//    leader leads on", deposes nobody. ops-transfer checks it with 3 nodes; with
//    5, about 34 datagrams park at the target ahead of the first heartbeat that
//    voids the copies (the daemon reads 32 per readable event before running an
//    overdue timer, but a stop interrupts epoll_wait, and the tick then runs
//    before any read).
// 2. (d1c4c7f) every transfer request datagram gets exactly one answer, no
//    larger than it: in_progress while the hand-off runs, then its result; a
//    follower answers not_leader to each.
import * as dgram from 'node:dgram';
import t from 'tap';
import { decodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, Keyring, Kind, open, seal } from '../lib/wire/envelope';
import { Cluster, sleep } from './helpers/cluster';

/** Send `datagram` `count` times, `gapMs` apart, from one socket; every reply within `ms`. */
async function burst(
  port: number,
  datagram: Buffer,
  count: number,
  gapMs: number,
  ms: number,
): Promise<Buffer[]> {
  const sock = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  sock.on('message', (buf) => got.push(buf));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  for (let i = 0; i < count; i++) {
    sock.send(datagram, port, '127.0.0.1');
    await sleep(gapMs);
  }
  await sleep(ms);
  sock.close();
  return got;
}

t.test('transfer-leader on 5 nodes: frozen target, one answer per datagram', async (t) => {
  const c = await Cluster.start(t, { n: 5, name: 'paxos-transfer-attack' });
  await c.waitWritable();

  await t.test('a frozen target, resumed after the refusal, deposes nobody', async (t) => {
    for (let round = 1; round <= 3; round++) {
      const leader = await c.waitLeader(5000);
      const target = c.sids.find((s) => s !== leader && s !== (leader + 1) % 5)!;
      const client = c.client({ leader, timeoutMs: 3000 });
      c.stop(target);
      const r = await client.transferLeader(target);
      client.close();
      t.not(r.code, 'ok', `round ${round}: refused (${r.code}: ${r.message})`);
      await sleep(1000);
      c.cont(target);
      await sleep(1500);
      const now = await c.waitLeader(5000);
      t.equal(now, leader, `round ${round}: sid ${leader} still leads after sid ${target} resumed`);
    }
  });

  await t.test('each request datagram: exactly one answer, no larger', async (t) => {
    const cluster = clusterTag(c.clusterId);
    const keys = new Keyring([]);
    const leader = await c.waitLeader(5000);
    const to = c.sids.find((s) => s !== leader)!;
    const other = c.sids.find((s) => s !== leader && s !== to)!;
    const req = seal(
      Kind.ClientRequest,
      cluster,
      encodeRequest({ t: 'transfer', nonce: 4242, to }),
      keys,
    );
    const decode = (b: Buffer): { code: string; nonce: number } => {
      const o = open(b, Kind.ClientReply, cluster, keys);
      if ('error' in o) return { code: o.error, nonce: -1 };
      return decodeReply(o.body) as unknown as { code: string; nonce: number };
    };
    // 10 at a follower: 10 not_leader.
    const f = await burst(c.servers[other].clientPort, req, 10, 5, 300);
    t.equal(f.length, 10, `a follower: ${f.length} answers to 10 datagrams`);
    t.ok(
      f.every((b) => b.length <= req.length && decode(b).code === 'not_leader'),
      'each not_leader, no larger than the request',
    );
    // 40 at the leader, 20 ms apart (800 ms: past the hand-off): in_progress, then the result.
    const l = await burst(c.servers[leader].clientPort, req, 40, 20, 500);
    const codes = l.map((b) => decode(b).code);
    t.equal(l.length, 40, `the leader: ${l.length} answers to 40 datagrams (${codes.join(' ')})`);
    t.ok(
      l.every((b) => b.length <= req.length),
      `each no larger than the request (${req.length} bytes)`,
    );
    t.equal(codes[0], 'in_progress', 'the first: in_progress');
    t.equal(codes[codes.length - 1], 'ok', 'the last: ok');
    t.ok(
      l.every((b) => decode(b).nonce === 4242),
      'every answer names the request',
    );
    t.equal(await c.waitLeader(3000), to, `sid ${to} leads`);
  });
  t.equal(c.unexpectedExits().length, 0, 'no node exited');
});
