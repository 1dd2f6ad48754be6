/**
 * A WebSocket client (RFC 6455) for the api's capture stream when `--ca-cert` is given, over the
 * TLS transport of cli/tls_transport.ts, which trusts exactly that CA (Deno's WebSocket takes a
 * Deno.HttpClient, whose `caCerts` are trusted in addition to the default roots): by default
 * `Deno.connectTls` with a CA-only issuer check, read into one reused buffer; node:tls when this
 * Deno lacks the hook the check needs. The TLS connection carries the frames directly; the
 * framing is lib/ws_framing.ts, shared with the api's server side, and copies each message's
 * payload once out of the read buffer (nothing keeps a view into it), into a buffer of the
 * caller's pool when one is given and the message is large (lib/frame_pool.ts). Only what
 * cli/api_session.ts uses of the WebSocket API: binary messages as Uint8Array (a view of a pooled
 * buffer, or its own), text sends, close with code and reason, open/message/error/close handlers.
 *
 * @example
 * ```ts
 * import { TlsWebSocket } from "./tls_websocket.ts";
 *
 * declare const caPem: string;
 * const ws = new TlsWebSocket(new URL("wss://pcap-api.example/v1/capture/bosh"), caPem, {
 *   Authorization: "Bearer …",
 * });
 * ws.onmessage = (ev) => console.log(ev.data);
 * ```
 *
 * @module
 */
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  CLOSED,
  closePayload,
  CLOSING,
  CONNECTING,
  encodeWsFrame,
  FrameDecoder,
  FramingError,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  OPEN,
  parseClose,
  type PayloadPool,
} from "../lib/ws_framing.ts";
import {
  type ByteTransport,
  openTlsTransport,
  tlsErrorText,
  type TransportKind,
} from "./tls_transport.ts";

