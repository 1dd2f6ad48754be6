// Output writes: writeInChunks (what BufferedOutput flushes through) makes calls of at most a
// chunk and resumes after short writes; BufferedOutput gets every byte into the file in order.
import { assertEquals } from "./support/assert.ts";
import { MemorySink } from "./support/capture_sinks.ts";
import {
  BufferedOutput,
  type SyncWriter,
  WRITE_CHUNK_BYTES,
  writeInChunks,
} from "../cli/capture_output.ts";

/** Keeps what it is given, at most `max` bytes per call. */
class RecordingWriter implements SyncWriter {
  calls: number[] = [];
  readonly kept = new MemorySink();
  constructor(readonly max = Infinity) {}
  writeSync(p: Uint8Array): number {
    const n = Math.min(p.length, this.max);
    this.calls.push(p.length);
    this.kept.write(p.subarray(0, n));
    return n;
  }
}

const pattern = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + (i >> 9)) & 0xff);

Deno.test("writeInChunks: a flush larger than a chunk goes out in calls of at most a chunk", () => {
  const data = pattern(4 * WRITE_CHUNK_BYTES + 5);
  const w = new RecordingWriter();
  writeInChunks(w, data);
  assertEquals(w.calls, [...Array(4).fill(WRITE_CHUNK_BYTES), 5]);
  assertEquals(w.kept.bytes(), data);
});

Deno.test("writeInChunks: short writes are resumed where they stopped", () => {
  const data = pattern(10_001);
  const w = new RecordingWriter(999);
  writeInChunks(w, data, 4096);
  assertEquals(w.calls.every((n) => n <= 4096), true);
  assertEquals(w.kept.bytes(), data);
  const empty = new RecordingWriter();
  writeInChunks(empty, new Uint8Array(0));
  assertEquals(empty.calls, []);
});

Deno.test("BufferedOutput: buffered, oversized and flushed writes reach the file whole and in order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-output-writes-" });
  try {
    const path = `${dir}/out.bin`;
    const out = await BufferedOutput.open(path, { flushIntervalMs: 0 });
    const data = pattern(3 * 1024 * 1024 + 333);
    // small writes fill the buffer, one write larger than the buffer goes straight out
    const cuts = [0, 100, 70_000, 1_100_000, 1_100_001, 2_900_000, data.length];
    for (let i = 1; i < cuts.length; i++) out.write(data.subarray(cuts[i - 1], cuts[i]));
    out.close();
    assertEquals(out.bytesWritten, data.length);
    assertEquals(await Deno.readFile(path), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
