/**
 * The api's listener: node:http, or node:https when listen.tls is set, serving the Hono app
 * through @hono/node-server, and handing WebSocket upgrades (the `upgrade` event: the raw socket
 * and the bytes read after the request) to the api, which does its own framing
 * (server/ws_connection.ts) so that it bounds what a client can make it buffer.
 */
import {
  createServer as createHttp,
  type IncomingMessage,
  type Server,
  STATUS_CODES,
} from "node:http";
import { createServer as createHttps } from "node:https";
import type { Duplex } from "node:stream";
import { createHash } from "node:crypto";
import type { Buffer } from "node:buffer";
import { getRequestListener } from "@hono/node-server";
import { settledWithin } from "../lib/deadline.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export interface ListenerOptions {
  address: string;
  port: number;
  tls?: { cert: string; key: string };
  fetch: (req: Request, env: unknown) => Response | Promise<Response>;
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
}

export class HttpListener {
  private constructor(readonly server: Server, readonly port: number) {}

  static async start(o: ListenerOptions): Promise<HttpListener> {
    const listener = getRequestListener(o.fetch, { overrideGlobalObjects: false });
    const server: Server = o.tls
      ? createHttps({ cert: o.tls.cert, key: o.tls.key, minVersion: "TLSv1.2" }, listener)
      : createHttp(listener);
    server.on("upgrade", o.onUpgrade);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.port, o.address, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = server.address();
    return new HttpListener(server, typeof bound === "object" && bound ? bound.port : o.port);
  }

  /** Stops accepting; requests in flight get `graceMs` to finish, then every connection is cut. */
  async close(graceMs = 2000): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    if (!await settledWithin(closed, graceMs)) this.server.closeAllConnections();
    await settledWithin(closed, graceMs);
  }
}

/** The peer address of a socket (Deno's TLS socket keeps it on its TCP socket, `_parent`). */
export function remoteAddressOf(socket: Duplex): string | undefined {
  const s = socket as Duplex & { remoteAddress?: string; _parent?: { remoteAddress?: string } };
  return s.remoteAddress ?? s._parent?.remoteAddress;
}

/** The 101 answer to an upgrade with this Sec-WebSocket-Key. */
export function switchingProtocols(key: string): string {
  const accept = createHash("sha1").update(key + GUID).digest("base64");
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`;
}

/** How long a refused upgrade's socket may stay open after its answer (a peer that never closes). */
export const REFUSED_LINGER_MS = 5_000;

/**
 * Writes a whole HTTP answer on a raw socket and ends it (a refused upgrade). Never rejects: a
 * failure destroys the socket. An upgraded socket no longer has node:http's timeouts and half-open
 * handling, so the socket is destroyed REFUSED_LINGER_MS after the answer whether or not the peer
 * closes its side: a refused client cannot hold an fd.
 */
export async function writeResponse(socket: Duplex, res: Response): Promise<void> {
  try {
    const body = new Uint8Array(await res.arrayBuffer());
    const lines = [`HTTP/1.1 ${res.status} ${STATUS_CODES[res.status] ?? "Error"}`];
    res.headers.forEach((v, k) => {
      if (k !== "content-length" && k !== "connection") lines.push(`${k}: ${v}`);
    });
    lines.push(`content-length: ${body.byteLength}`, "connection: close");
    if (socket.destroyed) return;
    socket.write(lines.join("\r\n") + "\r\n\r\n");
    socket.end(body);
    const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    Deno.unrefTimer(linger);
    socket.once("close", () => clearTimeout(linger));
  } catch {
    socket.destroy();
  }
}
