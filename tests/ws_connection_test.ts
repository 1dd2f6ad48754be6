/**
 * The api's server-side WebSocket (server/ws_connection.ts) on a real loopback TCP connection,
 * with a client written with the shared codec: messages both ways, ping/pong, the closing
 * handshake, the size limit at the frame header, the idle timeout, and bufferedAmount as the
 * payload bytes not yet written out; a handed-over frame freed once written.
 */
import { WsConnection } from "../server/ws_connection.ts";
import {
  closePayload,
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  parseClose,
  withHeaderRoom,
} from "../lib/ws_framing.ts";
import { encodeRawFrame } from "./chaos/support/raw_ws.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { pair, readUntil, until } from "./support/ws_pair.ts";

const enc = new TextEncoder();

Deno.test("ws connection: messages both ways, ping answered, closing handshake", async () => {
  const p = await pair();
  try {
    await p.send(OP_TEXT, enc.encode(`{"type":"start"}`));
    await p.send(OP_BINARY, new Uint8Array([1, 2, 3]));
    await until("two messages", () => p.messages.length === 2);
    assertEquals(p.messages[0], `{"type":"start"}`);
    assertEquals([...new Uint8Array(p.messages[1] as ArrayBuffer)], [1, 2, 3]);
    p.ws.send(new Uint8Array(100_000).fill(9));
    p.ws.send("hi");
    await p.send(OP_PING, enc.encode("ping!"));
    await readUntil(p, "three frames", () => p.frames.length >= 3);
    assertEquals(p.frames.map((f) => f.opcode), [OP_BINARY, OP_TEXT, OP_PONG]);
    assertEquals(p.frames[0].payload.byteLength, 100_000);
    assertEquals(new TextDecoder().decode(p.frames[2].payload), "ping!");
    p.ws.close(1000, "capture ended");
    assertEquals(p.ws.readyState, WsConnection.CLOSING);
    await readUntil(p, "the close", () => p.frames.some((f) => f.opcode === OP_CLOSE));
    assertEquals(parseClose(p.frames.at(-1)!.payload), { code: 1000, reason: "capture ended" });
    await p.send(OP_CLOSE, closePayload(1000, ""));
    await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed, { code: 1000, reason: "" });
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: fragments past the limit close with 1009 before more is held", async () => {
  const p = await pair();
  try {
    const piece = new Uint8Array(600);
    await p.conn.write(encodeRawFrame({ opcode: OP_TEXT, payload: piece, fin: false }));
    await p.conn.write(encodeRawFrame({ opcode: OP_CONTINUATION, payload: piece, fin: false }));
    await readUntil(p, "the close", () => p.frames.some((f) => f.opcode === OP_CLOSE));
    assertEquals(parseClose(p.frames.at(-1)!.payload), { code: 1009, reason: "message too big" });
    assertEquals(p.tooBig.length, 1);
    assert(/1200 bytes so far, over the limit of 1024/.test(p.tooBig[0]), p.tooBig[0]);
    await until("closed", () => p.closed !== null);
    assertEquals(p.closed?.code, 1009);
    assertEquals(p.messages, []);
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: a silent peer gets a ping, then is cut", async () => {
  const p = await pair({ idleTimeoutMs: 200 });
  try {
    await readUntil(p, "a ping", () => p.frames.some((f) => f.opcode === OP_PING));
    await until("cut", () => p.closed !== null);
    assertEquals(p.closed, { code: 1006, reason: "no pong within the idle timeout" });
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: a peer that answers pings stays", async () => {
  const p = await pair({ idleTimeoutMs: 100 });
  try {
    let pongs = 0;
    while (pongs < 5) {
      const seen = p.frames.length;
      await readUntil(p, "a ping", () => p.frames.length > seen);
      if (p.frames.at(-1)!.opcode === OP_PING) {
        await p.send(OP_PONG, new Uint8Array());
        pongs++;
      }
    }
    assertEquals(p.closed, null);
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: bufferedAmount counts the payload not yet written out", async () => {
  const p = await pair();
  try {
    const frame = new Uint8Array(1 << 20);
    // every completed write is reported, after bufferedAmount fell (the merger re-evaluates then)
    let written = 0, seen = -1;
    p.ws.onWritten = () => {
      written++;
      seen = p.ws.bufferedAmount;
    };
    let messages = 0;
    // a client that does not read: the socket's buffers fill, then bytes stay unsent
    for (let i = 0; i < 64 && p.ws.bufferedAmount === 0; i++, messages++) {
      p.ws.send(frame);
      await new Promise((r) => setTimeout(r, 5));
    }
    for (let i = 0; i < 4; i++, messages++) p.ws.send(frame);
    assert(p.ws.bufferedAmount >= 4 << 20, `bufferedAmount ${p.ws.bufferedAmount}`);
    const sent = p.ws.bufferedAmount;
    // the client reads everything: nothing is left unsent
    let bytes = 0;
    while (p.ws.bufferedAmount > 0 || bytes < sent) {
      await p.read();
      bytes = p.frames.reduce((n, f) => n + f.payload.byteLength, 0);
    }
    assertEquals(p.ws.bufferedAmount, 0);
    await until("every write reported", () => written === messages);
    assertEquals(seen, 0);
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: bufferedAmount falls as a slow client drains, not in one late step", async () => {
  const p = await pair();
  try {
    const frame = new Uint8Array(1 << 20);
    const n = 48;
    // a backlog far beyond what the kernel's buffers take, queued while the client reads nothing
    for (let i = 0; i < n; i++) p.ws.send(frame);
    let falls = 0, last = p.ws.bufferedAmount, read = 0;
    // The client reads half of it: the merger must see progress meanwhile (merge.ts STALL_MS).
    // A socket holding the whole backlog writes it as one batch whose callbacks all fire at its
    // end, once nearly everything is read.
    while (read < (n / 2) << 20) {
      await p.read();
      read = p.frames.reduce((s, f) => s + f.payload.byteLength, 0);
      const now = p.ws.bufferedAmount;
      if (now < last) falls++;
      last = now;
    }
    assert(falls >= 4, `bufferedAmount fell ${falls} time(s) while the client read ${read} bytes`);
    assert(last > 0, "half the backlog is still unsent");
    while (p.ws.bufferedAmount > 0 || read < n << 20) {
      await p.read();
      read = p.frames.reduce((s, f) => s + f.payload.byteLength, 0);
    }
    assertEquals(read, n << 20);
  } finally {
    await p.end();
  }
});

Deno.test("ws connection: a withHeaderRoom frame is freed once written, a caller's buffer is not", async () => {
  const p = await pair();
  try {
    const room = withHeaderRoom(100_000);
    for (let i = 0; i < room.length; i++) room[i] = i & 0xff;
    const plain = new Uint8Array(100_000).fill(7);
    p.ws.send(room);
    p.ws.send(plain);
    await readUntil(p, "two frames", () => p.frames.length >= 2);
    const got = p.frames[0].payload;
    assertEquals(got.byteLength, 100_000);
    assert(got.every((b, i) => b === (i & 0xff)), "the handed-over frame arrived intact");
    assert(p.frames[1].payload.every((b) => b === 7), "the caller's buffer arrived intact");
    // detached: its memory is released without waiting for a GC
    await until("the written frame released", () => room.byteLength === 0);
    assertEquals(plain.byteLength, 100_000);
    assertEquals(p.ws.bufferedAmount, 0);
  } finally {
    await p.end();
  }
});
