// Classic pcap writer and the buffered output, read back with tcpdump; includes a live
// `-o - | tcpdump -r -` pipeline while the writer is still running.
import { assertEquals, assertMatch, assertRejects, assertThrows } from "./support/assert.ts";
import { LinkTypeMismatchError, PcapWriter } from "../cli/pcap_writer.ts";
import {
  BufferedOutput,
  createCaptureWriter,
  OutputError,
  prepareOutput,
} from "../cli/capture_output.ts";
import { MemorySink, writePacket } from "./support/capture_sinks.ts";

const enc = new TextEncoder();

function ethUdp(marker: string, src: number): Uint8Array {
  const payload = enc.encode(marker);
  const f = new Uint8Array(14 + 28 + payload.length);
  const v = new DataView(f.buffer);
  f.set([0x02, 0, 0, 0, 0, 0xc8, 0x02, 0, 0, 0, 0, src, 0x08, 0x00]);
  f[14] = 0x45;
  v.setUint16(16, 28 + payload.length);
  f[22] = 64;
  f[23] = 17;
  f.set([198, 18, 0, src], 26);
  f.set([198, 18, 0, 200], 30);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(24, ~sum & 0xffff);
  v.setUint16(34, 40000 + src);
  v.setUint16(36, 7777);
  v.setUint16(38, 8 + payload.length);
  f.set(payload, 42);
  return f;
}

function record(ts: bigint, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, ts, true);
  v.setUint32(8, data.length, true);
  v.setUint32(12, data.length, true);
  out.set(data, 16);
  return out;
}

