// Single-producer/single-consumer byte ring between the capture worker
// (producer) and the main thread (consumer). Records are written whole (never
// split across the end): when one does not fit at the end the producer stores
// WRAP_AT and continues at 0. Positions are published with Atomics in a small
// SharedArrayBuffer so the consumer only ever reads complete records.
// The data itself lives in a plain (non-shared) ArrayBuffer owned by the main
// thread, which the worker aliases by address: V8 copies into and out of
// SharedArrayBuffers with slow relaxed-atomic loops (~5x memcpy at 1514 B),
// plain buffers use memcpy. The Atomics on the control block order the
// accesses (sequentially consistent stores/loads act as fences).

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

/** What the worker gets (postMessage-safe: no copy of the data). */
export interface RingShared {
  ctrl: SharedArrayBuffer;
  /** Address and size of the data buffer; it must outlive the worker. */
  dataPtr: bigint;
  size: number;
}

export interface Ring {
  shared: RingShared;
  /** Main-thread owner of the data memory. */
  data: ArrayBuffer;
}

export function createRing(bytes: number): Ring {
  const data = new ArrayBuffer(bytes);
  const dataPtr = Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(data)));
  return { shared: { ctrl: new SharedArrayBuffer(C.SIZE * 4), dataPtr, size: bytes }, data };
}

/** The worker's view of the ring data. */
export function aliasRingData(r: RingShared): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(r.dataPtr)!, r.size);
}

/**
 * Producer side (worker): reserves space for whole records and publishes them.
 * Publication is batched: records become visible at publish() (the reader
 * position is only re-read when space runs out), so the control cache line is
 * not bounced between the threads once per packet.
 */
export class RingWriter {
  readonly ctrl: Int32Array;
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  readonly #size: number;
  readonly #notifyBytes: number;
  #w: number; // next write offset (private until published)
  #r: number; // last seen consumer position
  #published: number;
  #pending = 0; // record bytes not yet published
  #dropped = 0;
  #sinceNotify = 0;

  constructor(shared: RingShared, notifyBytes: number) {
    const data = aliasRingData(shared);
    this.ctrl = new Int32Array(shared.ctrl);
    this.bytes = new Uint8Array(data);
    this.#view = new DataView(data);
    this.#size = shared.size;
    this.#notifyBytes = notifyBytes;
    this.#w = this.#published = Atomics.load(this.ctrl, C.WRITE_POS);
    this.#r = Atomics.load(this.ctrl, C.READ_POS);
  }

  #fit(need: number): number {
    const w = this.#w, r = this.#r;
    if (w >= r) {
      if (this.#size - w >= need) return w;
      if (r - 1 >= need) return 0;
    } else if (r - w - 1 >= need) return w;
    return -1;
  }

  /** Offset for a record of `need` bytes, or -1 (counted as an engine drop) when full. */
  reserve(need: number): number {
    let at = this.#fit(need);
    if (at < 0) {
      this.#r = Atomics.load(this.ctrl, C.READ_POS);
      at = this.#fit(need);
    }
    if (at < 0) {
      // Consumer too slow: count and drop, never grow.
      Atomics.store(this.ctrl, C.ENGINE_DROPPED, ++this.#dropped | 0);
      return -1;
    }
    if (at === 0 && this.#w !== 0) {
      // Wrapping: what was written at the end must be visible before WRAP_AT moves.
      this.publish();
      Atomics.store(this.ctrl, C.WRAP_AT, this.#w);
    }
    return at;
  }

  /** Writes the record header at `at`; ts_ns = sec * 1e9 + nsec, exact in doubles. */
  header(at: number, sec: number, nsec: number, caplen: number, origlen: number): void {
    const x = (sec & 0xffff) * 1e9 + nsec;
    const y = (sec >>> 16) * 1e9;
    let lo = (y % 65536) * 65536 + (x % 4294967296);
    const hi = Math.floor(y / 65536) + Math.floor(x / 4294967296) + Math.floor(lo / 4294967296);
    lo = lo % 4294967296;
    const v = this.#view;
    v.setUint32(at, lo, true);
    v.setUint32(at + 4, hi, true);
    v.setUint32(at + 8, caplen, true);
    v.setUint32(at + 12, origlen, true);
  }

  /** The record at `at` is complete and ends at `end`; publishes every 64 KiB or so. */
  commit(end: number, recordBytes: number): void {
    this.#w = end;
    this.#pending += recordBytes;
    if (this.#pending >= 65536) this.publish();
  }

  /** Makes all committed records visible to the consumer (and wakes it per notifyBytes). */
  publish(): void {
    if (this.#w === this.#published) return;
    this.#published = this.#w;
    Atomics.store(this.ctrl, C.WRITE_POS, this.#w);
    this.#sinceNotify += this.#pending;
    this.#pending = 0;
    if (this.#sinceNotify >= this.#notifyBytes) this.notify();
  }

  /** Publishes and wakes the consumer if anything arrived since the last wake-up. */
  flush(): void {
    this.publish();
    if (this.#sinceNotify > 0) this.notify();
  }

  notify(): void {
    this.#sinceNotify = 0;
    Atomics.add(this.ctrl, C.SEQ, 1);
    Atomics.notify(this.ctrl, C.SEQ);
  }
}

/** Consumer side: takes up to maxBytes of whole records as a fresh copy. */
export class RingReader {
  readonly #ctrl: Int32Array;
  readonly #data: Uint8Array;
  readonly #view: DataView;

  constructor(ring: Ring) {
    this.#ctrl = new Int32Array(ring.shared.ctrl);
    this.#data = new Uint8Array(ring.data);
    this.#view = new DataView(ring.data);
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
