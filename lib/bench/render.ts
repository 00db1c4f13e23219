import * as os from 'node:os';
import type { Options } from './args';
import type { CatchupResult } from './catchup';
import { fmtProbe, type DiskProbe } from './diskprobe';
import type { FailoverResult } from './failover';
import { fmtInt, fmtMs } from './log';
import type { RunResult } from './run';

// The report: text table, latency histograms, failover and catch-up lines, the SVG plot.

/** The bench's findings as printed by --json (field order is the document's). */
export interface BenchDoc {
  tool: 'paxos-bench';
  config: Record<string, unknown>;
  host: { cpus: number; node: string; platform: string };
  nodes?: { sid: number; pid: number | null }[];
  diskFdatasync?: { before?: DiskProbe; after?: DiskProbe };
  results?: Omit<RunResult, 'curve'>[];
  failover?: FailoverResult;
  catchup?: CatchupResult;
}

type Out = (s: string) => void;

/** The text report (without --json): settings, disk, the sweep's table and histograms, experiments. */
export function printReport(doc: BenchDoc, results: RunResult[], opts: Options, out: Out): void {
  out('');
  out(
    `paxos-bench: op=${opts.op}, ${opts.keyBytes}-byte keys, ${opts.valueBytes}-byte values, ` +
      `${opts.targetConfig ? `cluster ${opts.targetConfig}` : `local 3-node cluster, fdatasync ${opts.sync ? 'on' : 'OFF'}`}, ` +
      `warm-up ${opts.warmupS} s, ${opts.durationS} s per run, ${os.cpus().length} CPUs, node ${process.version}`,
  );
  const disk = doc.diskFdatasync;
  if (disk?.before)
    out(
      `disk (write+fdatasync in the data directory's file system): before ${fmtProbe(disk.before)}` +
        (disk.after ? `; after ${fmtProbe(disk.after)}` : ''),
    );
  if (results.length) {
    out(
      'CPU: % of one core over the measured window (bench = this load generator, other = ' +
        'every other process on the host; a high "other" means the figures are disturbed).',
    );
    printTable(results, out);
    for (const r of results) {
      out('');
      printHistogram(r, out);
    }
  }
  if (doc.failover) printFailover(doc.failover, out);
  if (doc.catchup) printCatchup(doc.catchup, out);
}

function printFailover(f: FailoverResult, out: Out): void {
  out('');
  out(`failover (${f.clients} clients writing; SIGKILL of the leader, then restart):`);
  for (const r of f.rounds)
    out(
      `  killed ${r.killed} -> new leader ${r.newLeader ?? '?'}: next committed write after ${r.gapMs === null ? 'never' : fmtMs(r.gapMs) + ' ms'} (max latency ${fmtMs(r.maxLatencyMs)} ms, failed ops ${r.failed})`,
    );
  out(`  median: ${f.medianGapMs === null ? '-' : fmtMs(f.medianGapMs) + ' ms'}`);
}

function printCatchup(c: CatchupResult, out: Out): void {
  out('');
  out(
    `catch-up: follower ${c.follower} stopped during ${fmtInt(c.commands)} writes ` +
      `(${fmtInt(c.writeOpsPerSec)} ops/s with it stopped), ${fmtInt(c.slotsBehind)} slots behind`,
  );
  out(
    c.caughtUp
      ? `  caught up in ${fmtMs(c.catchupMs)} ms: ${fmtInt(c.commandsPerSec!)} commands/s, ${fmtInt(c.slotsPerSec!)} slots/s (follower CPU ${c.followerCpuPct ?? '?'}%)`
      : '  did NOT catch up within 120 s',
  );
}

