/**
 * Buffer hysteresis as pcap-release's buffer manager does it: congested once the level reaches
 * `upperLimit`, cleared once it has fallen to `lowerLimit`. Pure, no I/O; the agent counts
 * queued frames with it, and the api can feed it its socket's buffered frames.
 */

export interface BufferLimits {
  /** Nominal queue size; upperLimit ≤ size. */
  size: number;
  /** Congested when the level reaches this. */
  upperLimit: number;
  /** Cleared when the level has fallen to this. */
  lowerLimit: number;
}

export type HysteresisChange = "congested" | "cleared";

export class Hysteresis {
  #congested = false;

  constructor(readonly limits: BufferLimits) {
    if (!(limits.lowerLimit < limits.upperLimit && limits.upperLimit <= limits.size)) {
      throw new RangeError(
        `buffer limits need lower < upper <= size, got ${limits.lowerLimit}/${limits.upperLimit}/${limits.size}`,
      );
    }
  }

  get congested(): boolean {
    return this.#congested;
  }

  /** Applies the current level; returns the change it caused, or null. */
  observe(level: number): HysteresisChange | null {
    if (!this.#congested && level >= this.limits.upperLimit) {
      this.#congested = true;
      return "congested";
    }
    if (this.#congested && level <= this.limits.lowerLimit) {
      this.#congested = false;
      return "cleared";
    }
    return null;
  }
}
