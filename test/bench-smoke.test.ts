import t from 'tap';
import { execFile } from 'node:child_process';
import * as path from 'node:path';

// Compiled to dist/test/bench-smoke.test.js; bin/ lives at the repo root.
const ROOT = path.resolve(__dirname, '..', '..');
const BENCH = path.join(ROOT, 'bin', 'paxos-bench');

function runBench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BENCH, ...args],
      { cwd: ROOT, timeout: 120_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

t.test(
  'paxos-bench --json runs a tiny closed-loop benchmark against its own cluster',
  async (tt) => {
    const r = await runBench([
      '--clients',
      '1,4',
      '--duration',
      '0.5',
      '--warmup',
      '0.2',
      '--json',
    ]);
    tt.equal(r.code, 0, `exit code (stderr: ${r.stderr.slice(-2000)})`);
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(r.stdout) as Record<string, unknown>;
    } catch (e) {
      tt.fail(
        `stdout is not one JSON document: ${(e as Error).message}\n${r.stdout.slice(0, 500)}`,
      );
      return;
    }
    const config = doc.config as Record<string, unknown>;
    tt.equal(config.op, 'put', 'default op');
    tt.same(config.clients, [1, 4], 'client counts');
    tt.equal(config.valueBytes, 64, 'default value size');
    tt.equal(config.keyBytes, 12, 'default key size');
    tt.equal(config.sync, true, 'syncs on by default');

    const nodes = doc.nodes as { sid: number; pid: number }[];
    tt.equal(nodes.length, 3, 'three local nodes');

    const results = doc.results as Record<string, unknown>[];
    tt.equal(results.length, 2, 'one result per client count');
    results.forEach((res, i) => {
      const label = `clients=${String(res.clients)}`;
      tt.equal(res.clients, [1, 4][i], `${label}: client count`);
      tt.ok(isNum(res.ops) && res.ops > 0, `${label}: ops > 0`);
      tt.ok(isNum(res.opsPerSec) && res.opsPerSec > 0, `${label}: ops/s > 0`);
      tt.equal(res.errors, 0, `${label}: no errors`);
      for (const k of ['unknown', 'redirects', 'retries', 'durationS'])
        tt.ok(isNum(res[k]), `${label}: ${k} is a number`);
      const lat = res.latencyMs as Record<string, unknown>;
      for (const k of ['mean', 'p50', 'p90', 'p99', 'p999', 'max'])
        tt.ok(isNum(lat[k]) && lat[k] > 0, `${label}: latency ${k} > 0`);
      tt.ok((lat.p50 as number) <= (lat.p99 as number), `${label}: p50 <= p99`);
      tt.ok((lat.p99 as number) <= (lat.max as number), `${label}: p99 <= max`);
      const hist = res.histogram as { leMs: number | null; count: number }[];
      tt.ok(Array.isArray(hist) && hist.length > 0, `${label}: histogram`);
      tt.equal(
        hist.reduce((a, b) => a + b.count, 0),
        res.ops,
        `${label}: histogram counts every op`,
      );
      const cpu = res.cpu as { loadgenPct: unknown; nodes: { sid: number; role: string }[] };
      tt.ok(isNum(cpu.loadgenPct), `${label}: load generator CPU`);
      tt.equal(cpu.nodes.length, 3, `${label}: per-node CPU`);
      // Roles are read after the run; an election under a loaded CI host may be in progress.
      tt.ok(
        cpu.nodes.filter((n) => n.role === 'leader').length <= 1,
        `${label}: at most one leader`,
      );
    });
  },
);