export function printTable(results: RunResult[], out: Out): void {
  const head = [
    'clients',
    'ops/s',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    'errors',
    'unknown',
    'redirects',
    'retries',
    'bench CPU',
    'other CPU',
    'node CPU (*leader)',
  ];
  const rows = results.map((r) => [
    String(r.clients),
    fmtInt(r.opsPerSec),
    fmtMs(r.latencyMs.p50),
    fmtMs(r.latencyMs.p90),
    fmtMs(r.latencyMs.p99),
    fmtMs(r.latencyMs.p999),
    fmtMs(r.latencyMs.max),
    String(r.errors),
    String(r.unknown),
    String(r.redirects),
    String(r.retries),
    `${r.cpu.loadgenPct.toFixed(0)}%`,
    r.cpu.otherPct === null ? '?' : `${r.cpu.otherPct.toFixed(0)}%`,
    r.cpu.nodes.length
      ? r.cpu.nodes
          .map(
            (n) =>
              `${n.sid}${n.role === 'leader' ? '*' : ''}:${n.pct === null ? '?' : n.pct.toFixed(0) + '%'}`,
          )
          .join(' ')
      : 'n/a',
  ]);
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]): string =>
    r.map((v, c) => (c === r.length - 1 ? v : v.padStart(w[c]))).join('  ');
  out(line(head));
  for (const r of rows) out(line(r));
  const busy = Math.max(0, ...results.map((r) => r.cpu.otherPct ?? 0));
  if (busy >= 25)
    out(
      `WARNING: other processes used up to ${busy.toFixed(0)}% of a core during the runs: the figures are disturbed`,
    );
  for (const r of results)
    if (r.leaderBefore !== r.leaderAfter)
      out(
        `WARNING: clients=${r.clients}: the leader changed during the run (${r.leaderBefore ?? '?'} -> ${r.leaderAfter ?? '?'})`,
      );
  for (const r of results) {
    const kinds = Object.entries(r.errorKinds);
    if (kinds.length)
      out(`  clients=${r.clients} error kinds: ${kinds.map(([k, v]) => `${k} x${v}`).join(', ')}`);
  }
}

export function printHistogram(r: RunResult, out: Out): void {
  out(
    `latency histogram, ${r.op}, ${r.clients} client${r.clients === 1 ? '' : 's'} (${fmtInt(r.ops)} ops):`,
  );
  const max = Math.max(1, ...r.histogram.map((b) => b.count));
  let cum = 0;
  let prev = 0;
  for (const b of r.histogram) {
    cum += b.count;
    const label = b.leMs === Infinity ? `> ${fmtMs(prev)}` : `<= ${fmtMs(b.leMs)}`;
    prev = b.leMs;
    const bar = '#'.repeat(Math.round((b.count / max) * 50)) || (b.count > 0 ? '.' : '');
    out(
      `  ${label.padStart(10)} ms |${bar.padEnd(50)}| ${String(b.count).padStart(8)}  ${((cum / Math.max(1, r.ops)) * 100).toFixed(2).padStart(6)}%`,
    );
  }
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2'];

/** Latency by percentile (x: log of 1/(1-q), y: log ms), one line per client count. */
export function svgPlot(results: RunResult[], title: string): string {
  const W = 760;
  const H = 440;
  const L = 70;
  const R = 150;
  const T = 40;
  const B = 60;
  const xs = (q: number): number => Math.log10(1 / (1 - q));
  const all = results.flatMap((r) => r.curve.map(([, ms]) => ms)).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.max(1e-3, Math.min(...all, 1))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, lo * 10)));
  const xmax = Math.max(3, ...results.flatMap((r) => r.curve.map(([q]) => xs(q))));
  const px = (q: number): number => L + ((xs(q) - xs(0.5)) / (xmax - xs(0.5))) * (W - L - R);
  const py = (ms: number): number =>
    T +
    (1 - (Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) *
      (H - T - B);
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let d = Math.log10(lo); d <= Math.log10(hi) + 1e-9; d++) {
    const y = py(10 ** d);
    parts.push(
      `<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${y + 4}" text-anchor="end">${10 ** d >= 1 ? 10 ** d : (10 ** d).toPrecision(1)}</text>`,
    );
  }
  for (const q of [0.5, 0.9, 0.99, 0.999, 0.9999]) {
    if (xs(q) > xmax + 1e-9) continue;
    const x = px(q);
    parts.push(
      `<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#ddd"/>`,
      `<text x="${x}" y="${H - B + 16}" text-anchor="middle">p${(q * 100).toString()}</text>`,
    );
  }
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 20}" text-anchor="middle">percentile</text>`,
    `<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">latency (ms, log scale)</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
  );
  results.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = r.curve.map(([q, ms]) => `${px(q).toFixed(1)},${py(ms).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>`);
    const y = T + 10 + i * 18;
    parts.push(
      `<line x1="${W - R + 12}" y1="${y}" x2="${W - R + 32}" y2="${y}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${W - R + 38}" y="${y + 4}">${r.clients} client${r.clients === 1 ? '' : 's'}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
