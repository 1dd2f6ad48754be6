/**
 * Single-producer/single-consumer byte ring between the capture worker
 * (producer) and the main thread (consumer). Records are written whole (never
 * split across the end): when one does not fit at the end the producer
 * continues at 0. Written records are published in chunks through a small log
 * of descriptors (start, end, record count, caplen sum) in a SharedArrayBuffer,
 * so the consumer never has to walk record headers (a cache miss per record on
 * memory the other core just wrote) to count them or find batch boundaries.
 * The data itself lives in a plain (non-shared) ArrayBuffer owned by the main
 * thread, which the worker aliases by address: V8 copies into and out of
 * SharedArrayBuffers with slow relaxed-atomic loops (~5x memcpy at 1514 B),
 * plain buffers use memcpy. The Atomics on the control block order the
 * accesses (sequentially consistent stores/loads act as fences).
 *
 * @example
 * ```ts
 * import { createRing, RingReader, RingWriter } from "./capture_ring.ts";
 *
 * const ring = createRing(1 << 20);
 * const writer = new RingWriter(ring.shared, 64 * 1024); // on the worker
 * const at = writer.reserve(16 + 4);
 * writer.header(at, 0, 0, 4, 4);
 * writer.commit(at + 16 + 4, 16 + 4);
 * writer.flush();
 * const batch = new RingReader(ring).take(1 << 20); // on the main thread: { count: 1, ... }
 * ```
 *
 * @module
 */

import { capturedBytes, RecordHeaderWriter } from "../../protocol/records.ts";

/** Indexes into the Int32Array control block. */
export const C = {
  PUB_HEAD: 0, // descriptors published (producer), wraps as int32
  READ_POS: 1, // end of the records the consumer has released
  PUB_TAIL: 2, // descriptors released (consumer)
  SEQ: 3, // bumped + notified when the consumer should look
  STATE: 4,
  ENGINE_DROPPED: 5,
  K_RECV: 6,
  K_DROP: 7,
  K_IFDROP: 8,
  SIZE: 16,
} as const;

/** Descriptor log: LOG entries of 4 int32 (start, end, count, caplen sum) after the control words. */
const LOG = 4096;
const LOG_BASE = C.SIZE;
/** A descriptor covers at most this much (when the log was full, chunks grow). */
const MAX_CHUNK = 1 << 20;

/**
 * STATE values. Only the worker touches the pcap handle: main asks with DRAIN
 * (stop) or ABORT (close), and the worker, which never blocks longer than its
 * poll interval, notices and ends.
 */
export const S = {
  STARTING: 0,
  RUNNING: 1,
  DRAIN: 2, // stop(): deliver everything captured so far, then end
  ABORT: 3, // close(): end now, discard the rest
  ENDED: 4,
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
  const ctrl = new SharedArrayBuffer((C.SIZE + LOG * 4) * 4);
  return { shared: { ctrl, dataPtr, size: bytes }, data };
}

/** The worker's view of the ring data. */
export function aliasRingData(r: RingShared): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(r.dataPtr)!, r.size);
}

/**
 * Producer side (worker): reserves space for whole records and publishes them.
 * Publication is batched (every 64 KiB and at publish()/flush()), so the
 * control cache lines are not bounced between the threads once per packet.
 */
export class RingWriter {
  readonly ctrl: Int32Array;
  readonly bytes: Uint8Array;
  readonly #header: RecordHeaderWriter;
  readonly #size: number;
  readonly #notifyBytes: number;
  readonly #notifyDelayMs: number;
  #w = 0; // next write offset
  #r = 0; // last seen consumer position
  #start = 0; // first unpublished record
  #pendBytes = 0; // unpublished record bytes, records, caplen sum
  #pendCount = 0;
  #pendCaplen = 0;
  #head = 0; // descriptors published
  #tail = 0; // last seen consumer descriptor position
  #dropped = 0;
  #sinceNotify = 0;
  #waitingSince = 0; // when the oldest published but not yet notified records were published

