/**
 * Reuses the memory of a capture stream's large PACKETS frames. Each was a fresh ~256 KiB
 * allocation: zeroed, page-faulted in and collected again by the GC, several hundred times a
 * second at high rates. A frame's buffer comes back once the socket is done with it (its write
 * callback), and the next frame is built in it. Only a few are kept: the rest of a back-log that
 * drains is left to the GC, so the pool never holds more than `keep` idle buffers.
 *
 * @example
 * ```ts
 * import { FramePool } from "./frame_pool.ts";
 *
 * const pool = new FramePool(256 * 1024, 4);
 * const buf = pool.take(100_000)!; // a 256 KiB ArrayBuffer (fresh: the pool is empty)
 * pool.give(buf); // once the socket wrote the frame built in it
 * console.log(pool.take(100_000) === buf); // true
 * ```
 *
 * @module
 */
export class FramePool {
  #free: ArrayBuffer[] = [];

  constructor(readonly bufferBytes: number, readonly keep: number) {}

  /** Idle buffers held now. */
  get idle(): number {
    return this.#free.length;
  }

  /** A buffer for `bytes` (a pooled one if any), or undefined when `bytes` is too large. */
  take(bytes: number): ArrayBuffer | undefined {
    if (bytes > this.bufferBytes) return undefined;
    return this.#free.pop() ?? new ArrayBuffer(this.bufferBytes);
  }

  /** Returns a buffer nobody uses any more (one of another size is left to the GC). */
  give(buffer: ArrayBufferLike): void {
    if (
      buffer instanceof ArrayBuffer && buffer.byteLength === this.bufferBytes &&
      this.#free.length < this.keep && !this.#free.includes(buffer)
    ) {
      this.#free.push(buffer);
    }
  }
}
