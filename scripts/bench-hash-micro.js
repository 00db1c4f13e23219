#!/usr/bin/env node
// Where the rolling state hash's work goes per command (issue 12): a
// micro-benchmark of each part of StateHash.step and settle on commands shaped
// like paxos-bench's (put of a 64-byte value to a 4-byte key, result
// {ok: true}: 105 bytes hashed per command).
//
//   node scripts/bench-hash-micro.js [DIST [CMDS-PER-SLOT...]]
//        DIST: a built tree's dist directory (default: dist of this repo);
//        CMDS-PER-SLOT default 1 8 32 (the bench's nodes see 30-37)
//
// Each figure comes from a fresh process (no JIT state shared between parts):
//   write      writeCommand alone (the bytes the hashes cover);
//   digest vN  the line digest of version N alone, on those bytes (with its hex);
//   sha        the SHA-256 of each slot's bytes, h(slot-1) in front, as settle
//              does it;
//   step vN    StateHash.step with line digests of version N, a hash asked for
//              every 16 slots (all of the hash work: bytes, digests, SHA-256).
// ns per command, best of 9 runs over 4096 slots. A loop here runs hot in the
// caches: a node does other work between applies, so its own cost per command
// is higher (scripts/bench-hash-cpu.sh measures it in the bench's nodes).
'use strict';
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { hash } = require('node:crypto');
const fs = require('node:fs');

const SLOTS = 4096;
const ROUNDS = 9;

function makeSlots(encodeOp, perSlot) {
  const value = 'v1a-'.repeat(16);
  return Array.from({ length: SLOTS }, (_, s) => {
    const cmds = [];
    const results = [];
    for (let i = 0; i < perSlot; i++) {
      const key = `k${String((s * perSlot + i) % 1000).padStart(3, '0')}`;
      cmds.push({ cid: 1000 + i, seq: s + 1, op: encodeOp({ kind: 'put', key, value }) });
      results.push({ ok: true });
    }
    return { cmds, results };
  });
}

/** One part, in this process: prints ns per command. */
function one(dist, what, perSlot) {
  const sh = require(path.join(dist, 'lib/sm/statehash.js'));
  const { encodeOp } = require(path.join(dist, 'lib/sm/kv.js'));
  const slots = makeSlots(encodeOp, perSlot);
  // Every slot's bytes, written once, as settle finds them (32 bytes of room in front).
  const buf = Buffer.allocUnsafeSlow(1 << 24);
  const s = { buf, view: new DataView(buf.buffer, buf.byteOffset, buf.length) };
  const from = [];
  const to = [];
  const cmdAt = [];
  let at = 0;
  for (const { cmds, results } of slots) {
    from.push(at);
    at += 32 + 12;
    for (let i = 0; i < cmds.length; i++) {
      const end = sh.writeCommand(s, at, cmds[i], results[i]);
      cmdAt.push(at, end);
      at = end;
    }
    to.push(at);
  }
  const version = Number(what.slice(-1));
  const digestOf = (v) =>
    sh.lineDigestOf ? sh.lineDigestOf(v) : (s, a, b) => sh.lineDigest(s.buf, a, b);
  let sink = 0;
  const parts = {
    write() {
      for (const { cmds, results } of slots) {
        let p = 0;
        for (let i = 0; i < cmds.length; i++) p = sh.writeCommand(s, p, cmds[i], results[i]);
        sink += p;
      }
    },
    digest() {
      const d = digestOf(version);
      for (let i = 0; i < cmdAt.length; i += 2) sink += d(s, cmdAt[i], cmdAt[i + 1]).length;
    },
    sha() {
      let h = '\0'.repeat(32);
      for (let k = 0; k < from.length; k++) {
        buf.write(h, from[k], 32, 'latin1');
        h = hash('sha256', buf.subarray(from[k], to[k]), 'binary');
      }
      sink += h.length;
    },
    step() {
      const h = sh.LINE_DIGEST_VERSIONS ? new sh.StateHash(version) : new sh.StateHash();
      slots.forEach(({ cmds, results }, k) => {
        sink += h.step(k + 1, cmds, results).length;
        if (k % 16 === 15) h.digest();
      });
    },
  };
  const fn = parts[what.replace(/ v\d$/, '')];
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / (SLOTS * perSlot));
  }
  process.stdout.write(`${best.toFixed(0)} ${sink > 0 ? '' : '?'}\n`);
}

if (process.argv[2] === '--one') {
  one(process.argv[3], process.argv[4], Number(process.argv[5]));
} else {
  const dist = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'dist'));
  const counts = process.argv.slice(3).map(Number);
  const sh = require(path.join(dist, 'lib/sm/statehash.js'));
  const versions = sh.LINE_DIGEST_VERSIONS ?? [1];
  const whats = ['write', ...versions.map((v) => `digest v${v}`), 'sha'];
  whats.push(...versions.map((v) => `step v${v}`));
  const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(
    `${dist}: ns per command, best of ${ROUNDS} runs over ${SLOTS} slots; load ${load()}`,
  );
  for (const perSlot of counts.length ? counts : [1, 8, 32]) {
    const row = whats.map((w) => {
      const out = execFileSync(process.execPath, [__filename, '--one', dist, w, String(perSlot)]);
      return `${w} ${String(out).trim()}`;
    });
    console.log(`${perSlot} cmds/slot: ${row.join(', ')}`);
  }
  console.log(`load after: ${load()}`);
}
