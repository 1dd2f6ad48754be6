/**
 * cli/tls_websocket.ts over both transports of cli/tls_transport.ts (Deno.connectTls with its
 * reused read buffer, and the node:tls fallback), against a raw TLS WebSocket server: messages
 * spanning reads and many messages in one read arrive intact (and stay intact while later reads
 * reuse the buffer), the closing handshake in both directions, and the trust rules: a certificate
 * from another CA for the same name, or one for another name, is refused with a sentence naming
 * --ca-cert. (The default-roots case, a CA trusted by the system: tests/tls_trust_test.ts.)
 */
import { createHash } from "node:crypto";
import { openssl, Pki } from "../lab/pki.ts";
import { TlsWebSocket } from "../cli/tls_websocket.ts";
import { READ_BUFFER_BYTES, type TransportKind } from "../cli/tls_transport.ts";
import { caOnlyTlsAvailable } from "../lib/ca_only_tls.ts";
import {
  closePayload,
  encodeWsFrame,
  FrameDecoder,
  OP_BINARY,
  OP_CLOSE,
  parseClose,
  type WsFrame,
} from "../lib/ws_framing.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TRANSPORTS: TransportKind[] = ["connectTls", "node:tls"];

/**
 * A TLS listener that upgrades one connection and hands it to `script`. Connections that end
 * before their upgrade request (a refused handshake, or the client's connectTls attempt it
 * replaced by node:tls) are skipped.
 */
function rawServer(
  cert: { cert: string; key: string },
  script: (conn: Deno.TlsConn, frames: () => Promise<WsFrame>) => Promise<void>,
) {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...cert });
  const done = (async () => {
    while (true) {
      let conn: Deno.TlsConn;
      try {
        conn = await listener.accept();
      } catch {
        return; // closed
      }
      try {
        const buf = new Uint8Array(64 * 1024);
        const head = await upgradeHead(conn, buf);
        if (!head) continue;
        const key = /sec-websocket-key: *(\S+)/i.exec(head.text)![1];
        const accept = createHash("sha1").update(key + GUID).digest("base64");
        await write(
          conn,
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
        );
        const decoder = new FrameDecoder({ maxMessageBytes: 1 << 20, masked: true, peer: "c" });
        const queue = decoder.push(head.rest);
        const frames = async (): Promise<WsFrame> => {
          while (!queue.length) {
            const n = await conn.read(buf);
            if (n === null) throw new Error("the client closed before the frame expected");
            queue.push(...decoder.push(buf.subarray(0, n)));
          }
          return queue.shift()!;
        };
        await script(conn, frames);
        return;
      } finally {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await done;
    },
  };
}

/** The upgrade request's head and the bytes after it, or null if the connection ended first. */
async function upgradeHead(conn: Deno.TlsConn, buf: Uint8Array) {
  let head = new Uint8Array(0);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return null;
      head = new Uint8Array([...head, ...buf.subarray(0, n)]);
      const text = new TextDecoder().decode(head);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) return { text, rest: head.subarray(end + 4) };
    }
  } catch {
    return null; // the handshake failed
  }
}

async function write(conn: Deno.Conn, data: Uint8Array | string): Promise<void> {
  const b = typeof data === "string" ? new TextEncoder().encode(data) : data;
  for (let off = 0; off < b.byteLength;) off += await conn.write(b.subarray(off));
}

/** One frame of a fragmented message (FIN only on the last); opcode 0 is a continuation. */
function fragment(opcode: number, p: Uint8Array, fin: boolean): Uint8Array {
  const f = encodeWsFrame(opcode, p);
  if (!fin) f[0] &= 0x7f;
  return f;
}

/** A payload whose bytes say which message and offset they are. */
function payload(i: number, n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let k = 0; k < n; k++) p[k] = (i * 31 + k) & 0xff;
  return p;
}

interface Outcome {
  messages: Uint8Array[];
  close: { code: number; reason: string };
  error: string;
  opened: boolean;
}

function client(url: string, ca: string, kind: TransportKind, onOpen?: (ws: TlsWebSocket) => void) {
  const ws = new TlsWebSocket(new URL(url), ca, { Authorization: "Bearer t" }, { transport: kind });
  const out: Outcome = { messages: [], close: { code: 0, reason: "" }, error: "", opened: false };
  ws.onopen = () => {
    out.opened = true;
    onOpen?.(ws);
  };
  ws.onmessage = (ev) => out.messages.push(ev.data as Uint8Array);
  ws.onerror = (e) => out.error ||= e.message;
  const closed = new Promise<Outcome>((r) =>
    ws.onclose = (ev) => {
      out.close = ev;
      r(out);
    }
  );
  return { ws, closed };
}