export { tlsErrorText };

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Upper bound of one message (the api's frames are ≤ ~1 MiB; a bound keeps a broken peer out). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Upper bound of the upgrade response's headers. */
const MAX_HEADER_BYTES = 16 * 1024;
/** Upper bound of a refused upgrade's body that is read (the api's `{type, text}` answer). */
const MAX_REFUSAL_BYTES = 8 * 1024;

export interface TlsWebSocketOptions {
  /** the transport (tests choose; by default connectTls where this Deno supports it) */
  transport?: TransportKind;
  /** where large messages are decoded into; the consumer gives each buffer back when done */
  pool?: PayloadPool;
}

export interface TlsWsCloseEvent {
  code: number;
  reason: string;
}

export class TlsWebSocket {
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;

  readyState = CONNECTING;
  /** kept for the WebSocket API's shape: binary messages are always Uint8Arrays */
  binaryType = "arraybuffer";
  onopen: (() => void) | null = null;
  onmessage: ((ev: { data: Uint8Array | string }) => void) | null = null;
  onerror: ((ev: { message: string }) => void) | null = null;
  onclose: ((ev: TlsWsCloseEvent) => void) | null = null;
  /** why the TLS connection failed (certificate, refused), for the user */
  tlsError: string | undefined;
  /** the api's own `{type, text}` answer when it refused the upgrade (e.g. its 502's reason) */
  refusal: { type: string; text: string } | undefined;

  readonly #socket: ByteTransport;
  readonly #key = crypto.getRandomValues(new Uint8Array(16));
  #upgraded = false;
  #head = "";
  readonly #decoder: FrameDecoder;
  #closeSent = false;
  #closeEvent: TlsWsCloseEvent = { code: 1006, reason: "" };
  #closed = false;
  /** a refused upgrade whose (small) body is still being read */
  #refused: { code: number; body: Uint8Array; filled: number } | null = null;

  constructor(
    readonly target: URL,
    ca: string,
    headers: Record<string, string>,
    options: TlsWebSocketOptions = {},
  ) {
    if (target.protocol !== "wss:") throw new Error(`TlsWebSocket: ${target} is not a wss: URL`);
    this.#decoder = new FrameDecoder({
      maxMessageBytes: MAX_MESSAGE_BYTES,
      masked: false,
      peer: "the api",
      pool: options.pool,
    });
    this.#socket = openTlsTransport(target, ca, {
      onSecure: () => {
        const lines = [
          `GET ${target.pathname}${target.search} HTTP/1.1`,
          `Host: ${target.host}`,
          "Upgrade: websocket",
          "Connection: Upgrade",
          `Sec-WebSocket-Key: ${btoa(String.fromCharCode(...this.#key))}`,
          "Sec-WebSocket-Version: 13",
          ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
        ];
        this.#socket.write(lines.join("\r\n") + "\r\n\r\n");
      },
      onData: (bytes) => {
        try {
          this.#onData(bytes);
        } catch (e) {
          this.#fail((e as Error).message, e instanceof FramingError ? e.code : 1002);
        }
      },
      onError: (e) => {
        if (!this.#upgraded) this.tlsError = tlsErrorText(e, target.host);
        this.#emitError(this.tlsError ?? e.message);
      },
      onClose: () => this.#finish(),
    }, options.transport);
  }

  /** Which transport carries this connection ("connectTls", or the "node:tls" fallback). */
  get transport(): TransportKind {
    return this.#socket.kind;
  }

  /** Sends a text message (the client's control requests). */
  send(text: string): void {
    if (this.readyState !== OPEN) throw new Error("TlsWebSocket: not open");
    this.#sendFrame(OP_TEXT, new TextEncoder().encode(text));
  }

  /** Starts the closing handshake; the close event follows when the api answers or leaves. */
  close(code = 1000, reason = ""): void {
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;
    if (this.readyState === CONNECTING) {
      this.readyState = CLOSING;
      this.#socket.destroy();
      return;
    }
    this.readyState = CLOSING;
    this.#sendClose(code, reason);
  }

  #onData(data: Uint8Array): void {
    if (this.#refused) return this.#onRefusalBody(data);
    if (!this.#upgraded) {
      data = this.#onHead(data);
      if (this.#refused) return this.#onRefusalBody(data);
      if (!this.#upgraded) return;
    }
    for (const f of this.#decoder.push(data)) {
      if (this.#closed) return;
      if (f.opcode >= 8) this.#control(f.opcode, f.payload);
      else this.#deliver(f.opcode, f.payload);
    }
  }

  #deliver(op: number, payload: Uint8Array): void {
    if (this.readyState !== OPEN) return;
    const data = op === OP_TEXT
      ? new TextDecoder("utf-8", { fatal: true }).decode(payload)
      : payload;
    this.onmessage?.({ data });
  }

  #control(op: number, payload: Uint8Array): void {
    if (op === OP_PING) return this.#sendFrame(OP_PONG, payload);
    if (op !== OP_CLOSE) return;
    const { code, reason } = parseClose(payload);
    this.#closeEvent = { code, reason };
    if (!this.#closeSent) this.#sendClose(code === 1005 ? 1000 : code, "");
    this.readyState = CLOSING;
    this.#socket.end();
  }

  /** The HTTP upgrade response; returns the bytes after it. */
  #onHead(data: Uint8Array): Uint8Array {
    // latin1: one char per byte, so the index of the blank line is a byte offset
    this.#head += Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("latin1");
    const end = this.#head.indexOf("\r\n\r\n");
    if (end < 0) {
      if (this.#head.length > MAX_HEADER_BYTES) {
        throw new Error("the api's upgrade answer is too long");
      }
      return new Uint8Array(0);
    }
    const rest = data.subarray(data.byteLength - (this.#head.length - end - 4));
    const [status, ...lines] = this.#head.slice(0, end).split("\r\n");
    this.#head = "";
    const code = Number(/^HTTP\/1\.1 (\d{3})/.exec(status)?.[1] ?? 0);
    if (code !== 101) {
      // The api says why in a small JSON body (the 502 of an unusable UAA or Cloud Controller)
      const length = Number(
        lines.find((l) => /^content-length:/i.test(l))?.replace(/^[^:]*:\s*/, "") ?? NaN,
      );
      if (Number.isInteger(length) && length > 0 && length <= MAX_REFUSAL_BYTES) {
        this.#refused = { code, body: new Uint8Array(length), filled: 0 };
        return rest;
      }
      throw refusedError(code);
    }
    const accept = lines.find((l) => /^sec-websocket-accept:/i.test(l))?.replace(/^[^:]*:\s*/, "");
    const want = createHash("sha1").update(btoa(String.fromCharCode(...this.#key)) + GUID)
      .digest("base64");
    if (accept?.trim() !== want) {
      throw new Error("the api answered the upgrade without a valid accept key");
    }
    this.#upgraded = true;
    this.readyState = OPEN;
    this.onopen?.();
    return rest;
  }

  /** Collects a refused upgrade's body; once complete, fails with the status (and its reason). */
  #onRefusalBody(data: Uint8Array): void {
    const r = this.#refused!;
    const n = Math.min(data.byteLength, r.body.byteLength - r.filled);
    r.body.set(data.subarray(0, n), r.filled);
    r.filled += n;
    if (r.filled < r.body.byteLength) return;
    this.refusal = refusalOf(new TextDecoder().decode(r.body));
    throw refusedError(r.code);
  }

  #sendClose(code: number, reason: string): void {
    this.#closeSent = true;
    this.#sendFrame(OP_CLOSE, closePayload(code, reason));
  }

  /** One masked frame (clients must mask, RFC 6455 §5.3). */
  #sendFrame(op: number, payload: Uint8Array): void {
    this.#socket.write(encodeWsFrame(op, payload, crypto.getRandomValues(new Uint8Array(4))));
  }

  #fail(message: string, code: number): void {
    this.#emitError(message);
    if (this.readyState === OPEN) {
      this.readyState = CLOSING;
      this.#sendClose(code, message.slice(0, 100));
    }
    this.#socket.destroy();
  }

  #emitError(message: string): void {
    if (this.#closed) return;
    this.onerror?.({ message });
  }

  #finish(): void {
    if (this.#closed) return;
    // closed before the refusal's body was complete: the status alone
    if (this.#refused && this.#refused.filled < this.#refused.body.byteLength) {
      this.#emitError(refusedError(this.#refused.code).message);
    }
    this.#closed = true;
    this.readyState = CLOSED;
    this.onclose?.(this.#closeEvent);
  }
}

/** The same wording as Deno's WebSocket, which api_session.ts reads the status from. */
function refusedError(code: number): Error {
  return new Error(`Invalid status code: ${code}`);
}

/** The api's error body `{type, text}` (server/errors.ts), or undefined for anything else. */
function refusalOf(body: string): { type: string; text: string } | undefined {
  try {
    const v = JSON.parse(body);
    if (typeof v?.type === "string" && typeof v?.text === "string" && v.text) {
      return { type: v.type.slice(0, 40), text: v.text.slice(0, 1000) };
    }
  } catch { /* not the api's answer */ }
  return undefined;
}
