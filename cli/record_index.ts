/**
 * The reorder window's per-batch index: where each wire record starts, its timestamp halves and
 * its caplen, from one walk over the batch.
 *
 * The record count is only known after the walk, and the bound from the byte length is up to 60
 * times the real count at 1500 B. So the walk fills a reused scratch index of that bound, and the
 * batch keeps exact copies: no large zeroed arrays per batch, and an index size that tells
 * the window's compaction what the batch really pins.
 *
 * @module
 */
import {
  maxRecordCount,
  recordTimestampHigh,
  recordTimestampLow,
  walkRecords,
} from "../protocol/records.ts";

/** Record i spans start[i] .. start[i + 1]; hi/lo are its timestamp's u32 halves. */
export interface RecordIndex {
  start: Uint32Array;
  hi: Uint32Array;
  lo: Uint32Array;
  caplen: Uint32Array;
}

/** Records the reused scratch holds (16 bytes each); a larger batch gets arrays of its own. */
const SCRATCH_RECORDS = 65536;

function newIndex(records: number): RecordIndex {
  return {
    start: new Uint32Array(records + 1),
    hi: new Uint32Array(records),
    lo: new Uint32Array(records),
    caplen: new Uint32Array(records),
  };
}

/** Indexes batches one after the other, reusing one scratch index. */
export class RecordIndexer {
  #scratch = newIndex(0);

  /**
   * The first `limit` records of `records`, exactly sized. Throws DecodeError (walkRecords) on a
   * malformed record.
   */
  index(records: Uint8Array, limit = Infinity): RecordIndex {
    // every record has at least a header, which bounds the count without a second walk
    const most = Math.max(0, Math.min(maxRecordCount(records.byteLength), limit));
    const { start, hi, lo, caplen } = most <= SCRATCH_RECORDS
      ? this.#scratchFor(most)
      : newIndex(most);
    let n = 0;
    let end = records.byteLength;
    walkRecords(records, (view, off, cap) => {
      if (n >= most) {
        if (n === most) end = off;
        n = most + 1;
        return;
      }
      start[n] = off;
      lo[n] = recordTimestampLow(view, off);
      hi[n] = recordTimestampHigh(view, off);
      caplen[n] = cap;
      n++;
    });
    n = Math.min(n, most);
    start[n] = end;
    return {
      start: start.slice(0, n + 1),
      hi: hi.slice(0, n),
      lo: lo.slice(0, n),
      caplen: caplen.slice(0, n),
    };
  }

  #scratchFor(most: number): RecordIndex {
    const have = this.#scratch.hi.length;
    if (have < most) this.#scratch = newIndex(Math.min(SCRATCH_RECORDS, Math.max(most, 2 * have)));
    return this.#scratch;
  }
}
