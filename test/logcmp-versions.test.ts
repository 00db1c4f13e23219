// Order-log line digests of two versions (issue 12's cost: version 2 reads 4
// bytes at a time): a line says which version made its digest, paxos-logcmp
// compares digests of one version only, names a divergence in version-2 logs,
// and names a version mismatch instead of calling it a divergence.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import type { Cmd, CmdResult } from '../lib/core/types';
import { orderLogCut, parseOrderLine } from '../lib/io/orderlog';
import { compareLogTexts } from '../lib/logcmp';
import { encodeOp, encodeRegister, KvStateMachine, REGISTER_NONCE_MIN } from '../lib/sm/kv';
import { LINE_DIGEST_VERSION, StateHash, withoutDigest } from '../lib/sm/statehash';
import { BIN, runBin } from './helpers/cluster';

function put(seq: number, key: string, value: string): Cmd {
  return { cid: 1, seq, op: encodeOp({ kind: 'put', key, value }) };
}

/**
 * An order log as this build writes it (KvStateMachine: version-2 digests) for
 * session 1's puts, one per slot from slot 2, with a no-op at the end; and the
 * same log as a build writing version-1 digests would have it (the same lines,
 * each digest made again by a version-1 StateHash from the same command and
 * result).
 */
function logs(values: string[]): { v2: string; v1: string } {
  const sm = new KvStateMachine(100, 32768);
  const v1 = new StateHash(1);
  const reg = [{ cid: REGISTER_NONCE_MIN, seq: 1, op: encodeRegister() }];
  const out2: string[] = [];
  const out1: string[] = [];
  const apply = (slot: number, cmds: Cmd[]): void => {
    const { results, lines } = sm.apply(slot, cmds) as { results: CmdResult[]; lines: string[] };
    const d1 = v1.step(slot, cmds, results);
    out2.push(...lines);
    lines.forEach((l, i) => out1.push(cmds.length ? `${withoutDigest(l)} [${d1[i]}]` : l));
  };
  apply(1, reg);
  values.forEach((v, i) => apply(2 + i, [put(i + 1, 'k', v)]));
  apply(2 + values.length, []);
  return { v2: out2.join('\n') + '\n', v1: out1.join('\n') + '\n' };
}

const long = (last: string): string => 'z'.repeat(99) + last;

