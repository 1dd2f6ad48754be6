/**
 * The raw side of a capture WebSocket's upgrade (node:http's `upgrade` event): the request checks
 * of RFC 6455 §4.2.1, the peer, and the bytes a client sends before the 101 (it must not, §4.1;
 * what it sends while its token is verified is held up to one message, else the connection is
 * cut). The token and the waiting-sockets caps are app.ts's; the framing is ws_connection.ts's.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { MAX_CONTROL_MESSAGE_BYTES } from "../protocol/messages.ts";
import { ApiError } from "./errors.ts";
import type { ClientPeer } from "./capture_audit.ts";
import { remoteAddressOf } from "./http_listener.ts";

/** what a client may send before the 101: one frame header and message */
const MAX_EARLY_BYTES = MAX_CONTROL_MESSAGE_BYTES + 14;

export interface UpgradeRequest {
  url: URL;
  key: string;
  peer: ClientPeer;
  authorization?: string;
}

/** The upgrade request of a route in `paths`, or the HTTP refusal (404, 400) of it (pure). */
export function readUpgrade(
  req: IncomingMessage,
  paths: readonly string[],
  remote: string | undefined,
): UpgradeRequest | ApiError {
  const url = new URL(req.url ?? "/", "http://api.invalid");
  const protocol = String(req.headers.upgrade ?? "").toLowerCase();
  if (protocol !== "websocket") {
    // e.g. `Upgrade: h2c` from curl --http2: said plainly, not as a missing WebSocket route
    return new ApiError(
      "INVALID_REQUEST",
      `Upgrade: ${protocol.slice(0, 40)} is not supported: the api speaks HTTP/1.1, and ` +
        "WebSocket on its capture routes; send the request without the Upgrade header",
      undefined,
      400,
    );
  }
  if (!paths.includes(url.pathname) || req.method !== "GET") {
    return new ApiError(
      "INVALID_REQUEST",
      `no WebSocket at ${req.method} ${url.pathname}`,
      undefined,
      404,
    );
  }
  const key = req.headers["sec-websocket-key"];
  if (
    String(req.headers.upgrade).toLowerCase() !== "websocket" || typeof key !== "string" ||
    !/^[A-Za-z0-9+/]{22}==$/.test(key) || req.headers["sec-websocket-version"] !== "13"
  ) {
    return new ApiError(
      "INVALID_REQUEST",
      "not a WebSocket upgrade (RFC 6455, version 13); connect with a pcap client",
      undefined,
      400,
    );
  }
  const forwarded = req.headers["x-forwarded-for"];
  return {
    url,
    key,
    authorization: req.headers.authorization,
    peer: {
      remote,
      forwardedFor: (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.slice(0, 512),
    },
  };
}

/** The peer of an upgrade's socket. */
export function upgradePeerAddress(socket: Duplex): string | undefined {
  return remoteAddressOf(socket);
}

/**
 * Holds what the client sends before the 101, up to one message; more cuts the connection.
 * `take()` stops holding and returns it, for the WebSocket's first bytes.
 */
export class EarlyBytes {
  readonly #chunks: Uint8Array[];
  #bytes: number;
  readonly #onData = (chunk: Buffer) => {
    this.#bytes += chunk.byteLength;
    if (this.#bytes > MAX_EARLY_BYTES) this.socket.destroy();
    else this.#chunks.push(chunk);
  };

  constructor(readonly socket: Duplex, head: Uint8Array) {
    this.#chunks = [head];
    this.#bytes = head.byteLength;
    if (this.#bytes > MAX_EARLY_BYTES) socket.destroy();
    else socket.on("data", this.#onData);
  }

  take(): Uint8Array {
    this.socket.off("data", this.#onData);
    return Buffer.concat(this.#chunks);
  }
}
