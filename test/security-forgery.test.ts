import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import t from 'tap';
import { checkLinearizable } from '../lib/check/linearizability';
import { makeBallot } from '../lib/core/ballot';
import type { Msg, Value } from '../lib/core/types';
import { compareLogs } from '../lib/logcmp';
import { encodeOp } from '../lib/sm/kv';
import { clusterTag, HEADER_BYTES, Keyring, Kind, NO_KEYS, seal } from '../lib/wire/envelope';
import { encodePeerBody } from '../lib/wire/peer';
import {
  Cluster,
  sleep,
  startHistoryLoad,
  startLoad,
  verifyReadable,
  type NodeStatus,
} from './helpers/cluster';

// A 3-node cluster with a peer key, under client load, receives forged peer
// datagrams of the right shape on every peer port: signed with a wrong key,
// unsigned, with a garbage or cut tag; and correctly signed ones from a source
// that is not the claimed SID's address. None may have any effect: no ballot
// jumps, no bogus value is learned, the logs agree, every acknowledged write
// reads back and the history is linearizable.

const KEY_A = randomBytes(32);
const WRONG = randomBytes(32);
const HUGE_ROUND = 1_000_000_000;
const FORGED_CID = 4_242_424_242;
const FORGED_KEY = 'forged/key';
const FORGED_VALUE = 'FORGED-VALUE';

function bogus(n: number): Value {
  return [
    {
      cid: FORGED_CID,
      seq: 1 + n,
      op: encodeOp({ kind: 'put', key: FORGED_KEY, value: `${FORGED_VALUE}-${n}` }),
    },
  ];
}

/** Forged messages claiming to come from `from`, aimed at a cluster whose chosen slot is near `chosen`. */
function forgedMessages(from: number, chosen: number, liveBallot: number): Msg[] {
  const huge = makeBallot(HUGE_ROUND, from);
  const max = 2 ** 52 + from;
  const future = Array.from({ length: 8 }, (_, i) => chosen + 1 + i);
  const past = Array.from({ length: 8 }, (_, i) => Math.max(1, chosen - 8 + i));
  return [
    { t: 'prepare', ballot: huge, from: 1 },
    { t: 'prepare', ballot: max, from: 0 },
    { t: 'accept', ballot: huge, entries: future.map((s, i) => [s, bogus(i)]), commit: chosen + 8 },
    { t: 'accept', ballot: liveBallot, entries: future.map((s, i) => [s, bogus(i)]), commit: 0 },
    { t: 'accept', ballot: huge, entries: past.map((s, i) => [s, bogus(100 + i)]), commit: 0 },
    { t: 'commit', ballot: huge, through: chosen + 1_000_000 },
    { t: 'commit', ballot: liveBallot, through: chosen + 8 },
    {
      t: 'promise',
      ballot: huge,
      from: 1,
      lo: 1,
      hi: 0,
      base: chosen + 1000,
      entries: future.map((s, i) => [s, huge, bogus(200 + i)]),
      incs: [],
    },
    {
      t: 'promise',
      ballot: liveBallot,
      from: Math.max(1, chosen - 4),
      lo: Math.max(1, chosen - 4),
      hi: 0,
      base: 0,
      entries: future.map((s, i) => [s, liveBallot, bogus(300 + i)]),
      incs: [],
    },
    { t: 'accepted', ballot: liveBallot, slots: future, incs: [] },
    { t: 'accepted', ballot: huge, slots: future, incs: [] },
    { t: 'nack', ballot: liveBallot, promised: huge },
    {
      t: 'heartbeat',
      promised: huge,
      leading: true,
      chosen: chosen + 1_000_000,
      next: chosen + 1_000_001,
      eligible: true,
      voter: true,
      heard: [],
      leader: 0,
      tick: 7,
    },
    { t: 'catchupReq', from: 1, to: chosen },
    {
      t: 'catchupResp',
      from: Math.max(1, chosen - 2),
      entries: [bogus(400), bogus(401), bogus(402)],
      snapshot: 0,
      snapshotBytes: 0,
    },
    { t: 'snapshotReq', slot: chosen, offset: 0 },
    { t: 'snapshotResp', slot: chosen + 1000, offset: 0, total: 16, data: randomBytes(16) },
    // Read index: a forged confirmation would let a deposed leader answer a stale read.
    { t: 'confirm', ballot: huge, round: 1 },
    ...[1, 2, 3, 10, 100, 1000].map((round): Msg => ({
      t: 'confirmed',
      ballot: liveBallot,
      round,
    })),
  ];
}

