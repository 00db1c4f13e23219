// paxos-client transfer-leader SID (issue 11, etcd's move-leader): a real
// 3-node cluster with a client key. The leader hands leadership to a named
// follower and status shows it leading; an unknown sid, a frozen target and a
// client without the key are refused by name; a follower redirects; the answer
// is never larger than the request; a request without an address token starts
// nothing (a validate reply; the client library asks again with the token).
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

/**
 * One client socket (one address:port, as a real client's, so that the address
 * token a node gives it is good for its next datagrams): `ask` sends one datagram
 * to `port` and resolves with the first reply, or null after `ms`.
 */
async function asker(): Promise<{
  ask: (port: number, datagram: Buffer, ms?: number) => Promise<Buffer | null>;
  close: () => void;
}> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  let waiting: ((b: Buffer | null) => void) | null = null;
  sock.on('message', (buf) => waiting?.(buf));
  const ask = (port: number, datagram: Buffer, ms = 1000): Promise<Buffer | null> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => done(null), ms);
      const done = (b: Buffer | null): void => {
        clearTimeout(timer);
        waiting = null;
        resolve(b);
      };
      waiting = done;
      sock.send(datagram, port, '127.0.0.1');
    });
  return { ask, close: () => sock.close() };
}

/** One datagram to `port` from a fresh socket; the first reply, or null after `ms`. */
async function exchange(port: number, datagram: Buffer, ms = 1000): Promise<Buffer | null> {
  const a = await asker();
  const reply = await a.ask(port, datagram, ms);
  a.close();
  return reply;
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
      const request = (token?: Buffer): Buffer =>
        seal(
          Kind.ClientRequest,
          cluster,
          encodeRequest({ t: 'transfer', nonce: 77, to, token }),
          keys,
        );
      const sock = await asker();
      t.teardown(() => sock.close());
      // Without an address token the leader starts nothing: a validate reply, no
      // larger, naming request 0:77 (the client library sends it again with the token).
      const bare = request();
      const v = await sock.ask(port, bare);
      t.ok(v && v.length <= bare.length, `a validate reply, no larger (${v?.length} bytes)`);
      const vo = open(v!, Kind.ClientReply, cluster, keys);
      const validate = 'error' in vo ? vo : decodeReply(vo.body);
      t.match(validate, { t: 'validate', sid: from, ops: [{ cid: 0, seq: 77 }] }, 'names 0:77');
      t.equal(await c.waitLeader(2000), from, 'leadership did not move');
      const req = request((validate as { token: Buffer }).token);
      const ask = async (): Promise<{ code: string; message: string }> => {
        const reply = await sock.ask(port, req);
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
