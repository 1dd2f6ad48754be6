/**
 * Where a fan-out's start went, per agent (pure): ms after the fan-out began until the TLS
 * handshake was done, until the agent answered the start request (its engine is open), and
 * until its SOURCE arrived. Once every source has either announced itself or failed, `summary()`
 * gives the median and the slowest of each (logged by Fanout as "agents streaming").
 *
 * @example
 * ```ts
 * import { StartTimings } from "./fanout_timing.ts";
 *
 * const t = new StartTimings(2, 0);
 * t.note(0, "tls", 5); t.note(0, "response", 20); t.note(0, "source", 21);
 * t.settle(1); // the second agent failed
 * console.log(t.complete, t.summary()); // true { streaming: 1, failed: 1, tls_ms: [5, 5], ... }
 * ```
 *
 * @module
 */

export type StartStep = "tls" | "response" | "source";
const STEPS: StartStep[] = ["tls", "response", "source"];

export interface StartSummary {
  targets: number;
  streaming: number;
  failed: number;
  /** [median, max] ms after the fan-out began, over the agents that reached the step */
  tls_ms?: [number, number];
  response_ms?: [number, number];
  source_ms?: [number, number];
}

export class StartTimings {
  readonly #at: Array<Partial<Record<StartStep, number>>>;
  readonly #settled: boolean[];
  #open: number;

  constructor(targets: number, private readonly t0: number) {
    this.#at = Array.from({ length: targets }, () => ({}));
    this.#settled = new Array(targets).fill(false);
    this.#open = targets;
  }

  /** Source `i` reached `step` at time `now` (the first time counts); "source" settles it. */
  note(i: number, step: StartStep, now: number): void {
    this.#at[i][step] ??= now - this.t0;
    if (step === "source") this.settle(i);
  }

  /** Source `i` will not get further (it announced itself or failed). */
  settle(i: number): void {
    if (this.#settled[i]) return;
    this.#settled[i] = true;
    this.#open--;
  }

  get complete(): boolean {
    return this.#open === 0;
  }

  summary(): StartSummary {
    const streaming = this.#at.filter((a) => a.source !== undefined).length;
    const out: StartSummary = {
      targets: this.#at.length,
      streaming,
      failed: this.#at.length - streaming,
    };
    for (const step of STEPS) {
      const xs = this.#at.map((a) => a[step]).filter((x): x is number => x !== undefined);
      if (xs.length > 0) out[`${step}_ms`] = [round(median(xs)), round(Math.max(...xs))];
    }
    return out;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const round = (ms: number) => Math.round(ms);
