// paxos-client transfer-leader SID (issue 11, etcd's move-leader): a real
// 3-node cluster with a client key. The leader hands leadership to a named
// follower and status shows it leading; an unknown sid, a frozen target and a
// client without the key are refused by name; a follower redirects; the answer
// is never larger than the request.
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Encoder } from 'cbor-x';
import t from 'tap';
import { decodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, Kind, open, seal } from '../lib/wire/envelope';
import { BIN, Cluster, runBin, waitFor, type RunResult } from './helpers/cluster';

const cbor = new Encoder({ useRecords: false, tagUint8Array: false });

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  ms: r.ms,
  stdout: r.stdout.slice(0, 600),
  stderr: r.stderr.slice(0, 600),
});

/** One datagram to `port`; the first reply, or null after `ms`. */
function exchange(port: number, datagram: Buffer, ms = 1000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, ms);
    sock.on('message', (buf) => {
      clearTimeout(timer);
      sock.close();
      resolve(buf);
    });
    sock.bind(0, '127.0.0.1', () => sock.send(datagram, port, '127.0.0.1'));
  });
}

t.test('transfer-leader', async (t) => {
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-ops-transfer',
    clientKeyFile: Buffer.alloc(32, 7).toString('hex') + '\n',
  });
  await c.waitWritable();
  const cli = (args: string[], config = c.clientConfigFile): Promise<RunResult> =>
    runBin(BIN.client, ['--config', config, '--timeout', '4000', ...args], { timeoutMs: 20_000 });

  const leader = await c.waitLeader();
  const target = c.sids.find((s) => s !== leader)!;

  await t.test('to a named follower: it leads, and status says so', async (t) => {
    const r = await cli(['transfer-leader', String(target)]);
    t.equal(r.code, 0, 'exit 0', show(r));
    t.match(
      r.stdout,
      new RegExp(`^leader is sid ${target}: handed leadership to ${target} in \\d+ ms`),
    );
    const started = Date.now();
    const now = await c.waitLeader(2000);
    t.equal(now, target, `status shows sid ${target} leading (${Date.now() - started} ms after)`);
    const st = await cli(['status', '--json']);
    const rows = JSON.parse(st.stdout) as { sid: number; role: string; leader: number }[];
    t.same(
      rows.map((x) => x.leader),
      c.sids.map(() => target),
      'every server names it in paxos-client status',
    );
    t.equal(rows.find((x) => x.sid === target)?.role, 'leader');
    t.equal(c.unexpectedExits().length, 0, 'no node exited');
  });

  await t.test(
    'asked at a follower: redirected to the leader; to the leader itself: ok',
    async (t) => {
      const follower = c.sids.find((s) => s !== target && s !== leader)!;
      const client = c.client({ leader: follower });
      const r = await client.transferLeader(leader);
      t.equal(r.code, 'ok', r.message);
      t.ok(r.redirects >= 1, `the follower redirected (${r.redirects})`);
      t.equal(await c.waitLeader(2000), leader, 'the first leader leads again');
      const same = await client.transferLeader(leader);
      t.equal(same.code, 'ok', 'a transfer to the leader is ok at once');
      t.match(same.message, /leads already/);
    },
  );

  await t.test('an unknown sid: exit 1, named', async (t) => {
    const r = await cli(['transfer-leader', '9']);
    t.equal(r.code, 1, 'exit 1', show(r));
    t.match(
      r.stderr,
      /transfer-leader refused: unknown_sid: sid 9 is not a member \(members: 0, 1, 2\)/,
    );
    const bad = await cli(['transfer-leader', 'x']);
    t.equal(bad.code, 2, 'not a sid: usage error (exit 2)', show(bad));
    t.equal(await c.waitLeader(2000), leader, 'leadership did not move');
  });

  await t.test('a frozen target: refused by name, the leader leads on', async (t) => {
    const frozen = c.sids.find((s) => s !== leader)!;
    c.stop(frozen);
    t.teardown(() => c.cont(frozen));
    const r = await cli(['transfer-leader', String(frozen)]);
    t.equal(r.code, 1, 'exit 1', show(r));
    t.match(r.stderr, /transfer-leader refused: (handoff_timeout|not_voter): sid \d/, show(r));
    c.cont(frozen);
    t.equal(await c.waitLeader(3000), leader, 'the leader still leads');
  });

  await t.test('a client without the key is refused, and nothing moves', async (t) => {
    const cc = JSON.parse(fs.readFileSync(c.clientConfigFile, 'utf8')) as Record<string, unknown>;
    delete cc.clientKeyFile;
    const nokey = path.join(c.dir, 'client-nokey.json');
    fs.writeFileSync(nokey, JSON.stringify(cc));
    const other = c.sids.find((s) => s !== leader)!;
    const r = await runBin(BIN.client, [
      '--config',
      nokey,
      '--timeout',
      '1000',
      'transfer-leader',
      String(other),
    ]);
    t.equal(r.code, 2, 'exit 2', show(r));
    t.match(r.stderr, /unauthenticated: .*0\/3 answered, 3 said auth/, show(r));
    t.equal(await c.waitLeader(2000), leader, 'leadership did not move');
  });

  await t.test('the answer is never larger than the request', async (t) => {
    const keys = c.clientKeys()!;
    const follower = c.sids.find((s) => s !== leader)!;
    const port = c.servers[follower].clientPort;
    const cluster = clusterTag(c.clusterId);
    const padded = seal(
      Kind.ClientRequest,
      cluster,
      encodeRequest({ t: 'transfer', nonce: 5, to: follower }),
      keys,
    );
    const reply = await exchange(port, padded);
    t.ok(reply, 'a padded request is answered');
    t.ok(reply!.length <= padded.length, `${reply!.length} <= ${padded.length} bytes`);
    const opened = open(reply!, Kind.ClientReply, cluster, keys);
    const r = 'error' in opened ? opened : decodeReply(opened.body);
    t.match(r, { t: 'transfer', nonce: 5, code: 'not_leader', leader }, 'not_leader, naming it');
    // A request without its padding: whatever comes back is no larger than it.
    const bare = cbor.encode([4, 6, follower, Buffer.alloc(0)]);
    const small = seal(Kind.ClientRequest, cluster, bare, keys);
    const back = await exchange(port, small, 500);
    t.ok(back === null || back.length <= small.length, `${back?.length ?? 0} <= ${small.length}`);
  });

  await t.test(
    'every datagram is answered at once: in_progress while it runs, then its result, also after the node follows',
    async (t) => {
      const keys = c.clientKeys()!;
      const cluster = clusterTag(c.clusterId);
      const from = await c.waitLeader(2000);
      const to = c.sids.find((s) => s !== from)!;
      const port = c.servers[from].clientPort;
      const req = seal(
        Kind.ClientRequest,
        cluster,
        encodeRequest({ t: 'transfer', nonce: 77, to }),
        keys,
      );
      const ask = async (): Promise<{ code: string; message: string }> => {
        const reply = await exchange(port, req);
        t.ok(reply && reply.length <= req.length, 'answered, no larger than the request');
        const opened = open(reply!, Kind.ClientReply, cluster, keys);
        if ('error' in opened) throw new Error(opened.error);
        return decodeReply(opened.body) as unknown as { code: string; message: string };
      };
      const first = await ask();
      t.equal(first.code, 'in_progress', `the first answer: ${first.message}`);
      let last = first;
      for (let i = 0; i < 200 && last.code === 'in_progress'; i++) {
        await new Promise((r) => setTimeout(r, 10));
        last = await ask();
      }
      t.equal(last.code, 'ok', last.message);
      t.match(last.message, new RegExp(`^handed leadership to ${to} in \\d+ ms`));
      t.equal(await c.waitLeader(2000), to, `sid ${to} leads`);
      const again = await ask();
      t.same(again, last, 'a later retransmission hears the same result from the old leader');
    },
  );
});
