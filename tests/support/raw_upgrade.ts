/**
 * A WebSocket upgrade request on a raw (TLS) connection, for tests that must see what the api
 * answers instead of a socket: the HTTP status, headers and body of a refused upgrade, which a
 * WebSocket client hides. A 101 answer is reported as such and the connection closed.
 */

export interface UpgradeAnswer {
  status: number;
  headers: Headers;
  body: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Sends one upgrade request to `url` (ws:// or wss://) and reads the answer. */
export async function rawUpgrade(
  url: string,
  headers: Record<string, string>,
  caCert?: string,
): Promise<UpgradeAnswer> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === "wss:" ? 443 : 80));
  const conn = u.protocol === "wss:"
    ? await Deno.connectTls({ hostname: u.hostname, port, caCerts: caCert ? [caCert] : [] })
    : await Deno.connect({ hostname: u.hostname, port });
  try {
    const lines = [
      `GET ${u.pathname}${u.search} HTTP/1.1`,
      `Host: ${u.host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    const req = enc.encode(lines.join("\r\n") + "\r\n\r\n");
    for (let off = 0; off < req.length;) off += await conn.write(req.subarray(off));
    return await readAnswer(conn);
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

async function readAnswer(conn: Deno.Conn): Promise<UpgradeAnswer> {
  let text = "";
  const buf = new Uint8Array(16 * 1024);
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const [statusLine, ...rest] = text.slice(0, end).split("\r\n");
      const status = Number(statusLine.split(" ")[1]);
      const headers = new Headers();
      for (const l of rest) {
        const i = l.indexOf(":");
        headers.append(l.slice(0, i).trim(), l.slice(i + 1).trim());
      }
      if (status === 101) return { status, headers, body: "" };
      const length = Number(headers.get("content-length") ?? "0");
      while (enc.encode(text.slice(end + 4)).byteLength < length) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n), { stream: true });
      }
      return { status, headers, body: text.slice(end + 4) };
    }
    const n = await conn.read(buf);
    if (n === null) throw new Error(`connection closed before an answer: ${JSON.stringify(text)}`);
    text += dec.decode(buf.subarray(0, n), { stream: true });
  }
}
