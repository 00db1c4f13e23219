import { compareLogs } from '../logcmp';

const files = process.argv.slice(2);
if (files.length < 1) {
  process.stderr.write(
    'usage: paxos-logcmp FILE... (exit 0: all agree, 1: divergence, lines missing or a damaged\n' +
      'line other than a partial last one, 2: usage)\n',
  );
  process.exit(2);
}
try {
  const r = compareLogs(files);
  (r.ok ? process.stdout : process.stderr).write(r.message + '\n');
  process.exit(r.ok ? 0 : 1);
} catch (e) {
  process.stderr.write(`paxos-logcmp: ${(e as Error).message}\n`);
  process.exit(2);
}
