/**
 * Where a capture's start goes, step by step: wall time and the capture thread's own CPU time
 * of each step (the agent logs them with "capture started"). Wall time alone cannot tell a slow
 * step from a thread waiting for a core when many agents start at once on shared cores; the
 * two together can.
 *
 * @example
 * ```ts
 * import { StepClock } from "./open_steps.ts";
 *
 * const clock = new StepClock(() => performance.now()); // the worker passes threadCpuMs
 * clock.mark("activate");
 * console.log(clock.steps.activate); // [wall ms, cpu ms]
 * ```
 *
 * @module
 */

/** Step name → [wall ms, thread CPU ms], each rounded to 0.1 ms. */
export type OpenSteps = Record<string, [number, number]>;

const round = (ms: number) => Math.round(ms * 10) / 10;

export class StepClock {
  readonly steps: OpenSteps = {};
  #wall: number;
  #cpu: number;

  constructor(private readonly cpuMs: () => number) {
    this.#wall = performance.now();
    this.#cpu = cpuMs();
  }

  /** Records the step that ends now (since the previous mark or the clock's creation). */
  mark(step: string): void {
    const wall = performance.now(), cpu = this.cpuMs();
    this.steps[step] = [round(wall - this.#wall), round(cpu - this.#cpu)];
    this.#wall = wall;
    this.#cpu = cpu;
  }
}

/** Epoch ms with sub-ms resolution, comparable across threads (a worker's queueing delay). */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}
