/**
 * Notices a peer's silence at the cost of a clock read per message: touch() notes the time, and
 * one timer, when it fires, re-arms itself for what is left of the interval. Re-arming a timer
 * per message (clearTimeout + setTimeout, node's timers) cost the api ~7 % of its CPU at 1500 B
 * (docs/benchmarks.md); the api's agent streams and the CLI's api session both use this.
 */
export class IdleWatch {
  #last = performance.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /**
   * Calls `onIdle` once after `ms` without a touch (never when `ms` ≤ 0). While `held()` is true
   * the silence is ours (we are not reading), so it counts as heard.
   */
  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
    private readonly held: () => boolean = () => false,
  ) {
    if (ms > 0) this.#arm(ms);
    else this.#stopped = true;
  }

  /** Something arrived. */
  touch(): void {
    this.#last = performance.now();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => {
      if (this.#stopped) return;
      const now = performance.now();
      if (this.held()) this.#last = now;
      const silent = now - this.#last;
      if (silent < this.ms) return this.#arm(this.ms - silent);
      this.#stopped = true;
      this.onIdle();
    }, Math.max(1, ms));
  }
}
