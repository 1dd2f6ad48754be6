import { encodeWsFrame, frameInPlace, OP_BINARY, withHeaderRoom } from "../lib/ws_framing.ts";
import {
  DecodeError,
  decodeJson,
  decodeSingleFrame,
  enclosingFrame,
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  forEachPacket,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameAssembler,
  FrameDecoder,
  FrameKind,
  MAX_PAYLOAD_BYTES,
  packetsFrameInPlace,
  setFrameSource,
  validatePackets,
} from "../protocol/frame_codec.ts";
import { PACKETS_COUNT_BYTES } from "../protocol/records.ts";
import { checkPeerVersion, MIN_PEER_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import {
  AgentStartRequest,
  BoshStartRequest,
  describeZodError,
  interfaceNameProblem,
} from "../protocol/messages.ts";
import { assert, assertEquals, assertThrows } from "./support/assert.ts";

function packets(n: number, seed = 1) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const len = (i * 37 + seed) % 200;
    const data = new Uint8Array(len).map((_, j) => (i + j + seed) & 0xff);
    out.push({ tsNs: 1_700_000_000_000_000_000n + BigInt(i * 1000), origlen: len + i, data });
  }
  return out;
}

Deno.test("packet frames round-trip through the stream decoder in arbitrary chunking", () => {
  const batch = packets(50);
  const frames = [
    encodeJsonFrame(FrameKind.HELLO, 0, { protocol_version: 1 }),
    encodePacketsFrame(7, batch.length, encodeRecords(batch)),
    encodeFrame(FrameKind.PING, 3, new Uint8Array(0)),
    encodeFrame(FrameKind.END, 0, new Uint8Array(0)),
  ];
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.byteLength, 0));
  let off = 0;
  for (const f of frames) {
    stream.set(f, off);
    off += f.byteLength;
  }
  for (const chunkSize of [1, 3, 8, 13, 4096, stream.byteLength]) {
    const dec = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < stream.byteLength; i += chunkSize) {
      got.push(...dec.push(stream.subarray(i, i + chunkSize)));
    }
    dec.finish();
    assertEquals(got.map((f) => f.kind), [
      FrameKind.HELLO,
      FrameKind.PACKETS,
      FrameKind.PING,
      FrameKind.END,
    ]);
    assertEquals(decodeJson(got[0]), { protocol_version: 1 });
    assertEquals(got[1].source, 7);
    assertEquals(got[2].source, 3);
    const { count, records } = validatePackets(got[1].payload);
    assertEquals(count, 50);
    const seen: { tsNs: bigint; origlen: number; data: number[] }[] = [];
    forEachPacket(records, (p, buf) => {
      seen.push({
        tsNs: p.tsNs,
        origlen: p.origlen,
        data: [...buf.subarray(p.offset, p.offset + p.caplen)],
      });
    });
    assertEquals(seen, batch.map((p) => ({ tsNs: p.tsNs, origlen: p.origlen, data: [...p.data] })));
  }
});

Deno.test("single-frame decoding checks the announced length", () => {
  const f = encodeJsonFrame(FrameKind.STATUS, 2, { type: "CAPTURE_STOPPED" });
  assertEquals(decodeSingleFrame(f).source, 2);
  assertThrows(() => decodeSingleFrame(f.subarray(0, f.byteLength - 1)), DecodeError, "announces");
  assertThrows(() => decodeSingleFrame(new Uint8Array(3)), DecodeError, "shorter than a frame");
  const extra = new Uint8Array(f.byteLength + 1);
  extra.set(f);
  assertThrows(() => decodeSingleFrame(extra), DecodeError, "announces");
});

Deno.test("decoder refuses unknown kinds, flags, oversized and truncated frames", () => {
  const bad = encodeFrame(FrameKind.PING, 0, new Uint8Array(0));
  bad[0] = 99;
  assertThrows(() => new FrameDecoder().push(bad), DecodeError, "unknown frame kind 99");
  const flagged = encodeFrame(FrameKind.PING, 0, new Uint8Array(0));
  flagged[1] = 1;
  assertThrows(() => new FrameDecoder().push(flagged), DecodeError, "flags");
  const huge = new Uint8Array(8);
  huge[0] = FrameKind.PACKETS;
  new DataView(huge.buffer).setUint32(4, MAX_PAYLOAD_BYTES + 1, true);
  assertThrows(() => new FrameDecoder().push(huge), DecodeError, "exceeds");
  const dec = new FrameDecoder();
  dec.push(encodeJsonFrame(FrameKind.HELLO, 0, { a: 1 }).subarray(0, 10));
  assertThrows(() => dec.finish(), DecodeError, "ended inside a frame");
  assertThrows(
    () =>
      decodeJson({ kind: FrameKind.HELLO, flags: 0, source: 0, payload: new Uint8Array([0xff]) }),
    DecodeError,
    "JSON",
  );
});

