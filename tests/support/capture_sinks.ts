/**
 * Test-only helpers around the cli writers and the reorder window: an in-memory sink, a
 * one-packet write through the writers' batch path, and per-packet views of released runs.
 */
import type { ByteSink, CaptureWriter } from "../../cli/capture_writer.ts";
import type { ReorderWindow } from "../../cli/reorder_window.ts";
import { encodeRecords, forEachPacket } from "../../protocol/frame_codec.ts";

/** Collects everything in memory. */
export class MemorySink implements ByteSink {
  #chunks: Uint8Array[] = [];
  length = 0;
  write(chunk: Uint8Array): void {
    this.#chunks.push(chunk.slice());
    this.length += chunk.length;
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** One packet (the first `caplen` bytes of `data`) through `writeRecords`. */
export function writePacket(
  w: CaptureWriter,
  id: number,
  tsNs: bigint,
  caplen: number,
  origlen: number,
  data: Uint8Array,
): void {
  w.writeRecords(id, encodeRecords([{ tsNs, origlen, data: data.subarray(0, caplen) }]));
}

/** A packet as the reorder tests see it. */
export interface HeldPacket {
  source: number;
  tsNs: bigint;
  caplen: number;
  origlen: number;
  data: Uint8Array;
}

/** Splits a released run into packets whose data are views into the run (no copy). */
export function packetsOf(source: number, records: Uint8Array): HeldPacket[] {
  const out: HeldPacket[] = [];
  forEachPacket(records, (p, recs) =>
    out.push({
      source,
      tsNs: p.tsNs,
      caplen: p.caplen,
      origlen: p.origlen,
      data: recs.subarray(p.offset, p.offset + p.caplen),
    }));
  return out;
}

/** Pushes one packet as a batch of one record (origlen raised to caplen if below it). */
export function pushPacket(w: ReorderWindow, p: HeldPacket, nowMs: number): void {
  const origlen = Math.max(p.origlen, p.caplen);
  w.pushRecords(
    p.source,
    encodeRecords([{ tsNs: p.tsNs, origlen, data: p.data.subarray(0, p.caplen) }]),
    nowMs,
  );
}
