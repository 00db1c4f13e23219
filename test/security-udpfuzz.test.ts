import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import t from 'tap';
import { Encoder } from 'cbor-x';
import { checkLinearizable } from '../lib/check/linearizability';
import { Prng } from '../lib/core/prng';
import type { Msg, Value } from '../lib/core/types';
import { compareLogs } from '../lib/logcmp';
import { encodeOp } from '../lib/sm/kv';
import { encodeRequest } from '../lib/wire/client';
import { clusterTag, Keyring, Kind, NO_KEYS, seal } from '../lib/wire/envelope';
import { encodePeerBody } from '../lib/wire/peer';
import { Cluster, sleep, startHistoryLoad, startLoad, verifyReadable } from './helpers/cluster';

/** The test object tap hands to a subtest callback. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

// Live UDP fuzz: a 3-node cluster under client load receives random and
// mutated datagrams on both ports of every node (bit flips, truncations, wrong
// types, huge lengths, deep nesting, CBOR tags, __proto__ keys, mutations of
// real client requests and peer messages, in envelopes that are unsigned,
// wrongly signed, correctly signed or broken). No node may crash, memory must
// stay bounded, the load must keep completing during the fuzz, and afterwards
// the history must be linearizable and the order logs must agree.
//
// FUZZ_LIVE_DATAGRAMS (default 100000) sets the count of the keyed run;
// FUZZ_SEED makes a run reproducible (the seed is printed).

const COUNT = Number(process.env.FUZZ_LIVE_DATAGRAMS ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? randomBytes(4).readUInt32LE(0));
/** Datagrams per second we aim at (all nodes together). */
const RATE = 4000;
const RSS_LIMIT_MB = 300;

const enc = new Encoder({ useRecords: false, tagUint8Array: false });

