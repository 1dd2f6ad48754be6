/**
 * Bounded reorder window: merges the packet records of many sources into timestamp order, and
 * releases them as runs of whole records with their batch's index, so that a writer encodes each
 * run in one batch without walking it again.
 *
 * Batches from different agents arrive interleaved and late relative to each other, so a packet
 * is held until the capture clock has moved `windowMs` past it, then released in (ts, arrival)
 * order. The capture clock is the newest timestamp seen, advanced by the wall time elapsed since
 * it arrived, so that quiet periods still release packets (`tick`). Sooner, when the caller names
 * the capture's sources (`expectSource`): once every one of them has delivered a packet newer
 * than a held one, by `settleMs`, nothing can still come before it (each agent's stream is in
 * order; cli/source_watermarks.ts), so it goes. A capture of one VM is then held for `settleMs`,
 * not `windowMs`, and so is one of many busy VMs, give or take the slowest one's lag; a quiet
 * source leaves the time bound in charge. Count and byte bounds cap memory; `flush` releases
 * everything. A packet older than one already released cannot be put in order any more: it is
 * released at once and counted as `late`.
 *
 * Nothing is held per packet: a batch is walked once, split where its timestamps go back into
 * ascending runs, and a heap orders the runs by their first unreleased record. A release takes
 * from the top run as many records as come before every other run, and emits them as one range
 * of the batch (no copy, no view). One source with in-order timestamps therefore costs one emit
 * per batch.
 *
 * A held record would pin its whole message (up to 8 MiB) and the batch's index. So when what a
 * batch still holds is less than a quarter of the memory it pins, the held records are copied out
 * into a buffer of their own and the index is cut to them; quartering each time keeps the copying
 * under a third of the bytes. (Half, as before, copied 1.8 times the bytes when four sources
 * interleaved at the window's bound: docs/benchmarks.md, "reorder window".) The buffers held batches pin are counted (`pinnedBytes`) against the byte bound too.
 *
 * Pure: the caller passes the (monotonic) wall time in ms, so tests control time.
 *
 * @example Two sources merged in timestamp order
 * ```ts
 * import { ReorderWindow } from "./reorder_window.ts";
 * import { encodeRecords } from "../protocol/records.ts";
 *
 * const released: number[] = [];
 * const w = new ReorderWindow((source) => released.push(source), { windowMs: 500 });
 * w.pushRecords(0, encodeRecords([{ tsNs: 2_000_000n, data: new Uint8Array(60) }]), 0);
 * w.pushRecords(1, encodeRecords([{ tsNs: 1_000_000n, data: new Uint8Array(60) }]), 0);
 * w.flush(); // released: [1, 0]
 * ```
 *
 * @module
 */
import type { IndexedRecords } from "./capture_writer.ts";
import { type RecordIndex, RecordIndexer } from "./record_index.ts";
import { SourceWatermarks } from "./source_watermarks.ts";

/**
 * Receives released records: records `from .. to` of one source's indexed batch, in order
 * (capture_writer.ts indexedBytes gives their bytes). The batch is the window's: it must be
 * consumed before returning, and its index is valid only then.
 */
export type RunSink = (source: number, batch: IndexedRecords, from: number, to: number) => void;

/** Bounds of a {@link ReorderWindow}. */
export interface ReorderOptions {
  /** how far behind the newest timestamp packets are held; default 500 ms */
  windowMs?: number;
  /**
   * how far behind the oldest of the expected sources' newest timestamps packets are held, for
   * the small steps back a source's own timestamps may take between batches (microseconds, from
   * packets stamped on different CPUs); default 1 ms. Short on purpose: what is held waits in
   * memory until it is written, and at 1500 B and 150 kpps 10 ms of packets (2.2 MB) outgrew the
   * CPU's L2 cache, so the writer's copy read them back from memory (docs/benchmarks.md)
   */
  settleMs?: number;
  /** most packets held; default 20000 */
  maxPackets?: number;
  /** most packet bytes held; default 32 MiB */
  maxBytes?: number;
  /**
   * receives each batch's buffer (`records.buffer`) once the window holds nothing of it any more
   * (all its records written, or the held ones copied out), at most once per pushRecords call;
   * the caller may reuse it from then on (the client's pooled message buffers)
   */
  onRelease?: (buffer: ArrayBufferLike) => void;
}

