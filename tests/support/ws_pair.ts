/**
 * The api's server-side WebSocket (server/ws_connection.ts) on a real loopback TCP connection,
 * with a client written with the shared codec that reads only when the test says so.
 */
import { createServer, type Server, type Socket } from "node:net";
import { WsConnection, type WsConnectionOptions } from "../../server/ws_connection.ts";
import { encodeWsFrame, FrameDecoder, type WsFrame } from "../../lib/ws_framing.ts";

const mask = () => crypto.getRandomValues(new Uint8Array(4));

export async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Pair {
  ws: WsConnection;
  conn: Deno.Conn;
  messages: (string | ArrayBuffer)[];
  closed: { code: number; reason: string } | null;
  tooBig: string[];
  /** frames the client read */
  frames: WsFrame[];
  /** payload bytes of the frames read */
  payloadRead(): number;
  read(): Promise<boolean>;
  send(op: number, payload: Uint8Array): Promise<void>;
  end(): Promise<void>;
}

/** `allowHalfOpen`: as node:http's server, which leaves a half-closed socket to its user */
export async function pair(
  o: Partial<WsConnectionOptions> = {},
  { allowHalfOpen = false } = {},
): Promise<Pair> {
  const accepted = Promise.withResolvers<Socket>();
  const server: Server = createServer({ allowHalfOpen }, (s) => accepted.resolve(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const socket = await accepted.promise;
  const decoder = new FrameDecoder({ maxMessageBytes: 1 << 26, masked: false, peer: "api" });
  const buf = new Uint8Array(256 * 1024);
  const p: Pair = {
    messages: [],
    closed: null,
    tooBig: [],
    frames: [],
    ws: null as unknown as WsConnection,
    conn,
    payloadRead: () => p.frames.reduce((n, f) => n + f.payload.byteLength, 0),
    async read() {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return false;
      p.frames.push(...decoder.push(buf.slice(0, n)));
      return true;
    },
    async send(op, payload) {
      const f = encodeWsFrame(op, payload, mask());
      for (let off = 0; off < f.length;) off += await conn.write(f.subarray(off));
    },
    async end() {
      try {
        conn.close();
      } catch { /* closed */ }
      socket.destroy();
      await until("server socket closed", () => p.closed !== null);
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  p.ws = new WsConnection(socket, new Uint8Array(), {
    maxMessageBytes: 1024,
    idleTimeoutMs: 0,
    onMessage: (m) => p.messages.push(m),
    onClose: (code, reason) => (p.closed = { code, reason }),
    onTooBig: (t) => p.tooBig.push(t),
    ...o,
  });
  return p;
}

export async function readUntil(p: Pair, what: string, cond: () => boolean): Promise<void> {
  while (!cond()) {
    if (!await p.read()) throw new Error(`${what}: connection ended first`);
  }
}
