// Single-producer/single-consumer byte ring in a SharedArrayBuffer between the
// capture worker (producer) and the main thread (consumer). Records are written
// whole (never split across the end): when one does not fit at the end the
// producer stores WRAP_AT and continues at 0. Positions are published with
// Atomics so the consumer only ever reads complete records.

export const RECORD_HEADER = 16;

/** Indexes into the Int32Array control block. */
export const C = {
  WRITE_POS: 0,
  READ_POS: 1,
  WRAP_AT: 2,
  SEQ: 3, // bumped + notified when the consumer should look
  STATE: 4,
  ENGINE_DROPPED: 5,
  K_RECV: 6,
  K_DROP: 7,
  K_IFDROP: 8,
  SIZE: 16,
} as const;

/** STATE values: who may touch the pcap handle (breakloop vs close). */
export const S = {
  STARTING: 0,
  RUNNING: 1,
  STOPPING: 2, // main is calling pcap_breakloop; the worker must not close yet
  SIGNALED: 3, // breakloop done; the worker may close
  ENDED: 4, // the worker ended on its own; main must not touch the handle
} as const;

export interface RingShared {
  ctrl: SharedArrayBuffer;
  data: SharedArrayBuffer;
}

export function createRing(bytes: number): RingShared {
  return {
    ctrl: new SharedArrayBuffer(C.SIZE * 4),
    data: new SharedArrayBuffer(bytes),
  };
}

/** Consumer side: takes up to maxBytes of whole records as a fresh copy. */
export class RingReader {
  readonly #ctrl: Int32Array;
  readonly #data: Uint8Array;
  readonly #view: DataView;

  constructor(shared: RingShared) {
    this.#ctrl = new Int32Array(shared.ctrl);
    this.#data = new Uint8Array(shared.data);
    this.#view = new DataView(shared.data);
  }

  get ctrl(): Int32Array {
    return this.#ctrl;
  }

  take(maxBytes: number): { count: number; records: Uint8Array; bytes: number } | null {
    const ctrl = this.#ctrl;
    let r = Atomics.load(ctrl, C.READ_POS);
    const w = Atomics.load(ctrl, C.WRITE_POS);
    if (w === r) return null;
    let end = w;
    if (w < r) {
      end = Atomics.load(ctrl, C.WRAP_AT);
      if (r === end) {
        r = 0;
        Atomics.store(ctrl, C.READ_POS, 0);
        if (w === 0) return null;
        end = w;
      }
    }
    // Walk whole records up to maxBytes (at least one).
    let pos = r;
    let count = 0;
    let bytes = 0;
    while (pos < end) {
      const caplen = this.#view.getUint32(pos + 8, true);
      const next = pos + RECORD_HEADER + caplen;
      if (count > 0 && next - r > maxBytes) break;
      pos = next;
      bytes += caplen;
      count++;
    }
    const records = this.#data.slice(r, pos);
    Atomics.store(ctrl, C.READ_POS, pos);
    return { count, records, bytes };
  }
}