class Gen {
  readonly rng: Prng;
  constructor(seed: number) {
    this.rng = new Prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.rng.next() * n);
  }
  chance(p: number): boolean {
    return this.rng.next() < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** CBOR head of major type `major` with argument n (n < 2^53). */
function head(major: number, n: number): Buffer {
  const m = major << 5;
  if (n < 24) return Buffer.from([m | n]);
  if (n < 256) return Buffer.from([m | 24, n]);
  if (n < 65536) return Buffer.from([m | 25, n >> 8, n & 255]);
  if (n < 2 ** 32) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | 27;
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}

const tstr = (s: string): Buffer => Buffer.concat([head(3, Buffer.byteLength(s)), Buffer.from(s)]);

/** Hostile CBOR items that are not mutations of anything. */
function hostile(g: Gen): Buffer {
  switch (g.int(14)) {
    case 0: {
      // deep nesting of 1-element arrays (or maps)
      const depth = g.chance(0.9) ? g.pick([9, 10, 64, 1000]) : g.pick([20_000, 60_000]);
      const open = g.chance(0.5) ? 0x81 : 0xa1;
      const parts: Buffer[] = [];
      for (let i = 0; i < depth; i++)
        parts.push(
          open === 0x81 ? Buffer.from([0x81]) : Buffer.concat([Buffer.from([0xa1]), tstr('k')]),
        );
      parts.push(Buffer.from([0x00]));
      return Buffer.concat(parts).subarray(0, 64_000);
    }
    case 1: {
      // huge claimed lengths: strings, byte strings, arrays, maps
      const major = g.pick([2, 3, 4, 5]);
      const n = g.pick([2 ** 31 - 1, 2 ** 32 - 1, 2 ** 53 - 1, 70_001, 1_000_000, 65_000]);
      return Buffer.concat([head(major, n), g.bytes(g.int(32))]);
    }
    case 2: {
      // 8-byte length 0xffffffffffffffff
      return Buffer.concat([
        Buffer.from([
          g.pick([0x5b, 0x7b, 0x9b, 0xbb, 0x1b, 0x3b]),
          0xff,
          0xff,
          0xff,
          0xff,
          0xff,
          0xff,
          0xff,
          0xff,
        ]),
        g.bytes(4),
      ]);
    }
    case 3: {
      // CBOR tags, alone or wrapping a plausible message
      const tag = g.pick([
        0, 1, 2, 3, 21, 24, 25, 27, 28, 29, 55799, 64, 69, 70, 72, 81, 85, 86, 105, 256, 258, 259,
        0xdffe, 0xffff_ffff,
      ]);
      const inner = g.chance(0.5)
        ? enc.encode([g.int(3), 1, 513, 4])
        : g.pick([
            Buffer.from([0x00]),
            tstr('x'),
            Buffer.concat([head(2, 8), g.bytes(8)]),
            Buffer.from([0x80]),
          ]);
      return Buffer.concat([head(6, tag), inner]);
    }
    case 4: {
      // indefinite-length items, also nested and unterminated
      const n = g.int(50);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) parts.push(Buffer.from([g.pick([0x9f, 0xbf, 0x5f, 0x7f])]));
      if (g.chance(0.5)) parts.push(Buffer.alloc(n, 0xff));
      return Buffer.concat(parts);
    }
    case 5: {
      // __proto__ / constructor keys, as the message or inside a field
      const poison = Buffer.concat([
        Buffer.from([0xa2]),
        tstr('__proto__'),
        Buffer.concat([Buffer.from([0xa1]), tstr('polluted'), Buffer.from([0xf5])]),
        tstr('constructor'),
        Buffer.concat([
          Buffer.from([0xa1]),
          tstr('prototype'),
          Buffer.from([0xa1]),
          tstr('x'),
          Buffer.from([0x01]),
        ]),
      ]);
      if (g.chance(0.3)) return poison;
      // [from, type, poison, ...]
      return Buffer.concat([
        Buffer.from([0x84]),
        head(0, g.int(3)),
        head(0, 1 + g.int(11)),
        poison,
        poison,
      ]);
    }
    case 6: {
      // wrong types in message positions: floats, negatives, bigints, null, undefined, simple
      const items = [
        Buffer.from([0xf9, 0x7e, 0x00]), // NaN (half)
        Buffer.from([0xfa, 0x7f, 0x80, 0x00, 0x00]), // Infinity
        Buffer.from([0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]), // 1.5
        Buffer.from([0xf9, 0x80, 0x00]), // -0
        Buffer.from([0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // -2^64
        Buffer.from([0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // 2^64-1
        Buffer.from([0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0]), // 2^53
        Buffer.from([0xf6]),
        Buffer.from([0xf7]),
        Buffer.from([0xf4]),
        Buffer.from([0xf0]), // simple(16)
        Buffer.from([0xf8, 0xff]), // simple(255)
        Buffer.from([0x20]), // -1
        tstr('prepare'),
        Buffer.from([0x80]),
        Buffer.from([0xa0]),
      ];
      const n = 2 + g.int(8);
      const parts: Buffer[] = [head(4, n)];
      for (let i = 0; i < n; i++) parts.push(g.pick(items));
      return Buffer.concat(parts);
    }
    case 7: {
      // the largest arrays allowed, of junk or of "slots"
      const n = g.chance(0.8) ? g.pick([100, 1000]) : g.pick([20_000, 69_999, 70_000, 70_001]);
      const body = Buffer.alloc(Math.min(n, 60_000), g.pick([0x00, 0x01, 0x17, 0xf6, 0x80]));
      return Buffer.concat([Buffer.from([0x84, 0x00, 0x04, 0x19, 0x02]), head(4, n), body]);
    }
    case 8:
      return g.bytes(g.int(64));
    case 9:
      return g.bytes(g.int(1500));
    case 10:
      return Buffer.alloc(0);
    case 11: {
      // many small maps with duplicate keys
      const n = 1 + g.int(200);
      const parts: Buffer[] = [head(4, n)];
      for (let i = 0; i < n; i++)
        parts.push(
          Buffer.concat([
            Buffer.from([0xa2]),
            tstr('a'),
            Buffer.from([0x01]),
            tstr('a'),
            Buffer.from([0x02]),
          ]),
        );
      return Buffer.concat(parts);
    }
    case 12: {
      // trailing bytes after a valid item, or two items
      return Buffer.concat([enc.encode([1, 2, 513, 4]), g.bytes(1 + g.int(8))]);
    }
    default: {
      // long strings in a client op position
      return enc.encode([
        1,
        g.int(1e9),
        1,
        Buffer.from(
          enc.encode([
            'put',
            'fz/' + 'x'.repeat(g.int(2000)),
            'y'.repeat(g.chance(0.9) ? g.int(2000) : g.int(40_000)),
          ]),
        ),
      ]);
    }
  }
}

/** Byte-level mutations of a real encoding. */
function mutate(g: Gen, src: Buffer): Buffer {
  let b: Buffer = Buffer.from(src);
  const rounds = 1 + g.int(4);
  for (let r = 0; r < rounds; r++) {
    if (b.length === 0) b = g.bytes(1 + g.int(8));
    switch (g.int(9)) {
      case 0: {
        // bit flips
        const flips = 1 + g.int(8);
        for (let i = 0; i < flips; i++) b[g.int(b.length)] ^= 1 << g.int(8);
        break;
      }
      case 1:
        b = b.subarray(0, g.int(b.length));
        break;
      case 2:
        b[g.int(b.length)] = g.pick([
          0x00, 0xff, 0x7f, 0x80, 0x1b, 0x5b, 0x9b, 0xbb, 0x9f, 0xbf, 0xd8, 0xd9, 0xc6, 0xf7, 0xf9,
          0xfb, 0x3b, 0x18,
        ]);
        break;
      case 3: {
        const at = g.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), g.bytes(1 + g.int(16)), b.subarray(at)]);
        break;
      }
      case 4: {
        const at = g.int(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + g.int(8))]);
        break;
      }
      case 5: {
        // duplicate a chunk
        const at = g.int(b.length);
        const len = 1 + g.int(Math.min(64, b.length - at));
        b = Buffer.concat([
          b.subarray(0, at + len),
          b.subarray(at, at + len),
          b.subarray(at + len),
        ]);
        break;
      }
      case 6: {
        // make a length or integer huge
        const at = g.int(b.length);
        b = Buffer.concat([
          b.subarray(0, at),
          Buffer.from([(b[at] & 0xe0) | 27, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
          b.subarray(at + 1),
        ]);
        break;
      }
      case 7: {
        // insert a tag
        const at = g.int(b.length + 1);
        b = Buffer.concat([
          b.subarray(0, at),
          head(6, g.pick([1, 28, 29, 64, 105, 258])),
          b.subarray(at),
        ]);
        break;
      }
      default:
        b[g.int(b.length)] = g.int(256);
    }
  }
  return b.subarray(0, 64_000);
}

function fuzzValue(g: Gen): Value {
  const n = g.int(3);
  return Array.from({ length: n }, () => ({
    cid: 1 + g.int(2 ** 30),
    seq: 1 + g.int(5),
    op: encodeOp({ kind: 'put', key: `fz/${g.int(100)}`, value: 'z'.repeat(g.int(40)) }),
  }));
}

/** Real encodings of peer messages (bodies), with plausible fields. */
function peerSeed(g: Gen, from: number, chosen: number, ballot: number): Buffer {
  const slot = Math.max(1, chosen - 5 + g.int(20));
  const msgs: Msg[] = [
    { t: 'prepare', ballot: ballot + 256, from: slot },
    {
      t: 'promise',
      ballot,
      from: slot,
      lo: slot,
      hi: 0,
      base: chosen,
      entries: [
        [slot, ballot, fuzzValue(g)],
        [slot + 1, -1, []],
      ],
      incs: [],
    },
    {
      t: 'accept',
      ballot,
      entries: [
        [slot, fuzzValue(g)],
        [slot + 1, []],
      ],
      commit: chosen,
    },
    { t: 'accepted', ballot, slots: [slot, slot + 1, slot + 2], incs: [] },
    { t: 'nack', ballot, promised: ballot + 512 },
    { t: 'commit', ballot, through: slot },
    {
      t: 'heartbeat',
      promised: ballot,
      leading: g.chance(0.5),
      chosen: slot,
      next: slot + 1,
      eligible: true,
      voter: true,
      heard: [],
      leader: 0,
      tick: 7,
    },
    { t: 'catchupReq', from: slot, to: slot + 10 },
    { t: 'catchupResp', from: slot, entries: [fuzzValue(g), []], snapshot: 0, snapshotBytes: 0 },
    { t: 'snapshotReq', slot, offset: g.int(1000) },
    { t: 'snapshotResp', slot, offset: 0, total: 32, data: g.bytes(g.int(64)) },
    { t: 'confirm', ballot, round: g.int(1000) },
    { t: 'confirmed', ballot, round: g.int(1000) },
  ];
  return encodePeerBody(from, g.pick(msgs));
}

/** Real encodings of client requests (bodies); keys never collide with the load's. */
function clientSeed(g: Gen): Buffer {
  if (g.chance(0.15)) return encodeRequest({ t: 'status', nonce: g.int(2 ** 32) });
  const key = `fz/${g.int(1000)}`;
  const op = g.pick([
    encodeOp({ kind: 'put', key, value: 'v'.repeat(g.int(30)) }),
    encodeOp({ kind: 'get', key }),
    encodeOp({ kind: 'del', key }),
    encodeOp({ kind: 'cas', key, expected: g.chance(0.5) ? null : 'v', value: 'w' }),
  ]);
  return encodeRequest({
    t: 'op',
    cid: 1 + g.int(2 ** 40),
    seq: 1 + g.int(3),
    op: Buffer.from(op),
  });
}

interface Ctx {
  cluster: number;
  peerKeys: Keyring;
  clientKeys: Keyring;
  wrong: Keyring;
  chosen: number;
  ballot: number;
}

type Wrap = 'signed' | 'unsigned' | 'wrongKey' | 'badHeader' | 'raw';

/** One datagram: body (mutated real encoding or hostile) in some envelope. */
function datagram(g: Gen, ctx: Ctx): { buf: Buffer; wrap: Wrap; peerKind: boolean } {
  const peerKind = g.chance(0.5);
  let body: Buffer;
  const r = g.rng.next();
  if (r < 0.45)
    body = mutate(g, peerKind ? peerSeed(g, g.int(3), ctx.chosen, ctx.ballot) : clientSeed(g));
  else if (r < 0.55)
    body = peerKind ? peerSeed(g, g.int(4), ctx.chosen, ctx.ballot) : clientSeed(g);
  else body = hostile(g);
  const kind = peerKind ? Kind.Peer : Kind.ClientRequest;
  const keys = peerKind ? ctx.peerKeys : ctx.clientKeys;
  const w = g.rng.next();
  if (w < 0.4) return { buf: seal(kind, ctx.cluster, body, keys), wrap: 'signed', peerKind };
  if (w < 0.6) return { buf: seal(kind, ctx.cluster, body, NO_KEYS), wrap: 'unsigned', peerKind };
  if (w < 0.7) return { buf: seal(kind, ctx.cluster, body, ctx.wrong), wrap: 'wrongKey', peerKind };
  if (w < 0.9) {
    const buf = seal(kind, ctx.cluster, body, g.chance(0.5) ? keys : NO_KEYS);
    const at = g.int(Math.min(buf.length, 42));
    if (g.chance(0.5)) buf[at] ^= 1 << g.int(8);
    else buf[g.pick([0, 1, 2, 3, 4, 8, 9])] = g.int(256);
    return { buf: g.chance(0.1) ? buf.subarray(0, g.int(43)) : buf, wrap: 'badHeader', peerKind };
  }
  return { buf: body, wrap: 'raw', peerKind };
}

function rssMb(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function bind(): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20, recvBufferSize: 4 << 20 });
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      s.off('error', reject);
      s.on('error', () => undefined);
      resolve(s);
    });
  });
}

