/**
 * A WebSocket client (RFC 6455) over node:tls, for the api's capture stream when `--ca-cert` is
 * given: node:tls trusts exactly its `ca` (Deno's WebSocket takes a Deno.HttpClient, whose
 * `caCerts` are trusted in addition to the default roots). The TLS socket carries the frames
 * directly: no local bridge, no second socket, one copy of each message's payload out of the TLS
 * chunks. Only what cli/api_session.ts uses of the WebSocket API: binary messages as
 * ArrayBuffer, text sends, close with code and reason, open/message/error/close handlers.
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
import tls from "node:tls";
import { isIP } from "node:net";
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Upper bound of one message (the api's frames are ≤ ~1 MiB; a bound keeps a broken peer out). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Upper bound of the upgrade response's headers. */
const MAX_HEADER_BYTES = 16 * 1024;
/** Upper bound of a refused upgrade's body that is read (the api's `{type, text}` answer). */
const MAX_REFUSAL_BYTES = 8 * 1024;

const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;

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
  /** kept for the WebSocket API's shape: binary messages are always ArrayBuffers */
  binaryType = "arraybuffer";
  onopen: (() => void) | null = null;
  onmessage: ((ev: { data: ArrayBuffer | string }) => void) | null = null;
  onerror: ((ev: { message: string }) => void) | null = null;
  onclose: ((ev: TlsWsCloseEvent) => void) | null = null;
  /** why the TLS connection failed (certificate, refused), for the user */
  tlsError: string | undefined;
  /** the api's own `{type, text}` answer when it refused the upgrade (e.g. its 502's reason) */
  refusal: { type: string; text: string } | undefined;

  readonly #socket: tls.TLSSocket;
  readonly #key = crypto.getRandomValues(new Uint8Array(16));
  #upgraded = false;
  #head = "";
  /** unparsed bytes after the upgrade (a frame header split across chunks) */
  #pending: Uint8Array = new Uint8Array(0);
  /** the message being received: its payload buffer, bytes filled, opcode */
  #msg: { buf: Uint8Array; filled: number; frameLeft: number; op: number; fin: boolean } | null =
    null;
  #fragments: Uint8Array[] = [];
  #fragmentsBytes = 0;
  #fragmentOp = 0;
  #closeSent = false;
  #closeEvent: TlsWsCloseEvent = { code: 1006, reason: "" };
  #closed = false;
  /** a refused upgrade whose (small) body is still being read */
  #refused: { code: number; body: Uint8Array; filled: number } | null = null;

  constructor(readonly target: URL, ca: string, headers: Record<string, string>) {
    if (target.protocol !== "wss:") throw new Error(`TlsWebSocket: ${target} is not a wss: URL`);
    const host = target.hostname.replace(/^\[|\]$/g, "");
    this.#socket = tls.connect({
      host,
      port: Number(target.port || 443),
      // SNI and the name checked: the api's host name; an address is checked as an IP SAN
      ...(isIP(host) ? {} : { servername: host }),
      ca,
      rejectUnauthorized: true,
      ALPNProtocols: ["http/1.1"],
      minVersion: "TLSv1.2",
    });
    this.#socket.setNoDelay(true);
    this.#socket.once("secureConnect", () => {
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
    });
    this.#socket.on("data", (chunk: Buffer) => {
      try {
        this.#onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      } catch (e) {
        this.#fail((e as Error).message, 1002);
      }
    });
    this.#socket.on("error", (e: Error & { code?: string }) => {
      if (!this.#upgraded) this.tlsError = tlsErrorText(e, target.host);
      this.#emitError(this.tlsError ?? e.message);
    });
    this.#socket.on("close", () => this.#finish());
  }

  /** Sends a text message (the client's control requests). */
  send(text: string): void {
    if (this.readyState !== OPEN) throw new Error("TlsWebSocket: not open");
    this.#sendFrame(1, new TextEncoder().encode(text));
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
    if (this.#pending.byteLength) {
      const all = new Uint8Array(this.#pending.byteLength + data.byteLength);
      all.set(this.#pending);
      all.set(data, this.#pending.byteLength);
      data = all;
      this.#pending = new Uint8Array(0);
    }
    let off = 0;
    while (off < data.byteLength && !this.#closed) {
      if (this.#msg) {
        // payload of the frame in progress: copied once into the message's own buffer
        const m = this.#msg;
        const n = Math.min(m.frameLeft, data.byteLength - off);
        m.buf.set(data.subarray(off, off + n), m.filled);
        m.filled += n;
        m.frameLeft -= n;
        off += n;
        if (m.frameLeft === 0) this.#frameDone();
        continue;
      }
      const used = this.#frameHeader(data, off);
      if (used === 0) {
        this.#pending = data.slice(off);
        return;
      }
      off += used;
    }
  }

  /** Parses one frame header at `off`; returns its length, 0 if incomplete. */
  #frameHeader(d: Uint8Array, off: number): number {
    const avail = d.byteLength - off;
    if (avail < 2) return 0;
    const b0 = d[off], b1 = d[off + 1];
    if (b1 & 0x80) throw new Error("the api sent a masked frame");
    if (b0 & 0x70) throw new Error("the api sent a frame with reserved bits set");
    let len = b1 & 0x7f, hdr = 2;
    const v = new DataView(d.buffer, d.byteOffset + off);
    if (len === 126) {
      if (avail < 4) return 0;
      len = v.getUint16(2);
      hdr = 4;
    } else if (len === 127) {
      if (avail < 10) return 0;
      const big = v.getBigUint64(2);
      if (big > BigInt(MAX_MESSAGE_BYTES)) throw new Error("the api sent an oversized message");
      len = Number(big);
      hdr = 10;
    }
    const op = b0 & 0x0f, fin = (b0 & 0x80) !== 0;
    if (op >= 8 && (len > 125 || !fin)) throw new Error("the api sent a malformed control frame");
    if (len > MAX_MESSAGE_BYTES || this.#fragmentsBytes + len > MAX_MESSAGE_BYTES) {
      throw new Error("the api sent an oversized message");
    }
    this.#msg = { buf: new Uint8Array(len), filled: 0, frameLeft: len, op, fin };
    if (len === 0) this.#frameDone();
    return hdr;
  }

  #frameDone(): void {
    const m = this.#msg!;
    this.#msg = null;
    if (m.op >= 8) return this.#control(m.op, m.buf);
    if (m.op === 0) {
      if (!this.#fragmentOp) throw new Error("the api sent a continuation without a message");
    } else if (this.#fragmentOp) {
      throw new Error("the api interleaved two messages");
    } else if (m.op !== 1 && m.op !== 2) {
      throw new Error(`the api sent an unknown opcode ${m.op}`);
    }
    if (m.fin && !this.#fragmentOp) return this.#deliver(m.op, m.buf);
    if (!this.#fragmentOp) this.#fragmentOp = m.op;
    this.#fragments.push(m.buf);
    this.#fragmentsBytes += m.buf.byteLength;
    if (!m.fin) return;
    const all = new Uint8Array(this.#fragmentsBytes);
    let o = 0;
    for (const f of this.#fragments) {
      all.set(f, o);
      o += f.byteLength;
    }
    const op = this.#fragmentOp;
    this.#fragments = [];
    this.#fragmentsBytes = 0;
    this.#fragmentOp = 0;
    this.#deliver(op, all);
  }

  #deliver(op: number, payload: Uint8Array): void {
    if (this.readyState !== OPEN) return;
    const data = op === 1
      ? new TextDecoder("utf-8", { fatal: true }).decode(payload)
      : payload.buffer as ArrayBuffer;
    this.onmessage?.({ data });
  }

  #control(op: number, payload: Uint8Array): void {
    if (op === 9) return this.#sendFrame(10, payload); // ping → pong
    if (op === 10) return;
    if (op !== 8) throw new Error(`the api sent an unknown control opcode ${op}`);
    const code = payload.byteLength >= 2 ? (payload[0] << 8) | payload[1] : 1005;
    const reason = new TextDecoder().decode(payload.subarray(2));
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
    const r = new TextEncoder().encode(reason).subarray(0, 123);
    const p = new Uint8Array(2 + r.byteLength);
    p[0] = code >> 8;
    p[1] = code & 0xff;
    p.set(r, 2);
    this.#sendFrame(8, p);
  }

  /** One masked frame (clients must mask, RFC 6455 §5.3). */
  #sendFrame(op: number, payload: Uint8Array): void {
    if (this.#socket.destroyed) return;
    const len = payload.byteLength;
    const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
    const f = new Uint8Array(2 + ext + 4 + len);
    f[0] = 0x80 | op;
    f[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
    const v = new DataView(f.buffer);
    if (ext === 2) v.setUint16(2, len);
    if (ext === 8) v.setBigUint64(2, BigInt(len));
    const mask = crypto.getRandomValues(new Uint8Array(4));
    f.set(mask, 2 + ext);
    const o = 2 + ext + 4;
    for (let i = 0; i < len; i++) f[o + i] = payload[i] ^ mask[i & 3];
    this.#socket.write(f);
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

/** A node:tls failure as a sentence naming the api and what to check. */
export function tlsErrorText(e: Error & { code?: string }, host: string): string {
  const code = e.code ? ` (${e.code})` : "";
  if (/certificate|self.signed|issuer|verify|altname|CERT/i.test(`${e.message} ${e.code ?? ""}`)) {
    return `TLS: the certificate of ${host} is not trusted: ${e.message}${code}; ` +
      "only the CA given with --ca-cert is trusted";
  }
  return `${e.message}${code}`;
}