/** "round.sid" -> packed ballot. */
function parseBallot(s: string): number {
  const m = /^(\d+)\.(\d+)$/.exec(s);
  return m ? makeBallot(Number(m[1]), Number(m[2])) : 0;
}

function bind(host: string, port: number): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20 });
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, host, () => {
      s.off('error', reject);
      s.on('error', () => undefined);
      resolve(s);
    });
  });
}

const send = (s: dgram.Socket, buf: Buffer, port: number): Promise<void> =>
  new Promise((r) => s.send(buf, port, '127.0.0.1', () => r()));

t.test('forged peer datagrams have no effect', async (t) => {
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-sec-forgery',
    keyFile: KEY_A.toString('hex') + '\n',
    env: { DEBUG: 'paxos:drop' },
  });
  await c.waitLeader();
  await c.waitWritable();
  const cluster = clusterTag(c.clusterId);
  const right = new Keyring([KEY_A]);
  const wrong = new Keyring([WRONG]);

  // Sockets of the attacker: an ephemeral port on the right host, and each
  // node's own peer port on another loopback address (127.0.0.2).
  const attacker = await bind('127.0.0.1', 0);
  const spoofers = new Map<number, dgram.Socket>();
  for (const s of c.servers) {
    try {
      spoofers.set(s.sid, await bind('127.0.0.2', s.peerPort));
    } catch (e) {
      t.comment(
        `cannot bind 127.0.0.2:${s.peerPort} (${(e as Error).message}); skipping that source`,
      );
    }
  }
  t.teardown(() => {
    attacker.close();
    for (const s of spoofers.values()) s.close();
  });

  const client = c.client({ timeoutMs: 5000 });
  const hist = startHistoryLoad(client, {
    sessions: 6,
    durationMs: 9000,
    keys: 5,
    prefix: 'lin/',
  });
  const load = startLoad(client, { sessions: 4, durationMs: 9000, prefix: 'u/' });

  const sent = { badTag: 0, missingTag: 0, signedWrongSource: 0 };
  let maxRound = 0;
  let maxChosen = 0;
  const observe = (rows: NodeStatus[]): void => {
    for (const r of rows) {
      maxRound = Math.max(maxRound, Math.floor(parseBallot(r.ballot) / 256));
      maxChosen = Math.max(maxChosen, r.chosen);
    }
  };

  const until = Date.now() + 8000;
  let rounds = 0;
  while (Date.now() < until && rounds < 200) {
    rounds++;
    const rows = await c.statuses();
    observe(rows);
    const chosen = Math.max(1, ...rows.map((r) => r.chosen));
    const live = Math.max(1, ...rows.map((r) => parseBallot(r.ballot)));
    for (const target of c.servers) {
      for (const from of c.sids) {
        for (const msg of forgedMessages(from, chosen, live)) {
          const body = encodePeerBody(from, msg);
          // (a) signed with a wrong key
          await send(attacker, seal(Kind.Peer, cluster, body, wrong), target.peerPort);
          sent.badTag++;
          // (b) no tag at all
          await send(attacker, seal(Kind.Peer, cluster, body, NO_KEYS), target.peerPort);
          sent.missingTag++;
          // (c) tag flag set, tag garbage; and the right tag with one body bit flipped
          const garbage = seal(Kind.Peer, cluster, body, right);
          randomBytes(32).copy(garbage, HEADER_BYTES);
          await send(attacker, garbage, target.peerPort);
          const flipped = seal(Kind.Peer, cluster, body, right);
          flipped[flipped.length - 1] ^= 1;
          await send(attacker, flipped, target.peerPort);
          sent.badTag += 2;
          // (d) correctly signed, but not from the claimed SID's address:port
          // (also claiming to be the target itself)
          const signed = seal(Kind.Peer, cluster, body, right);
          await send(attacker, signed, target.peerPort);
          sent.signedWrongSource++;
          const spoofer = spoofers.get(from);
          if (spoofer) {
            await send(spoofer, signed, target.peerPort);
            sent.signedWrongSource++;
          }
        }
      }
    }
    await sleep(100);
  }
  t.comment(
    `forgery: ${rounds} rounds; sent ${sent.badTag} wrongly signed, ${sent.missingTag} unsigned, ${sent.signedWrongSource} signed from a wrong source`,
  );

  const [h, r] = await Promise.all([hist.done, load.done]);
  observe(await c.statuses());
  t.comment(
    `load: ${h.acked} history ops acked, ${h.unknown} unknown, ${h.failed} failed; ${r.acked.length} unique puts acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.ok(h.acked > 50 && r.acked.length > 50, 'the load made progress during the forgery');
  t.equal(h.failed, 0, 'no history operation failed', { failures: h.failures });
  t.equal(r.failed.length, 0, 'no unique put failed', { failed: r.failed.slice(0, 5) });
  t.ok(maxRound < 1000, `no node's ballot jumped (highest round seen: ${maxRound})`);
  t.ok(maxChosen < 1_000_000, `no node believes a forged commit (highest chosen: ${maxChosen})`);

  const read = await verifyReadable(client, r, 8);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    e: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, 'every acked write reads back', {
    m: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written');
  const forged = await client.get(FORGED_KEY);
  t.same([forged.ok, forged.value ?? null], [true, null], 'the forged key was never written');

  const lin = checkLinearizable(h.history);
  t.ok(lin.ok, `history of ${h.history.length} operations is linearizable: ${lin.message}`);
  // The history is not vacuous: one read changed to a value never written fails.
  const i = h.history.findIndex((e) => e.op.kind === 'get' && e.result !== 'unknown');
  if (i >= 0) {
    const bad = h.history.map((e, k) =>
      k === i ? { ...e, result: { ok: true, value: 'never' } } : e,
    );
    t.notOk(checkLinearizable(bad).ok, 'the checker rejects the history with one read falsified');
  }

  const applied = await c.waitSameApplied(c.sids, 15_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.equal(new Set(cmp.counts).size, 1, 'every node has every line', { counts: cmp.counts });
  // (The test's own read of FORGED_KEY is in the logs as a get: look for writes.)
  const forgedLines = c
    .orderLogFiles()
    .flatMap((f) => fs.readFileSync(f, 'utf8').split('\n'))
    .filter(
      (l) =>
        l.includes(FORGED_VALUE) ||
        l.includes(`put ${JSON.stringify(FORGED_KEY)}`) ||
        l.split(' ')[1]?.startsWith(`${FORGED_CID}:`),
    );
  t.same(forgedLines.slice(0, 5), [], 'no forged value appears in any order log');
  t.comment(`all nodes applied through slot ${applied}`);

  const rows = await c.statuses();
  t.equal(rows.length, 3, 'all three nodes answer status');
  t.same(c.unexpectedExits(), [], 'no node exited');

  // Every forged datagram was dropped for the right reason.
  const drops: Record<string, number> = Object.create(null);
  for (const sid of c.sids)
    for (const [k, v] of Object.entries(c.dropCounts(sid))) drops[k] = (drops[k] ?? 0) + v;
  t.comment(`drops by reason (all nodes): ${JSON.stringify(drops)}`);
  const near = (got: number | undefined, want: number): boolean =>
    (got ?? 0) >= want * 0.9 && (got ?? 0) <= want;
  t.ok(near(drops.peer_bad_tag, sent.badTag), `bad_tag drops ~ ${sent.badTag}`);
  t.ok(near(drops.peer_missing_tag, sent.missingTag), `missing_tag drops ~ ${sent.missingTag}`);
  t.ok(
    near(drops.peer_wrong_source, sent.signedWrongSource),
    `wrong_source drops ~ ${sent.signedWrongSource}`,
  );
});
