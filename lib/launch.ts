/**
 * Starting paxosd nodes as child processes on this machine: one launcher for
 * `npm start` (lib/cli/cluster.ts), the benchmark's local cluster
 * (lib/bench/cluster.ts) and the tests' clusters (test/helpers/cluster.ts).
 * A node is ready when it prints `paxosd sid=N ready ...` on stdout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

/** bin/paxosd of this checkout (this file runs as dist/lib/launch.js). */
export const PAXOSD_BIN = path.join(__dirname, '..', '..', 'bin', 'paxosd');

/** The line a node prints on stdout once it serves (PaxosNode.readyLine). */
const READY = /^paxosd sid=(\d+) ready .*$/m;

export interface LaunchOptions {
  /** paxosd's own arguments (--config, --sid, --init, ...). */
  args: string[];
  /** Node.js flags before the script (e.g. --cpu-prof). */
  nodeFlags?: string[];
  /** A command the node runs under (e.g. strace ...): argv before `node`. */
  wrapper?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Where stderr goes: a pipe (default) or an open file descriptor. */
  stderr?: 'pipe' | number;
  /** Its own process group (to signal a wrapper and the node together). */
  detached?: boolean;
}

/** Spawn one paxosd: `[wrapper...] node [nodeFlags...] bin/paxosd args...`, stdin closed. */
export function launchNode(o: LaunchOptions): ChildProcess {
  const argv = [...(o.wrapper ?? []), process.execPath, ...(o.nodeFlags ?? []), PAXOSD_BIN];
  return spawn(argv[0], [...argv.slice(1), ...o.args], {
    cwd: o.cwd,
    env: o.env,
    stdio: ['ignore', 'pipe', o.stderr ?? 'pipe'],
    detached: o.detached ?? false,
  });
}

/** Call `fn` with each complete line of `stream` (without its newline). */
export function eachLine(stream: NodeJS.ReadableStream | null, fn: (line: string) => void): void {
  let buf = '';
  stream?.on('data', (d: Buffer | string) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) fn(l);
  });
}

/**
 * Resolves with the node's ready line, once it is printed (and names `sid`);
 * rejects if the node exits first (after `exitGraceMs`, so that the caller's
 * copy of its stderr is complete), or after `timeoutMs`. The reason is short
 * ("no ready line within 15000 ms", "exited before ready (code 2, signal null)"):
 * callers add the node's stderr.
 */
export function waitReady(
  child: ChildProcess,
  sid: number,
  timeoutMs: number,
  exitGraceMs = 0,
): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let out = '';
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      if (out.length > 65536) out = out.slice(-65536);
      const m = READY.exec(out);
      if (!m || settled) return;
      settled = true;
      clearTimeout(timer);
      if (Number(m[1]) !== sid) reject(new Error(`sid ${sid} printed ${m[0]}`));
      else resolve(m[0]);
    });
    child.on('error', (e) => fail(`spawn failed: ${e.message}`));
    child.on('exit', (code, signal) => {
      const why = `exited before ready (code ${code}, signal ${signal})`;
      if (exitGraceMs > 0) setTimeout(() => fail(why), exitGraceMs);
      else fail(why);
    });
  });
}
