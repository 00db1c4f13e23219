/**
 * A sweep over worker threads: the same seeds and the same runs as runSweep,
 * spread over the machine's cores. The simulator is single-threaded and each
 * seed is independent (its own PRNG, cluster and oracle), so a sweep's result
 * does not depend on which thread ran a seed; only wall time does. The CI
 * sweep runs one test file at a time, so without this one of two cores idles.
 */
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { SimResult, SimRunOptions } from './cluster';
import { runSweep, type SweepOptions, type SweepSummary } from './sweep';

/** Seeds handed to a worker at a time: small, so the last blocks balance the threads. */
const BLOCK_SEEDS = 4;

interface Job {
  opts: SimRunOptions;
  sweep: SweepOptions;
  /** Post every result (slimmed) back, for a caller's `each`. */
  each: boolean;
}

type FromWorker =
  | { t: 'result'; r: SimResult; ms: number }
  | { t: 'block'; s: SweepSummary }
  | { t: 'error'; message: string };

type ToWorker = { t: 'block'; start: number; count: number } | { t: 'stop' };

/** What crosses the thread boundary of a passing run: no history or trace (they can be large). */
function slim(r: SimResult): SimResult {
  return r.ok ? { ...r, history: [], trace: [] } : r;
}

/** `s` with `b` added in: the same totals as one sweep over both seed ranges. */
function merge(s: SweepSummary, b: SweepSummary): void {
  s.seeds += b.seeds;
  s.runs += b.runs;
  s.steps += b.steps;
  s.opsCompleted += b.opsCompleted;
  s.dangerous += b.dangerous;
  s.maxLiveLatency = Math.max(s.maxLiveLatency, b.maxLiveLatency);
  for (const [n, k] of Object.entries(b.byNodes)) s.byNodes[+n] = (s.byNodes[+n] ?? 0) + k;
  s.failures.push(...b.failures);
  for (const [shape, v] of Object.entries(b.firstChoice)) {
    const prev = s.firstChoice[shape];
    // Worst time first; on a tie, the lower seed (what one sequential sweep reports).
    if (!prev || v.ticks > prev.ticks || (v.ticks === prev.ticks && v.seed < prev.seed))
      s.firstChoice[shape] = v;
  }
  s.divergence.injected += b.divergence.injected;
  s.divergence.detected += b.divergence.detected;
  s.divergence.worstBeats = Math.max(s.divergence.worstBeats, b.divergence.worstBeats);
}

/**
 * Run seeds start..start+count-1 on `threads` worker threads (default: the
 * machine's cores; 1 runs in this thread). Same summary as runSweep, failures
 * in seed order; `cpuMs` is the process's CPU time (all threads), `ms` wall time.
 * Options must be plain data (no onTrace callback: it cannot cross threads).
 */
export async function runSweepParallel(
  start: number,
  count: number,
  opts: SimRunOptions = {},
  each?: (r: SimResult, ms: number) => void,
  sweep: SweepOptions = {},
  threads = availableParallelism(),
): Promise<SweepSummary> {
  const n = Math.max(1, Math.min(threads, Math.ceil(count / BLOCK_SEEDS)));
  if (n === 1 || opts.onTrace) return runSweep(start, count, opts, each, sweep);
  const t0 = performance.now();
  // The process's CPU time covers every thread (a worker's process.cpuUsage()
  // would count the others' too).
  const cpu0 = process.cpuUsage();
  const total = runSweep(start, 0, opts);
  let next = 0;
  const job: Job = { opts, sweep, each: each !== undefined };
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const w = new Worker(__filename, { workerData: job });
      const give = (): void => {
        if (next >= count) return void w.postMessage({ t: 'stop' } satisfies ToWorker);
        const c = Math.min(BLOCK_SEEDS, count - next);
        w.postMessage({ t: 'block', start: start + next, count: c } satisfies ToWorker);
        next += c;
      };
      w.on('message', (m: FromWorker) => {
        if (m.t === 'result') each?.(m.r, m.ms);
        else if (m.t === 'block') {
          merge(total, m.s);
          give();
        } else reject(new Error(`simulator worker: ${m.message}`));
      });
      w.on('error', reject);
      w.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`simulator worker exited ${code}`)),
      );
      give();
    });
  await Promise.all(Array.from({ length: n }, one));
  total.failures.sort((a, b) => a.seed - b.seed || (a.fork?.salt ?? 0) - (b.fork?.salt ?? 0));
  total.ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  total.cpuMs = (cpu.user + cpu.system) / 1000;
  total.stepsPerSec = total.steps / (total.ms / 1000);
  total.stepsPerCpuSec = total.steps / (total.cpuMs / 1000);
  total.seedsPerSec = total.seeds / (total.ms / 1000);
  return total;
}

/** A worker: runs the blocks it is given until told to stop. */
function serve(job: Job): void {
  const port = parentPort!;
  port.on('message', (m: ToWorker) => {
    if (m.t === 'stop') return void port.close();
    try {
      const each = job.each
        ? (r: SimResult, ms: number) =>
            port.postMessage({ t: 'result', r: slim(r), ms } satisfies FromWorker)
        : undefined;
      const s = runSweep(m.start, m.count, job.opts, each, job.sweep);
      port.postMessage({ t: 'block', s } satisfies FromWorker);
    } catch (e) {
      port.postMessage({
        t: 'error',
        message: (e as Error).stack ?? String(e),
      } satisfies FromWorker);
    }
  });
}

if (!isMainThread && (workerData as { opts?: unknown } | null)?.opts !== undefined)
  serve(workerData as Job);