/** What {@link ReorderWindow.pushRecords} took from a batch. */
export interface Taken {
  /** records taken (at most the limit) */
  packets: number;
  /** their captured bytes (caplen sum) */
  bytes: number;
}

/** Per-record facts of one batch, indexed by record number; shared by the batch's runs. */
interface Batch extends RecordIndex, IndexedRecords {
  source: number;
  /** arrival number of record 0 (record i has seq0 + i) */
  seq0: number;
  /** its runs still in the heap */
  live: Set<Run>;
  /** buffer bytes this batch keeps alive while held (its whole message), counted in pinned */
  pinned: number;
  /** the caller's buffer, until it is handed to onRelease */
  given: ArrayBufferLike | null;
}

/** Index memory of a batch: four arrays, 16 bytes per record. */
function indexBytes(b: Batch): number {
  return b.start.buffer.byteLength + b.hi.buffer.byteLength + b.lo.buffer.byteLength +
    b.caplen.buffer.byteLength;
}

/** Records `head .. end` of a batch, ascending in timestamp; `head` is the next to release. */
interface Run {
  batch: Batch;
  head: number;
  end: number;
}

/** (hi, lo) of record `i` of `a` before record `j` of `b`: timestamp, then arrival. */
function recordBefore(a: Batch, i: number, b: Batch, j: number): boolean {
  const ah = a.hi[i], bh = b.hi[j];
  if (ah !== bh) return ah < bh;
  const al = a.lo[i], bl = b.lo[j];
  if (al !== bl) return al < bl;
  return a.seq0 + i < b.seq0 + j;
}

function runBefore(a: Run, b: Run): boolean {
  return recordBefore(a.batch, a.head, b.batch, b.head);
}

/** (hi, lo) <= (wHi, wLo) */
function notAfter(hi: number, lo: number, wHi: number, wLo: number): boolean {
  return hi < wHi || (hi === wHi && lo <= wLo);
}

/** Merges records of many sources into timestamp order within a bounded window. */
export class ReorderWindow {
  /** the window in ns */
  readonly windowNs: bigint;
  /** the hold behind what every expected source has delivered, in ns */
  readonly settleNs: bigint;
  /** the bound on held packets */
  readonly maxPackets: number;
  /** the bound on held packet bytes */
  readonly maxBytes: number;
  #emit: RunSink;
  #onRelease: ((buffer: ArrayBufferLike) => void) | undefined;
  #indexer = new RecordIndexer();
  readonly #sources = new SourceWatermarks();
  #heap: Run[] = [];
  #seq = 0;
  #held = 0;
  #bytes = 0;
  /** sum of `pinned` over the batches with live runs */
  #pinned = 0;
  /** newest timestamp seen, as u32 halves; hi < 0 = none yet */
  #maxHi = -1;
  #maxLo = 0;
  #maxAtMs = 0;
  #clock: bigint | undefined;
  /** last released timestamp; hi < 0 = nothing released yet */
  #lastHi = -1;
  #lastLo = 0;
  /** packets released out of order because they came after newer ones had been released */
  late = 0;

  /** `emit` receives every released run; it must consume the slice before returning. */
  constructor(emit: RunSink, opts: ReorderOptions = {}) {
    this.#emit = emit;
    this.#onRelease = opts.onRelease;
    this.windowNs = BigInt(Math.round((opts.windowMs ?? 500) * 1e6));
    this.settleNs = BigInt(Math.round((opts.settleMs ?? 1) * 1e6));
    this.maxPackets = opts.maxPackets ?? 20_000;
    this.maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
  }

  /** A source of the capture is announced: packets wait for it as well as for the clock. */
  expectSource(source: number): void {
    this.#sources.expect(source);
  }

  /** A source ended: packets no longer wait for it. */
  endSource(source: number): void {
    this.#sources.end(source);
  }

  /** Packets currently held. */
  get size(): number {
    return this.#held;
  }

  /** Packet bytes currently held. */
  get heldBytes(): number {
    return this.#bytes;
  }

