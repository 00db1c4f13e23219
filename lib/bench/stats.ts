// Latency statistics: a sample buffer, percentiles, a log-scale histogram.

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A growable array of doubles (latency samples in ms) without per-sample allocation. */
export class Samples {
  private buf = new Float64Array(1 << 14);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const b = new Float64Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    this.buf[this.length++] = v;
  }
  clear(): void {
    this.length = 0;
  }
  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
}

/** Nearest-rank percentile of sorted samples. */
export function pct(sorted: Float64Array, q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Upper bounds (ms) of the log-scale histogram buckets: 1, 1.5, 2, 3, 5, 7 per decade. */
const BUCKETS: number[] = (() => {
  const out: number[] = [];
  for (let e = -2; e <= 4; e++) for (const m of [1, 1.5, 2, 3, 5, 7]) out.push(m * 10 ** e);
  return out.map((v) => Number(v.toPrecision(3)));
})();

export interface Bucket {
  leMs: number;
  count: number;
}

export function histogram(sorted: Float64Array): Bucket[] {
  const counts = new Array<number>(BUCKETS.length + 1).fill(0);
  let b = 0;
  for (const v of sorted) {
    while (b < BUCKETS.length && v > BUCKETS[b]) b++;
    counts[b]++;
  }
  let lo = counts.findIndex((c) => c > 0);
  let hi = counts.length - 1 - [...counts].reverse().findIndex((c) => c > 0);
  if (lo < 0) return [];
  lo = Math.max(0, lo);
  hi = Math.min(counts.length - 1, hi);
  const out: Bucket[] = [];
  for (let i = lo; i <= hi; i++)
    out.push({ leMs: i < BUCKETS.length ? BUCKETS[i] : Infinity, count: counts[i] });
  return out;
}

export interface LatencySummary {
  mean: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  p999: number | null;
  max: number | null;
}

const round3 = (v: number | null): number | null =>
  v === null ? null : Math.round(v * 1000) / 1000;

/** Mean, percentiles and maximum of sorted samples (ms, to the microsecond). */
export function latencySummary(sorted: Float64Array): LatencySummary {
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    mean: round3(sorted.length ? sum / sorted.length : null),
    p50: round3(pct(sorted, 0.5)),
    p90: round3(pct(sorted, 0.9)),
    p99: round3(pct(sorted, 0.99)),
    p999: round3(pct(sorted, 0.999)),
    max: round3(sorted.length ? sorted[sorted.length - 1] : null),
  };
}

/** [quantile, ms] points for the percentile plot, from the median to as far as the samples go. */
export function percentileCurve(sorted: Float64Array): [number, number][] {
  const curve: [number, number][] = [];
  if (sorted.length > 0)
    for (let k = 0; k <= 40; k++) {
      // From the median (k=0: 0.5) to 1 - 10^-4.3 on a log(1/(1-q)) scale.
      const q = 1 - 0.5 * 10 ** (-k / 10);
      if (q * sorted.length > sorted.length - 0.5 && k > 0) break;
      curve.push([q, pct(sorted, q)!]);
    }
  return curve;
}
