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
