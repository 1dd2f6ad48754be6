/**
 * Refused WebSocket upgrades on the api's own listener (server/http_listener.ts): an upgraded
 * socket has no node:http timeouts, so a refused client that never closes its side must not keep
 * the api's socket (an fd) open; a non-WebSocket Upgrade (curl --http2's `h2c`) is refused with a
 * clear 400. The api runs in-process on the lab over TLS, so its sockets are this process's fds.
 */
import { isRoot } from "../lab/netns.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { withApiLab } from "./support/api_harness.ts";
import { REFUSED_LINGER_MS } from "../server/http_listener.ts";

const root = isRoot();
const enc = new TextEncoder();

/** Open socket fds of this process (the in-process api's and the test's own). */
function socketFds(): number {
  let n = 0;
  for (const f of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${f.name}`).startsWith("socket:")) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

/** Sends `request` and reads until the answer's head and body are in; the socket stays open. */
async function ask(conn: Deno.Conn, request: string): Promise<string> {
  await conn.write(enc.encode(request));
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  for (;;) {
    const head = text.indexOf("\r\n\r\n");
    const len = /content-length: (\d+)/i.exec(text);
    if (head >= 0 && len && text.length >= head + 4 + Number(len[1])) return text;
    const n = await conn.read(buf);
    if (n === null) return text;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
}

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name: "api: refused upgrades release their sockets; a non-WebSocket Upgrade is a clear 400" +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn() {
    await withApiLab({ groups: { router: 1 }, log: () => {} }, async (lab, startApi) => {
      const api = await startApi();
      const port = api.server.port;
      const dial = () =>
        Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [lab.pki.caCert] });
      const upgrade = (path: string, extra: string) =>
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n${extra}\r\n`;

      // h2c: refused in words, not as a missing WebSocket route
      const h2c = await dial();
      try {
        const answer = await ask(
          h2c,
          `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade, HTTP2-Settings` +
            `\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
        );
        assert(answer.startsWith("HTTP/1.1 400"), answer);
        assertStringIncludes(answer, "Upgrade: h2c is not supported");
      } finally {
        h2c.close();
      }

      // refused upgrades (no token, bad token, no such route) whose clients keep their side open
      const before = socketFds();
      const conns: Deno.TlsConn[] = [];
      try {
        const asks = [
          upgrade("/v1/capture/bosh", ""),
          upgrade("/v1/capture/bosh", "Authorization: Bearer not-a-token\r\n"),
          upgrade("/v1/nowhere", ""),
        ];
        const answers: string[] = [];
        for (let i = 0; i < 30; i++) {
          const c = await dial();
          conns.push(c);
          answers.push(await ask(c, asks[i % asks.length]));
        }
        assertEquals(
          [...new Set(answers.map((a) => a.slice(0, 12)))].sort(),
          ["HTTP/1.1 401", "HTTP/1.1 404"],
        );
        // our 30 ends stay open; the api's 30 must go within the linger time (and a margin)
        await until(
          "the api closed the refused sockets",
          () => socketFds() <= before + conns.length,
          REFUSED_LINGER_MS + 20_000,
        );
        const health = await fetch(`${api.server.url}/health`, {
          client: Deno.createHttpClient({ caCerts: [lab.pki.caCert] }),
        });
        assertEquals(health.status, 200);
        await health.body?.cancel();
      } finally {
        for (const c of conns) c.close();
      }
    });
  },
});
