/**
 * The client end of the api's capture WebSocket (docs/protocol.md "Client API").
 *
 * The token travels in the `Authorization` header of the upgrade request, never in the URL; a
 * private CA (`--ca-cert`) is the only CA trusted, through cli/tls_websocket.ts (a WebSocket over
 * Deno.connectTls with a CA-only issuer check, or node:tls; Deno's WebSocket, through a Deno
 * HttpClient, would trust it in addition to the default roots). Every binary message is exactly one
 * frame; protocol/events.ts turns it into a typed event, validating JSON payloads with the
 * protocol's zod schemas, so that the capture flow only ever sees well-formed values.
 */
import { IdleWatch } from "../lib/idle_watch.ts";
import { DecodeError } from "../protocol/decode_error.ts";
import type { BoshStartRequest } from "../protocol/messages.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";
import { decodeMessageEvent, type StreamEvent } from "../protocol/events.ts";
import { TlsWebSocket } from "./tls_websocket.ts";
import type { PayloadPool } from "../lib/ws_framing.ts";

/** What the client reads from the api: the protocol's typed events. */
export type ApiEvent = StreamEvent;

/** One WebSocket message → one typed event. Throws DecodeError for anything malformed. Pure. */
export function decodeApiMessage(data: ArrayBuffer | Uint8Array | string): ApiEvent {
  return decodeMessageEvent(data, "the api");
}

/** `https://api:443/base` + `/v1/capture/bosh` → `wss://api:443/base/v1/capture/bosh`. */
export function webSocketUrl(apiUrl: string, path: string): string {
  const u = new URL(apiUrl);
  u.protocol = u.protocol === "http:" ? "ws:" : "wss:";
  u.pathname = u.pathname.replace(/\/$/, "") + path;
  return u.toString();
}

export interface ApiSessionOptions {
  /** base URL of the api (https://…) */
  apiUrl: string;
  /** e.g. `/v1/capture/bosh` */
  path: string;
  /** `Bearer eyJ…`; never logged */
  authorization: string;
  /** PEM of the CA to trust instead of the default roots (wss: URLs) */
  caCert?: string;
  /**
   * where the TLS socket decodes large messages into (wss: with caCert only); a packets event's
   * records are then a view of a pooled buffer, which the consumer gives back when done with it
   */
  pool?: PayloadPool;
  /** give up connecting after this long (default 30 s) */
  connectTimeoutMs?: number;
  /**
   * give up when nothing arrives for this long once connected (default 45 s; the api sends a
   * PING after 15 s of silence, so only a dead path or api stays silent this long)
   */
  idleTimeoutMs?: number;
}

/** Default bound on silence from the api (three of its 15 s keepalive intervals). */
const API_IDLE_TIMEOUT_MS = 45_000;
/** How long a close may wait for the closing handshake over a dead path. */
const CLOSE_GRACE_MS = 2_000;

export interface SessionHandlers {
  /** every decoded message, in order */
  onEvent(e: ApiEvent): void;
  /** a message that could not be decoded; the session closes itself after this */
  onProtocolError(e: DecodeError): void;
}

export interface SessionClosed {
  code: number;
  reason: string;
  /** whether the socket was ever open */
  opened: boolean;
  /** a transport error seen before the close, if any */
  error?: string;
  /** the api went silent: the connection was given up as lost */
  lost?: boolean;
  /**
   * the HTTP status that refused the upgrade (401: the token was refused), when the runtime's
   * error names it; the socket never opened
   */
  httpStatus?: number;
  /** the api's own `{type, text}` for that refusal, when the transport could read it */
  refusal?: { type: string; text: string };
}

/** The HTTP status in Deno's error for a refused upgrade ("Invalid status code: 401"). */
export function refusedUpgradeStatus(error: string | undefined): number | undefined {
  const m = /status code:? (\d{3})\b/i.exec(error ?? "");
  return m ? Number(m[1]) : undefined;
}

/**
 * One capture WebSocket. `start` sends the start request once the socket is open; `stop` asks
 * the api to drain; `close` ends it at once. `closed` resolves (never rejects) when it is over.
 */
/** What the session uses of a WebSocket: Deno's, or cli/tls_websocket.ts's. */
type SessionSocket = Pick<
  WebSocket,
  "readyState" | "binaryType" | "send" | "close" | "onopen" | "onmessage" | "onerror" | "onclose"
>;

export class ApiSession {
  readonly url: string;
  readonly closed: Promise<SessionClosed>;
  #ws: SessionSocket;
  #tls: TlsWebSocket | undefined;
  #opened = false;
  #error: string | undefined;
  #pendingStart: string | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #idle: IdleWatch | undefined;
  /** closed or lost: no idle watch any more */
  #idleDone = false;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #idleTimeoutMs: number;
  #lost = false;
  #resolveClosed!: (c: SessionClosed) => void;

