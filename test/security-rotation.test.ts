import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import t from 'tap';
import { checkLinearizable } from '../lib/check/linearizability';
import { PaxosClientError } from '../lib/client';
import { compareLogs } from '../lib/logcmp';
import { encodeOp } from '../lib/sm/kv';
import { decodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, HEADER_BYTES, Keyring, Kind, NO_KEYS, open, seal } from '../lib/wire/envelope';
import {
  Cluster,
  sleep,
  startHistoryLoad,
  startLoad,
  verifyReadable,
  waitFor,
} from './helpers/cluster';

/** The test object tap hands to a subtest callback. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

// Peer key rotation under load, one node at a time (SIGTERM, then a restart
// without --init), and client authentication.

const hex = (): string => randomBytes(32).toString('hex');

/**
 * Run `steps` (key-file contents per phase) over every node one at a time
 * under load; returns what the load saw.
 */
async function rotate(t: Test, phases: { label: string; contents: string }[], initial: string) {
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-sec-rotation',
    keyFile: initial,
    env: { DEBUG: 'paxos:drop' },
    clientTimeoutMs: 8000,
  });
  await c.waitLeader(15_000);
  await c.waitWritable(15_000);
  const client = c.client({ timeoutMs: 8000 });
  const hist = startHistoryLoad(client, {
    sessions: 5,
    durationMs: 120_000,
    keys: 5,
    prefix: 'lin/',
    pauseMs: 2,
  });
  const load = startLoad(client, { sessions: 3, durationMs: 120_000, prefix: 'u/' });
  await sleep(800);

  const steps: string[] = [];
  for (const phase of phases) {
    for (const sid of c.sids) {
      const before = Math.max(0, ...(await c.statuses()).map((r) => r.chosen));
      const at = Date.now();
      c.setKeyFile(sid, phase.contents);
      await c.kill(sid, 'SIGTERM');
      await c.restart(sid);
      // Back in the game: it follows a leader (or leads) and has caught up
      // with where the cluster was when it went down.
      await waitFor(
        `sid ${sid} to rejoin after the key change (${phase.label})`,
        async () => {
          const s = await c.status(sid);
          return !!s && s.leader !== null && s.applied >= before;
        },
        20_000,
        50,
      );
      steps.push(`${phase.label} sid ${sid}: ${Date.now() - at} ms`);
      await sleep(300);
    }
  }
  await sleep(500);
  hist.stop();
  load.stop();
  const [h, r] = await Promise.all([hist.done, load.done]);
  t.comment(`restarts: ${steps.join('; ')}`);

  const drops: Record<string, number> = Object.create(null);
  for (const sid of c.sids)
    for (const [k, v] of Object.entries(c.dropCounts(sid))) drops[k] = (drops[k] ?? 0) + v;
  t.comment(`peer drops during the rotation: ${JSON.stringify(drops)}`);
  t.comment(
    `load: ${h.acked} history ops answered, ${h.unknown} unknown, ${h.failed} failed; ${r.acked.length} unique puts acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.equal(h.failed, 0, 'no history operation failed', { failures: h.failures });
  t.equal(r.failed.length, 0, 'no unique put failed', { failed: r.failed.slice(0, 5) });
  t.ok(h.acked > 100 && r.acked.length > 100, 'the load made progress');

  const lin = checkLinearizable(h.history);
  t.ok(lin.ok, `history of ${h.history.length} operations is linearizable: ${lin.message}`);
  const read = await verifyReadable(client, r, 8);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    e: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, 'every acked write reads back', {
    m: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written');
  const applied = await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.comment(`applied through slot ${applied}; ${cmp.message}`);
  t.same(c.unexpectedExits(), [], 'no node exited unexpectedly');
  return { c, h, r, drops };
}

t.test('peer key rotation A -> B, one node at a time, under load', async (t) => {
  const A = hex();
  const B = hex();
  // Accept B everywhere first, then sign with B everywhere, then drop A: at no
  // time does any node send with a key another node does not accept.
  const { h, r, drops } = await rotate(
    t,
    [
      { label: 'A+B', contents: `${A}\n${B}\n` },
      { label: 'B+A', contents: `${B}\n${A}\n` },
      { label: 'B', contents: `${B}\n` },
    ],
    `${A}\n`,
  );
  t.equal(drops.peer_bad_tag ?? 0, 0, 'no peer datagram was refused for its key');
  t.equal(h.unknown + r.unknown.length, 0, 'not even an unknown outcome', {
    unknown: h.unknown + r.unknown.length,
  });
});

t.test('peer key rotation in two steps ("B\\nA" node by node, then "B")', async (t) => {
  // The order the runbook might suggest: a node that signs with B while the
  // others accept only A is cut off one way until they catch up. A majority
  // always still talks both ways, so nothing may fail; unknowns are reported.
  const A = hex();
  const B = hex();
  const { h, r, drops } = await rotate(
    t,
    [
      { label: 'B+A', contents: `${B}\n${A}\n` },
      { label: 'B', contents: `${B}\n` },
    ],
    `${A}\n`,
  );
  t.comment(
    `two-step rotation: ${drops.peer_bad_tag ?? 0} peer datagrams refused for their key, ${h.unknown + r.unknown.length} unknown outcomes`,
  );
});

t.test('client authentication', async (t) => {
  const K = randomBytes(32);
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-sec-clientauth',
    clientKeyFile: K.toString('hex') + '\n',
    env: { DEBUG: 'paxos:drop' },
  });
  await c.waitLeader(15_000);
  await c.waitWritable(15_000);

  // A client with the key works.
  const good = c.client();
  const put = await good.put('auth/k', 'v1');
  t.ok(put.ok, 'a client with the key can write');
  const got = await good.get('auth/k');
  t.equal(got.value, 'v1', 'and read');

  // A client without the key, and one with a wrong key, get nothing done.
  for (const [label, keys] of [
    ['no key', NO_KEYS],
    ['a wrong key', new Keyring([randomBytes(32)])],
  ] as const) {
    const bad = c.client({ keys, timeoutMs: 1500 });
    let outcome: string;
    try {
      const res = await bad.put('auth/k', `forged by a client with ${label}`);
      outcome = res.ok ? 'ok' : `refused: ${res.err}`;
    } catch (e) {
      outcome = e instanceof PaxosClientError ? e.code : String(e);
    }
    t.not(outcome, 'ok', `a client with ${label} cannot write (${outcome})`);
    t.ok(
      outcome === 'unknown' || /^refused: auth/.test(outcome),
      'it is refused with auth or hears nothing',
    );
    t.equal(await bad.status(0, 300), null, `a client with ${label} gets no status`);
  }
  const after = await good.get('auth/k');
  t.equal(after.value, 'v1', 'the value is unchanged');

  // Raw requests of every size around the reply's: no reply may be larger
  // than the unauthenticated request it answers.
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => sock.close());
  const replies: Buffer[] = [];
  sock.on('message', (b) => replies.push(b));
  const cluster = clusterTag(c.clusterId);
  const port = c.servers[0].clientPort;
  const wrong = new Keyring([randomBytes(32)]);
  const rows: string[] = [];
  let amplified = 0;
  let answered = 0;
  for (const signer of [NO_KEYS, wrong]) {
    for (let pad = 0; pad <= 80; pad += 1) {
      const op = encodeOp({ kind: 'put', key: 'auth/k', value: 'x'.repeat(pad) });
      const body = encodeRequest({ t: 'op', cid: 77, seq: 1, op: Buffer.from(op) });
      const req = seal(Kind.ClientRequest, cluster, body, signer);
      replies.length = 0;
      sock.send(req, port, '127.0.0.1');
      await sleep(15);
      for (const rep of replies) {
        answered++;
        if (rep.length > req.length) {
          amplified++;
          if (rows.length < 5) rows.push(`${req.length}-byte request -> ${rep.length}-byte reply`);
        }
        const o = open(rep, Kind.ClientReply, cluster, new Keyring([K]));
        const d = 'error' in o ? o : decodeReply(o.body);
        t.ok(
          !('error' in d) && d.t === 'error' && d.code === 'auth',
          `the only answer is an auth error (to a ${req.length}-byte request)`,
        );
      }
    }
    // Unauthenticated status requests get no status.
    replies.length = 0;
    const st = seal(Kind.ClientRequest, cluster, encodeRequest({ t: 'status', nonce: 9 }), signer);
    sock.send(Buffer.concat([st, Buffer.alloc(0)]), port, '127.0.0.1');
    await sleep(30);
    t.ok(
      replies.every((b) => b.length <= st.length),
      'an unauthenticated status request gets nothing larger than itself',
    );
  }
  t.comment(
    `unauthenticated requests of ${HEADER_BYTES + 20}..${HEADER_BYTES + 32 + 110} bytes: ${answered} answered, ${amplified} with a larger reply ${rows.join(', ')}`,
  );
  t.equal(amplified, 0, 'no reply is larger than the unauthenticated request', { rows });
  t.ok(answered > 0, 'a client with a wrong key is told why (auth error)');
  const v = await good.get('auth/k');
  t.equal(v.value, 'v1', 'raw unauthenticated puts changed nothing');
  const drops = c.dropCounts(0);
  t.comment(`sid 0 client drops: ${JSON.stringify(drops)}`);
  t.ok((drops.client_missing_tag ?? 0) > 0 && (drops.client_bad_tag ?? 0) > 0, 'drops counted');
});