  /**
   * notifyBytes: wake the consumer once this much was published since the last wake-up.
   * notifyDelayMs: ... or once published records have waited this long (see idle(), tick()).
   */
  constructor(shared: RingShared, notifyBytes: number, notifyDelayMs = 0) {
    const data = aliasRingData(shared);
    this.ctrl = new Int32Array(shared.ctrl);
    this.bytes = new Uint8Array(data);
    this.#header = new RecordHeaderWriter(new DataView(data));
    this.#size = shared.size;
    this.#notifyBytes = notifyBytes;
    this.#notifyDelayMs = notifyDelayMs;
  }

  #fit(need: number): number {
    const w = this.#w, r = this.#r;
    if (w >= r) {
      if (this.#size - w >= need) return w;
      if (r - 1 >= need) return 0;
    } else if (r - w - 1 >= need) return w;
    return -1;
  }

  /**
   * Starts over at offset 0 when the consumer has released everything, so that
   * the writes stay within a few hot cache lines instead of cycling through the
   * whole (cold) queue. Safe without a race: with every descriptor released the
   * consumer holds no lent batch and writes READ_POS again only after taking
   * something published after this.
   */
  #restart(): void {
    if (Atomics.load(this.ctrl, C.PUB_TAIL) !== this.#head) return;
    this.#tail = this.#head;
    Atomics.store(this.ctrl, C.READ_POS, 0);
    this.#w = this.#r = this.#start = 0;
  }

  #drop(): number {
    Atomics.store(this.ctrl, C.ENGINE_DROPPED, ++this.#dropped | 0);
    return -1;
  }

