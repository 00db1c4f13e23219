// Wire codec: every message type round-trips; hostile bytes are dropped with a
// reason and never throw; authentication is checked before decoding.
import t from 'tap';
import { Decoder, Encoder } from 'cbor-x';
import { Prng } from '../lib/core/prng';
import type { Msg } from '../lib/core/types';
import { decodeReply, decodeRequest, encodeReply, encodeRequest } from '../lib/wire/client';
import { clusterTag, Keyring, Kind, NO_KEYS, open, seal } from '../lib/wire/envelope';
import { decodePeerBody, encodePeerBody, SCHEMA } from '../lib/wire/peer';
import { decodeOp, encodeOp } from '../lib/sm/kv';

const op = Buffer.from(encodeOp({ kind: 'put', key: 'k', value: 'v' }));
const value = [{ cid: 2 ** 40 + 3, seq: 7, op }];

const SAMPLES: Msg[] = [
  { t: 'prepare', ballot: 513, from: 4 },
  { t: 'handoff', ballot: 513, chosen: 40, tick: 9000, until: 9030, echoLife: 77, echoTick: 8990 },
  {
    t: 'promise',
    ballot: 513,
    from: 4,
    lo: 4,
    hi: 0,
    base: 2,
    entries: [
      [5, 257, value],
      [6, -1, []],
    ],
    incs: [1, 1048577],
  },
  {
    t: 'accept',
    ballot: 513,
    entries: [
      [5, value],
      [6, []],
    ],
    commit: 4,
  },
  { t: 'accepted', ballot: 513, slots: [5, 6], incs: [] },
  { t: 'nack', ballot: 513, promised: 770 },
  { t: 'commit', ballot: 513, through: 6 },
  {
    t: 'heartbeat',
    promised: 513,
    leading: true,
    chosen: 6,
    next: 7,
    eligible: true,
    voter: true,
    heard: [0, 2],
    leader: 0,
    tick: 7,
  },
  { t: 'rejoinReq', nonce: 123456, inc: 0 },
  {
    t: 'rejoinResp',
    nonce: 123456,
    inc: 1048577,
    known: 1048577,
    promised: 770,
    next: 42,
    incs: [2, 1048577],
  },
  { t: 'catchupReq', from: 1, to: 6 },
  { t: 'confirm', ballot: 513, round: 9 },
  { t: 'confirmed', ballot: 513, round: 9 },
  { t: 'settled', slot: 1234 },
  { t: 'catchupResp', from: 1, entries: [value, []], snapshot: 0, snapshotBytes: 0 },
  { t: 'snapshotReq', slot: 100, offset: 0 },
  { t: 'snapshotResp', slot: 100, offset: 0, total: 3, data: Buffer.from([1, 2, 3]) },
];

const CLUSTER = clusterTag('test');

t.test('every peer message type round-trips', async (t) => {
  t.equal(SAMPLES.length, Object.keys(SCHEMA).length, 'a sample for every schema entry');
  for (const m of SAMPLES) {
    const wire = seal(Kind.Peer, CLUSTER, encodePeerBody(1, m), NO_KEYS);
    const o = open(wire, Kind.Peer, CLUSTER, NO_KEYS);
    if ('error' in o) throw new Error(o.error);
    const d = decodePeerBody(o.body);
    if ('error' in d) throw new Error(`${m.t}: ${d.error}`);
    t.equal(d.from, 1);
    t.same(JSON.parse(JSON.stringify(d.msg)), JSON.parse(JSON.stringify(m)), m.t);
  }
});

// A rolling upgrade meets heartbeats of builds before the state hash (issue 12):
// 9 fields, as c15c7a8 encoded them. The hash fields are optional on decode.
t.test('a heartbeat without the state hash fields decodes (older builds)', async (t) => {
  const enc = new Encoder({ useRecords: false });
  const old = [1, SCHEMA.heartbeat.code, 513, true, 6, 7, true, true, [0, 2], 0, 7];
  const d = decodePeerBody(enc.encode(old));
  if ('error' in d) throw new Error(d.error);
  t.match(d.msg, { t: 'heartbeat', promised: 513, leading: true, tick: 7 }, 'older heartbeat');
  t.equal((d.msg as { hash?: unknown }).hash, undefined, 'no hash');
  t.equal((d.msg as { hashSlot?: unknown }).hashSlot, undefined, 'no hash slot');
  // A node whose hash is unknown (format 3/4 snapshot) sends null in their place.
  const noHash = [...old, null, null, 12345, 678, 6];
  const e = decodePeerBody(enc.encode(noHash));
  if ('error' in e) throw new Error(e.error);
  t.match(e.msg, { life: 12345, echoLife: 678, echoTick: 6 }, 'freshness fields still read');
  t.equal((e.msg as { hash?: unknown }).hash, undefined, 'null hash is absent');
  // What a newer build sends with its hash: the older builds' strict count (9)
  // refuses it, which is why the upgrade stops the whole cluster (README).
  const withHash = encodePeerBody(1, {
    ...(SAMPLES.find((m) => m.t === 'heartbeat') as Extract<Msg, { t: 'heartbeat' }>),
    hashSlot: 6,
    hash: Buffer.alloc(32, 7),
    life: 12345,
  });
  const fields = (new Decoder({ useRecords: false }).decode(withHash) as unknown[]).length - 2;
  t.ok(fields > 9, `a heartbeat with the hash has ${fields} fields, more than older builds take`);
});

