/** Helpers shared by the command-line tools: version, strict flag parsing. */

import minimist from 'minimist';

/** package.json's version (this file is dist/lib/cli/common.js). */
export function packageVersion(): string {
  try {
    return String((require('../../../package.json') as { version: string }).version);
  } catch {
    return 'unknown';
  }
}

export interface FlagSpec {
  string?: string[];
  boolean?: string[];
  default?: Record<string, unknown>;
  alias?: Record<string, string>;
}

/**
 * minimist with no surprises: an unknown flag, or a string flag given without
 * its value, is an error (returned as a message) instead of being ignored or
 * read as ''. Known flags are `string`, `boolean` and their aliases;
 * `--no-X` is accepted for a boolean X.
 */
export function parseFlags(args: string[], spec: FlagSpec): minimist.ParsedArgs | string {
  const strings = spec.string ?? [];
  const booleans = spec.boolean ?? [];
  const aliases = spec.alias ?? {};
  const known = new Set([...strings, ...booleans, ...Object.keys(aliases)]);
  let bad: string | null = null;
  const argv = minimist(args, {
    string: strings,
    boolean: booleans,
    default: spec.default,
    alias: aliases,
    unknown: (a) => {
      if (!a.startsWith('-') || a === '-') return true;
      const name = a.replace(/^--?/, '').split('=')[0];
      if (known.has(name)) return true;
      if (name.startsWith('no-') && booleans.includes(name.slice(3))) return true;
      bad ??= `unknown option ${a}`;
      return false;
    },
  });
  if (bad) return bad;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') break;
    const name = a.replace(/^--?/, '');
    const isString = strings.includes(name) || strings.includes(aliases[name] ?? '');
    if (a.startsWith('-') && !a.includes('=') && isString) {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith('-') && next !== '-')) return `${a} needs a value`;
      i++;
    }
  }
  return argv;
}

/**
 * What every tool does first: a flag error prints it with the usage (exit 2),
 * --help the usage (exit 0), --version the version (exit 0). Returns that exit
 * code, or null to go on.
 */
export function handleCommonFlags(
  tool: string,
  usage: string,
  argv: minimist.ParsedArgs | string,
): number | null {
  if (typeof argv === 'string') {
    process.stderr.write(`${tool}: ${argv}\n${usage}\n`);
    return 2;
  }
  if (argv.help) {
    process.stdout.write(usage + '\n');
    return 0;
  }
  if (argv.version) {
    process.stdout.write(`${tool} ${packageVersion()}\n`);
    return 0;
  }
  return null;
}
