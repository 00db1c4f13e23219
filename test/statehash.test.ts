// The rolling state hash's chain (issue 12) against its definition, computed
// here from the bytes alone: the SHA-256 of a slot waits until a hash is asked
// for (StateHash.settle), and asking seldom, often or never must not change
// any hash.
import { createHash } from 'node:crypto';
import t from 'tap';
import type { Cmd, CmdResult } from '../lib/core/types';
import {
  commandBytesMax,
  hex,
  LINE_DIGEST_VERSION,
  lineDigestV2,
  STATE_HASH_PENDING_SLOTS,
  STATE_HASH_RING,
  StateHash,
  writeCommand,
} from '../lib/sm/statehash';

/** A small deterministic generator (the same slots on every run). */
function lcg(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % n;
}

/** Random slots: 0-40 commands of 0-300 bytes, results of every shape, non-ASCII text. */
function slots(count: number): { cmds: Cmd[]; results: CmdResult[] }[] {
  const rnd = lcg(7);
  const text = (): string =>
    Array.from({ length: rnd(60) }, () =>
      String.fromCharCode(rnd(4) === 0 ? 0x80 + rnd(0x3000) : 32 + rnd(90)),
    ).join('');
  return Array.from({ length: count }, () => {
    const cmds: Cmd[] = [];
    const results: CmdResult[] = [];
    for (let n = rnd(41); n > 0; n--) {
      cmds.push({
        cid: rnd(1e6),
        seq: rnd(1e6),
        op: Uint8Array.from({ length: rnd(300) }, () => rnd(256)),
      });
      const shape = rnd(4);
      results.push(
        shape === 0
          ? { ok: true }
          : shape === 1
            ? { ok: true, value: rnd(3) ? text() : null }
            : shape === 2
              ? { ok: false, err: text() }
              : { ok: false, value: text() },
      );
    }
    return { cmds, results };
  });
}

/** h(slot) = SHA-256(h(slot-1) || slot || count || each command's bytes), one slot at a time. */
function reference(from: Uint8Array, first: number, s: ReturnType<typeof slots>): string[] {
  let h = Buffer.from(from);
  return s.map(({ cmds, results }, i) => {
    let size = 12;
    for (let k = 0; k < cmds.length; k++) size += commandBytesMax(cmds[k], results[k]);
    const buf = Buffer.alloc(size);
    const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
    view.setFloat64(0, first + i);
    view.setUint32(8, cmds.length);
    let at = 12;
    for (let k = 0; k < cmds.length; k++) at = writeCommand({ buf, view }, at, cmds[k], results[k]);
    h = createHash('sha256').update(h).update(buf.subarray(0, at)).digest();
    return hex(h);
  });
}

const SLOTS = 3 * STATE_HASH_RING;

t.test('every h(slot) is its definition, however seldom hashes are asked for', async (t) => {
  const s = slots(SLOTS);
  const want = reference(new Uint8Array(32), 1, s);
  // every: asks at each slot (nothing waits); seldom: at random slots; never: only at the end.
  const rnd = lcg(11);
  for (const [name, ask] of [
    ['every slot', () => true],
    ['seldom', () => rnd(3 * STATE_HASH_PENDING_SLOTS) === 0],
    ['never', () => false],
  ] as const) {
    const h = new StateHash();
    let asked = 0;
    let wrong = 0;
    s.forEach(({ cmds, results }, i) => {
      h.step(i + 1, cmds, results);
      if (!ask()) return;
      asked++;
      const d = h.digest()!;
      if (d.slot !== i + 1 || hex(d.hash) !== want[i]) wrong++;
    });
    t.equal(wrong, 0, `${name}: ${asked} digests asked for, each one h(slot)`);
    t.equal(hex(h.hash!), want[SLOTS - 1], `${name}: the last hash`);
    let ring = 0;
    for (let slot = SLOTS - STATE_HASH_RING + 1; slot <= SLOTS; slot++)
      if (hex(h.hashAt(slot)!) === want[slot - 1]) ring++;
    t.equal(ring, STATE_HASH_RING, `${name}: hashAt of every slot the ring keeps`);
  }
});

