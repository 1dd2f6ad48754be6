import {
  BodyDecoder,
  formatRequest,
  HttpWireError,
  MAX_HEAD_BYTES,
  parseResponseHead,
} from "../lib/http1_wire.ts";
import { assert, assertEquals, assertThrows } from "./support/assert.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Feeds `wire` to a decoder in pieces of `step` bytes and joins the payload. */
function decodeAll(d: BodyDecoder, wire: Uint8Array, step: number): string {
  let out = "";
  for (let i = 0; i < wire.byteLength; i += step) {
    for (const v of d.push(wire.subarray(i, i + step))) out += dec.decode(v);
  }
  return out;
}

Deno.test("formatRequest: one request per connection, body length, no header injection", () => {
  const text = dec.decode(
    formatRequest(
      "POST",
      "10.0.0.1:9494",
      "/captures",
      { "content-type": "application/json" },
      "{}",
    ),
  );
  assertEquals(
    text,
    "POST /captures HTTP/1.1\r\nhost: 10.0.0.1:9494\r\nconnection: close\r\n" +
      "content-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
  );
  assertThrows(() => formatRequest("GET", "h", "/", { x: "a\r\nevil: 1" }), HttpWireError);
});

Deno.test("parseResponseHead: incomplete, complete with the body's framing, malformed", () => {
  const wire = enc.encode(
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-pcap-capture-id: c1\r\n\r\n5\r\nhello",
  );
  assertEquals(parseResponseHead(wire.subarray(0, 20), "POST"), null);
  const head = parseResponseHead(wire, "POST")!;
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("x-pcap-capture-id"), "c1");
  assertEquals(head.framing, { kind: "chunked" });
  assertEquals(dec.decode(wire.subarray(head.consumed)), "5\r\nhello");
  const cl = parseResponseHead(enc.encode("HTTP/1.1 503 x\r\ncontent-length: 12\r\n\r\n"), "POST")!;
  assertEquals(cl.framing, { kind: "length", length: 12 });
  const none = parseResponseHead(enc.encode("HTTP/1.1 204 No Content\r\n\r\n"), "POST")!;
  assertEquals(none.framing, { kind: "none" });
  const close = parseResponseHead(enc.encode("HTTP/1.0 200 OK\r\n\r\n"), "GET")!;
  assertEquals(close.framing, { kind: "close" });
  for (
    const bad of [
      "SSH-2.0-OpenSSH\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
    ]
  ) {
    assertThrows(() => parseResponseHead(enc.encode(bad), "GET"), HttpWireError, "");
  }
  const huge = enc.encode("HTTP/1.1 200 OK\r\nx: " + "a".repeat(MAX_HEAD_BYTES) + "\r\n");
  assertThrows(() => parseResponseHead(huge, "GET"), HttpWireError, "longer than");
});

Deno.test("BodyDecoder: chunked bodies split anywhere decode the same; the end is known", () => {
  const wire = enc.encode("5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\ntrailer: x\r\n\r\n");
  for (const step of [1, 2, 3, 7, wire.byteLength]) {
    const d = new BodyDecoder({ kind: "chunked" });
    assertEquals(decodeAll(d, wire, step), "hello world!", `step ${step}`);
    assert(d.done && d.atClose(), `step ${step}: done`);
  }
  const cut = new BodyDecoder({ kind: "chunked" });
  decodeAll(cut, wire.subarray(0, 12), 4);
  assert(!cut.done && !cut.atClose(), "a body cut in a chunk has not ended");
  assertThrows(
    () => new BodyDecoder({ kind: "chunked" }).push(enc.encode("zz\r\n")),
    HttpWireError,
    "bad chunk size",
  );
  assertThrows(
    () => new BodyDecoder({ kind: "chunked" }).push(enc.encode("2\r\nabX\r\n")),
    HttpWireError,
    "missing CRLF",
  );
  assertThrows(
    () => new BodyDecoder({ kind: "chunked" }).push(enc.encode("1".repeat(2000))),
    HttpWireError,
    "line too long",
  );
});

Deno.test("BodyDecoder: content-length stops at the length; close-delimited ends at close", () => {
  const d = new BodyDecoder({ kind: "length", length: 4 });
  assertEquals(decodeAll(d, enc.encode("abcdef"), 3), "abcd");
  assert(d.done);
  const c = new BodyDecoder({ kind: "close" });
  assertEquals(decodeAll(c, enc.encode("anything"), 3), "anything");
  assert(!c.done && c.atClose());
  assert(new BodyDecoder({ kind: "length", length: 0 }).done);
});