async function tcpdump(args: string[], stdin?: Uint8Array): Promise<string> {
  const child = new Deno.Command("tcpdump", {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  if (!out.success) throw new Error(`tcpdump failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

const BASE = 1_700_000_000_000_000_000n;

Deno.test("pcap: nanosecond timestamps, several same-type sources, read by tcpdump", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_test" });
  try {
    const path = `${dir}/out.pcap`;
    await prepareOutput(path, false);
    const out = await BufferedOutput.open(path, { flushIntervalMs: 0 });
    const w = createCaptureWriter("pcap", out, { snaplen: 65535 });
    const a = w.addSource({ name: "router/0 (a) eth0", linkType: 1, snaplen: 65535 });
    const b = w.addSource({ name: "router/1 (b) eth0", linkType: 1, snaplen: 65535 });
    const f0 = ethUdp("truncated", 5);
    writePacket(w, a, BASE + 123_456_789n, 34, f0.length, f0); // snapped after the IP header
    const f1 = ethUdp("first", 1);
    writePacket(w, a, BASE + 1_000_000_001n, f1.length, f1.length, f1);
    assertEquals(w.writeRecords(b, record(BASE + 2_999_999_999n, ethUdp("second", 2))), 1);
    w.end();
    out.close();
    const text = await tcpdump(["-r", path, "-nn", "--nano", "-tt", "-A"]);
    const lines = text.split("\n").filter((l) => /^\d+\.\d+ /.test(l));
    assertEquals(lines.length, 3);
    assertMatch(lines[0], /^1700000000\.123456789 IP 198\.18\.0\.5 > 198\.18\.0\.200: +\[\|udp\]/);
    assertMatch(
      lines[1],
      /^1700000001\.000000001 IP 198\.18\.0\.1\.40001 > 198\.18\.0\.200\.7777: UDP, length 5/,
    );
    assertMatch(
      lines[2],
      /^1700000002\.999999999 IP 198\.18\.0\.2\.40002 > 198\.18\.0\.200\.7777: UDP, length 6/,
    );
    assertMatch(text, /first/);
    assertMatch(text, /second/);
    assertEquals([w.packetsWritten(a), w.packetsWritten(b)], [2, 1]);
    // header: ns magic, v2.4, snaplen, linktype
    const head = new DataView((await Deno.readFile(path)).buffer, 0, 24);
    assertEquals(
      [head.getUint32(0, true), head.getUint16(4, true), head.getUint16(6, true)],
      [0xa1b23c4d, 2, 4],
    );
    assertEquals([head.getUint32(16, true), head.getUint32(20, true)], [65535, 1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pcap: a second link type is refused naming both sources and suggesting pcapng", () => {
  const w = new PcapWriter(new MemorySink(), 65535);
  w.addSource({ name: "diego-cell/0 (a) eth0", linkType: 1, snaplen: 65535 });
  const e = assertThrows(
    () => w.addSource({ name: "diego-cell/1 (b) any", linkType: 113, snaplen: 65535 }),
    LinkTypeMismatchError,
    "--format pcapng",
  );
  assertMatch(e.message, /"diego-cell\/1 \(b\) any" has link type 113 \(LINUX_SLL\)/);
  assertMatch(e.message, /"diego-cell\/0 \(a\) eth0" has 1 \(ETHERNET\)/);
});

Deno.test("pcap: a capture without sources still leaves a readable file", async () => {
  const sink = new MemorySink();
  const w = new PcapWriter(sink, 1500);
  w.end();
  assertEquals(sink.length, 24);
  assertEquals(await tcpdump(["-r", "-", "-nn"], sink.bytes()), "");
});

Deno.test("output: prepareOutput refuses existing files, directories and missing parents", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_test" });
  try {
    const file = `${dir}/exists.pcapng`;
    await Deno.writeTextFile(file, "old");
    await assertRejects(() => prepareOutput(file, false), OutputError, "pass -F to overwrite");
    await prepareOutput(file, true);
    assertEquals(await Deno.readTextFile(file), "old"); // nothing touched before capture
    await assertRejects(() => prepareOutput(dir, true), OutputError, "is a directory");
    await assertRejects(
      () => prepareOutput(`${dir}/nope/x.pcap`, false),
      OutputError,
      "does not exist",
    );
    await assertRejects(
      () => prepareOutput(`${file}/x.pcap`, false),
      OutputError,
      "not a directory",
    );
    await prepareOutput(`${dir}/new.pcap`, false);
    await prepareOutput("-", false);
    // open: createNew refuses a file that appeared meanwhile; force truncates
    await assertRejects(() => BufferedOutput.open(file), OutputError, "already exists");
    const out = await BufferedOutput.open(file, { force: true, flushIntervalMs: 0 });
    out.write(enc.encode("new"));
    out.close();
    out.close(); // idempotent
    assertEquals(await Deno.readTextFile(file), "new");
    assertThrows(() => out.write(enc.encode("x")), OutputError, "already closed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("output: files are created 0600 and never written through a symbolic link", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_test" });
  try {
    const file = `${dir}/capture.pcapng`;
    const out = await BufferedOutput.open(file, { flushIntervalMs: 0 });
    out.write(enc.encode("x"));
    out.close();
    assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600);
    // -F replaces a 0644 file with a fresh 0600 one
    const old = `${dir}/old.pcapng`;
    await Deno.writeTextFile(old, "old", { mode: 0o644 });
    await Deno.chmod(old, 0o644);
    const again = await BufferedOutput.open(old, { force: true, flushIntervalMs: 0 });
    again.close();
    assertEquals((await Deno.stat(old)).mode! & 0o777, 0o600);
    // a planted link: refused up front, and -F neither follows nor replaces it
    const target = `${dir}/victim`;
    await Deno.writeTextFile(target, "precious");
    const link = `${dir}/link.pcapng`;
    await Deno.symlink(target, link);
    await assertRejects(() => prepareOutput(link, false), OutputError, "symbolic link");
    await assertRejects(() => prepareOutput(link, true), OutputError, "symbolic link");
    await assertRejects(
      () => BufferedOutput.open(link, { force: true }),
      OutputError,
      "not a regular file",
    );
    await assertRejects(() => BufferedOutput.open(link), OutputError, "already exists");
    assertEquals(await Deno.readTextFile(target), "precious");
    assertEquals((await Deno.lstat(link)).isSymlink, true);
    // a dangling link is not followed either (O_EXCL)
    const dangling = `${dir}/dangling.pcapng`;
    await Deno.symlink(`${dir}/nowhere`, dangling);
    await assertRejects(() => BufferedOutput.open(dangling), OutputError, "already exists");
    await assertRejects(() => Deno.lstat(`${dir}/nowhere`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("output: timer flush makes the file readable while the capture is still open", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_test" });
  const path = `${dir}/live.pcap`;
  const out = await BufferedOutput.open(path, { flushIntervalMs: 50 });
  try {
    const w = new PcapWriter(out, 65535);
    const id = w.addSource({ name: "a", linkType: 1, snaplen: 65535 });
    w.writeRecords(id, record(BASE, ethUdp("live", 3)));
    assertEquals((await Deno.stat(path)).size, 0); // still buffered
    const deadline = Date.now() + 5000;
    while ((await Deno.stat(path)).size === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assertMatch(await tcpdump(["-r", path, "-nn"]), /198\.18\.0\.3\.40003 > 198\.18\.0\.200\.7777/);
  } finally {
    out.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("output: -o - | tcpdump -r - shows packets before the writer ends", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_test" });
  const script = `${dir}/writer.ts`;
  const root = new URL("..", import.meta.url).href;
  // The child writes 3 packets to stdout, then waits until its stdin closes, then writes a 4th.
  await Deno.writeTextFile(
    script,
    `import { BufferedOutput, createCaptureWriter } from "${root}cli/capture_output.ts";
import { writePacket } from "${root}tests/support/capture_sinks.ts";
const out = await BufferedOutput.open("-", { flushIntervalMs: 100 });
const w = createCaptureWriter("pcap", out, { snaplen: 65535 });
const id = w.addSource({ name: "a", linkType: 1, snaplen: 65535 });
const data = new Uint8Array(${JSON.stringify(Array.from(ethUdp("live", 4)))});
for (let i = 0; i < 3; i++) writePacket(w, id, ${BASE}n + BigInt(i), data.length, data.length, data);
for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
writePacket(w, id, ${BASE}n + 3n, data.length, data.length, data);
out.close();
`,
  );
  const child = new Deno.Command("sh", {
    args: ["-c", `"${Deno.execPath()}" run -A --no-check "${script}" | tcpdump -r - -nn -l`],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  // If packets never show up live, end the writer's wait so the test fails instead of hanging.
  let stdinClosed = false;
  const closeStdin = async () => {
    if (!stdinClosed) {
      stdinClosed = true;
      await child.stdin.close();
    }
  };
  const watchdog = setTimeout(closeStdin, 20_000);
  try {
    while ((seen.match(/UDP/g) ?? []).length < 3) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    // three packets arrived while the writer was still waiting on stdin
    assertEquals((seen.match(/UDP/g) ?? []).length, 3);
    assertEquals(stdinClosed, false);
    await closeStdin();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    assertEquals((seen.match(/UDP/g) ?? []).length, 4);
    assertEquals((await child.status).success, true);
  } finally {
    clearTimeout(watchdog);
    await closeStdin().catch(() => {});
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
