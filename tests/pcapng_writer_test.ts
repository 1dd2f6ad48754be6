// pcapng writer: files are read back with tshark/capinfos (an independent reader), including
// Wireshark's own pcapng block dissector ("MIME Files Format") for the statistics blocks.
import { assertEquals, assertMatch, assertThrows } from "./support/assert.ts";
import { describeCapture, PcapngWriter } from "../cli/pcapng_writer.ts";
import { BufferedOutput } from "../cli/capture_output.ts";
import { MemorySink, writePacket } from "./support/capture_sinks.ts";
import { VERSION } from "../version.ts";
import { DecodeError } from "../protocol/frame_codec.ts";

const enc = new TextEncoder();

function ipv4Udp(payload: Uint8Array, srcLast: number, dport: number): Uint8Array {
  const ip = new Uint8Array(20 + 8 + payload.length);
  const v = new DataView(ip.buffer);
  ip[0] = 0x45;
  v.setUint16(2, ip.length);
  ip[8] = 64;
  ip[9] = 17; // UDP
  ip.set([198, 18, 0, srcLast], 12);
  ip.set([198, 18, 0, 200], 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(10, ~sum & 0xffff);
  v.setUint16(20, 40000 + srcLast);
  v.setUint16(22, dport);
  v.setUint16(24, 8 + payload.length);
  ip.set(payload, 28);
  return ip;
}

function ethernet(ip: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + ip.length);
  f.set([0x02, 0, 0, 0, 0, 0xc8, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
  f.set(ip, 14);
  return f;
}

/** Linux cooked capture v1 (LINKTYPE_LINUX_SLL = 113) header + IPv4. */
function sll(ip: Uint8Array): Uint8Array {
  const f = new Uint8Array(16 + ip.length);
  const v = new DataView(f.buffer);
  v.setUint16(0, 0); // to us
  v.setUint16(2, 1); // ARPHRD_ETHER
  v.setUint16(4, 6);
  f.set([0x02, 0, 0, 0, 0, 0x02], 6);
  v.setUint16(14, 0x0800);
  f.set(ip, 16);
  return f;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Wire packet records `u64 ts_ns | u32 caplen | u32 origlen | bytes`, as the agents send. */
function records(pkts: { ts: bigint; data: Uint8Array; origlen?: number }[]): Uint8Array {
  const total = pkts.reduce((n, p) => n + 16 + p.data.length, 0);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  let off = 0;
  for (const p of pkts) {
    v.setBigUint64(off, p.ts, true);
    v.setUint32(off + 8, p.data.length, true);
    v.setUint32(off + 12, p.origlen ?? p.data.length, true);
    out.set(p.data, off + 16);
    off += 16 + p.data.length;
  }
  return out;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

const BASE = 1_700_000_000_000_000_000n;

Deno.test("pcapng: several sources, link types, IDB mid-stream, comments and stats read by tshark", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcapng_test" });
  try {
    const path = `${dir}/multi.pcapng`;
    // A small buffer forces several flushes in the middle of the capture.
    const out = await BufferedOutput.open(path, { bufferBytes: 256, flushIntervalMs: 0 });
    const comment = describeCapture({
      tool: `pcap-bosh ${VERSION}`,
      target: "deployment cf, instance groups diego-cell, router",
      user: "admin",
      start: new Date("2024-05-01T10:00:00.000Z"),
      interface: "eth0",
      snaplen: 65535,
      filter: "udp and not port 53",
    });
    const w = new PcapngWriter(out, { comment, userAppl: `pcap-bosh ${VERSION}` });
    const cell = w.addSource({
      name: "diego-cell/0 (11111111-aaaa) eth0",
      description: "deployment cf, VM 198.18.0.1",
      linkType: 1,
      snaplen: 65535,
      filter: "udp and not port 53",
    });
    // cell: 3 packets via writePacket with odd lengths (padding) and ns timestamps
    const expected: { iface: string; ts: string; marker: string; len: number; caplen: number }[] =
      [];
    const cellName = "diego-cell/0 (11111111-aaaa) eth0";
    for (let i = 0; i < 3; i++) {
      const marker = `cell-${i}` + "x".repeat(i); // lengths differ mod 4
      const f = ethernet(ipv4Udp(enc.encode(marker), 1, 50000));
      const ts = BASE + BigInt(i) * 1_000_000_123n + 7n;
      writePacket(w, cell, ts, f.length, f.length, f);
      expected.push({ iface: cellName, ts: epoch(ts), marker, len: f.length, caplen: f.length });
    }
    // a second source appears mid-stream, with another link type, fed through wire records
    const router = w.addSource({
      name: "router/1 (22222222-bbbb) any",
      description: "deployment cf, VM 198.18.0.2",
      linkType: 113,
      snaplen: 65535,
    });
    const rpk = [0, 1, 2, 3].map((i) => {
      const marker = `router-${i}`;
      return {
        ts: BASE + 5_000_000_000n + BigInt(i) * 999n,
        data: sll(ipv4Udp(enc.encode(marker), 2, 50001)),
        marker,
      };
    });
    assertEquals(w.writeRecords(router, records(rpk)), 4);
    for (const p of rpk) {
      expected.push({
        iface: "router/1 (22222222-bbbb) any",
        ts: epoch(p.ts),
        marker: p.marker,
        len: p.data.length,
        caplen: p.data.length,
      });
    }
    // a third source: raw IP, with a truncated packet (caplen < origlen)
    const raw = w.addSource({ name: "nats/0 (33333333-cccc) eth1", linkType: 101, snaplen: 40 });
    const full = ipv4Udp(enc.encode("raw-0-" + "y".repeat(30)), 3, 50002);
    w.writeRecords(
      raw,
      records([{ ts: BASE + 9_000_000_000n, data: full.subarray(0, 40), origlen: full.length }]),
    );

    w.writeStats(cell, {
      startNs: BASE,
      endNs: BASE + 10_000_000_000n,
      received: 10,
      kernelDropped: 2,
      ifDropped: 1,
      discards: { engine: 1, agent: 0, api: 3, client: 1 },
    });
    w.writeStats(router, { received: 4 });
    w.writeStats(raw, {
      received: 1,
      discards: { api: 7 },
      comment: "source ended: CAPTURE_STOPPED",
    });
    w.end();
    out.close();

    // packets: interface, ns timestamp, lengths and payload, in file order
    const lines = (await run("tshark", [
      "-r",
      path,
      "-T",
      "fields",
      "-E",
      "separator=|",
      "-e",
      "frame.interface_name",
      "-e",
      "frame.time_epoch",
      "-e",
      "frame.len",
      "-e",
      "frame.cap_len",
      "-e",
      "udp.payload",
    ])).trim().split("\n");
    assertEquals(lines.length, 8);
    for (let i = 0; i < expected.length; i++) {
      const [iface, ts, len, caplen, payload] = lines[i].split("|");
      const e = expected[i];
      assertEquals({ iface, ts, len: +len, caplen: +caplen, payload }, {
        iface: e.iface,
        ts: e.ts,
        len: e.len,
        caplen: e.caplen,
        payload: hex(enc.encode(e.marker)),
      });
    }
    const [rawIface, , rawLen, rawCap] = lines[7].split("|");
    assertEquals([rawIface, +rawLen, +rawCap], ["nats/0 (33333333-cccc) eth1", full.length, 40]);

    // section and interface metadata
    const info = await run("capinfos", ["-k", "-F", "-I", "-c", "-t", path]);
    assertMatch(info, /File type:\s+Wireshark\/\.\.\. - pcapng/);
    assertMatch(info, /Number of packets:\s+8/);
    assertMatch(info, new RegExp(`Capture application: pcap-bosh ${VERSION}`));
    assertMatch(info, /Capture oper-sys:\s+linux/);
    assertMatch(
      info,
      /Capture comment:\s+Captured with pcap-bosh .* by admin starting 2024-05-01T10:00:00.000Z; target: deployment cf, instance groups diego-cell, router; interface: eth0; snaplen: 65535; filter: udp and not port 53/,
    );
    assertMatch(info, /Number of interfaces in file: 3/);
    const ifaces = info.split(/Interface #\d info:/).slice(1);
    assertMatch(ifaces[0], /Name = diego-cell\/0 \(11111111-aaaa\) eth0/);
    assertMatch(ifaces[0], /Description = deployment cf, VM 198.18.0.1/);
    assertMatch(ifaces[0], /Encapsulation = Ethernet \(1 - ether\)/);
    assertMatch(ifaces[0], /Time precision = nanoseconds \(9\)/);
    assertMatch(ifaces[0], /Filter string = udp and not port 53/);
    assertMatch(ifaces[0], /Number of packets = 3/);
    assertMatch(ifaces[1], /Encapsulation = Linux cooked-mode capture v1 \(25 - linux-sll\)/);
    assertMatch(ifaces[1], /Number of packets = 4/);
    assertMatch(ifaces[2], /Encapsulation = Raw IP \(7 - rawip\)/);
    assertMatch(ifaces[2], /Capture length = 40/);
    for (const i of ifaces) assertMatch(i, /Number of stat entries = 1/);

    // statistics blocks, decoded by Wireshark's pcapng block dissector
    const f = (name: string) => `pcapng.options.option.data.interface.${name}`;
    const blocks = (await run("tshark", [
      "-X",
      "read_format:MIME Files Format",
      "-r",
      path,
      "-T",
      "fields",
      "-E",
      "separator=|",
      "-E",
      "aggregator=;",
      "-e",
      "pcapng.block.type",
      "-e",
      f("received"),
      "-e",
      f("dropped"),
      "-e",
      f("dropped_by_os"),
      "-e",
      f("delivered_to_user"),
      "-e",
      "pcapng.options.option.data.comment",
    ])).trim().split("|");
    const types = blocks[0].split(";").map((t) => parseInt(t, 16));
    assertEquals(types, [0x0a0d0d0a, 1, 6, 6, 6, 1, 6, 6, 6, 6, 1, 6, 5, 5, 5]);
    assertEquals(blocks[1].split(";"), ["10", "4", "1"]); // isb_ifrecv
    assertEquals(blocks[2].split(";"), ["1", "0", "0"]); // isb_ifdrop
    assertEquals(blocks[3].split(";"), ["7", "0", "7"]); // isb_osdrop: kernel 2 + 1+0+3+1
    assertEquals(blocks[4].split(";"), ["3", "4", "1"]); // isb_usrdeliv: written
    assertMatch(
      blocks[5],
      /written 3 of 10 received; dropped by kernel 2, interface 1; discarded by engine 1, agent 0, api 3, client 1/,
    );
    assertMatch(
      blocks[5],
      /written 1 of 1 received.*api 7, client 0; source ended: CAPTURE_STOPPED/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function epoch(ts: bigint): string {
  return `${ts / 1_000_000_000n}.${(ts % 1_000_000_000n).toString().padStart(9, "0")}`;
}

Deno.test("pcapng: a file with only headers (no packets) is valid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcapng_test" });
  try {
    const sink = new MemorySink();
    const w = new PcapngWriter(sink, { comment: "nothing captured" });
    const id = w.addSource({ name: "a/0 (x) eth0", linkType: 1, snaplen: 100 });
    w.writeStats(id, { received: 0 });
    await Deno.writeFile(`${dir}/e.pcapng`, sink.bytes());
    const info = await run("capinfos", ["-c", "-k", `${dir}/e.pcapng`]);
    assertMatch(info, /Number of packets:\s+0/);
    assertMatch(info, /nothing captured/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pcapng: block layout is 32-bit aligned and lengths match (hand-checked EPB)", () => {
  const sink = new MemorySink();
  const w = new PcapngWriter(sink, {});
  const shbLen = sink.length;
  const id = w.addSource({ name: "n", linkType: 1, snaplen: 65535 });
  const idbLen = sink.length - shbLen;
  writePacket(w, id, 0x0102030405060708n, 5, 9, new Uint8Array([1, 2, 3, 4, 5]));
  const all = sink.bytes();
  assertEquals(shbLen % 4, 0);
  assertEquals(idbLen % 4, 0);
  const epb = new DataView(all.buffer, shbLen + idbLen);
  assertEquals(epb.getUint32(0, true), 6);
  assertEquals(epb.getUint32(4, true), 40); // 28 header + 8 padded data + 4 trailer
  assertEquals(epb.getUint32(8, true), 0);
  assertEquals(epb.getUint32(12, true), 0x01020304); // ts high
  assertEquals(epb.getUint32(16, true), 0x05060708); // ts low
  assertEquals([epb.getUint32(20, true), epb.getUint32(24, true)], [5, 9]);
  assertEquals(Array.from(all.subarray(shbLen + idbLen + 28, shbLen + idbLen + 36)), [
    1,
    2,
    3,
    4,
    5,
    0,
    0,
    0,
  ]);
  assertEquals(epb.getUint32(36, true), 40);
  assertEquals(all.length, shbLen + idbLen + 40);
});

Deno.test("pcapng: bad input is refused with a clear error", () => {
  const sink = new MemorySink();
  const w = new PcapngWriter(sink, {});
  assertThrows(
    () => writePacket(w, 0, 1n, 1, 1, new Uint8Array(1)),
    RangeError,
    "unknown interface id 0",
  );
  const id = w.addSource({ name: "n", linkType: 1, snaplen: 65535 });
  const rec = records([{ ts: 1n, data: new Uint8Array(10) }, { ts: 2n, data: new Uint8Array(3) }]);
  const before = sink.length;
  assertThrows(
    () => w.writeRecords(id, rec.subarray(0, rec.length - 1)),
    DecodeError,
    "past the end",
  );
  assertThrows(
    () => w.writeRecords(id, rec.subarray(0, 10)),
    DecodeError,
    "truncated packet record",
  );
  assertThrows(
    () => w.addSource({ name: "x", linkType: 70000, snaplen: 1 }),
    RangeError,
    "link type",
  );
  // a bad batch is all or nothing: its good first packet is not written either
  assertEquals(sink.length, before);
  assertEquals(w.packetsWritten(id), 0);
  assertEquals(w.writeRecords(id, rec), 2);
  assertEquals(sink.length, before + 2 * 32 + 12 + 4);
});

Deno.test("pcapng: padding is zero even where the writer's reused buffer held packet bytes", () => {
  const sink = new MemorySink();
  const w = new PcapngWriter(sink, {});
  const id = w.addSource({ name: "n", linkType: 1, snaplen: 65535 });
  // first a packet of 0xff bytes fills the builder's memory, then odd lengths land on it
  writePacket(w, id, 1n, 64, 64, new Uint8Array(64).fill(0xff));
  for (const len of [1, 2, 3, 61, 201]) {
    const at = sink.length;
    writePacket(w, id, 2n, len, len, new Uint8Array(len).fill(0xee));
    const all = sink.bytes();
    const epb = new DataView(all.buffer, at);
    const total = epb.getUint32(4, true);
    assertEquals(total, 32 + ((len + 3) & ~3));
    assertEquals(all.length, at + total);
    assertEquals(Array.from(all.subarray(at + 28, at + 28 + len)).every((v) => v === 0xee), true);
    assertEquals(
      Array.from(all.subarray(at + 28 + len, at + total - 4)).every((v) => v === 0),
      true,
    );
    assertEquals(epb.getUint32(total - 4, true), total);
  }
});
