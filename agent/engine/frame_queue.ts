/**
 * The frames of one capture stream waiting for the socket. The stream writer takes the next chunk
 * only when the socket has drained, so the queue length (in packet frames) is exactly the back-log
 * that the back-pressure hysteresis looks at. What it takes is HTTP/1.1 chunks, ready to write
 * (agent/http_chunks.ts).
 *
 * @example
 * ```ts
 * import { FrameQueue } from "./frame_queue.ts";
 *
 * const queue = new FrameQueue();
 * queue.push(new Uint8Array(64), true); // a PACKETS frame
 * console.log(queue.packetFrames); // 1: what back-pressure sees
 * const chunk = queue.takeChunk(); // what the socket writes next: "40\r\n…\r\n"
 * ```
 *
 * @module
 */

import { CHUNK_ROOM, chunkInPlace, joinChunk } from "../http_chunks.ts";

/** Several small frames go out as one chunk of at most this size: fewer writes, same bytes. */
const CHUNK_BYTES = 256 * 1024;
/**
 * A frame built with CHUNK_ROOM and at least this large is written alone, framed in place (no
 * copy); smaller ones are joined (a copy of a few KiB costs less than another socket write).
 */
export const ALONE_BYTES = 16 * 1024;

interface Queued {
  frame: Uint8Array;
  packets: boolean;
  /** built with CHUNK_ROOM around it (encodePacketsFrame's `room`) */
  roomy: boolean;
  /** called once nothing reads the frame's memory any more (see push) */
  done?: () => void;
}

export { CHUNK_ROOM };

export class FrameQueue {
  #queue: Queued[] = [];
  /** chunks handed out that were framed in place in memory with a `done`, until release() */
  #inSocket = new Map<Uint8Array, () => void>();
  #packetFrames = 0;
  #peak = 0;
  #wake: (() => void) | null = null;

  /** PACKETS frames queued now. */
  get packetFrames(): number {
    return this.#packetFrames;
  }

  /** Most PACKETS frames ever queued. */
  get peak(): number {
    return this.#peak;
  }

  get empty(): boolean {
    return this.#queue.length === 0;
  }

  /**
   * `roomy`: the frame was built with CHUNK_ROOM around it (it may then go out without a copy).
   * `done` is called once the frame's memory is free again: when it was copied into a joined
   * chunk, when release() is called for the chunk it went out in, or when the queue is cleared.
   */
  push(frame: Uint8Array, packets = false, roomy = false, done?: () => void): void {
    this.#queue.push({ frame, packets, roomy, done });
    if (packets && ++this.#packetFrames > this.#peak) this.#peak = this.#packetFrames;
    this.wake();
  }

  clear(): void {
    for (const q of this.#queue) q.done?.();
    this.#queue = [];
    this.#packetFrames = 0;
  }

  /**
   * The socket is done with `chunk` (from takeChunk): true if its memory was a pushed frame's with
   * a `done`, which is called now; false for chunks whose memory the caller manages.
   */
  release(chunk: Uint8Array): boolean {
    const done = this.#inSocket.get(chunk);
    if (!done) return false;
    this.#inSocket.delete(chunk);
    done();
    return true;
  }

  /** Resolves on the next push (or wake()). */
  waitForData(): Promise<void> {
    return new Promise<void>((r) => (this.#wake = r));
  }

  wake(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * Removes queued frames (at least one, up to CHUNK_BYTES) as one HTTP/1.1 chunk, ready to
   * write; null when empty. A large frame with room goes alone and is framed in place.
   */
  takeChunk(): Uint8Array | null {
    if (this.#queue.length === 0) return null;
    const alone = (q: Queued) => q.roomy && q.frame.byteLength >= ALONE_BYTES;
    if (alone(this.#queue[0])) {
      const q = this.#take();
      const chunk = chunkInPlace(q.frame);
      if (q.done) this.#inSocket.set(chunk, q.done);
      return chunk;
    }
    const parts: Queued[] = [];
    let size = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0];
      if (alone(next) || (size > 0 && size + next.frame.byteLength > CHUNK_BYTES)) break;
      parts.push(this.#take());
      size += next.frame.byteLength;
    }
    const chunk = joinChunk(parts.map((q) => q.frame), size);
    for (const q of parts) q.done?.();
    return chunk;
  }

  #take(): Queued {
    const q = this.#queue.shift()!;
    if (q.packets) this.#packetFrames--;
    return q;
  }
}
