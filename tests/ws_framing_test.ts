import {
  CLOSE_INVALID_DATA,
  CLOSE_POLICY,
  CLOSE_PROTOCOL_ERROR,
  CLOSE_TOO_BIG,
  closePayload,
  encodeWsFrame,
  FrameDecoder,
  frameHeader,
  frameInPlace,
  FramingError,
  MAX_FRAGMENTS,
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_TEXT,
  parseClose,
  withHeaderRoom,
} from "../lib/ws_framing.ts";
import { encodeRawFrame } from "./chaos/support/raw_ws.ts";
import { assert, assertEquals, assertThrows } from "./support/assert.ts";

const enc = new TextEncoder();
const server = (max = 1024) => new FrameDecoder({ maxMessageBytes: max, masked: true, peer: "c" });
const client = (max = 1024) => new FrameDecoder({ maxMessageBytes: max, masked: false, peer: "s" });
const mask = () => crypto.getRandomValues(new Uint8Array(4));

function framingError(fn: () => unknown, code: number, text: RegExp): void {
  const e = assertThrows(fn, FramingError) as FramingError;
  assertEquals(e.code, code, e.message);
  assert(text.test(e.message), e.message);
}

Deno.test("ws framing: a masked frame decodes, whatever the chunking", () => {
  const payload = crypto.getRandomValues(new Uint8Array(300));
  const wire = encodeWsFrame(OP_BINARY, payload, mask());
  for (let cut = 0; cut <= wire.byteLength; cut++) {
    const d = server();
    const got = [...d.push(wire.subarray(0, cut)), ...d.push(wire.subarray(cut))];
    assertEquals(got.length, 1, `cut at ${cut}`);
    assertEquals(got[0].opcode, OP_BINARY);
    assertEquals([...got[0].payload], [...payload], `cut at ${cut}`);
    assertEquals(d.heldBytes, 0);
  }
});

Deno.test("ws framing: the encoder agrees with an independent one for every length form", () => {
  for (const n of [0, 125, 126, 65535, 65536, 70_000]) {
    const p = new Uint8Array(n).fill(7);
    const d = client(1 << 20);
    assertEquals(d.push(encodeWsFrame(OP_TEXT, p))[0].payload.byteLength, n);
    const theirs = encodeRawFrame({ opcode: OP_TEXT, payload: p });
    const ours = frameHeader(OP_TEXT, n, mask());
    const lengthPart = ours.byteLength - 4;
    assertEquals([...theirs.subarray(0, lengthPart)], [...ours.subarray(0, lengthPart)], `${n}`);
    assertEquals(server(1 << 20).push(theirs)[0].payload.byteLength, n);
  }
});

Deno.test("ws framing: fragments are assembled, control frames pass in between", () => {
  const d = server();
  const parts = [
    encodeRawFrame({ opcode: OP_TEXT, payload: enc.encode("hel"), fin: false }),
    encodeRawFrame({ opcode: OP_PING, payload: enc.encode("p") }),
    encodeRawFrame({ opcode: OP_CONTINUATION, payload: enc.encode("lo"), fin: false }),
    encodeRawFrame({ opcode: OP_CONTINUATION, payload: enc.encode("!") }),
  ];
  const got = parts.flatMap((p) => d.push(p));
  assertEquals(got.map((f) => f.opcode), [OP_PING, OP_TEXT]);
  assertEquals(new TextDecoder().decode(got[1].payload), "hello!");
});

Deno.test("ws framing: a header announcing more than the limit is refused before any payload", () => {
  for (const claimed of [1025, 200 * 1024 * 1024, 2 ** 53 + 10, Number.MAX_SAFE_INTEGER]) {
    const d = server();
    const head = encodeRawFrame({
      opcode: OP_TEXT,
      payload: new Uint8Array(),
      claimedLength: claimed,
    });
    framingError(() => d.push(head), CLOSE_TOO_BIG, /over the limit of 1024 bytes/);
  }
  // 2^64 - 1 as the 64-bit length
  const top = new Uint8Array([0x81, 0xff, 255, 255, 255, 255, 255, 255, 255, 255, 1, 2, 3, 4]);
  framingError(() => server().push(top), CLOSE_TOO_BIG, /more than 2\^53/);
});