Deno.test("packet payload validation catches every kind of inconsistency", () => {
  const recs = encodeRecords(packets(3));
  const payload = encodePacketsFrame(0, 3, recs).subarray(8);
  validatePackets(payload);
  assertThrows(() => validatePackets(payload.subarray(0, 2)), DecodeError, "count field");
  assertThrows(
    () => validatePackets(payload.subarray(0, 10)),
    DecodeError,
    "packet 1 (byte 0): truncated packet record header",
  );
  assertThrows(
    () => validatePackets(payload.subarray(0, payload.byteLength - 1)),
    DecodeError,
    "packet 3",
  );
  const wrongCount = payload.slice();
  new DataView(wrongCount.buffer).setUint32(0, 2, true);
  assertThrows(() => validatePackets(wrongCount), DecodeError, "announces 2 packets but holds 3");
  const lying = payload.slice();
  new DataView(lying.buffer).setUint32(4 + 12, 0, true); // origlen 0 < caplen
  assertThrows(() => validatePackets(lying), DecodeError, "below its caplen");
});

Deno.test("fuzz: random and mutated input only ever raises DecodeError and never hangs", () => {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const valid = encodePacketsFrame(1, 20, encodeRecords(packets(20)));
  let decoded = 0;
  for (let iter = 0; iter < 3000; iter++) {
    let input: Uint8Array;
    if (iter % 3 === 0) {
      input = new Uint8Array(Math.floor(rnd() * 300)).map(() => Math.floor(rnd() * 256));
    } else {
      input = valid.slice(0, Math.max(1, Math.floor(rnd() * valid.byteLength * 1.1)));
      for (let m = 0; m < 1 + Math.floor(rnd() * 4); m++) {
        input[Math.floor(rnd() * input.byteLength)] = Math.floor(rnd() * 256);
      }
    }
    for (const attempt of [() => decodeSingleFrame(input), () => new FrameDecoder().push(input)]) {
      try {
        for (const f of [attempt()].flat()) {
          if (f.kind === FrameKind.PACKETS) validatePackets(f.payload);
          else decodeJson(f);
          decoded++;
        }
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
      }
    }
  }
  assert(decoded > 0, "some mutated frames should still decode");
});

Deno.test("version check refuses too-old and malformed peers with a sentence", () => {
  assertEquals(checkPeerVersion(PROTOCOL_VERSION, "api", "agent"), null);
  const old = checkPeerVersion(MIN_PEER_VERSION - 1, "api", "agent");
  assert(old !== null && old.includes("upgrade api") && old.includes(`v${MIN_PEER_VERSION}`));
  assert(checkPeerVersion("1", "api", "agent")!.includes("valid protocol version"));
});

Deno.test("start requests validate interface names, snaplen, filter and unknown fields", () => {
  const ok = AgentStartRequest.parse({ protocol_version: 1, interface: "eth0", snaplen: 96 });
  assertEquals(ok.filter, "");
  const hostile = ["nul\0", "esc\x1b[2J", "del\x7f", "é", "a;b", "$(id)", "`id`", "a*"];
  const pseudo = ["dbus-system", "dbus-session", "nflog", "nfqueue", "usbmon0", "bluetooth0"];
  for (
    const name of ["", "a/b", "x".repeat(16), "..", ".", "e th0", "eth0:1", "tab\t"]
      .concat(hostile, pseudo)
  ) {
    assert(interfaceNameProblem(name) !== null, `should refuse ${JSON.stringify(name)}`);
  }
  assertEquals(interfaceNameProblem("x".repeat(15)), null);
  for (const name of ["eth0", "lo", "any", "veth-1.2_x", "ens1f0", "bond0.100", "silk-vtep"]) {
    assertEquals(interfaceNameProblem(name), null, name);
  }
  assert(interfaceNameProblem("nflog")!.includes("pseudo-device"));
  assert(interfaceNameProblem("esc\x1b[2J")!.includes("\\u001b"), "shown escaped, never raw");
  const cases: [unknown, string][] = [
    [{ protocol_version: 1, interface: "eth0", snaplen: 0 }, "snaplen"],
    [{ protocol_version: 1, interface: "eth0", snaplen: 300000 }, "snaplen"],
    [{ protocol_version: 1, interface: "a/b", snaplen: 10 }, "interface"],
    [{ protocol_version: 1, interface: "eth0", snaplen: 10, bogus: 1 }, "unknown field bogus"],
    [{ protocol_version: 1, interface: "eth0", snaplen: 10, filter: "x".repeat(5000) }, "filter"],
    [{ protocol_version: 1, interface: "eth0", snaplen: 10, filter: "port 1\u0000" }, "control"],
  ];
  for (const [input, want] of cases) {
    const r = AgentStartRequest.safeParse(input);
    assert(!r.success, `should refuse ${JSON.stringify(input)}`);
    const text = describeZodError(r.error);
    assert(text.includes(want), `"${text}" should mention ${want}`);
  }
  const bosh = BoshStartRequest.parse({
    type: "start",
    protocol_version: 1,
    bosh: { deployment: "cf", groups: ["router"] },
  });
  assertEquals([bosh.interface, bosh.snaplen, bosh.bosh.instances], ["eth0", 65535, []]);
});

