// The writers' indexed path (writeIndexed, fed by the reorder window's batch index) writes the
// same bytes as their walking path (writeRecords) for any run of a batch.
import { assertEquals } from "./support/assert.ts";
import { type CaptureWriter, indexedBytes, type IndexedRecords } from "../cli/capture_writer.ts";
import { PcapngWriter } from "../cli/pcapng_writer.ts";
import { PcapWriter } from "../cli/pcap_writer.ts";
import { RecordIndexer } from "../cli/record_index.ts";
import { encodeRecords } from "../protocol/frame_codec.ts";
import { MemorySink } from "./support/capture_sinks.ts";

const T0 = 1_700_000_000_123_456_789n;
// around the writers' small-copy bound (128 B) and word size, and a full frame
const SIZES = [0, 1, 3, 4, 60, 64, 127, 128, 129, 131, 1500];

/** A batch of records at an odd offset of its buffer (as inside a message), and its index. */
function batch(): IndexedRecords {
  const recs = encodeRecords(SIZES.map((n, i) => ({
    tsNs: T0 + BigInt(i) * 4_294_967_297n, // steps across the low half's wrap
    origlen: n + (i % 3) * 7,
    data: Uint8Array.from({ length: n }, (_, k) => (k * 31 + i) & 0xff),
  })));
  const backing = new Uint8Array(recs.length + 3);
  backing.set(recs, 3);
  const records = backing.subarray(3);
  return {
    records,
    view: new DataView(records.buffer, records.byteOffset, records.byteLength),
    ...new RecordIndexer().index(records),
  };
}

function writers(make: (sink: MemorySink) => CaptureWriter) {
  const sinks = [new MemorySink(), new MemorySink()];
  const [walked, indexed] = sinks.map((s) => make(s));
  for (const w of [walked, indexed]) w.addSource({ name: "s", linkType: 1, snaplen: 65535 });
  return { walked, indexed, sinks };
}

for (
  const [name, make] of [
    ["pcapng", (s: MemorySink) => new PcapngWriter(s, { os: "test", userAppl: "test" })],
    ["pcap", (s: MemorySink) => new PcapWriter(s)],
  ] as const
) {
  Deno.test(`${name}: writeIndexed writes what writeRecords writes, for every run`, () => {
    const b = batch();
    const { walked, indexed, sinks } = writers(make);
    const runs = [[2, 5], [0, 1], [0, SIZES.length], [3, 3], [10, 11], [4, 11]];
    for (const [from, to] of runs) {
      assertEquals(walked.writeRecords(0, indexedBytes(b, from, to)), to - from);
      assertEquals(indexed.writeIndexed(0, b, from, to), to - from);
    }
    const total = runs.reduce((n, [from, to]) => n + to - from, 0);
    assertEquals(indexed.packetsWritten(0), total);
    assertEquals(walked.packetsWritten(0), total);
    // the statistics block carries the first and last timestamps written
    const stats = { received: total };
    walked.writeStats(0, stats);
    indexed.writeStats(0, stats);
    assertEquals(sinks[1].bytes(), sinks[0].bytes());
  });
}