Deno.test("ws framing: fragments that pass the limit are refused at the frame that passes it", () => {
  const d = server(1024);
  const piece = new Uint8Array(100);
  d.push(encodeRawFrame({ opcode: OP_TEXT, payload: piece, fin: false }));
  for (let i = 0; i < 9; i++) {
    d.push(encodeRawFrame({ opcode: OP_CONTINUATION, payload: piece, fin: false }));
  }
  assertEquals(d.heldBytes, 1000);
  const next = encodeRawFrame({ opcode: OP_CONTINUATION, payload: piece, fin: false });
  framingError(
    () => d.push(next.subarray(0, 6)),
    CLOSE_TOO_BIG,
    /1100 bytes so far, over the limit/,
  );
});

Deno.test("ws framing: a message of exactly the limit is accepted", () => {
  const d = server(1024);
  const a = encodeRawFrame({ opcode: OP_BINARY, payload: new Uint8Array(1000), fin: false });
  const b = encodeRawFrame({ opcode: OP_CONTINUATION, payload: new Uint8Array(24) });
  assertEquals(d.push(new Uint8Array([...a, ...b]))[0].payload.byteLength, 1024);
});

Deno.test("ws framing: protocol violations name the problem", () => {
  const p = enc.encode("x");
  const cases: [Uint8Array, RegExp][] = [
    [encodeRawFrame({ opcode: OP_TEXT, payload: p, mask: false }), /unmasked/],
    [encodeRawFrame({ opcode: OP_TEXT, payload: p, rsv: 4 }), /reserved bits/],
    [encodeRawFrame({ opcode: 0x3, payload: p }), /unknown opcode 3/],
    [encodeRawFrame({ opcode: 0xb, payload: p }), /unknown opcode 11/],
    [encodeRawFrame({ opcode: OP_PING, payload: new Uint8Array(126) }), /control frame/],
    [encodeRawFrame({ opcode: OP_PING, payload: p, fin: false }), /control frame/],
    [encodeRawFrame({ opcode: OP_CONTINUATION, payload: p }), /continuation without/],
  ];
  for (const [wire, text] of cases) {
    framingError(() => server().push(wire), CLOSE_PROTOCOL_ERROR, text);
  }
  const d = server();
  d.push(encodeRawFrame({ opcode: OP_TEXT, payload: p, fin: false }));
  framingError(
    () => d.push(encodeRawFrame({ opcode: OP_TEXT, payload: p })),
    CLOSE_PROTOCOL_ERROR,
    /interleaved/,
  );
  framingError(
    () => client().push(encodeWsFrame(OP_TEXT, p, mask())),
    CLOSE_PROTOCOL_ERROR,
    /masked/,
  );
});

Deno.test("ws framing: close payloads", () => {
  assertEquals(parseClose(closePayload(1009, "message too big")), {
    code: 1009,
    reason: "message too big",
  });
  assertEquals(parseClose(new Uint8Array()), { code: 1005, reason: "" });
  // cut to whole characters: 61 two-byte "é" fit in 123 bytes, not 61.5
  const cut = closePayload(1000, "é".repeat(100));
  assertEquals(cut.byteLength, 124);
  assertEquals(parseClose(cut).reason, "é".repeat(61));
  framingError(
    () => parseClose(new Uint8Array([0x03, 0xe8, 0xc3])),
    CLOSE_INVALID_DATA,
    /not UTF-8/,
  );
  framingError(() => parseClose(new Uint8Array(1)), CLOSE_PROTOCOL_ERROR, /1 byte/);
  const d = client();
  assertEquals(d.push(encodeWsFrame(OP_CLOSE, closePayload(1000, "bye")))[0].opcode, OP_CLOSE);
});

