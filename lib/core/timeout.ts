import type { Prng } from './prng';

/**
 * A named timer counted in ticks (TigerBeetle's `Timeout`): the core never reads a
 * clock; the driver calls tick() and the owner asks fired(). Backoff doubles the
 * period up to a cap and adds seeded jitter so that retransmits do not synchronise.
 */
export class Timeout {
  /** Ticks until the next firing, counted from the last reset. */
  after: number;
  private ticks = 0;
  running = false;
  /** Consecutive backoffs since the last reset; 0 after start(). */
  attempts = 0;

  constructor(
    readonly name: string,
    readonly baseTicks: number,
    readonly maxTicks: number = baseTicks,
  ) {
    this.after = baseTicks;
  }

  start(): void {
    this.running = true;
    this.ticks = 0;
    this.attempts = 0;
    this.after = this.baseTicks;
  }

  stop(): void {
    this.running = false;
    this.ticks = 0;
    this.attempts = 0;
  }

  /** Restart the count without changing the period. */
  reset(): void {
    this.running = true;
    this.ticks = 0;
  }

  tick(): void {
    if (this.running) this.ticks++;
  }

  fired(): boolean {
    return this.running && this.ticks >= this.after;
  }

  /** After a firing: wait longer next time (doubling, capped, jittered). */
  backoff(prng: Prng): void {
    this.attempts++;
    const doubled = Math.min(this.maxTicks, this.baseTicks * 2 ** Math.min(this.attempts, 16));
    this.after = Math.max(1, doubled - prng.int(Math.max(1, Math.floor(doubled / 4))));
    this.ticks = 0;
  }

  /** Set a jittered period in [baseTicks, baseTicks + spread) and restart. */
  jitter(prng: Prng, spread: number): void {
    this.after = this.baseTicks + prng.int(Math.max(1, spread));
    this.ticks = 0;
    this.running = true;
  }
}
