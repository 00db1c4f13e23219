import { compareLogs } from '../logcmp';
import { handleCommonFlags, parseFlags } from './common';

const USAGE =
  'usage: paxos-logcmp FILE... (exit 0: all agree, 1: divergence, lines missing or a damaged\n' +
  'line other than a partial last one, 2: usage)\n' +
  '       paxos-logcmp --help | --version\n' +
  'Compares order logs (learned_ops*.log): each must read as a prefix of one order.\n' +
  'Line digests compare only at equal versions ([HEX] is v1, [v2:HEX] v2); lines with\n' +
  'digests of different versions are compared by their text, and the OK line says so.';

const argv = parseFlags(process.argv.slice(2), {
  boolean: ['help', 'version'],
  alias: { h: 'help' },
});
const early = handleCommonFlags('paxos-logcmp', USAGE, argv);
if (early !== null) process.exit(early);
if (typeof argv === 'string') process.exit(2);
const files = argv._.map(String);
if (files.length < 1) {
  process.stderr.write(USAGE + '\n');
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
