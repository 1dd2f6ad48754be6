/**
 * Walks wire packet records (`u64 ts_ns | u32 caplen | u32 origlen | bytes`) for the writers,
 * checking every header against the buffer first, and makes a batch all or nothing: when a
 * record is malformed the builder is reset, so no half-written batch reaches the sink.
 */
import type { ByteBuilder } from "./capture_output.ts";

/** One record: `off` is where its 16-byte header starts, the packet bytes follow it. */
export type RecordVisitor = (view: DataView, off: number, caplen: number, origlen: number) => void;

/** Calls `visit` for every record; throws RangeError (after resetting `b`) on a malformed one. */
export function encodeRecords(b: ByteBuilder, records: Uint8Array, visit: RecordVisitor): number {
  try {
    return walkRecords(records, visit);
  } catch (e) {
    b.reset();
    throw e;
  }
}

/** Calls `visit` for every well-formed record; throws RangeError on a malformed one. */
export function walkRecords(records: Uint8Array, visit: RecordVisitor): number {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let off = 0;
  let n = 0;
  while (off < records.length) {
    if (off + 16 > records.length) throw new RangeError(`truncated packet record at ${off}`);
    const caplen = view.getUint32(off + 8, true);
    const origlen = view.getUint32(off + 12, true);
    if (off + 16 + caplen > records.length) {
      throw new RangeError(`packet record at ${off} claims ${caplen} bytes past the end`);
    }
    visit(view, off, caplen, origlen);
    off += 16 + caplen;
    n++;
  }
  return n;
}
