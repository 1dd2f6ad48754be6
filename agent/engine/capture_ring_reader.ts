/**
 * The main thread's side of the engine ring (capture_ring.ts): lends the batches the capture
 * worker published, and hands them back in the order they were taken, also when a consumer
 * holds some of them past the next take (the agent sends them to the socket from here).
 *
 * @example
 * ```ts
 * import { createRing, RingWriter } from "./capture_ring.ts";
 * import { RingReader } from "./capture_ring_reader.ts";
 *
 * const ring = createRing(1 << 20, { before: 22, after: 2 });
 * const writer = new RingWriter(ring.shared, 1);
 * const at = writer.reserve(16 + 4);
 * writer.header(at, 0, 0, 4, 4);
 * writer.commit(at + 20, 20);
 * writer.flush();
 * const reader = new RingReader(ring);
 * const batch = reader.take()!; // its records, with 22 free bytes before them
 * const release = reader.hold(); // not handed back at the next take()
 * reader.take(); // null: nothing else published
 * release(); // now the writer may reuse its space
 * ```
 *
 * @module
 */
import { C, LOG, LOG_BASE, type Ring } from "./capture_ring.ts";

interface Lent {
  /** end of the batch's room behind its records: READ_POS once it and all before it are back */
  end: number;
  /** descriptors taken up to and including this batch: PUB_TAIL then */
  tail: number;
  bytes: number;
  held: boolean;
  back: boolean;
}

/**
 * Consumer side. take() lends a view into the ring: the records stay valid (the
 * producer does not overwrite them) until the next take() or release(), or, once
 * hold() was called for it, until the function hold() returned is called.
 * Batches go back to the producer in the order they were taken, whatever the
 * order of the calls. No copy is made and no record is read.
 */
export class RingReader {
  readonly #ctrl: Int32Array;
  readonly #data: Uint8Array;
  readonly #after: number;
  #tail = 0; // next descriptor to take
  #lent: Lent[] = []; // taken, oldest first, not yet handed back
  #last: Lent | null = null; // the latest take(), handed back at the next one unless held
  #heldBytes = 0;

  constructor(ring: Ring) {
    this.#ctrl = new Int32Array(ring.shared.ctrl);
    this.#data = new Uint8Array(ring.data);
    this.#after = ring.shared.room.after;
  }

  get ctrl(): Int32Array {
    return this.#ctrl;
  }

  /** Bytes of records in held batches not yet given back. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Hands the latest batch back to the producer, unless it is held. */
  release(): void {
    const l = this.#last;
    this.#last = null;
    if (l && !l.held) this.#giveBack(l);
  }

  /**
   * Keeps the latest batch past the next take(); the returned function hands it back (once;
   * later calls do nothing).
   */
  hold(): () => void {
    const l = this.#last;
    if (!l || l.held) throw new Error("hold(): no batch is lent, or it is held already");
    l.held = true;
    this.#heldBytes += l.bytes;
    return () => {
      if (l.back) return;
      this.#heldBytes -= l.bytes;
      this.#giveBack(l);
    };
  }

  #giveBack(l: Lent): void {
    l.back = true;
    let end = -1, tail = 0;
    const lent = this.#lent;
    while (lent.length > 0 && lent[0].back) {
      const first = lent.shift()!;
      end = first.end;
      tail = first.tail;
    }
    if (end < 0) return;
    Atomics.store(this.#ctrl, C.READ_POS, end);
    Atomics.store(this.#ctrl, C.PUB_TAIL, tail);
  }

  /** Lends the next published batch, or null. */
  take(): { count: number; records: Uint8Array; bytes: number } | null {
    this.release();
    const c = this.#ctrl;
    const t = this.#tail;
    if (t === Atomics.load(c, C.PUB_HEAD)) return null;
    const i = LOG_BASE + (t & (LOG - 1)) * 4;
    const start = c[i], end = c[i + 1];
    this.#tail = (t + 1) | 0;
    const l: Lent = {
      end: end + this.#after,
      tail: this.#tail,
      bytes: end - start,
      held: false,
      back: false,
    };
    this.#lent.push(l);
    this.#last = l;
    return { count: c[i + 2], records: this.#data.subarray(start, end), bytes: c[i + 3] };
  }
}
