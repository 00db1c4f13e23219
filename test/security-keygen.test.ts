import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { loadKeyring } from '../lib/io/keys';
import { BIN, runBin } from './helpers/cluster';

// `paxosd keygen FILE`: a fresh key file readable by its owner only, holding
// one 64-hex-digit key, which the key loader accepts; never overwrites a file.
t.test('paxosd keygen writes a 0600 key file and refuses to overwrite', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-keygen-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'peer.key');

  const r = await runBin(BIN.paxosd, ['keygen', file], { timeoutMs: 10_000 });
  t.equal(r.code, 0, 'keygen exits 0', { stderr: r.stderr });
  const st = fs.statSync(file);
  t.equal((st.mode & 0o777).toString(8), '600', 'the key file has mode 0600');
  const text = fs.readFileSync(file, 'utf8');
  t.match(text, /^[0-9a-f]{64}\n$/, 'exactly one line of 64 hex digits');
  t.notMatch(r.stdout + r.stderr, text.trim(), 'the key is not printed');
  const ring = loadKeyring(file, 'test', 'keyFile');
  t.equal(ring.keys.length, 1, 'the loader reads one key');
  t.equal(ring.keys[0].length, 32, 'of 32 bytes');

  // A second key is different (random), and an existing file is never replaced.
  const other = path.join(dir, 'other.key');
  const r2 = await runBin(BIN.paxosd, ['keygen', other], { timeoutMs: 10_000 });
  t.equal(r2.code, 0);
  t.not(fs.readFileSync(other, 'utf8'), text, 'two keygens give different keys');

  const before = fs.statSync(file);
  const again = await runBin(BIN.paxosd, ['keygen', file], { timeoutMs: 10_000 });
  t.not(again.code, 0, `keygen on an existing file fails (exit ${again.code})`);
  t.not(again.signal, 'SIGKILL', 'and does not hang');
  t.match(again.stderr, /EEXIST|exists/i, 'and says the file exists');
  t.equal(fs.readFileSync(file, 'utf8'), text, 'the existing key is unchanged');
  t.equal(fs.statSync(file).mode, before.mode, 'and so is its mode');
  t.comment(
    `keygen on an existing file: exit ${again.code}, stderr: ${again.stderr.split('\n')[0]}`,
  );

  // A pre-existing file with other permissions is not touched either.
  const loose = path.join(dir, 'loose.key');
  fs.writeFileSync(loose, 'not a key\n', { mode: 0o644 });
  const r3 = await runBin(BIN.paxosd, ['keygen', loose], { timeoutMs: 10_000 });
  t.not(r3.code, 0, 'keygen refuses an existing file of any content');
  t.equal(fs.readFileSync(loose, 'utf8'), 'not a key\n', 'which is left as it was');

  const missing = await runBin(BIN.paxosd, ['keygen'], { timeoutMs: 10_000 });
  t.equal(missing.code, 2, 'keygen without FILE is a usage error (exit 2)');
});