async function withPki<T>(f: (pki: Pki, other: Pki) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tls-transport-" });
  try {
    return await f(await Pki.create(`${dir}/ca`, "api-ca"), await Pki.create(`${dir}/o`, "api-ca"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tls transport: connectTls is the default where Deno exposes peer certificates", async () => {
  assert(caOnlyTlsAvailable(), "this Deno should have the hook (else the fallback is used)");
  const ws = new TlsWebSocket(new URL("wss://127.0.0.1:1/"), "", {});
  assertEquals(ws.transport, "connectTls");
  const closed = new Promise<void>((r) => ws.onclose = () => r());
  ws.close();
  await closed;
});

for (const kind of TRANSPORTS) {
  Deno.test(`tls transport (${kind}): messages spanning reads and many in one read, intact`, async () => {
    await withPki(async (pki) => {
      const leaf = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
      // 3 large messages (each spans several reads of the reused buffer), 2000 small ones in one
      // write, a run of messages written a few bytes at a time, then a close from the server
      const big = [0, 1, 2].map((i) => payload(i, READ_BUFFER_BYTES * 2 + 777 * i));
      const small = Array.from({ length: 2000 }, (_, i) => payload(100 + i, 1 + (i % 300)));
      const trickled = Array.from({ length: 20 }, (_, i) => payload(5000 + i, 200 + i * 10));
      const fragmented = payload(9, 5003);
      const server = rawServer(leaf, async (conn, frames) => {
        for (const p of big) await write(conn, encodeWsFrame(OP_BINARY, p));
        const joined = small.map((p) => encodeWsFrame(OP_BINARY, p));
        await write(conn, new Uint8Array(joined.flatMap((f) => [...f])));
        const wire = new Uint8Array(trickled.flatMap((p) => [...encodeWsFrame(OP_BINARY, p)]));
        for (let o = 0; o < wire.byteLength; o += 7) await write(conn, wire.subarray(o, o + 7));
        // one message in three fragments: delivered as an ArrayBuffer of exactly its bytes
        const parts = [fragmented.subarray(0, 1000), fragmented.subarray(1000, 5000)];
        await write(conn, fragment(OP_BINARY, parts[0], false));
        await write(conn, fragment(0, parts[1], false));
        await write(conn, fragment(0, fragmented.subarray(5000), true));
        await write(conn, encodeWsFrame(OP_CLOSE, closePayload(4001, "all sent")));
        // the client answers the close
        const answer = await frames();
        assertEquals(answer.opcode, OP_CLOSE);
        assertEquals(parseClose(answer.payload).code, 4001);
      });
      try {
        const { closed } = client(`wss://127.0.0.1:${server.port}/x`, pki.caCert, kind);
        const out = await closed;
        assertEquals(out.error, "");
        assertEquals(out.close, { code: 4001, reason: "all sent" });
        const want = [...big, ...small, ...trickled, fragmented];
        assertEquals(out.messages.length, want.length);
        // compared at the end: a message that viewed the reused buffer would have changed
        out.messages.forEach((m, i) => assertEquals(new Uint8Array(m), want[i], `message ${i}`));
        assertEquals(out.messages.at(-1)!.byteLength, 5003);
      } finally {
        await server.close();
      }
    });
  });

  Deno.test(`tls transport (${kind}): the client's close is answered, then the close event`, async () => {
    await withPki(async (pki) => {
      const leaf = await pki.issue("localhost", { server: true, dns: ["localhost"] });
      let seen: { code: number; reason: string } | undefined;
      const server = rawServer(leaf, async (conn, frames) => {
        await write(conn, encodeWsFrame(OP_BINARY, payload(1, 10)));
        const f = await frames();
        assertEquals(f.opcode, OP_CLOSE);
        seen = parseClose(f.payload);
        await write(conn, encodeWsFrame(OP_CLOSE, f.payload));
      });
      try {
        const { ws, closed } = client(`wss://localhost:${server.port}/x`, pki.caCert, kind);
        ws.onmessage = () => ws.close(1000, "done");
        const out = await closed;
        assertEquals(out.close, { code: 1000, reason: "done" });
        assertEquals(seen, { code: 1000, reason: "done" });
        assertEquals(out.error, "");
      } finally {
        await server.close();
      }
    });
  });

  Deno.test(`tls transport (${kind}): another CA's certificate or another name is refused`, async () => {
    await withPki(async (pki, other) => {
      const names = { server: true, dns: ["localhost"], ips: ["127.0.0.1"] };
      const cases = [
        // same name, same CA name, another key: not the --ca-cert CA
        { cert: await other.issue("localhost", names), url: "wss://localhost" },
        // the right CA, but the certificate names another host
        {
          cert: await pki.issue("elsewhere", { server: true, dns: ["elsewhere.example"] }),
          url: "wss://localhost",
        },
        {
          cert: await pki.issue("localhost", { server: true, dns: ["localhost"] }),
          url: "wss://127.0.0.1",
        },
      ];
      for (const c of cases) {
        const server = rawServer(c.cert, async () => {});
        try {
          const { closed } = client(`${c.url}:${server.port}/x`, pki.caCert, kind);
          const out = await closed;
          assertEquals(out.opened, false, c.url);
          assertStringIncludes(out.error, "TLS: the certificate of");
          assertStringIncludes(out.error, "is not trusted");
          assertStringIncludes(out.error, "only the CA given with --ca-cert is trusted");
        } finally {
          await server.close();
        }
      }
    });
  });
}

Deno.test("tls transport: a chain through an intermediate CA missing from --ca-cert is still accepted", async () => {
  await withPki(async (root) => {
    // an intermediate CA signed by the root: Pki's self-signed CA, re-signed by the root
    const dir = `${root.dir}/inter`;
    const inter = await Pki.create(dir, "api-intermediate");
    await Deno.writeTextFile(
      `${dir}/v3.ext`,
      "[ v3_ca ]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n" +
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    );
    await openssl([
      "x509",
      "-x509toreq",
      "-in",
      inter.caPath,
      "-signkey",
      inter.caKeyPath,
      "-out",
      `${dir}/i.csr`,
    ]);
    await openssl([
      "x509",
      "-req",
      "-in",
      `${dir}/i.csr`,
      "-CA",
      root.caPath,
      "-CAkey",
      root.caKeyPath,
      "-set_serial",
      "0x1234",
      "-days",
      "30",
      "-sha256",
      "-extfile",
      `${dir}/v3.ext`,
      "-extensions",
      "v3_ca",
      "-out",
      inter.caPath,
    ]);
    const leaf = await inter.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
    const chain = {
      cert: leaf.cert.trim() + "\n" + await Deno.readTextFile(inter.caPath),
      key: leaf.key,
    };
    const server = rawServer(chain, async (conn, frames) => {
      await write(conn, encodeWsFrame(OP_BINARY, payload(3, 100)));
      await write(conn, encodeWsFrame(OP_CLOSE, closePayload(4002, "chain ok")));
      assertEquals((await frames()).opcode, OP_CLOSE);
    });
    try {
      // only the root is given: the leaf's issuer is not in it, so node:tls checks the chain
      const { ws, closed } = client(`wss://127.0.0.1:${server.port}/x`, root.caCert, "connectTls");
      const out = await closed;
      assertEquals(out.error, "");
      assertEquals(out.close, { code: 4002, reason: "chain ok" });
      assertEquals(out.messages.map((m) => new Uint8Array(m)), [payload(3, 100)]);
      assertEquals(ws.transport, "node:tls");
    } finally {
      await server.close();
    }
  });
});

/**
 * A TCP port whose accept queue is full (listen backlog 0, never accepting): further SYNs are
 * dropped, so a connect to it stays pending.
 */
async function fullPort() {
  const child = new Deno.Command("ruby", {
    args: [
      "-rsocket",
      "-e",
      's = Socket.new(:INET, :STREAM); s.bind(Addrinfo.tcp("127.0.0.1", 0)); s.listen(0); ' +
      "puts s.local_address.ip_port; STDOUT.flush; STDIN.read",
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await reader.read();
    if (r.done) throw new Error("the ruby listener did not start");
    text += new TextDecoder().decode(r.value);
  }
  const port = Number(text.trim());
  // fill the queue: these connect (the kernel completes them) and are never accepted
  const fillers: Deno.Conn[] = [];
  for (let i = 0; i < 3; i++) {
    const c = await Promise.race([
      Deno.connect({ hostname: "127.0.0.1", port }),
      new Promise<null>((r) => setTimeout(() => r(null), 2000)),
    ]);
    if (!c) break; // already full
    fillers.push(c);
  }
  return {
    port,
    close: async () => {
      for (const c of fillers) c.close();
      await child.stdin.close();
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}

for (const kind of TRANSPORTS) {
  Deno.test(`tls transport (${kind}): a close while the connect is pending is reported at once`, async () => {
    const port = await fullPort();
    try {
      const ws = new TlsWebSocket(new URL(`wss://127.0.0.1:${port.port}/x`), "", {}, {
        transport: kind,
      });
      const closed = new Promise<string>((r) => ws.onclose = () => r("closed"));
      ws.close();
      // the kernel would retry the SYN for about 2 minutes; the close must not wait for it
      const verdict = await Promise.race([
        closed,
        new Promise<string>((r) => setTimeout(() => r("no close event within 10 s"), 10_000)),
      ]);
      assertEquals(verdict, "closed");
    } finally {
      await port.close();
    }
  });
}

Deno.test("tls transport: a self-signed CA:TRUE api certificate given as --ca-cert still works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tls-selfsigned-" });
  try {
    // what `openssl req -x509` makes by default: basicConstraints CA:TRUE on the server's own
    // certificate, which rustls refuses as an end entity and OpenSSL accepts
    await openssl([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${dir}/key.pem`,
      "-out",
      `${dir}/cert.pem`,
      "-days",
      "2",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ]);
    const cert = await Deno.readTextFile(`${dir}/cert.pem`);
    const key = await Deno.readTextFile(`${dir}/key.pem`);
    const server = rawServer({ cert, key }, async (conn, frames) => {
      await write(conn, encodeWsFrame(OP_CLOSE, closePayload(4003, "self-signed ok")));
      assertEquals((await frames()).opcode, OP_CLOSE);
    });
    try {
      const { ws, closed } = client(`wss://127.0.0.1:${server.port}/x`, cert, "connectTls");
      const out = await closed;
      assertEquals(out.error, "");
      assertEquals(out.close, { code: 4003, reason: "self-signed ok" });
      assertEquals(ws.transport, "node:tls", "rustls refused it; node:tls decided");
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