Deno.test("messages: deployment names follow the BOSH charset, never '.' or '..'", async () => {
  const { BoshStartRequest } = await import("../protocol/messages.ts");
  const start = (deployment: string) =>
    BoshStartRequest.safeParse({ type: "start", protocol_version: 1, bosh: { deployment } });
  for (const ok of ["cf", "cf-2.v1_x", "a".repeat(255)]) {
    if (!start(ok).success) throw new Error(`${ok} must be accepted`);
  }
  for (const bad of [".", "..", "", "a/b", "a b", "cf%2f", "a".repeat(256), "ü"]) {
    if (start(bad).success) throw new Error(`${JSON.stringify(bad)} must be refused`);
  }
});

Deno.test("messages: durations are bounded to 7 days (timers fire at once past 2^31-1 ms)", async () => {
  const { AgentStartRequest, BoshStartRequest, MAX_CAPTURE_DURATION_MS } = await import(
    "../protocol/messages.ts"
  );
  const bosh = (duration_ms: number) =>
    BoshStartRequest.safeParse({
      type: "start",
      protocol_version: 1,
      bosh: { deployment: "cf" },
      limits: { duration_ms },
    }).success;
  const agent = (duration_ms: number) =>
    AgentStartRequest.safeParse({
      protocol_version: 1,
      interface: "eth0",
      snaplen: 100,
      duration_ms,
    }).success;
  if (!bosh(MAX_CAPTURE_DURATION_MS)) throw new Error("7 days must be accepted");
  if (bosh(MAX_CAPTURE_DURATION_MS + 1) || bosh(2 ** 31)) throw new Error("> 7 days accepted");
  // The api adds a safety margin of a few seconds for the agent.
  if (!agent(MAX_CAPTURE_DURATION_MS + 5000)) throw new Error("api's margin must be accepted");
  if (agent(2 ** 31)) throw new Error("2^31 ms must be refused by the agent");
});

Deno.test("assembler: owned frames forward as is under a new source; discarded ones reuse scratch", () => {
  const batch = encodePacketsFrame(4, 3, encodeRecords(packets(3)));
  const status = encodeJsonFrame(FrameKind.STATUS, 4, { type: "CONGESTED" });
  const stream = new Uint8Array([...batch, ...status, ...batch, ...batch]);
  let discard = false;
  const asm = new FrameAssembler((kind) => discard && kind === FrameKind.PACKETS);
  const owned: Uint8Array[] = [];
  let scratch: Uint8Array | null = null;
  for (let i = 0; i < stream.byteLength; i += 5) {
    for (const f of asm.frames(stream.subarray(i, i + 5))) {
      if (f.kind === FrameKind.STATUS) discard = true; // congestion starts after the status
      if (f.borrowed) {
        assertEquals(f.bytes, batch, "a discarded frame is still assembled and checkable");
        if (scratch) assertEquals(f.bytes.buffer, scratch.buffer, "scratch space is reused");
        scratch = f.bytes;
        assertEquals(enclosingFrame(f.payload, FrameKind.PACKETS), null, "scratch never forwards");
      } else owned.push(f.bytes);
    }
  }
  assertEquals(asm.pending, 0);
  assertEquals(owned.length, 2);
  const frame = enclosingFrame(owned[0].subarray(8), FrameKind.PACKETS);
  assert(frame !== null && frame.buffer === owned[0].buffer, "an owned frame is its own buffer");
  assertEquals(enclosingFrame(owned[0].subarray(8), FrameKind.STATUS), null, "kind must match");
  assertEquals(enclosingFrame(batch.slice(8), FrameKind.PACKETS), null, "a bare payload is not");
  setFrameSource(frame, 513);
  const forwarded = decodeSingleFrame(frame);
  assertEquals([forwarded.source, forwarded.kind], [513, FrameKind.PACKETS]);
  assertEquals(validatePackets(forwarded.payload).count, 3);
  assertThrows(() => setFrameSource(frame, 70000), RangeError);
});

