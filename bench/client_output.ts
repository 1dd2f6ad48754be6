/**
 * Offline benchmark of the client's output path: recorded PACKETS frames go through what
 * `pcap-bosh capture` does with them (decode, reorder window, pcapng writer, buffered output to
 * a file in a temporary directory, replaced at every round), and the process CPU per packet is
 * printed. No network, no lab. (The output refuses a device such as /dev/null, as `-o` does.)
 *
 *   deno run -A bench/client_output.ts
 *
 * Sources are interleaved packet by packet, the worst case for the window's runs; with one source
 * every batch is one run.
 *
 * @module
 */
import process from "node:process";
import { encodePacketsFrame, encodeRecords } from "../protocol/frame_codec.ts";
import { decodeApiMessage } from "../cli/api_session.ts";
import { ReorderWindow } from "../cli/reorder_window.ts";
import { BufferedOutput, createCaptureWriter } from "../cli/capture_output.ts";

const BASE = 1_700_000_000_000_000_000n;

function frames(size: number, sources: number, count: number, perFrame: number): Uint8Array[] {
  const data = new Uint8Array(size);
  const next = new Array(sources).fill(0);
  return Array.from({ length: count }, (_, f) => {
    const s = f % sources;
    const pk = Array.from({ length: perFrame }, () => ({
      tsNs: BASE + BigInt(next[s]++ * 1000 + s),
      data,
    }));
    return encodePacketsFrame(s, perFrame, encodeRecords(pk));
  });
}

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

const dir = await Deno.makeTempDir({ prefix: "pcap-bench-client-output-" });

async function once(fs: Uint8Array[], sources: number): Promise<number> {
  const out = await BufferedOutput.open(`${dir}/out.pcapng`, { force: true, flushIntervalMs: 0 });
  const w = createCaptureWriter("pcapng", out);
  for (let s = 0; s < sources; s++) w.addSource({ name: `s${s}`, linkType: 1, snaplen: 65535 });
  const win = new ReorderWindow((s, batch, from, to) => w.writeIndexed(s, batch, from, to));
  const t0 = cpuMs();
  let now = 0;
  for (const f of fs) {
    const e = decodeApiMessage(f);
    if (e.kind === "packets") win.pushRecords(e.source, e.records, ++now);
  }
  win.flush();
  out.close();
  return cpuMs() - t0;
}

try {
  for (const [size, sources] of [[64, 1], [64, 4], [1500, 1], [1500, 4]]) {
    const perFrame = size === 64 ? 500 : 50;
    const fs = frames(size, sources, size === 64 ? 2000 : 4000, perFrame);
    await once(fs, sources); // warm-up
    const ms = [];
    for (let i = 0; i < 5; i++) ms.push(await once(fs, sources));
    ms.sort((a, b) => a - b);
    const us = (ms[2] * 1000) / (perFrame * fs.length);
    console.log(
      `${size} B, ${sources} source(s): ${us.toFixed(3)} µs CPU per packet (median of 5)`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
