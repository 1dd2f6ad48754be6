/**
 * Reuses the memory of a capture stream's large frames, on both ends of the stream. Each was a
 * fresh ~256 KiB allocation: zeroed, page-faulted in and collected again by the GC, several hundred
 * times a second at high rates.
 * - The agent builds each large PACKETS frame it cannot send from the capture engine's queue
 *   (agent/frame_in_place.ts) in a pooled buffer, which comes back once the socket is done with it
 *   (its write callback).
 * - The client (cli/tls_websocket.ts) decodes each large message from the api into a pooled
 *   buffer, which comes back once its reorder window has written the last record it held
 *   (cli/reorder_window.ts, `onRelease`). Until the GC ran, each message was garbage of its
 *   own, and the client's heap grew by ~90 MB of fresh pages in the first seconds of a 1500 B
 *   capture at 100 kpps (docs/benchmarks.md, "The client's message buffers").
 *
 * How many are in flight at once varies: on the agent the socket's write callbacks come in bursts,
 * and a queue that fills toward a slow reader holds dozens; a pool of 4 missed two takes in three
 * at 1500 B (docs/benchmarks.md, "frame pool"). So the pool keeps up to `keep` idle buffers (an
 * agent session: as many as its queue holds; the client: as many as its reorder window may pin),
 * and trim(), called about once a second, hands back those that no take() needed since the last
 * trim (the fewest idle ones seen meanwhile): a stream that slows down or stops holds no more
 * than what it used in its last interval.
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
  /** the fewest idle buffers since the last trim(): that many went unused all along */
  #lowWater = 0;
  #taken = 0;
  #fresh = 0;

  constructor(readonly bufferBytes: number, readonly keep: number) {}

  /** Idle buffers held now. */
  get idle(): number {
    return this.#free.length;
  }

  /** Takes so far, and how many of them had to allocate (for the stream's summary). */
  get counts(): { taken: number; fresh: number } {
    return { taken: this.#taken, fresh: this.#fresh };
  }

  /** A buffer for `bytes` (a pooled one if any), or undefined when `bytes` is too large. */
  take(bytes: number): ArrayBuffer | undefined {
    if (bytes > this.bufferBytes) return undefined;
    this.#taken++;
    const buffer = this.#free.pop();
    if (this.#free.length < this.#lowWater) this.#lowWater = this.#free.length;
    if (buffer) return buffer;
    this.#fresh++;
    return new ArrayBuffer(this.bufferBytes);
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

  /** Lets go of the idle buffers that no take() needed since the last call; returns how many. */
  trim(): number {
    const unused = this.#lowWater;
    this.#free.splice(0, unused);
    this.#lowWater = this.#free.length;
    return unused;
  }
}