t.test('a reset drops the slots still waiting; the chain goes on from its hash', async (t) => {
  const s = slots(40);
  const h = new StateHash();
  s.slice(0, 20).forEach(({ cmds, results }, i) => h.step(i + 1, cmds, results));
  const restored = new Uint8Array(32).fill(5);
  h.reset(20, restored); // a snapshot through slot 20, taken elsewhere
  t.equal(hex(h.hash!), hex(restored), 'the snapshot hash, not one of the slots before it');
  t.equal(h.hashAt(19), undefined, 'slots before the reset are gone');
  s.slice(20).forEach(({ cmds, results }, i) => h.step(21 + i, cmds, results));
  const want = reference(restored, 21, s.slice(20));
  t.equal(hex(h.hash!), want[want.length - 1], 'chained onto the restored hash');
  t.equal(hex(h.hashAt(21)!), want[0], 'from its first slot on');
});

t.test('while the chain is unknown, nothing waits; an adopted hash chains on', async (t) => {
  const s = slots(10);
  const h = new StateHash();
  h.reset(0, null);
  s.slice(0, 5).forEach(({ cmds, results }, i) => h.step(i + 1, cmds, results));
  t.equal(h.digest(), null, 'unknown');
  const peer = new Uint8Array(32).fill(9);
  t.ok(h.adopt(5, peer), "a peer's hash of our last slot is taken");
  s.slice(5).forEach(({ cmds, results }, i) => h.step(6 + i, cmds, results));
  const want = reference(peer, 6, s.slice(5));
  t.equal(hex(h.hash!), want[want.length - 1], 'the chain goes on from it');
});

/** 32-bit rotate left (the definitions below are written out here, apart from the code). */
const rotl = (x: number, r: number): number => ((x << r) | (x >>> (32 - r))) >>> 0;
const mul = (x: number, y: number): number =>
  Number((BigInt(x >>> 0) * BigInt(y >>> 0)) % 2n ** 32n);
const add = (x: number, y: number): number => (x + y) % 2 ** 32;
function fmix32(h: number): number {
  h = (h ^ (h >>> 16)) >>> 0;
  h = mul(h, 0x85ebca6b);
  h = (h ^ (h >>> 13)) >>> 0;
  h = mul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
const hex8 = (x: number): string => x.toString(16).padStart(8, '0');

/** Version 1 from its definition: two FNV-1a lanes over each byte, then fmix32 each. */
function refV1(bytes: Uint8Array): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (const x of bytes) {
    a = mul((a ^ x) >>> 0, 0x01000193);
    b = mul((b ^ x) >>> 0, 0x5bd1e995);
  }
  return hex8(fmix32(a)) + hex8(fmix32((b ^ a) >>> 0));
}

/** Version 2 from its definition (lib/sm/statehash.ts: lineDigestV2), BigInt products. */
function refV2(bytes: Uint8Array): string {
  const n = bytes.length;
  let a = (0x811c9dc5 ^ n) >>> 0;
  let b = (0x9747b28c ^ n) >>> 0;
  const whole = n - (n % 4);
  const word = (i: number): number =>
    (bytes[i] ?? 0) +
    (bytes[i + 1] ?? 0) * 2 ** 8 +
    (bytes[i + 2] ?? 0) * 2 ** 16 +
    (bytes[i + 3] ?? 0) * 2 ** 24;
  const ka = (k: number): number => mul(rotl(mul(k, 0xcc9e2d51), 15), 0x1b873593);
  const kb = (k: number): number => mul(rotl(mul(k, 0x85ebca6b), 17), 0xc2b2ae35);
  for (let i = 0; i < whole; i += 4) {
    const k = word(i);
    a = add(mul(rotl((a ^ ka(k)) >>> 0, 13), 5), 0xe6546b64);
    b = add(mul(rotl((b ^ kb(k)) >>> 0, 15), 9), 0x38495ab5);
  }
  if (whole < n) {
    // The partial last word, zero-padded: only xor-ed in.
    const k = word(whole);
    a = (a ^ ka(k)) >>> 0;
    b = (b ^ kb(k)) >>> 0;
  }
  return hex8(fmix32(a)) + hex8(fmix32((b ^ a) >>> 0));
}