  constructor(opts: ApiSessionOptions, handlers: SessionHandlers) {
    this.url = webSocketUrl(opts.apiUrl, opts.path);
    const target = new URL(this.url);
    const headers = { Authorization: opts.authorization };
    this.#tls = opts.caCert && target.protocol === "wss:"
      ? new TlsWebSocket(target, opts.caCert, headers, { pool: opts.pool })
      : undefined;
    this.#ws = this.#tls
      ? this.#tls as unknown as SessionSocket
      : new WebSocket(this.url, { headers });
    this.#ws.binaryType = "arraybuffer";
    const timeoutMs = opts.connectTimeoutMs ?? 30_000;
    this.#connectTimer = setTimeout(() => {
      this.#error = `no connection within ${timeoutMs / 1000} s`;
      this.close();
    }, timeoutMs);
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? API_IDLE_TIMEOUT_MS;
    let settled = false;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = (c) => {
        if (settled) return;
        settled = true;
        clearTimeout(this.#connectTimer);
        this.#stopIdle();
        clearTimeout(this.#graceTimer);
        // the TLS reason beats the WebSocket's generic one
        if (this.#tls?.tlsError && !c.opened) c = { ...c, error: this.#tls.tlsError };
        resolve(c);
      };
      this.#ws.onclose = (ev) => {
        const httpStatus = this.#opened ? undefined : refusedUpgradeStatus(this.#error);
        const refusal = httpStatus === undefined ? undefined : this.#tls?.refusal;
        this.#resolveClosed({
          code: ev.code,
          reason: ev.reason,
          opened: this.#opened,
          error: this.#error,
          lost: this.#lost || undefined,
          ...(httpStatus === undefined ? {} : { httpStatus }),
          ...(refusal ? { refusal } : {}),
        });
      };
    });
    this.#ws.onopen = () => {
      clearTimeout(this.#connectTimer);
      this.#opened = true;
      this.#resetIdle();
      if (this.#pendingStart) this.#ws.send(this.#pendingStart);
    };
    this.#ws.onerror = (ev) => {
      const msg = (ev as ErrorEvent).message;
      if (msg && !this.#error) this.#error = msg;
    };
    this.#ws.onmessage = (ev) => {
      if (this.#ws.readyState !== WebSocket.OPEN) return;
      this.#resetIdle();
      let event: ApiEvent;
      try {
        event = decodeApiMessage(ev.data);
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
        handlers.onProtocolError(e);
        this.close(1000, "protocol error");
        return;
      }
      handlers.onEvent(event);
    };
  }

  /** Every message (PINGs included) proves the api and the path are alive. */
  #resetIdle(): void {
    if (this.#idle) return this.#idle.touch();
    if (this.#idleDone || this.#idleTimeoutMs <= 0 || this.#lost) return;
    this.#idle = new IdleWatch(this.#idleTimeoutMs, () => this.#onSilent());
  }

  #stopIdle(): void {
    this.#idleDone = true;
    this.#idle?.stop();
  }

  #onSilent(): void {
    this.#lost = true;
    this.#error = `connection to the pcap api lost: nothing received for ` +
      `${Math.round(this.#idleTimeoutMs / 1000)} s (the api sends a keepalive every 15 s)`;
    this.close(1000, "api silent");
    // Over a dead path the closing handshake never completes; do not wait for it.
    this.#graceTimer = setTimeout(() =>
      this.#resolveClosed({
        code: 1006,
        reason: "",
        opened: this.#opened,
        error: this.#error,
        lost: true,
      }), CLOSE_GRACE_MS);
  }

  get isOpen(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  /** Sends the start request now, or as soon as the socket opens. */
  start(req: BoshStartRequest | CfStartRequest): void {
    const text = JSON.stringify(req);
    if (this.isOpen) this.#ws.send(text);
    else this.#pendingStart = text;
  }

  /** Asks the api for a clean stop (it drains and ends with END). False if not connected. */
  stop(): boolean {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify({ type: "stop" }));
    return true;
  }

  /** Closes at once; `closed` resolves soon after. Idempotent. */
  close(code = 1000, reason = "client closed"): void {
    clearTimeout(this.#connectTimer);
    this.#stopIdle();
    const s = this.#ws.readyState;
    if (s === WebSocket.CLOSING || s === WebSocket.CLOSED) return;
    try {
      this.#ws.close(code, reason);
    } catch {
      this.#ws.close();
    }
  }
}
