/**
 * The api's server-side WebSocket (server/ws_connection.ts) ending, on real loopback TCP: our
 * close behind a long queue for a slow client, the peer's close answered at once, the violation's
 * STATUS ahead of its close, invalid close codes, a TCP half-close, and a slow client's liveness.
 */
import { WsConnection } from "../server/ws_connection.ts";
import { closePayload, OP_BINARY, OP_CLOSE, OP_TEXT, parseClose } from "../lib/ws_framing.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { type Pair, pair, readUntil, until } from "./support/ws_pair.ts";

const MiB = 1 << 20;
const closeFrame = (p: Pair) => p.frames.find((f) => f.opcode === OP_CLOSE);

/** a client slower than any close timeout of the test: a pause before each read */
async function readSlowly(p: Pair, what: string, cond: () => boolean): Promise<void> {
  while (!cond()) {
    await new Promise((r) => setTimeout(r, 10));
    if (!await p.read()) throw new Error(`${what}: connection ended first`);
  }
}

Deno.test("ws close: a slow client after close() still gets every message and the close", async () => {
  // The close timeout is far shorter than the drain: it must count from the written close.
  const p = await pair({ closeTimeoutMs: 300 });
  try {
    const n = 24;
    for (let i = 0; i < n; i++) p.ws.send(new Uint8Array(MiB).fill(i));
    p.ws.send("END");
    p.ws.close(1000, "capture ended");
    // slowly while the close waits behind the queue (far longer than the close timeout), then
    // at full speed through what the kernel holds once the close is written
    await readSlowly(p, "the queue written", () => p.ws.bufferedAmount === 0);
    await readUntil(p, "the close", () => closeFrame(p) !== undefined);
    assertEquals(p.frames.map((f) => f.opcode), [...Array(n).fill(OP_BINARY), OP_TEXT, OP_CLOSE]);
    assert(p.frames.slice(0, n).every((f, i) => f.payload[MiB - 1] === i), "messages in order");
    assertEquals(parseClose(closeFrame(p)!.payload), { code: 1000, reason: "capture ended" });
    await p.send(OP_CLOSE, closePayload(1000, ""));
    await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed, { code: 1000, reason: "" });
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a client that stops reading after close() is cut for the stall", async () => {
  const p = await pair({ drainStallMs: 400 });
  try {
    for (let i = 0; i < 24; i++) p.ws.send(new Uint8Array(MiB));
    p.ws.close(1000, "capture ended");
    await until("cut", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed, { code: 1006, reason: "the client stopped reading before the close" });
    assertEquals(p.ws.bufferedAmount, 0);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: the peer's close drops the queue, is answered at once, ends the session", async () => {
  const p = await pair();
  try {
    const n = 24;
    for (let i = 0; i < n; i++) p.ws.send(new Uint8Array(MiB));
    await p.send(OP_CLOSE, closePayload(1001, "going away"));
    await until("the session told", () => p.closed !== null);
    assertEquals(p.closed, { code: 1001, reason: "going away" });
    p.ws.send("dropped");
    // what the socket already holds may still go out, the rest of the queue not
    assert(p.ws.bufferedAmount <= MiB, `bufferedAmount ${p.ws.bufferedAmount}`);
    await readUntil(p, "the close", () => closeFrame(p) !== undefined);
    assertEquals(parseClose(closeFrame(p)!.payload).code, 1001);
    assert(p.payloadRead() < n * MiB, `${p.payloadRead()} bytes read before the close`);
    assert(!p.frames.some((f) => f.opcode === OP_TEXT), "nothing sent after the peer's close");
    while (await p.read()) { /* the server ends the TCP connection */ }
    await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a client that closes, then reads nothing, is cut at the close timeout", async () => {
  const p = await pair({ closeTimeoutMs: 300 });
  try {
    for (let i = 0; i < 24; i++) p.ws.send(new Uint8Array(MiB));
    await p.send(OP_CLOSE, closePayload(1000, ""));
    await until("the session told", () => p.closed !== null);
    await until("cut", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed, { code: 1000, reason: "" });
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a congested client gets the violation's STATUS before the 1009", async () => {
  const p: Pair = await pair({ onTooBig: (t) => p.ws.send(`STATUS ${t}`) });
  try {
    const n = 24;
    for (let i = 0; i < n; i++) p.ws.send(new Uint8Array(MiB));
    await p.send(OP_TEXT, new Uint8Array(2000));
    await readUntil(p, "the close", () => closeFrame(p) !== undefined);
    const status = p.frames.at(-2)!;
    assertEquals(status.opcode, OP_TEXT);
    assert(new TextDecoder().decode(status.payload).startsWith("STATUS "), "the STATUS");
    assertEquals(parseClose(closeFrame(p)!.payload), { code: 1009, reason: "message too big" });
    assertEquals(p.frames.filter((f) => f.opcode === OP_CLOSE).length, 1);
    await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed?.code, 1009);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a violation after close() sends no second close frame", async () => {
  const p = await pair();
  try {
    p.ws.close(1000, "capture ended");
    await p.send(OP_TEXT, new Uint8Array(2000));
    await readUntil(p, "the close", () => closeFrame(p) !== undefined);
    while (await p.read()) { /* to the end of the connection */ }
    assertEquals(p.frames.filter((f) => f.opcode === OP_CLOSE).length, 1);
    assertEquals(parseClose(closeFrame(p)!.payload).code, 1000);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a violation callback that closes itself sends one close frame", async () => {
  const p: Pair = await pair({ onTooBig: () => p.ws.close(1008, "told") });
  try {
    await p.send(OP_TEXT, new Uint8Array(2000));
    await readUntil(p, "the close", () => closeFrame(p) !== undefined);
    while (await p.read()) { /* to the end of the connection */ }
    assertEquals(p.frames.map((f) => f.opcode), [OP_CLOSE]);
  } finally {
    await p.end();
  }
});

for (const code of [999, 1004, 1005, 1006, 1015, 1100, 2999, 5000]) {
  Deno.test(`ws close: the client's close code ${code} is answered with 1002`, async () => {
    const p = await pair();
    try {
      const payload = new Uint8Array([code >> 8, code & 0xff]);
      await p.send(OP_CLOSE, payload);
      await readUntil(p, "the close", () => closeFrame(p) !== undefined);
      assertEquals(parseClose(closeFrame(p)!.payload).code, 1002);
      await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
      assertEquals(p.closed?.code, 1002);
    } finally {
      await p.end();
    }
  });
}

Deno.test("ws close: a TCP half-close without a close frame ends the connection (1006)", async () => {
  const p = await pair({}, { allowHalfOpen: true });
  try {
    await p.conn.closeWrite();
    await until("closed", () => p.ws.readyState === WsConnection.CLOSED);
    assertEquals(p.closed?.code, 1006);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a slow client that keeps draining is not cut for a late pong", async () => {
  // The client never answers pings; its reads completing writes are what keeps it alive.
  const p = await pair({ idleTimeoutMs: 300 });
  try {
    const n = 32;
    for (let i = 0; i < n; i++) p.ws.send(new Uint8Array(MiB));
    await readSlowly(p, "the backlog", () => p.payloadRead() >= n * MiB);
    assertEquals(p.closed, null);
    // and a client that stops reading and answering is still cut
    await until("cut", () => p.closed !== null);
    assertEquals(p.closed, { code: 1006, reason: "no pong within the idle timeout" });
  } finally {
    await p.end();
  }
});

Deno.test("ws close: no ping after our close frame is written", async () => {
  const p = await pair({ idleTimeoutMs: 100, closeTimeoutMs: 1500 });
  try {
    p.ws.close(1000, "bye");
    await until("cut", () => p.ws.readyState === WsConnection.CLOSED);
    while (await p.read()) { /* everything sent */ }
    assertEquals(p.frames.map((f) => f.opcode), [OP_CLOSE]);
  } finally {
    await p.end();
  }
});

Deno.test("ws close: a vanished client on a light stream is still cut for no pong", async () => {
  // Its kernel's buffers take every write for minutes: writes completing are no sign of life.
  const p = await pair({ idleTimeoutMs: 200 });
  try {
    const deadline = Date.now() + 20_000;
    while (p.closed === null) {
      if (Date.now() > deadline) throw new Error("a client that reads nothing was not cut");
      p.ws.send(new Uint8Array(1024));
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(p.closed, { code: 1006, reason: "no pong within the idle timeout" });
  } finally {
    await p.end();
  }
});