t.test('line digests of each version are their definitions', async (t) => {
  t.equal(LINE_DIGEST_VERSION, 2, 'this build writes version 2');
  const s = slots(300);
  // Each command's bytes, as writeCommand lays them out (what both digests cover).
  const bytesOf = (c: Cmd, r: CmdResult): Uint8Array => {
    const buf = Buffer.alloc(commandBytesMax(c, r));
    const end = writeCommand(
      { buf, view: new DataView(buf.buffer, buf.byteOffset, buf.length) },
      0,
      c,
      r,
    );
    return buf.subarray(0, end);
  };
  const v1 = new StateHash(1);
  const v2 = new StateHash(2);
  let lines = 0;
  const wrong: string[] = [];
  const lengths = new Set<number>();
  s.forEach(({ cmds, results }, i) => {
    const d1 = v1.step(i + 1, cmds, results);
    const d2 = v2.step(i + 1, cmds, results);
    cmds.forEach((c, k) => {
      const bytes = bytesOf(c, results[k]);
      lengths.add(bytes.length % 4);
      if (d1[k] !== refV1(bytes)) wrong.push(`v1 ${i + 1}.${k}: ${d1[k]}`);
      if (d2[k] !== `v2:${refV2(bytes)}`) wrong.push(`v2 ${i + 1}.${k}: ${d2[k]}`);
      lines++;
    });
  });
  t.same(wrong.slice(0, 5), [], `${lines} commands: every digest of each version`);
  t.same([...lengths].sort(), [0, 1, 2, 3], 'every length mod 4 (partial last words) was covered');
  t.equal(
    hex(v1.hash!),
    hex(v2.hash!),
    'the state hash does not depend on the line digest version',
  );
  // Small cases by hand: the empty input, and a partial word alone.
  const view = (b: number[]): DataView => new DataView(Uint8Array.from(b).buffer);
  for (const b of [
    [],
    [1],
    [1, 2, 3],
    [1, 2, 3, 4],
    [1, 2, 3, 4, 5],
    [255, 255, 255, 255, 255, 255, 255],
  ])
    t.equal(
      lineDigestV2(view(b), 0, b.length),
      refV2(Uint8Array.from(b)),
      `v2 of [${b.join(', ')}]`,
    );
  // Any one flipped bit of a 105-byte command changes the digest (both lanes read every word).
  const base = Uint8Array.from({ length: 105 }, (_, i) => (i * 37) & 255);
  const d0 = lineDigestV2(view([...base]), 0, base.length);
  let same = 0;
  for (let bit = 0; bit < base.length * 8; bit++) {
    const x = Uint8Array.from(base);
    x[bit >> 3] ^= 1 << (bit & 7);
    const d = lineDigestV2(new DataView(x.buffer), 0, x.length);
    if (d.slice(0, 8) === d0.slice(0, 8) || d.slice(8) === d0.slice(8)) same++;
  }
  t.equal(same, 0, 'every single-bit change changes both 32-bit halves');
});

t.test(
  'hashAt of a slot already hashed leaves the waiting slots waiting; their hashes still right',
  async (t) => {
    const s = slots(40);
    const want = reference(new Uint8Array(32), 1, s);
    const h = new StateHash();
    s.slice(0, 20).forEach(({ cmds, results }, i) => h.step(i + 1, cmds, results));
    t.equal(hex(h.hashAt(20)!), want[19], 'slot 20, asked while it waited');
    s.slice(20, 30).forEach(({ cmds, results }, i) => h.step(21 + i, cmds, results));
    t.equal(hex(h.hashAt(20)!), want[19], 'slot 20 again, slots 21-30 waiting');
    t.equal(hex(h.hashAt(21)!), want[20], 'slot 21, the first one waiting');
    s.slice(30).forEach(({ cmds, results }, i) => h.step(31 + i, cmds, results));
    let right = 0;
    for (let slot = 1; slot <= 40; slot++) if (hex(h.hashAt(slot)!) === want[slot - 1]) right++;
    t.equal(right, 40, 'every slot');
  },
);
