// What paxos-bench says while it runs (stderr), and how it formats numbers.

let quiet = false;

/** With --json: progress lines off (stdout is then one JSON document). */
export function setQuiet(on: boolean): void {
  quiet = on;
}

/** Log to stderr unless --json (then stdout is one JSON document and stderr stays quiet). */
export function note(line: string): void {
  if (!quiet) process.stderr.write(line + '\n');
}

/** Warnings go to stderr even with --json. */
export function warn(line: string): void {
  process.stderr.write(line + '\n');
}

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function fmtMs(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '-';
  if (ms < 1) return ms.toFixed(3);
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}
