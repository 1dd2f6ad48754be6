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

/** A server→client WebSocket frame as read off the wire. */
export interface WireFrame {
  opcode: number;
  payload: Uint8Array;
}

/**
 * A WebSocket client on a raw connection that reads only when told to: a client that stops
 * reading (its TCP window fills) as a real slow or stuck client does.
 */
export interface RawWebSocket {
  /** sends one masked text message */
  sendText(text: string): Promise<void>;
  /** reads every frame until the server closes the connection (or `limitBytes` were read) */
  readAll(limitBytes?: number): Promise<WireFrame[]>;
  close(): void;
}

export async function rawWebSocket(
  url: string,
  headers: Record<string, string>,
  caCert?: string,
): Promise<RawWebSocket> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === "wss:" ? 443 : 80));
  const conn = u.protocol === "wss:"
    ? await Deno.connectTls({ hostname: u.hostname, port, caCerts: caCert ? [caCert] : [] })
    : await Deno.connect({ hostname: u.hostname, port });
  const lines = [
    `GET ${u.pathname}${u.search} HTTP/1.1`,
    `Host: ${u.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  await writeAll(conn, enc.encode(lines.join("\r\n") + "\r\n\r\n"));
  // Read the 101 answer byte by byte, so that no frame after it is consumed here.
  let head = "";
  const one = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n")) {
    if (await conn.read(one) === null) throw new Error(`no upgrade answer: ${head}`);
    head += String.fromCharCode(one[0]);
  }
  if (!head.startsWith("HTTP/1.1 101")) {
    throw new Error(`upgrade refused: ${head.split("\r\n")[0]}`);
  }
  return {
    async sendText(text) {
      const data = enc.encode(text);
      const mask = crypto.getRandomValues(new Uint8Array(4));
      const len = data.length;
      const hdr = len < 126 ? [0x81, 0x80 | len] : [0x81, 0x80 | 126, len >> 8, len & 0xff];
      const out = new Uint8Array(hdr.length + 4 + len);
      out.set(hdr);
      out.set(mask, hdr.length);
      for (let i = 0; i < len; i++) out[hdr.length + 4 + i] = data[i] ^ mask[i % 4];
      await writeAll(conn, out);
    },
    async readAll(limitBytes = 1 << 30) {
      const frames: WireFrame[] = [];
      let pending: Uint8Array = new Uint8Array(0);
      let total = 0;
      const buf = new Uint8Array(64 * 1024);
      while (total < limitBytes && frames.at(-1)?.opcode !== 8) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        total += n;
        pending = concat([pending, buf.subarray(0, n)], pending.length + n);
        const used = parseFrames(pending, frames);
        pending = pending.slice(used);
      }
      return frames;
    },
    close() {
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Appends the unmasked server frames of `b` to `frames`; returns the bytes they took. */
function parseFrames(b: Uint8Array, frames: WireFrame[]): number {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 0;
  while (off + 2 <= b.length) {
    let len = b[off + 1] & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (p + 2 > b.length) break;
      len = view.getUint16(p);
      p += 2;
    } else if (len === 127) {
      if (p + 8 > b.length) break;
      len = Number(view.getBigUint64(p));
      p += 8;
    }
    if (p + len > b.length) break;
    frames.push({ opcode: b[off] & 0x0f, payload: b.slice(p, p + len) });
    off = p + len;
  }
  return off;
}