  /** Counts `n` packets the reader took from the kernel's count but could not deliver. */
  discard(n: number): void {
    this.#dropped += n;
    Atomics.store(this.ctrl, C.ENGINE_DROPPED, this.#dropped | 0);
  }

  /** Offset for a record of `need` bytes, or -1 (counted as an engine drop) when full. */
  reserve(need: number): number {
    if (this.#pendCount === 0 && this.#w !== 0) this.#restart();
    let at = this.#fit(need);
    if (at < 0) {
      this.#r = Atomics.load(this.ctrl, C.READ_POS);
      at = this.#fit(need);
    }
    // Consumer too slow: count and drop, never grow.
    if (at < 0) return this.#drop();
    if (this.#pendBytes + need > MAX_CHUNK && !this.publish()) return this.#drop();
    if (at === 0 && this.#w !== 0) {
      // Wrapping: a descriptor covers a contiguous range, so close the current one.
      if (!this.publish()) return this.#drop();
      this.#start = 0;
    }
    return at;
  }

  /** Writes the record header at `at`; ts_ns = sec * 1e9 + nsec (u32 each), exact. */
  header(at: number, sec: number, nsec: number, caplen: number, origlen: number): void {
    this.#header.write(at, sec, nsec, caplen, origlen);
  }

  /** The record at `at` is complete and ends at `end`; publishes every 64 KiB or so. */
  commit(end: number, recordBytes: number): void {
    this.#w = end;
    this.#pendBytes += recordBytes;
    this.#pendCount++;
    this.#pendCaplen += capturedBytes(recordBytes, 1);
    if (this.#pendBytes >= 65536) this.publish();
  }

  /**
   * Makes all committed records visible to the consumer (and wakes it per notifyBytes).
   * False when the descriptor log is full (the consumer is far behind): they stay pending.
   */
  publish(): boolean {
    if (this.#pendCount === 0) return true;
    const c = this.ctrl;
    if (((this.#head - this.#tail) | 0) >= LOG) {
      this.#tail = Atomics.load(c, C.PUB_TAIL);
      if (((this.#head - this.#tail) | 0) >= LOG) return false;
    }
    const i = LOG_BASE + (this.#head & (LOG - 1)) * 4;
    c[i] = this.#start;
    c[i + 1] = this.#w;
    c[i + 2] = this.#pendCount;
    c[i + 3] = this.#pendCaplen;
    this.#head = (this.#head + 1) | 0;
    Atomics.store(c, C.PUB_HEAD, this.#head); // orders the descriptor and data before it
    this.#start = this.#w;
    if (this.#sinceNotify === 0) this.#waitingSince = performance.now();
    this.#sinceNotify += this.#pendBytes;
    this.#pendBytes = this.#pendCount = this.#pendCaplen = 0;
    if (this.#sinceNotify >= this.#notifyBytes) this.notify();
    return true;
  }

  /** Publishes and wakes the consumer if anything arrived since the last wake-up. */
  flush(): void {
    this.publish();
    if (this.#sinceNotify > 0) this.notify();
  }

  /**
   * Publishes; wakes the consumer only if published records have waited notifyDelayMs.
   * Each wake-up costs the consumer (main) thread tens of µs, so with a delay a few kernel
   * blocks share one instead of one per block.
   */
  tick(): void {
    this.publish();
    if (this.#sinceNotify > 0 && this.#age() >= this.#notifyDelayMs) this.notify();
  }

  /**
   * Before the producer waits for packets: publishes, then how long (ms) it may wait before
   * records that are still un-notified are due (Infinity when there are none).
   */
  idle(): number {
    this.publish();
    if (this.#sinceNotify === 0) return Infinity;
    // Past half the delay, wake now rather than be woken by a timer just for this.
    const age = this.#age();
    if (age * 2 >= this.#notifyDelayMs) {
      this.notify();
      return Infinity;
    }
    return this.#notifyDelayMs - age;
  }

  #age(): number {
    return performance.now() - this.#waitingSince;
  }

  /** Last flush before the producer ends: what cannot be published counts as dropped. */
  finish(): void {
    this.flush();
    if (this.#pendCount > 0) {
      this.#dropped += this.#pendCount;
      this.#pendBytes = this.#pendCount = this.#pendCaplen = 0;
      Atomics.store(this.ctrl, C.ENGINE_DROPPED, this.#dropped | 0);
    }
    this.notify();
  }

  notify(): void {
    this.#sinceNotify = 0;
    Atomics.add(this.ctrl, C.SEQ, 1);
    Atomics.notify(this.ctrl, C.SEQ);
  }
}

/**
 * Consumer side. take() lends a view into the ring: the records stay valid (the
 * producer does not overwrite them) until the next take() or release().
 * No copy is made and no record is read.
 */
export class RingReader {
  readonly #ctrl: Int32Array;
  readonly #data: Uint8Array;
  #tail = 0; // next descriptor to take
  #lentEnd = -1; // end of the lent batch, released at the next take()

  constructor(ring: Ring) {
    this.#ctrl = new Int32Array(ring.shared.ctrl);
    this.#data = new Uint8Array(ring.data);
  }

  get ctrl(): Int32Array {
    return this.#ctrl;
  }

  /** Hands the lent batch back to the producer. */
  release(): void {
    if (this.#lentEnd < 0) return;
    Atomics.store(this.#ctrl, C.READ_POS, this.#lentEnd);
    Atomics.store(this.#ctrl, C.PUB_TAIL, this.#tail);
    this.#lentEnd = -1;
  }

  /** Lends whole published chunks of up to maxBytes (at least one chunk). */
  take(maxBytes: number): { count: number; records: Uint8Array; bytes: number } | null {
    this.release();
    const c = this.#ctrl;
    const head = Atomics.load(c, C.PUB_HEAD);
    let t = this.#tail;
    if (t === head) return null;
    let i = LOG_BASE + (t & (LOG - 1)) * 4;
    const start = c[i];
    let end = c[i + 1], count = c[i + 2], bytes = c[i + 3];
    for (t = (t + 1) | 0; t !== head; t = (t + 1) | 0) {
      i = LOG_BASE + (t & (LOG - 1)) * 4;
      if (c[i] !== end || c[i + 1] - start > maxBytes) break;
      end = c[i + 1];
      count += c[i + 2];
      bytes += c[i + 3];
    }
    this.#tail = t;
    this.#lentEnd = end;
    return { count, records: this.#data.subarray(start, end), bytes };
  }
}
