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
// 3. Two findings, kept as `todo` assertions (the file passes; drop the todo once
//    fixed): TRANSFER-CACHE (a poll of a request that ended seconds ago starts it
//    again once another request ended at that node: one result is kept, not one
//    per request for 60 s) and TRANSFER-REPLAY (recorded transfer datagrams,
//    replayed, keep leadership moving and writes nearly stop).
import * as dgram from 'node:dgram';
import t from 'tap';
import { decodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, Kind, open, seal } from '../lib/wire/envelope';
import { Cluster, sleep, startLoad } from './helpers/cluster';

const CACHE = 'finding TRANSFER-CACHE: one result kept per node, not one per request';
const REPLAY = 'finding TRANSFER-REPLAY: replayed transfer datagrams keep leadership moving';

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
  const c = await Cluster.start(t, {
    n: 5,
    name: 'paxos-transfer-attack',
    clientKeyFile: Buffer.alloc(32, 9).toString('hex') + '\n',
  });
  const cluster = clusterTag(c.clusterId);
  const keys = c.clientKeys()!;
  const request = (nonce: number, to: number): Buffer =>
    seal(Kind.ClientRequest, cluster, encodeRequest({ t: 'transfer', nonce, to }), keys);
  const decode = (b: Buffer): { code: string; nonce: number; message: string } => {
    const o = open(b, Kind.ClientReply, cluster, keys);
    if ('error' in o) return { code: o.error, nonce: -1, message: '' };
    return decodeReply(o.body) as unknown as { code: string; nonce: number; message: string };
  };
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
    const leader = await c.waitLeader(5000);
    const to = c.sids.find((s) => s !== leader)!;
    const other = c.sids.find((s) => s !== leader && s !== to)!;
    const req = request(4242, to);
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

  /**
   * TRANSFER-CACHE. Schedule: at the leader, request N1 (to sid 9, not a member:
   * refused at once, no leadership change), polled until its result; request N2
   * (the same, another nonce), polled until its result; then N1's datagram again
   * (a poll of N1's client whose result replies were lost). Property: it hears
   * N1's result (the README: kept 60 s). Today the node keeps only the last
   * result: N1 runs again (in_progress). With a real sid and a leader that still
   * leads (N1's hand-off timed out), the poll starts a second hand-off.
   */
  await t.test('a poll of a request that ended hears its result after another ended', async (t) => {
    const leader = await c.waitLeader(5000);
    const port = c.servers[leader].clientPort;
    const ask = async (req: Buffer): Promise<string> => {
      const got = await burst(port, req, 1, 0, 200);
      return got.length === 1 ? decode(got[0]).code : `${got.length} answers`;
    };
    const n1 = request(5101, 9);
    const n2 = request(5102, 9);
    t.equal(await ask(n1), 'in_progress', 'N1: in_progress');
    t.equal(await ask(n1), 'unknown_sid', 'N1 polled: unknown_sid');
    t.equal(await ask(n2), 'in_progress', 'N2: in_progress');
    t.equal(await ask(n2), 'unknown_sid', 'N2 polled: unknown_sid');
    t.equal(await ask(n1), 'unknown_sid', 'N1 polled again: its result', { todo: CACHE });
  });

  /**
   * TRANSFER-REPLAY. Five recorded transfer datagrams (one naming each sid,
   * sealed with the client key as an operator's would be) are replayed to every
   * node every 10 ms for 2 s while 8 sessions write; the same load runs 2 s
   * before as the baseline. Property: the replays move leadership at most twice
   * and writes keep at least half their rate. Today (3 nodes, by hand: 2,646
   * datagrams in 3 s): 72 leader changes seen, 143 writes/s against 2,314 and
   * 2,984 before and after; every 50 ms: 53 changes, 751/s against 1,867.
   */
  await t.test('replayed transfer datagrams do not keep leadership moving', async (t) => {
    const recorded = c.sids.map((to) => request(6000 + to, to));
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const phase = async (replay: boolean): Promise<{ perSec: number; changes: number }> => {
      const client = c.client({ timeoutMs: 2000 });
      const load = startLoad(client, { sessions: 8, durationMs: 2000, prefix: replay ? 'r' : 'b' });
      const timer = replay
        ? setInterval(() => {
            for (const r of recorded)
              for (const s of c.servers) sock.send(r, s.clientPort, '127.0.0.1');
          }, 10)
        : null;
      let changes = 0;
      let last = await c.waitLeader(5000);
      const end = Date.now() + 2000;
      while (Date.now() < end) {
        const l = (await c.statuses()).find((r) => r.role === 'leader');
        if (l && l.sid !== last) {
          changes++;
          last = l.sid;
        }
        await sleep(20);
      }
      if (timer) clearInterval(timer);
      const res = await load.done;
      client.close();
      return { perSec: res.ackPerSec, changes };
    };
    const base = await phase(false);
    const hit = await phase(true);
    sock.close();
    t.ok(base.perSec > 100, `baseline: ${Math.round(base.perSec)} writes/s`);
    t.ok(hit.changes <= 2, `${hit.changes} leader changes seen under replay`, { todo: REPLAY });
    t.ok(
      hit.perSec >= base.perSec / 2,
      `under replay: ${Math.round(hit.perSec)} writes/s (baseline ${Math.round(base.perSec)})`,
      { todo: REPLAY },
    );
  });
  t.equal(c.unexpectedExits().length, 0, 'no node exited');
});