t.test('the envelope rejects wrong magic, version, kind, cluster and oversize', async (t) => {
  const good = seal(Kind.Peer, CLUSTER, encodePeerBody(1, SAMPLES[0]), NO_KEYS);
  const variant = (i: number, v: number): Buffer => {
    const b = Buffer.from(good);
    b[i] = v;
    return b;
  };
  t.match(open(variant(0, 0), Kind.Peer, CLUSTER, NO_KEYS), { error: 'bad_magic' });
  t.match(open(variant(2, 9), Kind.Peer, CLUSTER, NO_KEYS), { error: 'bad_version' });
  t.match(open(good, Kind.ClientRequest, CLUSTER, NO_KEYS), { error: 'wrong_kind' });
  t.match(open(good, Kind.Peer, clusterTag('other'), NO_KEYS), { error: 'wrong_cluster' });
  t.match(open(Buffer.alloc(70_000), Kind.Peer, CLUSTER, NO_KEYS), { error: 'oversized' });
  t.match(open(good.subarray(0, 5), Kind.Peer, CLUSTER, NO_KEYS), { error: 'short' });
});

t.test(
  'HMAC: a missing or wrong tag is dropped before decoding; either of two keys verifies',
  async (t) => {
    const k1 = Buffer.alloc(32, 1);
    const k2 = Buffer.alloc(32, 2);
    const body = encodePeerBody(1, SAMPLES[0]);
    const signed = seal(Kind.Peer, CLUSTER, body, new Keyring([k1]));
    t.notOk('error' in open(signed, Kind.Peer, CLUSTER, new Keyring([k1])), 'right key');
    t.notOk(
      'error' in open(signed, Kind.Peer, CLUSTER, new Keyring([k2, k1])),
      'second key of a rotation',
    );
    t.match(open(signed, Kind.Peer, CLUSTER, new Keyring([k2])), { error: 'bad_tag' }, 'wrong key');
    t.match(open(seal(Kind.Peer, CLUSTER, body, NO_KEYS), Kind.Peer, CLUSTER, new Keyring([k1])), {
      error: 'missing_tag',
    });
    const flipped = Buffer.from(signed);
    flipped[flipped.length - 1] ^= 1;
    t.match(
      open(flipped, Kind.Peer, CLUSTER, new Keyring([k1])),
      { error: 'bad_tag' },
      'any changed byte',
    );
  },
);

t.test(
  'strict decoding: tags, prototype keys, wrong types and huge claims are refused',
  async (t) => {
    const enc = new Encoder({ useRecords: false });
    const cases: [string, unknown][] = [
      ['date tag where a number is expected', [1, 1, new Date(0), 1]],
      ['string ballot', [1, 1, '5', 1]],
      ['negative slot', [1, 1, 5, -1]],
      ['float', [1, 1, 5.5, 1]],
      ['unknown type', [1, 99, 5, 1]],
      ['extra field', [1, 1, 5, 1, 0]],
      ['object instead of array', { __proto__: { polluted: true }, constructor: 1 }],
      ['command with wrong arity', [1, 3, 5, [[1, [[1, 2]]]], 0]],
      ['op not bytes', [1, 3, 5, [[1, [[1, 2, 'x']]]], 0]],
    ];
    for (const [name, v] of cases) t.ok('error' in decodePeerBody(enc.encode(v)), name);
    // An array header claiming 2^32 elements must not allocate.
    const huge = Buffer.from([0x9b, 0, 0, 0, 1, 0, 0, 0, 0]);
    t.ok('error' in decodePeerBody(huge), 'huge array length');
    const deep = Buffer.alloc(100_000, 0x81);
    t.ok('error' in decodePeerBody(deep), 'deep nesting');
    t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
  },
);