async function fuzzRun(t: Test, keyed: boolean, count: number, seed: number): Promise<void> {
  const peerKey = randomBytes(32);
  const clientKey = randomBytes(32);
  const c = await Cluster.start(t, {
    n: 3,
    name: `paxos-sec-fuzz-${keyed ? 'keyed' : 'open'}`,
    keyFile: keyed ? peerKey.toString('hex') + '\n' : undefined,
    clientKeyFile: keyed ? clientKey.toString('hex') + '\n' : undefined,
    env: { DEBUG: 'paxos:drop' },
    clientTimeoutMs: 8000,
  });
  await c.waitLeader(15_000);
  await c.waitWritable(15_000);
  const ctx: Ctx = {
    cluster: clusterTag(c.clusterId),
    peerKeys: keyed ? new Keyring([peerKey]) : NO_KEYS,
    clientKeys: keyed ? new Keyring([clientKey]) : NO_KEYS,
    wrong: new Keyring([randomBytes(32)]),
    chosen: 1,
    ballot: 256,
  };
  const pids = c.sids.map((s) => c.pidOf(s)!);
  const rssBefore = pids.map(rssMb);

  // Fuzz sockets: one per wrap kind on the client ports (so that what comes
  // back to unauthenticated senders can be told apart), one for the rest.
  const socks = { anon: await bind(), authed: await bind(), other: await bind() };
  t.teardown(() => {
    for (const s of Object.values(socks)) s.close();
  });
  const back = {
    anon: { n: 0, bytes: 0, maxLen: 0 },
    authed: { n: 0, bytes: 0, maxLen: 0 },
    other: { n: 0, bytes: 0, maxLen: 0 },
  };
  const sentTo = {
    anon: { n: 0, bytes: 0, minLen: Infinity },
    authed: { n: 0, bytes: 0 },
    other: { n: 0, bytes: 0 },
  };
  for (const k of ['anon', 'authed', 'other'] as const)
    socks[k].on('message', (buf) => {
      back[k].n++;
      back[k].bytes += buf.length;
      back[k].maxLen = Math.max(back[k].maxLen, buf.length);
    });

  const client = c.client({ timeoutMs: 8000 });
  // The load runs until the fuzz is over (bounded by LOAD_MS just in case).
  const LOAD_MS = 180_000;
  const hist = startHistoryLoad(client, {
    sessions: 5,
    durationMs: LOAD_MS,
    keys: 5,
    prefix: 'lin/',
    pauseMs: 2,
  });
  const load = startLoad(client, { sessions: 3, durationMs: LOAD_MS, prefix: 'u/' });
  await sleep(1500);

  const g = new Gen(seed);
  const stats: Record<string, number> = Object.create(null);
  const ports = c.servers.flatMap((s) => [s.peerPort, s.clientPort]);
  const clientPorts = new Set(c.servers.map((s) => s.clientPort));
  const fuzzStart = performance.now();
  const wallStart = Date.now();
  // How late our own timers run (a busy test process also delays acks).
  let lagMax = 0;
  let lagPrev = performance.now();
  const lagTimer = setInterval(() => {
    const now = performance.now();
    lagMax = Math.max(lagMax, now - lagPrev - 50);
    lagPrev = now;
  }, 50);
  const ballotsSeen = new Set<string>();
  let sent = 0;
  let statusFailures = 0;
  let maxRss = Math.max(...rssBefore);
  let lastPoll = 0;
  const BATCH = 64;
  for (let iter = 0; iter < count && sent < count; iter++) {
    // Refresh the plausible ballot/slot now and then; check liveness and memory.
    if (Date.now() - lastPoll > 1000) {
      lastPoll = Date.now();
      const rows = await c.statuses(c.sids);
      if (rows.length !== 3) statusFailures++;
      for (const r of rows) {
        ballotsSeen.add(r.ballot);
        ctx.chosen = Math.max(ctx.chosen, r.chosen);
        const m = /^(\d+)\.(\d+)$/.exec(r.ballot);
        if (m) ctx.ballot = Math.max(ctx.ballot, Number(m[1]) * 256 + Number(m[2]));
      }
      maxRss = Math.max(maxRss, ...pids.map(rssMb));
    }
    const waits: Promise<void>[] = [];
    for (let i = 0; i < BATCH && sent < count; i++) {
      const d = datagram(g, ctx);
      const port = g.pick(ports);
      const toClient = clientPorts.has(port);
      // Client port: authenticated only if signed with the client key as a
      // client request (a header mutation can turn anything else into an
      // unauthenticated client request). Peer ports never answer anything.
      const authed = d.wrap === 'signed' && !d.peerKind;
      const sockName: keyof typeof socks = !toClient ? 'other' : authed ? 'authed' : 'anon';
      if (sockName === 'anon') sentTo.anon.minLen = Math.min(sentTo.anon.minLen, d.buf.length);
      sentTo[sockName].n++;
      sentTo[sockName].bytes += d.buf.length;
      stats[`${d.peerKind ? 'peer' : 'client'}-kind ${d.wrap}`] =
        (stats[`${d.peerKind ? 'peer' : 'client'}-kind ${d.wrap}`] ?? 0) + 1;
      waits.push(new Promise((r) => socks[sockName].send(d.buf, port, '127.0.0.1', () => r())));
      sent++;
    }
    await Promise.all(waits);
    // Pace: stay at RATE datagrams per second overall.
    const ahead = (sent / RATE) * 1000 - (Date.now() - wallStart);
    await sleep(Math.max(1, ahead));
  }
  const fuzzEnd = performance.now();
  clearInterval(lagTimer);
  const fuzzMs = fuzzEnd - fuzzStart;
  t.comment(
    `seed ${seed}: sent ${sent} datagrams in ${(fuzzMs / 1000).toFixed(1)} s (${Math.round((sent * 1000) / fuzzMs)}/s) to ${ports.length} ports`,
  );
  t.comment(`by envelope: ${JSON.stringify(stats)}`);

  // Give the nodes a moment to drain their socket buffers, then look.
  await sleep(1000);
  const rowsAfter = await c.statuses(c.sids);
  const rssAfter = pids.map(rssMb);
  maxRss = Math.max(maxRss, ...rssAfter);
  hist.stop();
  load.stop();
  const [h, r] = await Promise.all([hist.done, load.done]);

  t.same(c.unexpectedExits(), [], 'no node exited');
  t.ok(
    pids.every((p) => fs.existsSync(`/proc/${p}`)),
    'every daemon process is alive',
  );
  t.equal(rowsAfter.length, 3, 'every node answers status after the fuzz');
  t.equal(statusFailures, 0, 'every node answered status throughout the fuzz');
  t.comment(
    `VmRSS MB before ${rssBefore.map((x) => x.toFixed(0)).join('/')}, after ${rssAfter.map((x) => x.toFixed(0)).join('/')}, max ${maxRss.toFixed(0)}`,
  );
  t.ok(
    rssAfter.every((x) => x < RSS_LIMIT_MB),
    `VmRSS after the fuzz < ${RSS_LIMIT_MB} MB`,
  );
  t.ok(maxRss < RSS_LIMIT_MB, `VmRSS never above ${RSS_LIMIT_MB} MB`);

  // Acks kept coming during the fuzz: no 2-second window without one.
  const during = h.ackTimes.filter((x) => x >= fuzzStart && x <= fuzzEnd);
  let maxGap = 0;
  let gapAt = 0;
  let prev = fuzzStart;
  for (const x of [...during, fuzzEnd]) {
    if (x - prev > maxGap) {
      maxGap = x - prev;
      gapAt = prev - fuzzStart;
    }
    prev = x;
  }
  t.comment(
    `longest gap starts ${(gapAt / 1000).toFixed(1)} s into the fuzz; test event-loop lag max ${lagMax.toFixed(0)} ms; ballots seen ${[...ballotsSeen].join(' ')}`,
  );
  t.comment(
    `load: ${h.acked} history ops answered (${during.length} during the fuzz, longest gap ${maxGap.toFixed(0)} ms), ${h.unknown} unknown, ${h.failed} failed; ${r.acked.length} unique puts acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.ok(during.length > 100, 'operations completed during the fuzz');
  t.ok(
    maxGap < 3000,
    `no 3 s without an answer during the fuzz (longest gap ${maxGap.toFixed(0)} ms)`,
  );
  t.equal(h.failed, 0, 'no history operation failed', { failures: h.failures });
  t.equal(r.failed.length, 0, 'no unique put failed', { failed: r.failed.slice(0, 5) });

  const lin = checkLinearizable(h.history);
  t.ok(lin.ok, `history of ${h.history.length} operations is linearizable: ${lin.message}`);
  const read = await verifyReadable(client, r, 8);
  t.equal(read.readErrors.length, 0, 'every read got an answer', {
    e: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, 'every acked write reads back', {
    m: read.mismatches.slice(0, 5),
  });

  const applied = await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.equal(new Set(cmp.counts).size, 1, 'every node has every line', { counts: cmp.counts });
  t.comment(`applied through slot ${applied}; ${cmp.message}`);

  // What came back to the fuzzer.
  t.comment(
    `replies: to unauthenticated client-port datagrams ${back.anon.n} (${back.anon.bytes} bytes for ${sentTo.anon.bytes} sent, largest ${back.anon.maxLen}, smallest request ${sentTo.anon.minLen}); to signed ones ${back.authed.n}; from peer ports ${back.other.n}`,
  );
  if (keyed) {
    t.ok(
      back.anon.bytes <= sentTo.anon.bytes,
      'unauthenticated senders get back fewer bytes than they sent',
    );
    t.equal(back.other.n, 0, 'nothing ever comes back from a peer port');
  }

  const drops: Record<string, number> = Object.create(null);
  for (const sid of c.sids)
    for (const [k, v] of Object.entries(c.dropCounts(sid))) drops[k] = (drops[k] ?? 0) + v;
  const total = Object.values(drops).reduce((a, b) => a + b, 0);
  t.comment(
    `drops (all nodes): ${total} of ${sent}: ${JSON.stringify(Object.fromEntries(Object.entries(drops).sort((a, b) => b[1] - a[1])))}`,
  );
  t.ok(total >= sent * 0.8, 'nearly every fuzz datagram was counted as a drop');
}

t.test('live UDP fuzz with peer and client keys', async (t) => {
  await fuzzRun(t, true, COUNT, SEED);
});

t.test('live UDP fuzz without keys (trusted-network mode)', async (t) => {
  await fuzzRun(t, false, Math.min(COUNT, 30_000), (SEED + 1) >>> 0);
});
