import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fmtMs } from './log';
import { pct } from './stats';

// Disk probe: fdatasync latency next to the nodes' data (this disk's speed varies)

export interface DiskProbe {
  syncs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
}

/** Append 128 bytes + fdatasync up to 200 times (at most ~1.5 s) in `dir`. */
export function probeDisk(dir: string): DiskProbe {
  const file = path.join(dir, `disk-probe-${process.pid}.bin`);
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(128, 0x61);
  const lat: number[] = [];
  const t0 = performance.now();
  try {
    for (let i = 0; i < 200 && performance.now() - t0 < 1500; i++) {
      const t = performance.now();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      lat.push(performance.now() - t);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  const sorted = Float64Array.from(lat).sort();
  const r3 = (v: number | null): number => Math.round((v ?? 0) * 1000) / 1000;
  return {
    syncs: lat.length,
    p50Ms: r3(pct(sorted, 0.5)),
    p90Ms: r3(pct(sorted, 0.9)),
    p99Ms: r3(pct(sorted, 0.99)),
  };
}

export function fmtProbe(d: DiskProbe): string {
  return `p50 ${fmtMs(d.p50Ms)} ms, p90 ${fmtMs(d.p90Ms)} ms, p99 ${fmtMs(d.p99Ms)} ms (${d.syncs} syncs)`;
}