t.test('lines say their digest version; the restart rule reads them', async (t) => {
  t.equal(LINE_DIGEST_VERSION, 2);
  const { v1, v2 } = logs([long('1')]);
  const l2 = v2.split('\n')[1];
  const l1 = v1.split('\n')[1];
  t.match(l2, /^2\.0 1:1 put "k" "z+…\(100 bytes\) \[v2:[0-9a-f]{16}\]$/, 'a version-2 line');
  t.match(l1, /^2\.0 1:1 put "k" "z+…\(100 bytes\) \[[0-9a-f]{16}\]$/, 'a version-1 line');
  const p2 = parseOrderLine(l2);
  const p1 = parseOrderLine(l1);
  t.match(p2, { kind: 'command', slot: 2, index: 0, digestVersion: 2 });
  t.match(p1, { kind: 'command', slot: 2, index: 0, digestVersion: 1 });
  t.equal(p2?.kind === 'command' && p2.text, p1?.kind === 'command' && p1.text, 'same text');
  t.not(p2?.kind === 'command' && p2.digest, p1?.kind === 'command' && p1.digest);
  t.equal(withoutDigest(l2), withoutDigest(l1), 'withoutDigest strips either');
  t.equal(parseOrderLine('2.0 1:1 put "k" "v" [v0:0123456789abcdef]')?.kind, 'command');
  t.notOk(
    (parseOrderLine('2.0 1:1 put "k" "v" [v0:0123456789abcdef]') as { digest?: string }).digest,
    'no version 0: the bracket is text, not a digest',
  );
  // The restart rule cuts the last slot's lines, whatever their digest version.
  const text = Buffer.from(v2);
  const cut = orderLogCut(text, text.length);
  t.same(cut && { lastSlot: cut.lastSlot }, { lastSlot: 2 }, 'resumes after slot 2');
  t.equal(text.subarray(0, cut!.cut).toString(), v2.split('\n').slice(0, 2).join('\n') + '\n');
});

t.test('two version-2 logs: a difference past the readable prefix is a divergence', async (t) => {
  const a = logs([long('1'), 'x']).v2;
  const b = logs([long('2'), 'x']).v2;
  t.equal(
    a.split('\n').map(withoutDigest).join('\n'),
    b.split('\n').map(withoutDigest).join('\n'),
    'the readable lines are the same',
  );
  const r = compareLogTexts([
    { file: 'a.log', text: a },
    { file: 'b.log', text: b },
  ]);
  t.notOk(r.ok, 'divergence');
  t.match(r.message, /^first divergence at 2\.0 \(slot 2\):/, 'names the slot');
  t.match(r.message, /a\.log: 1:1 put "k" .*\[v2:[0-9a-f]{16}\]\n {2}b\.log: 1:1 put "k" .*\[v2:/);
  const same = compareLogTexts([
    { file: 'a.log', text: a },
    { file: 'a2.log', text: logs([long('1'), 'x']).v2 },
  ]);
  t.ok(same.ok, same.message);
  t.notMatch(same.message, /versions differ/, 'no version warning between logs of one version');
});

t.test('logs of different digest versions: not compared by digest, and said so', async (t) => {
  const { v1, v2 } = logs([long('1'), 'x', 'y']);
  const r = compareLogTexts([
    { file: 'old.log', text: v1 },
    { file: 'new.log', text: v2 },
  ]);
  t.ok(r.ok, 'the same commands: no divergence (the digests differ only by version)');
  t.match(
    r.message,
    /\nline digest versions differ \(old\.log: v1, new\.log: v2 at 1\.0\) on 4 lines both have: digests not compared there, only the readable text$/,
    'the OK message names the mismatch',
  );
  // A difference the readable text shows is still found, and says how.
  const other = logs([long('1'), 'w', 'y']).v1;
  const d = compareLogTexts([
    { file: 'old.log', text: other },
    { file: 'new.log', text: v2 },
  ]);
  t.notOk(d.ok);
  t.match(
    d.message,
    /^first divergence at 3\.0 \(slot 3\) \(texts differ; line digest versions v1 and v2 are not compared\):\n {2}old\.log: 1:2 put "k" "w" \[[0-9a-f]{16}\]\n {2}new\.log: 1:2 put "k" "x" \[v2:[0-9a-f]{16}\]$/,
  );
  // One past the prefix is not visible across versions: the warning is what says so.
  const hidden = compareLogTexts([
    { file: 'old.log', text: logs([long('2'), 'x', 'y']).v1 },
    { file: 'new.log', text: v2 },
  ]);
  t.ok(hidden.ok, 'a difference past the prefix is not seen across versions');
  t.match(hidden.message, /line digest versions differ/, 'and the message warns of it');
});

t.test(
  'paxos-logcmp: exit 1 naming a version-2 divergence; exit 0 with the mismatch named',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logcmp-versions-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = (name: string, text: string): string => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, text);
      return f;
    };
    const a = file('a.log', logs([long('1')]).v2);
    const b = file('b.log', logs([long('2')]).v2);
    const old = file('old.log', logs([long('1')]).v1);
    const div = await runBin(BIN.logcmp, [a, b]);
    t.equal(div.code, 1, 'two version-2 logs that differ past the prefix: exit 1');
    t.match(div.stderr, /first divergence at 2\.0 \(slot 2\)/);
    const mixed = await runBin(BIN.logcmp, [old, a]);
    t.equal(mixed.code, 0, 'a version-1 and a version-2 log of one order: exit 0');
    t.match(mixed.stdout, /2 logs agree/);
    t.match(mixed.stdout, /line digest versions differ \(.*old\.log: v1, .*a\.log: v2 at 1\.0\)/);
  },
);