Deno.test("assembler: owned frames in memory with room before them still forward as is", () => {
  const batch = encodePacketsFrame(4, 3, encodeRecords(packets(3)));
  const asm = new FrameAssembler(undefined, { allocate: withHeaderRoom });
  const [f] = [...asm.frames(batch)];
  assertEquals(f.bytes, batch);
  assertEquals(f.bytes.byteOffset, 10, "the room sits before the frame");
  const frame = enclosingFrame(f.payload, FrameKind.PACKETS);
  assert(frame !== null && frame.byteOffset === 10 && frame.byteLength === batch.byteLength);
  // a view inside the frame that ends with it (a tail of its records) is not a frame
  const tail = f.payload.subarray(40);
  assertEquals(enclosingFrame(tail, FrameKind.PACKETS), null, "a tail is not the frame");
  // a batch cut short (the client's packet limit) is not the whole frame
  assertEquals(
    enclosingFrame(f.payload.subarray(0, f.payload.byteLength - 1), FrameKind.PACKETS),
    null,
  );
  // the forwarded frame takes its WebSocket header in place: header + frame, one buffer
  const ws = frameInPlace(OP_BINARY, frame);
  assert(ws !== null && ws.buffer === frame.buffer, "written in place");
  assertEquals(ws, encodeWsFrame(OP_BINARY, batch));
});

Deno.test("fuzz: the assembler yields the same frames as one-shot decoding under any chunking", () => {
  let seed = 777;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let iter = 0; iter < 200; iter++) {
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 1 + Math.floor(rnd() * 6); i++) {
      frames.push(
        rnd() < 0.5
          ? encodePacketsFrame(i, 4, encodeRecords(packets(4, iter + i)))
          : encodeJsonFrame(FrameKind.STATS, i, { n: iter, pad: "x".repeat(rnd() * 50) }),
      );
    }
    const stream = new Uint8Array(frames.reduce((n, f) => n + f.byteLength, 0));
    frames.reduce((off, f) => (stream.set(f, off), off + f.byteLength), 0);
    const asm = new FrameAssembler();
    const got: Uint8Array[] = [];
    for (let off = 0; off < stream.byteLength;) {
      const n = 1 + Math.floor(rnd() * 40);
      for (const f of asm.frames(stream.subarray(off, off + n))) got.push(f.bytes.slice());
      off += n;
    }
    assertEquals(asm.pending, 0);
    assertEquals(got, frames, `iteration ${iter}`);
    // A corrupted header surfaces as DecodeError as soon as the header is complete.
    const bad = stream.slice();
    bad[0] = 0xee;
    const partial = new FrameAssembler();
    assertEquals([...partial.frames(bad.subarray(0, 1 + iter % 7))], []);
    assertThrows(
      () => [...partial.frames(bad.subarray(1 + iter % 7, 12))],
      DecodeError,
      "kind 238",
    );
  }
});

Deno.test("packetsFrameInPlace: the frame around records in their buffer, as encodePacketsFrame builds it", () => {
  const records = encodeRecords(packets(5));
  const room = FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES;
  const buf = new Uint8Array(3 + room + records.byteLength + 2).fill(0xee);
  buf.set(records, 3 + room);
  const frame = packetsFrameInPlace(9, 5, buf.subarray(3 + room, 3 + room + records.byteLength));
  assertEquals(frame, encodePacketsFrame(9, 5, records));
  assertEquals(frame.buffer, buf.buffer, "no copy: the records' own buffer");
  assertEquals([buf[2], buf.at(-1)], [0xee, 0xee], "nothing outside the frame touched");
  assertThrows(
    () => packetsFrameInPlace(9, 5, buf.subarray(room - 1, room + 10)),
    RangeError,
    "no room for a frame header",
  );
});
