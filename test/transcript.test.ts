// Transcript tests (etcd-raft's interaction_test.go for paxosd's core): every
// test/testdata/*.txt is a story of commands (tick, deliver, drop, sync,
// stabilize, crash, ...) each followed by its expected output: the messages in
// one stable line format, records, syncs, applied slots, status lines. A changed
// message, record or step fails here with a diff.
//
// To rewrite the expected outputs after an intended change:
//   npx tsc -p tsconfig.json && REWRITE=1 npx tap dist/test/transcript.test.js
// then read `git diff test/testdata` and commit only what you understand.
// The command list is in test/helpers/transcript.ts (TranscriptEnv.dispatch).
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { formatTranscript, parseTranscript, TranscriptEnv } from './helpers/transcript';

// dist/test/transcript.test.js -> test/testdata (the .txt files are not compiled).
const DIR = path.resolve(__dirname, '../../test/testdata');
const rewrite = process.env.REWRITE === '1';
const files = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.txt'))
  .sort();

t.ok(files.length > 0, `transcripts in ${DIR}`);

for (const f of files) {
  t.test(f, async (t) => {
    const file = path.join(DIR, f);
    const text = fs.readFileSync(file, 'utf8');
    const cases = parseTranscript(text, f);
    const env = new TranscriptEnv();
    const outputs: string[] = [];
    for (const c of cases) {
      const actual = c.cmd === '' ? '' : env.handle(c.cmd);
      outputs.push(actual);
      if (rewrite || actual === c.expected) continue;
      // The first difference fails the file: later steps run from another state.
      t.equal(actual, c.expected, `${f}:${c.line}: ${c.cmd}`);
      return;
    }
    if (rewrite) {
      const next = formatTranscript(cases, outputs);
      if (next !== text) fs.writeFileSync(file, next);
      t.pass(`${f}: ${next === text ? 'unchanged' : 'rewritten'}`);
    } else t.pass(`${f}: ${cases.length} steps as expected`);
  });
}
