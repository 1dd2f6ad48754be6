/**
 * The frames of one capture stream waiting for the socket. The HTTP layer pulls only when the
 * socket has drained, so the queue length (in packet frames) is exactly the back-log that the
 * back-pressure hysteresis looks at.
 *
 * @example
 * ```ts
 * import { FrameQueue } from "./frame_queue.ts";
 *
 * const queue = new FrameQueue();
 * queue.push(new Uint8Array(64), true); // a PACKETS frame
 * console.log(queue.packetFrames); // 1: what back-pressure sees
 * const chunk = queue.takeChunk(); // what the socket writes next
 * ```
 *
 * @module
 */

/** Several small frames go out as one chunk of at most this size: fewer writes, same bytes. */
const CHUNK_BYTES = 256 * 1024;

interface Queued {
  frame: Uint8Array;
  packets: boolean;
}

export class FrameQueue {
  #queue: Queued[] = [];
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

  push(frame: Uint8Array, packets = false): void {
    this.#queue.push({ frame, packets });
    if (packets && ++this.#packetFrames > this.#peak) this.#peak = this.#packetFrames;
    this.wake();
  }

  clear(): void {
    this.#queue = [];
    this.#packetFrames = 0;
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

  /** Removes queued frames (at least one, up to CHUNK_BYTES) as one chunk; null when empty. */
  takeChunk(): Uint8Array | null {
    if (this.#queue.length === 0) return null;
    const parts: Uint8Array[] = [];
    let size = 0;
    while (
      this.#queue.length > 0 &&
      (size === 0 || size + this.#queue[0].frame.byteLength <= CHUNK_BYTES)
    ) {
      const q = this.#queue.shift()!;
      if (q.packets) this.#packetFrames--;
      parts.push(q.frame);
      size += q.frame.byteLength;
    }
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(size);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.byteLength;
    }
    return out;
  }
}