Deno.test("ws framing: empty or tiny fragments cannot make a message cost more than its bytes", () => {
  // empty continuations (6 bytes each on the wire) are refused past MAX_FRAGMENTS, holding nothing
  const d = server(1024);
  d.push(encodeRawFrame({ opcode: OP_TEXT, payload: new Uint8Array(), fin: false }));
  const empty = encodeRawFrame({ opcode: OP_CONTINUATION, payload: new Uint8Array(), fin: false });
  for (let i = 1; i < MAX_FRAGMENTS; i++) d.push(empty);
  assertEquals(d.heldBytes, 0);
  framingError(() => d.push(empty), CLOSE_POLICY, /more than 1024 fragments/);
  // 1-byte fragments up to the limit arrive as one message, gathered in one buffer
  const e = server(1024);
  const frames = [encodeRawFrame({ opcode: OP_BINARY, payload: new Uint8Array([0]), fin: false })];
  for (let i = 1; i < 1000; i++) {
    frames.push(encodeRawFrame({
      opcode: OP_CONTINUATION,
      payload: new Uint8Array([i % 251]),
      fin: i === 999,
    }));
  }
  const got = frames.flatMap((f) => e.push(f));
  assertEquals(got.length, 1);
  assertEquals(got[0].payload.byteLength, 1000);
  assert(got[0].payload.every((b, i) => b === i % 251), "bytes in order");
  assertEquals(e.heldBytes, 0);
});

Deno.test("ws framing: unmasked frames of every length form, split at every offset", () => {
  const sizes = [0, 1, 125, 126, 1000, 65535, 65536, 70000];
  const frames = sizes.map((n, i) => {
    const p = new Uint8Array(n);
    for (let k = 0; k < n; k++) p[k] = (k * 7 + i) & 0xff;
    return p;
  });
  const wire = new Uint8Array(frames.reduce((a, p) => a + encodeWsFrame(OP_BINARY, p).length, 0));
  let o = 0;
  for (const p of frames) {
    const f = encodeWsFrame(OP_BINARY, p);
    wire.set(f, o);
    o += f.byteLength;
  }
  // every split point within the headers and a little past them, and 1-byte feeding of the start
  const cuts = new Set<number>();
  for (let at = 0, i = 0; i < frames.length; i++) {
    for (let k = 0; k <= 16; k++) cuts.add(Math.min(at + k, wire.byteLength));
    at += encodeWsFrame(OP_BINARY, frames[i]).byteLength;
  }
  for (const cut of cuts) {
    const d = client(100_000);
    const got = [...d.push(wire.slice(0, cut)), ...d.push(wire.slice(cut))];
    assertEquals(got.map((g) => g.payload), frames, `cut at ${cut}`);
    // the payloads are their own buffers: nothing refers to the fed chunks
    for (const g of got) assertEquals(g.payload.buffer.byteLength, g.payload.byteLength);
  }
  const d = client(100_000);
  const got = [];
  for (let i = 0; i < 300; i++) {
    got.push(...d.push(wire.subarray(i, i + 1)));
    // a pending header is held alone, never the chunk it arrived in
    assert(d.heldBytes <= 14 + 65536, `held ${d.heldBytes}`);
  }
  got.push(...d.push(wire.subarray(300)));
  assertEquals(got.map((g) => g.payload), frames);
});

Deno.test("ws framing: a header split across chunks keeps at most the header's bytes", () => {
  const d = client(1 << 20);
  const f = encodeWsFrame(OP_BINARY, new Uint8Array(70000).fill(3));
  const many = new Uint8Array(200_000);
  for (let i = 0; i < 200; i++) many.set(encodeWsFrame(OP_BINARY, new Uint8Array([i])), i * 3);
  // 200 small messages, then the first 5 of the big frame's 10 header bytes
  const chunk = new Uint8Array(600 + 5);
  chunk.set(many.subarray(0, 600));
  chunk.set(f.subarray(0, 5), 600);
  const small = d.push(chunk);
  assertEquals(small.map((m) => m.payload[0]), [...Array(200).keys()]);
  assertEquals(d.heldBytes, 5);
  assertEquals(d.push(f.subarray(5, 12)).length, 0);
  assertEquals(d.heldBytes, 70000);
  const [big] = d.push(f.subarray(12));
  assertEquals(big.payload, new Uint8Array(70000).fill(3));
});

