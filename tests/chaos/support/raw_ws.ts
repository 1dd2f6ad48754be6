/**
 * A WebSocket client (RFC 6455, client side) written out by hand for the chaos campaign:
 * - it reads a message only when asked, so a slow reader really leaves bytes in the TCP socket
 *   (Deno's WebSocket reads eagerly and would buffer in the client);
 * - it sends any frame: any opcode, unmasked, fragmented, or with a length that lies.
 */

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface RawFrame {
  opcode: number;
  payload: Uint8Array;
  fin?: boolean;
  /** default true (clients must mask) */
  mask?: boolean;
  /** announce this length instead of the payload's */
  claimedLength?: number;
  /** RSV bits (0..7) */
  rsv?: number;
}

/** Encodes one frame; `claimedLength` makes the header lie. Pure apart from the random mask. */
export function encodeRawFrame(f: RawFrame): Uint8Array {
  const len = f.claimedLength ?? f.payload.length;
  const mask = f.mask ?? true;
  const head: number[] = [((f.fin ?? true) ? 0x80 : 0) | ((f.rsv ?? 0) << 4) | (f.opcode & 0xf)];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 255);
  else {
    head.push(m | 127);
    const big = BigInt(len);
    for (let i = 7; i >= 0; i--) head.push(Number((big >> BigInt(i * 8)) & 0xffn));
  }
  const key = mask ? crypto.getRandomValues(new Uint8Array(4)) : new Uint8Array();
  const out = new Uint8Array(head.length + key.length + f.payload.length);
  out.set(head);
  out.set(key, head.length);
  const off = head.length + key.length;
  for (let i = 0; i < f.payload.length; i++) {
    out[off + i] = mask ? f.payload[i] ^ key[i & 3] : f.payload[i];
  }
  return out;
}

export interface RawWsConnect {
  /** https://host:port (wss) or http://host:port (ws) */
  url: string;
  path: string;
  headers?: Record<string, string>;
  caCert?: string;
}

export class RawWebSocket {
  #conn: Deno.Conn;
  #buf = new Uint8Array(0);
  /** the status line of the upgrade answer */
  readonly status: string;

  private constructor(conn: Deno.Conn, status: string) {
    this.#conn = conn;
    this.status = status;
  }

  /** Opens the connection and upgrades it; throws with the status line if it is refused. */
  static async connect(o: RawWsConnect): Promise<RawWebSocket> {
    const u = new URL(o.url);
    const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
    const conn: Deno.Conn = u.protocol === "https:"
      ? await Deno.connectTls({ hostname: u.hostname, port, caCerts: o.caCert ? [o.caCert] : [] })
      : await Deno.connect({ hostname: u.hostname, port });
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    const extra = Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    const ws = new RawWebSocket(conn, "");
    try {
      await ws.write(enc.encode(
        `GET ${o.path} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
          `${extra}\r\n`,
      ));
      let end = -1;
      while ((end = headerEnd(ws.#buf)) < 0) await ws.#fill();
      const head = dec.decode(ws.#buf.subarray(0, end));
      const status = head.split("\r\n")[0];
      if (!/^HTTP\/1\.1 101/.test(status)) {
        const body = dec.decode(ws.#buf.subarray(end + 4)).slice(0, 500);
        throw new UpgradeRefused(status, body);
      }
      const opened = new RawWebSocket(conn, status);
      opened.#buf = ws.#buf.slice(end + 4);
      return opened;
    } catch (e) {
      try {
        conn.close();
      } catch { /* closed */ }
      throw e;
    }
  }

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("raw ws: connection closed");
    const b = new Uint8Array(this.#buf.length + n);
    b.set(this.#buf);
    b.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = b;
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) await this.#fill();
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Writes raw bytes (a frame from encodeRawFrame, or garbage). */
  async write(b: Uint8Array): Promise<void> {
    for (let off = 0; off < b.length;) off += await this.#conn.write(b.subarray(off));
  }

  sendFrame(f: RawFrame): Promise<void> {
    return this.write(encodeRawFrame(f));
  }

  sendText(text: string): Promise<void> {
    return this.sendFrame({ opcode: 0x1, payload: enc.encode(text) });
  }

  /**
   * Next data message (answers pings unless `answerPings` is false); a close frame gives
   * { close: code, reason }; null when the connection ends without one.
   */
  async next(answerPings = true): Promise<
    Uint8Array | string | { close: number; reason: string } | null
  > {
    const parts: Uint8Array[] = [];
    let kind = 0;
    try {
      for (;;) {
        const [b0, b1] = await this.#take(2);
        let len = b1 & 0x7f;
        if (len === 126) len = new DataView((await this.#take(2)).buffer).getUint16(0);
        else if (len === 127) {
          len = Number(new DataView((await this.#take(8)).buffer).getBigUint64(0));
        }
        const payload = await this.#take(len); // server frames are not masked
        const op = b0 & 0x0f;
        if (op === 0x8) {
          const code = payload.length >= 2 ? (payload[0] << 8) | payload[1] : 1005;
          return { close: code, reason: dec.decode(payload.subarray(2)) };
        }
        if (op === 0x9) {
          if (answerPings) await this.sendFrame({ opcode: 0xa, payload });
          continue;
        }
        if (op === 0xa) continue;
        if (op !== 0) kind = op;
        parts.push(payload);
        if (b0 & 0x80) {
          const all = parts.length === 1 ? parts[0] : concat(parts);
          return kind === 0x1 ? dec.decode(all) : all;
        }
      }
    } catch {
      return null;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

export class UpgradeRefused extends Error {
  constructor(readonly statusLine: string, readonly body: string) {
    super(`upgrade refused: ${statusLine} ${body}`);
  }
}

function headerEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export type RawMessage = Awaited<ReturnType<RawWebSocket["next"]>>;

export interface Drained {
  messages: Array<Uint8Array | string>;
  /** the close frame's code, or null when the connection ended without one */
  close: number | null;
  timedOut: boolean;
}

/**
 * Reads messages until the server closes (or `timeoutMs` passes: then the connection is cut and
 * `timedOut` set); `onMessage` may answer (e.g. send a stop once a capture started).
 */
export async function drain(
  ws: RawWebSocket,
  timeoutMs: number,
  onMessage: (m: Uint8Array | string) => void | Promise<void> = () => {},
): Promise<Drained> {
  const out: Drained = { messages: [], close: null, timedOut: false };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs));
  try {
    while (true) {
      const m = await Promise.race([ws.next(), timeout]);
      if (m === "timeout") {
        out.timedOut = true;
        break;
      }
      if (m === null) break;
      if (typeof m === "object" && "close" in m) {
        out.close = m.close;
        break;
      }
      out.messages.push(m);
      await onMessage(m);
    }
  } finally {
    clearTimeout(timer);
    ws.close();
  }
  return out;
}