t.test('client codec round-trips and refuses junk', async (t) => {
  const req = { t: 'op' as const, cid: 5, seq: 2, op };
  t.same(decodeRequest(encodeRequest(req)), req);
  t.same(decodeRequest(encodeRequest({ t: 'status', nonce: 9 })), { t: 'status', nonce: 9 });
  t.ok('error' in decodeRequest(Buffer.from([0xff, 0x00])));
  t.ok('error' in decodeRequest(new Encoder().encode([1, 5, 0, op])), 'seq 0 is invalid');
  const rep = { t: 'result' as const, cid: 5, seq: 2, result: { ok: true, value: 'x' } };
  t.same(decodeReply(encodeReply(rep)), rep);
  t.match(decodeReply(encodeReply({ t: 'redirect', cid: 5, seq: 2, leader: 1 })), { leader: 1 });
  const batch = {
    t: 'ops' as const,
    ops: [
      { cid: 5, seq: 3, op },
      { cid: 6, seq: 1, op },
    ],
  };
  t.same(decodeRequest(encodeRequest(batch)), batch, 'a batch of requests round-trips');
  t.ok('error' in decodeRequest(new Encoder().encode([3, []])), 'an empty batch is refused');
  const results = {
    t: 'results' as const,
    results: [
      { cid: 5, seq: 3, result: { ok: true, value: null } },
      { cid: 6, seq: 1, result: { ok: false, value: null, err: 'x' } },
    ],
  };
  t.same(decodeReply(encodeReply(results)), results, 'a batch of results round-trips');
});

t.test('operations: size limit named in the error; malformed ops refused', async (t) => {
  t.same(decodeOp(encodeOp({ kind: 'put', key: 'k', value: 'x'.repeat(16384) }), 32768), {
    kind: 'put',
    key: 'k',
    value: 'x'.repeat(16384),
  });
  t.match(decodeOp(encodeOp({ kind: 'put', key: 'k', value: 'x'.repeat(40000) }), 32768), {
    code: 'too_large',
    message: /32768/,
  });
  // The code comes from the refusal's factory, never from its text.
  t.match(decodeOp(Buffer.from([0xa1, 0x61, 0x61, 0x01]), 32768), { code: 'bad_op' }, 'a map');
  t.match(decodeOp(new Encoder().encode(['put', 'k', 5]), 32768), { code: 'bad_op' }, 'number');
  t.match(decodeOp(new Encoder().encode(['drop', 'k']), 32768), { code: 'bad_op' }, 'unknown op');
  for (const op of [
    { kind: 'put', key: '', value: 'v' },
    { kind: 'del', key: '' },
    { kind: 'cas', key: '', expected: null, value: 'v' },
    { kind: 'get', key: '' },
  ] as const)
    t.match(
      decodeOp(encodeOp(op), 32768),
      { code: 'bad_op', message: /key is empty/ },
      `${op.kind} of the empty key`,
    );
  t.match(decodeOp(encodeOp({ kind: 'get', key: 'k'.repeat(2000) }), 32768), {
    code: 'too_large',
    message: /key/,
  });
});

const FUZZ = Number(process.env.FUZZ_DATAGRAMS ?? 1_000_000);

t.test(`fuzz: ${FUZZ} random and mutated datagrams never throw`, async (t) => {
  const prng = new Prng(12345);
  const seeds = SAMPLES.map((m) => seal(Kind.Peer, CLUSTER, encodePeerBody(1, m), NO_KEYS));
  const enc = new Encoder({ useRecords: false });
  const nasty = [
    enc.encode([1, 1, new Date(0), 1]),
    enc.encode({ __proto__: 1, constructor: { prototype: 1 } }),
    Buffer.from([0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    Buffer.from([0xd9, 0xd9, 0xf7, 0x80]),
    Buffer.alloc(5000, 0x81),
  ];
  let accepted = 0;
  let dropped = 0;
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < FUZZ; i++) {
    let buf: Buffer;
    const kind = prng.int(5);
    if (kind === 0) {
      buf = Buffer.alloc(prng.int(200));
      for (let j = 0; j < buf.length; j++) buf[j] = prng.int(256);
    } else if (kind === 1) {
      buf = Buffer.concat([seeds[0].subarray(0, 10), prng.pick(nasty)]);
    } else {
      buf = Buffer.from(prng.pick(seeds));
      const flips = 1 + prng.int(4);
      for (let j = 0; j < flips; j++) {
        const at = 10 + prng.int(Math.max(1, buf.length - 10));
        if (at < buf.length) buf[at] = kind === 2 ? buf[at] ^ (1 << prng.int(8)) : prng.int(256);
      }
      if (kind === 4) buf = buf.subarray(0, prng.int(buf.length + 1));
    }
    const o = open(buf, Kind.Peer, CLUSTER, NO_KEYS);
    if ('error' in o) {
      dropped++;
      continue;
    }
    const d = decodePeerBody(o.body);
    if ('error' in d) dropped++;
    else accepted++;
    if (i % 4 === 0) decodeRequest(o.body);
  }
  t.equal(accepted + dropped, FUZZ, 'every datagram handled without an exception');
  t.ok(dropped > FUZZ / 2, `most are dropped (${dropped} dropped, ${accepted} decoded)`);
  t.ok(process.memoryUsage().heapUsed - before < 200 * 1024 * 1024, 'memory stays bounded');
  t.comment(`fuzzed ${FUZZ}: ${dropped} dropped, ${accepted} decoded as valid messages`);
});
