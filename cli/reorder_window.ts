/**
 * Bounded reorder window: merges packets of many sources into timestamp order.
 *
 * Batches from different agents arrive interleaved and late relative to each other, so a packet
 * is held until the capture clock has moved `windowMs` past it, then released in (ts, arrival)
 * order. The capture clock is the newest timestamp seen, advanced by the wall time elapsed since
 * it arrived, so that quiet periods still release packets (`tick`). Count and byte bounds cap
 * memory; `flush` releases everything. A packet older than one already released cannot be put in
 * order any more: it is released at once and counted as `late`.
 *
 * Pure: the caller passes the (monotonic) wall time in ms, so tests control time.
 */
import { walkRecords } from "../protocol/frame_codec.ts";

export interface HeldPacket {
  source: number;
  tsNs: bigint;
  caplen: number;
  origlen: number;
  data: Uint8Array;
}

export interface ReorderOptions {
  /** how far behind the newest timestamp packets are held; default 500 ms */
  windowMs?: number;
  /** most packets held; default 20000 */
  maxPackets?: number;
  /** most packet bytes held; default 32 MiB */
  maxBytes?: number;
}

interface Node {
  p: HeldPacket;
  seq: number;
}

function before(a: Node, b: Node): boolean {
  return a.p.tsNs < b.p.tsNs || (a.p.tsNs === b.p.tsNs && a.seq < b.seq);
}

export class ReorderWindow {
  readonly windowNs: bigint;
  readonly maxPackets: number;
  readonly maxBytes: number;
  #emit: (p: HeldPacket) => void;
  #heap: Node[] = [];
  #seq = 0;
  #bytes = 0;
  #maxTs: bigint | undefined;
  #maxAtMs = 0;
  #clock: bigint | undefined;
  #lastReleased: bigint | undefined;
  /** packets released out of order because they came after newer ones had been released */
  late = 0;

  constructor(emit: (p: HeldPacket) => void, opts: ReorderOptions = {}) {
    this.#emit = emit;
    this.windowNs = BigInt(Math.round((opts.windowMs ?? 500) * 1e6));
    this.maxPackets = opts.maxPackets ?? 20_000;
    this.maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
  }

  /** Packets currently held. */
  get size(): number {
    return this.#heap.length;
  }

  /** Packet bytes currently held. */
  get heldBytes(): number {
    return this.#bytes;
  }

  /** Adds one packet and releases whatever the window lets go. */
  push(p: HeldPacket, nowMs: number): void {
    this.#add(p, nowMs);
    this.#release(nowMs);
  }

  /**
   * Adds wire records (`u64 ts_ns | u32 caplen | u32 origlen | bytes`) of one source. The held
   * packets reference `records` without copying, so the caller must not reuse that buffer.
   */
  pushRecords(source: number, records: Uint8Array, nowMs: number): number {
    const n = walkRecords(records, (view, off, caplen, origlen) =>
      this.#add({
        source,
        tsNs: view.getBigUint64(off, true),
        caplen,
        origlen,
        data: records.subarray(off + 16, off + 16 + caplen),
      }, nowMs));
    this.#release(nowMs);
    return n;
  }

  /** Releases what has become old enough while nothing new arrived. */
  tick(nowMs: number): void {
    this.#release(nowMs);
  }

  /** Releases everything in timestamp order (end of capture). */
  flush(): void {
    while (this.#heap.length > 0) this.#pop();
  }

  #add(p: HeldPacket, nowMs: number): void {
    if (this.#maxTs === undefined || p.tsNs > this.#maxTs) {
      this.#maxTs = p.tsNs;
      this.#maxAtMs = nowMs;
    }
    if (this.#lastReleased !== undefined && p.tsNs < this.#lastReleased) {
      this.late++;
      this.#emit(p);
      return;
    }
    this.#insert({ p, seq: this.#seq++ });
    this.#bytes += p.caplen;
  }

  #release(nowMs: number): void {
    const h = this.#heap;
    if (this.#maxTs === undefined) return;
    const idleNs = BigInt(Math.max(0, Math.floor((nowMs - this.#maxAtMs) * 1e6)));
    const clock = this.#maxTs + idleNs;
    // the capture clock never goes back, even when a new newest packet arrives "late"
    if (this.#clock === undefined || clock > this.#clock) this.#clock = clock;
    const watermark = this.#clock - this.windowNs;
    while (h.length > 0 && h[0].p.tsNs <= watermark) this.#pop();
    while (h.length > this.maxPackets || (h.length > 0 && this.#bytes > this.maxBytes)) {
      this.#pop();
    }
  }

  #pop(): void {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.#down(0);
    }
    this.#bytes -= top.p.caplen;
    this.#lastReleased = top.p.tsNs;
    this.#emit(top.p);
  }

  #insert(n: Node): void {
    const h = this.#heap;
    h.push(n);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i], h[parent])) break;
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
      if (l < h.length && before(h[l], h[m])) m = l;
      if (r < h.length && before(h[r], h[m])) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }
}
