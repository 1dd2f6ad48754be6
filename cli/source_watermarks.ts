/**
 * How far every source of a capture has got: the newest timestamp each announced source has
 * delivered, and the oldest of those (`floor`). An agent's stream arrives in order over one TCP
 * connection, so once every source has delivered something at or past a timestamp, nothing older
 * can still come from any of them, and the reorder window (cli/reorder_window.ts) may release up
 * to it without waiting out its whole window. One source alone is therefore released as it comes.
 *
 * A source that was announced but has delivered nothing yet (a quiet VM, an agent still starting)
 * has no floor, so the window falls back to its time bound; so does a capture with no source
 * announced. A source that ended (`end`) no longer holds the others back. Pure.
 *
 * @example
 * ```ts
 * import { SourceWatermarks } from "./source_watermarks.ts";
 *
 * const w = new SourceWatermarks();
 * w.expect(0);
 * w.expect(1);
 * w.advance(0, 0, 5_000);
 * console.log(w.floor()); // undefined: source 1 has delivered nothing
 * w.advance(1, 0, 3_000);
 * console.log(w.floor()); // 3000n
 * ```
 *
 * @module
 */
export class SourceWatermarks {
  /** per announced source, the newest timestamp it delivered (ns); undefined = nothing yet */
  readonly #newest = new Map<number, bigint | undefined>();
  #floor: bigint | undefined;
  #dirty = false;

  /** Sources announced and not ended. */
  get size(): number {
    return this.#newest.size;
  }

  /** A source is announced: until it delivers, nothing is released on its account. */
  expect(source: number): void {
    if (this.#newest.has(source)) return;
    this.#newest.set(source, undefined);
    this.#dirty = true;
  }

  /** A source ended: it holds nothing back any more. */
  end(source: number): void {
    if (this.#newest.delete(source)) this.#dirty = true;
  }

  /** `source` delivered a record at (hi, lo); a source that is not expected is ignored. */
  advance(source: number, hi: number, lo: number): void {
    if (!this.#newest.has(source)) return;
    const ts = (BigInt(hi) << 32n) | BigInt(lo);
    const was = this.#newest.get(source);
    if (was !== undefined && ts <= was) return;
    this.#newest.set(source, ts);
    this.#dirty = true;
  }

  /** The oldest of the sources' newest timestamps; undefined when any has none, or none is expected. */
  floor(): bigint | undefined {
    if (!this.#dirty) return this.#floor;
    this.#dirty = false;
    let min: bigint | undefined;
    for (const ts of this.#newest.values()) {
      if (ts === undefined) return this.#floor = undefined;
      if (min === undefined || ts < min) min = ts;
    }
    return this.#floor = min;
  }
}