  /** Buffer bytes the held records keep alive: their messages, or their copies (per batch). */
  get pinnedBytes(): number {
    return this.#pinned;
  }

  /**
   * Adds the first `limit` wire records of one source's batch, releases whatever the window lets
   * go, and says how many packets and bytes it took. Held records reference `records` without
   * copying, so the caller must not reuse that buffer until onRelease hands it back. Throws
   * DecodeError (taking nothing, handing nothing back) on a malformed record.
   */
  pushRecords(source: number, records: Uint8Array, nowMs: number, limit = Infinity): Taken {
    const batch = this.#index(source, records, limit);
    const n = batch.hi.length;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += batch.caplen[i];
    this.#seq += n;
    this.#split(batch, nowMs);
    this.#release(nowMs);
    if (batch.live.size > 0) this.#compact(batch);
    else this.#giveBack(batch);
    return { packets: n, bytes };
  }

  /** Releases what has become old enough while nothing new arrived. */
  tick(nowMs: number): void {
    this.#release(nowMs);
  }

  /** Releases everything in timestamp order (end of capture). */
  flush(): void {
    this.#drain(-1, 0, true);
  }

  /** One walk over the batch: where each record starts, its timestamp halves and its caplen. */
  #index(source: number, records: Uint8Array, limit: number): Batch {
    return {
      source,
      records,
      view: new DataView(records.buffer, records.byteOffset, records.byteLength),
      ...this.#indexer.index(records, limit),
      seq0: this.#seq,
      live: new Set(),
      pinned: 0,
      given: records.buffer,
    };
  }

  /** The caller's buffer of a batch goes back to it, once: nothing of it is held any more. */
  #giveBack(b: Batch): void {
    const given = b.given;
    if (!given) return;
    b.given = null;
    this.#onRelease?.(given);
  }

  /**
   * Copies a batch's held records out of its message when they are less than a quarter of what
   * the batch pins: a buffer of just their bytes, an index of just their records. Runs keep their
   * object and are rebased.
   */
  #compact(b: Batch): void {
    let first = Infinity, last = 0;
    for (const r of b.live) {
      if (r.head < first) first = r.head;
      if (r.end > last) last = r.end;
    }
    const from = b.start[first], to = b.start[last];
    const count = last - first;
    const needs = (to - from) + 4 * (count + 1) + 12 * count;
    if (4 * needs > b.records.buffer.byteLength + indexBytes(b)) return;
    const start = new Uint32Array(count + 1);
    for (let i = 0; i <= count; i++) start[i] = b.start[first + i] - from;
    b.records = b.records.slice(from, to);
    b.view = new DataView(b.records.buffer);
    b.start = start;
    b.hi = b.hi.slice(first, last);
    b.lo = b.lo.slice(first, last);
    b.caplen = b.caplen.slice(first, last);
    b.seq0 += first;
    for (const r of b.live) {
      r.head -= first;
      r.end -= first;
    }
    this.#pinned -= b.pinned;
    b.pinned = b.records.buffer.byteLength;
    this.#pinned += b.pinned;
    this.#giveBack(b);
  }

  /** Emits late records at once; puts the rest into the heap as ascending runs. */
  #split(b: Batch, nowMs: number): void {
    const n = b.hi.length;
    let runStart = -1;
    let lateStart = -1;
    for (let i = 0; i < n; i++) {
      const hi = b.hi[i], lo = b.lo[i];
      if (this.#maxHi < 0 || hi > this.#maxHi || (hi === this.#maxHi && lo > this.#maxLo)) {
        this.#maxHi = hi;
        this.#maxLo = lo;
        this.#maxAtMs = nowMs;
      }
      const late = this.#lastHi >= 0 &&
        (hi < this.#lastHi || (hi === this.#lastHi && lo < this.#lastLo));
      if (late) {
        if (runStart >= 0) this.#insert({ batch: b, head: runStart, end: i });
        runStart = -1;
        if (lateStart < 0) lateStart = i;
        this.late++;
        continue;
      }
      if (lateStart >= 0) this.#emitSlice(b, lateStart, i);
      lateStart = -1;
      if (runStart >= 0 && (hi < b.hi[i - 1] || (hi === b.hi[i - 1] && lo < b.lo[i - 1]))) {
        this.#insert({ batch: b, head: runStart, end: i });
        runStart = -1;
      }
      if (runStart < 0) runStart = i;
      this.#held++;
      this.#bytes += b.caplen[i];
    }
    if (lateStart >= 0) this.#emitSlice(b, lateStart, n);
    if (runStart >= 0) this.#insert({ batch: b, head: runStart, end: n });
    // the batch's last record, not its newest: a batch that ends on a step back promises less
    if (n > 0) this.#sources.advance(b.source, b.hi[n - 1], b.lo[n - 1]);
  }

  #release(nowMs: number): void {
    if (this.#maxHi < 0) return;
    const maxTs = (BigInt(this.#maxHi) << 32n) | BigInt(this.#maxLo);
    const idleNs = BigInt(Math.max(0, Math.floor((nowMs - this.#maxAtMs) * 1e6)));
    const clock = maxTs + idleNs;
    // the capture clock never goes back, even when a new newest packet arrives "late"
    if (this.#clock === undefined || clock > this.#clock) this.#clock = clock;
    let watermark = this.#clock - this.windowNs;
    const floor = this.#sources.floor();
    if (floor !== undefined && floor - this.settleNs > watermark) watermark = floor - this.settleNs;
    if (watermark < 0n) this.#drain(-1, 0, false);
    else this.#drain(Number(watermark >> 32n), Number(watermark & 0xffffffffn), false);
  }

  #over(): boolean {
    // #compact keeps the pinned buffers within about four times the held records' bytes
    return this.#held > this.maxPackets ||
      (this.#held > 0 && (this.#bytes > this.maxBytes || this.#pinned > 2 * this.maxBytes));
  }

  /**
   * Releases in (ts, arrival) order while the next record is at or below the watermark (wHi < 0:
   * none is), the bounds are exceeded, or `all`. Each step emits the longest prefix of the top
   * run that comes before the head of every other run.
   */
  #drain(wHi: number, wLo: number, all: boolean): void {
    const h = this.#heap;
    while (h.length > 0) {
      const top = h[0];
      const b = top.batch;
      const next = h.length < 2 ? undefined : h.length < 3 || runBefore(h[1], h[2]) ? h[1] : h[2];
      const from = top.head;
      let i = from;
      while (i < top.end) {
        if (
          !all && !(wHi >= 0 && notAfter(b.hi[i], b.lo[i], wHi, wLo)) && !this.#over()
        ) break;
        if (next && i > from && !recordBefore(b, i, next.batch, next.head)) break;
        this.#held--;
        this.#bytes -= b.caplen[i];
        i++;
      }
      if (i === from) return; // the top record stays: so does everything after it
      this.#lastHi = b.hi[i - 1];
      this.#lastLo = b.lo[i - 1];
      top.head = i;
      // emitted before the run's batch may be compacted (which rebases `from` and `i`)
      this.#emitSlice(b, from, i);
      if (i === top.end) this.#removeTop();
      else {
        this.#down(0);
        // a batch with one run left (the usual case) is checked at every step; one of many
        // runs only when it was pushed, so that scanning its runs stays linear
        if (b.live.size === 1) this.#compact(b);
      }
    }
  }

  #emitSlice(b: Batch, from: number, to: number): void {
    this.#emit(b.source, b, from, to);
  }

  #removeTop(): void {
    const h = this.#heap;
    const gone = h[0].batch;
    gone.live.delete(h[0]);
    if (gone.live.size === 0) {
      this.#pinned -= gone.pinned;
      gone.pinned = 0;
      this.#giveBack(gone);
    }
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.#down(0);
    }
  }

  #insert(r: Run): void {
    const b = r.batch;
    if (b.live.size === 0) {
      b.pinned = b.records.buffer.byteLength;
      this.#pinned += b.pinned;
    }
    b.live.add(r);
    const h = this.#heap;
    h.push(r);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!runBefore(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  #down(i: number): void {
    const h = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && runBefore(h[l], h[m])) m = l;
      if (r < h.length && runBefore(h[r], h[m])) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }
}
