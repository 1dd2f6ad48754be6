/**
 * Single-producer/single-consumer byte ring between the capture worker
 * (producer, here) and the main thread (consumer, capture_ring_reader.ts).
 * Records are written whole (never split across the end): when one does not fit at the end the
 * producer continues at 0. Written records are published in batches (contiguous, at most
 * `batchBytes` of records) through a small log of descriptors (start, end, record count, caplen
 * sum) in a SharedArrayBuffer, so the consumer never has to walk record headers (a cache miss per
 * record on memory the other core just wrote) to count them or find batch boundaries. Each batch
 * has `room.before` and `room.after` free bytes around its records, which are the consumer's: the
 * agent writes its frame and chunk headers there and sends the batch from the ring itself, so a
 * packet is copied once, from the kernel's ring to here.
 * The data itself lives in a plain (non-shared) ArrayBuffer owned by the main
 * thread, which the worker aliases by address: V8 copies into and out of
 * SharedArrayBuffers with slow relaxed-atomic loops (~5x memcpy at 1514 B),
 * plain buffers use memcpy. The Atomics on the control block order the
 * accesses (sequentially consistent stores/loads act as fences).
 *
 * @example
 * ```ts
 * import { createRing, RingWriter } from "./capture_ring.ts";
 * import { RingReader } from "./capture_ring_reader.ts";
 *
 * const ring = createRing(1 << 20, { before: 22, after: 2 });
 * const writer = new RingWriter(ring.shared, 64 * 1024); // on the worker
 * const at = writer.reserve(16 + 4);
 * writer.header(at, 0, 0, 4, 4);
 * writer.commit(at + 16 + 4, 16 + 4);
 * writer.flush();
 * const reader = new RingReader(ring); // on the main thread
 * const batch = reader.take(); // { count: 1, records, ... }: 22 free bytes before records
 * const release = reader.hold(); // kept past the next take() until release()
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
export const LOG = 4096;
export const LOG_BASE = C.SIZE;

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

/** Free bytes the ring keeps around every batch's records, for the consumer to write into. */
export interface BatchRoom {
  before: number;
  after: number;
}

/** What the worker gets (postMessage-safe: no copy of the data). */
export interface RingShared {
  ctrl: SharedArrayBuffer;
  /** Address and size of the data buffer; it must outlive the worker. */
  dataPtr: bigint;
  size: number;
  /** A batch holds at most this many bytes of records (a single larger record goes alone). */
  batchBytes: number;
  room: BatchRoom;
}

export interface Ring {
  shared: RingShared;
  /** Main-thread owner of the data memory. */
  data: ArrayBuffer;
}

export function createRing(
  bytes: number,
  room: BatchRoom = { before: 0, after: 0 },
  batchBytes = 256 << 10,
): Ring {
  const data = new ArrayBuffer(bytes);
  const dataPtr = Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(data)));
  const ctrl = new SharedArrayBuffer((C.SIZE + LOG * 4) * 4);
  return { shared: { ctrl, dataPtr, size: bytes, batchBytes, room: { ...room } }, data };
}

/** The worker's view of the ring data. */
export function aliasRingData(r: RingShared): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(r.dataPtr)!, r.size);
}

/**
 * Producer side (worker): reserves space for whole records and publishes them
 * in batches: when a batch is full, after each kernel block (tick()), and before
 * the producer waits or ends (idle(), flush()). So the control cache lines are
 * not bounced between the threads once per packet. (Publishing less often, only
 * when the notify delay was due, made 256 KiB batches at 64 B, but cost the
 * capture thread at 1514 B: docs/benchmarks.md, "Large frames sent from the
 * engine's queue".)
 */
export class RingWriter {
  readonly ctrl: Int32Array;
  readonly bytes: Uint8Array;
  readonly #header: RecordHeaderWriter;
  readonly #size: number;
  readonly #notifyBytes: number;
  readonly #notifyDelayMs: number;
  readonly #batchBytes: number;
  readonly #before: number;
  readonly #after: number;
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
  #waitingSince = 0; // when the oldest published but not yet notified records were written
  #pendSince = 0; // when the pending batch's first record was reserved

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
    this.#batchBytes = shared.batchBytes;
    this.#before = shared.room.before;
    this.#after = shared.room.after;
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

  /** #fit, looking again at the consumer's position when it does not fit. */
  #place(need: number): number {
    const at = this.#fit(need);
    if (at >= 0) return at;
    this.#r = Atomics.load(this.ctrl, C.READ_POS);
    return this.#fit(need);
  }

  /** Offset for a record of `need` bytes, or -1 (counted as an engine drop) when full. */
  reserve(need: number): number {
    if (this.#pendCount === 0 && this.#w !== 0) this.#restart();
    // Close the batch before this record would take it past batchBytes.
    if (this.#pendCount > 0 && this.#pendBytes + need > this.#batchBytes && !this.publish()) {
      return this.#drop();
    }
    const before = this.#before, after = this.#after;
    // Every record leaves `after` free behind it: the batch may end with it.
    let at = this.#place(this.#pendCount === 0 ? before + need + after : need + after);
    // Consumer too slow: count and drop, never grow.
    if (at < 0) return this.#drop();
    if (this.#pendCount > 0 && at !== this.#w) {
      // Wrapping: a batch is contiguous, so close this one and start the next at 0.
      if (!this.publish()) return this.#drop();
      at = this.#place(before + need + after);
      if (at < 0) return this.#drop();
    }
    if (this.#pendCount === 0) {
      at += before;
      this.#start = at;
      this.#pendSince = performance.now();
    }
    return at;
  }

  /** Writes the record header at `at`; ts_ns = sec * 1e9 + nsec (u32 each), exact. */
  header(at: number, sec: number, nsec: number, caplen: number, origlen: number): void {
    this.#header.write(at, sec, nsec, caplen, origlen);
  }

  /** The record at `at` is complete and ends at `end`. */
  commit(end: number, recordBytes: number): void {
    this.#w = end;
    this.#pendBytes += recordBytes;
    this.#pendCount++;
    this.#pendCaplen += capturedBytes(recordBytes, 1);
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
    this.#w += this.#after; // the batch's room behind its records (reserve kept it free)
    this.#start = this.#w;
    if (this.#sinceNotify === 0) this.#waitingSince = this.#pendSince;
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
   * Publishes (the reader calls this after every kernel block); wakes the consumer only if
   * published records have waited notifyDelayMs. Each wake-up costs the consumer (main) thread
   * tens of µs, so with a delay a few kernel blocks share one instead of one per block.
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
