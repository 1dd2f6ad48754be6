// The rotating output: files switched between whole batches, each one complete (read back with
// tshark/capinfos), named like dumpcap's, 0600, the ring applied only after a file completed.
import { assert, assertEquals, assertThrows } from "./support/assert.ts";
import { RotatingOutput } from "../cli/rotating_output.ts";
import type { CaptureWriter } from "../cli/capture_writer.ts";
import { encodeRecords } from "../protocol/records.ts";
import { run } from "../lab/netns.ts";
import { interfaces, tsharkFields } from "./support/capture_readback.ts";
import { waitFor } from "./support/agent_harness.ts";
import { LinkTypeMismatchError } from "../cli/pcap_writer.ts";
import { OutputError } from "../cli/capture_output.ts";

const NAME_RE = /^cap_(\d{5})_(\d{14})\.(pcapng|pcap)$/;

/** Packet `mark` has length 60 + mark, so tshark's frame.len tells the marks apart. */
function batch(first: number, count: number): Uint8Array {
  return encodeRecords(
    Array.from({ length: count }, (_, i) => ({
      tsNs: 1_700_000_000_000_000_000n + BigInt(first + i) * 1000n,
      data: new Uint8Array(60 + first + i).fill(0xab),
    })),
  );
}

async function filesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** Marks (frame.len - 60) per interface name in one file, read by tshark. */
async function marksOf(path: string): Promise<Array<[string, number]>> {
  const rows = await tsharkFields(path, ["frame.interface_name", "frame.len"]);
  return rows.map(([iface, len]) => [iface, Number(len) - 60]);
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pcap-rotate-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("rotation by size, ring of 3: complete files, every mark once in the kept tail, late source in later files", async () => {
  await withDir(async (dir) => {
    const events: string[] = [];
    const out = await RotatingOutput.open(`${dir}/cap.pcapng`, {
      policy: { sizeBytes: 4000, keep: 3 },
      format: "pcapng",
      onFile: (e) => events.push(`${e.kind} ${e.path.slice(dir.length + 1)}`),
    });
    const w: CaptureWriter = out.writer({ section: { comment: "rotation test" } });
    const a = w.addSource({ name: "router/0 (uuid-a) eth0", linkType: 1, snaplen: 65535 });
    let mark = 0;
    for (let i = 0; i < 10; i++, mark += 10) w.writeRecords(a, batch(mark, 10));
    const b = w.addSource({ name: "router/1 (uuid-b) eth0", linkType: 1, snaplen: 65535 });
    const lateFrom = out.files.length; // files opened after this one know router/1 from the start
    for (let i = 0; i < 20; i++, mark += 5) {
      w.writeRecords(a, batch(mark, 5));
      w.writeRecords(b, batch(1000 + mark, 5));
    }
    for (const id of [a, b]) w.writeStats(id, { received: w.packetsWritten(id) });
    w.end();
    out.close();
    assertEquals(w.packetsWritten(a), 200);
    assertEquals(w.packetsWritten(b), 100);

    const names = await filesIn(dir);
    assertEquals(names.length, 3, `only the last 3 files remain: ${names}`);
    const completed = events.filter((e) => e.startsWith("completed"));
    const removed = events.filter((e) => e.startsWith("removed"));
    assert(completed.length > 5, `several rotations: ${events}`);
    assertEquals(removed.length, completed.length - 3);
    // the ring removed a file only after a newer one completed
    for (let i = 0; i < removed.length; i++) {
      const at = events.indexOf(removed[i]);
      const completedBefore = events.slice(0, at).filter((e) => e.startsWith("completed"));
      assert(completedBefore.length >= i + 4, `removal ${i} too early: ${events}`);
    }
    const seqs = names.map((n) => Number(NAME_RE.exec(n)?.[1]));
    assertEquals(seqs, [completed.length - 2, completed.length - 1, completed.length]);

    const seen = new Map<number, number>();
    for (const n of names) {
      const path = `${dir}/${n}`;
      assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
      const ifaces = await interfaces(path);
      const seq = Number(NAME_RE.exec(n)![1]);
      const expected = seq > lateFrom
        ? ["router/0 (uuid-a) eth0", "router/1 (uuid-b) eth0"]
        : ["router/0 (uuid-a) eth0"];
      assertEquals(ifaces.map((i) => i.name), expected, `interfaces of ${n}`);
      for (const i of ifaces) assertEquals(i.statEntries, 1, `ISB of ${i.name} in ${n}`);
      for (const [iface, m] of await marksOf(path)) {
        assertEquals(iface, m >= 1000 ? "router/1 (uuid-b) eth0" : "router/0 (uuid-a) eth0");
        seen.set(m, (seen.get(m) ?? 0) + 1);
      }
    }
    // the kept files hold a gap-free tail of router/0's marks, each once
    const r0 = [...seen.keys()].filter((m) => m < 1000).sort((x, y) => x - y);
    assert(r0.length > 0);
    assertEquals(r0, Array.from({ length: 200 - r0[0] }, (_, i) => r0[0] + i));
    for (const [m, n] of seen) assertEquals(n, 1, `mark ${m} seen ${n} times`);
  });
});

Deno.test("rotation without a ring: every mark exactly once across all files, pcap format with headers", async () => {
  await withDir(async (dir) => {
    const out = await RotatingOutput.open(`${dir}/cap`, {
      policy: { sizeBytes: 2000 },
      format: "pcap",
    });
    const w = out.writer({ snaplen: 65535 });
    const a = w.addSource({ name: "a", linkType: 1, snaplen: 65535 });
    const b = w.addSource({ name: "b", linkType: 1, snaplen: 65535 });
    for (let m = 0; m < 120; m += 4) {
      w.writeRecords(a, batch(m, 2));
      w.writeRecords(b, batch(m + 2, 2));
    }
    // classic pcap's one-link-type rule holds in every file
    assertThrows(
      () => w.addSource({ name: "c", linkType: 113, snaplen: 65535 }),
      LinkTypeMismatchError,
    );
    w.end();
    out.close();
    const names = await filesIn(dir);
    assert(names.length >= 4, `several files: ${names}`);
    const marks: number[] = [];
    for (const n of names) {
      assert(NAME_RE.test(n) && n.endsWith(".pcap"), n);
      const info = (await run("capinfos", ["-t", "-E", `${dir}/${n}`])).stdout;
      assert(/File type:\s+Wireshark\/tcpdump\/\.\.\. - nanosecond pcap/.test(info), info);
      assert(/File encapsulation:\s+Ethernet/.test(info), info);
      marks.push(...(await marksOf(`${dir}/${n}`)).map(([, m]) => m));
    }
    assertEquals(marks, Array.from({ length: 120 }, (_, i) => i));
  });
});

Deno.test("rotation by time: the timer switches files, a ring of 3 keeps the newest", async () => {
  await withDir(async (dir) => {
    let clock = 0;
    const out = await RotatingOutput.open(`${dir}/cap.pcapng`, {
      policy: { everyMs: 60_000, keep: 3 },
      format: "pcapng",
      monotonicMs: () => clock,
      checkIntervalMs: 10,
    });
    const w = out.writer();
    const a = w.addSource({ name: "a", linkType: 1, snaplen: 65535 });
    const seqOf = (path: string) => Number(NAME_RE.exec(path.slice(dir.length + 1))?.[1]);
    for (let round = 0; round < 6; round++) {
      w.writeRecords(a, batch(round * 3, 3));
      clock += 60_000;
      await waitFor(
        () => out.files.some((f) => seqOf(f) === round + 2),
        10_000,
        `file ${round + 2} opened by the timer`,
      );
    }
    out.close();
    const names = await filesIn(dir);
    // files 1..6 got 3 packets each; 7 was opened by the last tick and holds the final ISBs
    assertEquals(names.map((n) => Number(NAME_RE.exec(n)![1])), [5, 6, 7]);
    const marks = [];
    for (const n of names) marks.push(...(await marksOf(`${dir}/${n}`)).map(([, m]) => m));
    assertEquals(marks, [12, 13, 14, 15, 16, 17]);
  });
});

Deno.test("rotation refuses a planted file or link at a new name; -F replaces a regular file; discard", async () => {
  await withDir(async (dir) => {
    const at = new Date(2030, 4, 6, 7, 8, 9);
    await Deno.writeTextFile(`${dir}/target`, "keep me");
    await Deno.symlink(`${dir}/target`, `${dir}/cap_00001_20300506070809.pcapng`);
    const err = await RotatingOutput.open(`${dir}/cap.pcapng`, {
      policy: { sizeBytes: 1000 },
      format: "pcapng",
      now: () => at,
    }).then(() => undefined, (e) => e);
    assert(err instanceof OutputError, String(err));
    assert(err.message.includes("already exists"), err.message);
    assertEquals(await Deno.readTextFile(`${dir}/target`), "keep me");
    await Deno.remove(`${dir}/cap_00001_20300506070809.pcapng`);
    await Deno.writeTextFile(`${dir}/cap_00001_20300506070809.pcapng`, "old");
    const out = await RotatingOutput.open(`${dir}/cap.pcapng`, {
      policy: { sizeBytes: 1000 },
      format: "pcapng",
      force: true,
      now: () => at,
    });
    const w = out.writer();
    w.addSource({ name: "a", linkType: 1, snaplen: 65535 });
    assertEquals(out.files, [`${dir}/cap_00001_20300506070809.pcapng`]);
    out.discard();
    assertEquals(await filesIn(dir), ["target"]);
  });
});