Deno.test("frameInPlace: the header goes into withHeaderRoom's room, only for a whole view", () => {
  for (const n of [0, 1, 125, 126, 65535, 65536, 300_000]) {
    const p = withHeaderRoom(n);
    for (let i = 0; i < n; i++) p[i] = i % 253;
    const f = frameInPlace(OP_BINARY, p);
    assert(f !== null && f.buffer === p.buffer, `${n}: in place`);
    assertEquals(f, encodeWsFrame(OP_BINARY, p.slice()), `${n} bytes`);
    assertEquals(f.byteOffset + f.byteLength, p.buffer.byteLength, "ends with the payload");
    // the same view sent twice: the same frame
    assertEquals(frameInPlace(OP_BINARY, p), f);
  }
  const p = withHeaderRoom(1000);
  assertEquals(frameInPlace(OP_BINARY, p.subarray(0, 999)), null, "not the whole view");
  assertEquals(frameInPlace(OP_BINARY, p.subarray(1)), null, "not where the room ends");
  const plain = new Uint8Array(1010);
  assertEquals(frameInPlace(OP_BINARY, plain.subarray(10)), null, "memory without room");
});

Deno.test("ws framing: large whole messages are decoded into the pool's buffers, nothing else", () => {
  const given: ArrayBuffer[] = [];
  const pool = {
    bufferBytes: 4096,
    take(bytes: number): ArrayBuffer | undefined {
      assert(bytes <= 4096, `asked for ${bytes} bytes`);
      const b = new ArrayBuffer(4096);
      new Uint8Array(b).fill(0xee); // a reused buffer holds old bytes: none may show through
      given.push(b);
      return b;
    },
  };
  const d = new FrameDecoder({ maxMessageBytes: 1 << 20, masked: false, peer: "s", pool });
  const big = crypto.getRandomValues(new Uint8Array(3000));
  const small = crypto.getRandomValues(new Uint8Array(1000));
  const wire = [
    encodeWsFrame(OP_BINARY, big),
    encodeWsFrame(OP_BINARY, small), // under half the buffer: its own
    encodeWsFrame(OP_PING, new Uint8Array(100)),
    // fragments: copied into a message buffer of the decoder's own
    encodeRawFrame({ opcode: OP_BINARY, payload: big.subarray(0, 2500), fin: false, mask: false }),
    encodeRawFrame({ opcode: OP_CONTINUATION, payload: big.subarray(2500), mask: false }),
    encodeWsFrame(OP_BINARY, new Uint8Array(5000)), // over the buffer: its own
  ];
  const out = wire.flatMap((w) => d.push(w));
  assertEquals(out.map((f) => f.payload.byteLength), [3000, 1000, 100, 3000, 5000]);
  assertEquals(given.length, 1, "one take: the large whole message");
  assert(out[0].payload.buffer === given[0], "the large message is a view of the pooled buffer");
  assertEquals(out[0].payload, big);
  assertEquals(out[1].payload, small);
  assertEquals(out[3].payload, big);
  for (const i of [1, 2, 3, 4]) assert(!given.includes(out[i].payload.buffer as ArrayBuffer));
});

Deno.test("ws framing: a pool that has nothing to give leaves the decoder its own buffers", () => {
  const pool = { bufferBytes: 4096, take: () => undefined };
  const d = new FrameDecoder({ maxMessageBytes: 1 << 20, masked: false, peer: "s", pool });
  const big = crypto.getRandomValues(new Uint8Array(3000));
  const [f] = d.push(encodeWsFrame(OP_BINARY, big));
  assertEquals(f.payload, big);
  assertEquals(f.payload.buffer.byteLength, 3000);
});
