/**
 * The server side of one client WebSocket (RFC 6455) on the raw socket of an HTTP upgrade, with
 * the framing of lib/ws_framing.ts. It exists so that the api bounds what a client can make it
 * hold: a frame header or fragments passing `maxMessageBytes` close the connection with 1009
 * before any of that message's payload beyond the limit is read (Deno's WebSocket assembles a
 * fragmented message of any size before the api sees it).
 *
 * The shape is what ClientSession uses of a WebSocket: `send`, `close(code, reason)`,
 * `readyState`, and `bufferedAmount` as payload bytes sent and not yet written out, which is what
 * the merger's back-pressure reads. A peer silent for `idleTimeoutMs` is sent a ping; silent for
 * another `idleTimeoutMs`, it is cut. Writes completing while more waits behind them count as a
 * sign of life too: the ping waits behind what the socket holds, and a slow client that keeps
 * draining must not be cut for it (a vanished one only fills the kernel's buffers).
 *
 * Our close waits behind what was sent before it, so its timeout starts once it is written; until
 * then the connection is cut only if writes stop completing for `drainStallMs` (the client stopped
 * reading), or after DRAIN_MAX_MS in all. The peer's close ends the session at once (`onClose`):
 * what is queued is dropped and our close answers it as soon as the socket takes it.
 *
 * Messages wait in a queue of their own and are handed to the socket only while less than
 * `WIRE_WINDOW` is in its hands: a node stream writes everything buffered behind a pending write
 * as one batch (writev) whose callbacks fire together when all of it is out, so with the whole
 * backlog in the socket bufferedAmount would fall in steps of many megabytes seconds apart, and
 * a slow but draining client would look stalled to the merger (merge.ts STALL_MS).
 */
import type { Duplex } from "node:stream";
import type { Buffer } from "node:buffer";
import {
  CLOSE_INVALID_DATA,
  CLOSE_PROTOCOL_ERROR,
  CLOSE_TOO_BIG,
  CLOSED,
  closePayload,
  CLOSING,
  CONNECTING,
  encodeWsFrame,
  FrameDecoder,
  frameHeader,
  frameInPlace,
  FramingError,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  OPEN,
  parseClose,
  validCloseCode,
  type WsFrame,
} from "../lib/ws_framing.ts";

/** payloads up to this size are copied behind their header: one write instead of two */
const COPY_BELOW = 16 * 1024;
/** pongs are not queued behind this much unsent data (a ping flood of a client not reading) */
const PONG_BACKLOG = 1024 * 1024;
/**
 * nor while this many pongs are still unwritten: each write costs the socket ~1 KiB of its own
 * besides its bytes, so a byte bound alone let 200,000 tiny pings grow the api by ~180 MB
 * (tests/chaos/hostile_http_test.ts, long form); RFC 6455 §5.5.3 lets a pong answer only the
 * latest ping
 */
const PONGS_IN_FLIGHT = 16;
/** how long a written close waits for the peer's close before the connection is cut */
const CLOSE_TIMEOUT_MS = 5000;
/** our close waiting behind the queue: the cut if no write completes for this long */
const DRAIN_STALL_MS = 10_000;
/** our close waiting behind the queue: the cut however the client drains */
const DRAIN_MAX_MS = 120_000;
/** a violation's close: the cut after this long */
const FAIL_TIMEOUT_MS = 1000;
/**
 * bytes handed to the socket whose write has not completed; more waits in the queue. With the
 * agents' ~256 KiB frames: one frame being written and one behind it, so a fast client is never
 * left waiting on the api, and a slow one shows progress a frame at a time (what the socket
 * batches behind a pending write completes only as a whole).
 */
const WIRE_WINDOW = 512 * 1024;

/**
 * Frees a written frame's memory now rather than at the next full GC. A frame waits in the queue
 * for seconds behind a slow client, long enough to be promoted to V8's old generation, so once
 * written it would stay allocated until the next major GC: with 10 agents and a slow client
 * (bench/api_memory.ts) such garbage kept ArrayBuffer memory ~20 MB above what the queue held
 * and made the api's peak RSS ~35 MB higher. Detaching the ArrayBuffer (transfer) releases its
 * backing store at once. It runs only from the write's callback, i.e. once the socket is done
 * with the bytes; every other view onto that memory (e.g. the agent frame it came from) dies too.
 */
function release(frame: Uint8Array): void {
  try {
    (frame.buffer as ArrayBuffer).transfer(0);
  } catch { /* not detachable: left to the GC */ }
}

/** one queued write: a frame's parts (written corked), its payload size, what follows it */
interface Queued {
  parts: Uint8Array[];
  payload: number;
  /** run once the parts are handed to the socket (the end after a close) */
  then?: () => void;
  /** run once their write completed */
  written?: () => void;
}

export interface WsConnectionOptions {
  maxMessageBytes: number;
  /** 0: no idle timeout */
  idleTimeoutMs: number;
  /** how long our written close waits for the peer's (default 5 s) */
  closeTimeoutMs?: number;
  /** how long our close, queued behind data, waits with no write completing (default 10 s) */
  drainStallMs?: number;
  onMessage(data: string | ArrayBuffer): void;
  /**
   * the connection ended, or the peer's close arrived (nothing more reaches the peer's
   * application then; the socket closes within the close timeout); once
   */
  onClose(code: number, reason: string): void;
  /** a message over the limit: called before the 1009 close, with what was exceeded */
  onTooBig?(text: string): void;
  /** any other framing violation, before its close */
  onProtocolError?(text: string): void;
}

export class WsConnection {
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;

  readyState = OPEN;
  readonly #socket: Duplex;
  readonly #o: WsConnectionOptions;
  readonly #decoder: FrameDecoder;
  /** payload bytes sent (queued or in the socket's hands) and not yet written out */
  #unsent = 0;
  readonly #queue: Queued[] = [];
  #queueHead = 0;
  /** bytes handed to the socket whose write callback has not fired */
  #wire = 0;
  /** writes completed: progress of a client that reads */
  #writes = 0;
  /** writes completed while more waited behind them: the client is reading */
  #taken = 0;
  /** our close frame, while it waits in the queue */
  #closeFrame: Queued | undefined;
  /** run once our close frame is handed to the socket */
  #closeThen: (() => void) | undefined;
  /** our close frame was handed to the socket: nothing more may be written */
  #closeHanded = false;
  /** the peer's close arrived */
  #peerClose = false;
  #closeEvent = { code: 1006, reason: "" };
  #told = false;
  #heard = true;
  #pinged = false;
  #idleTaken = 0;
  #idleTimer: ReturnType<typeof setInterval> | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #drainTimer: ReturnType<typeof setInterval> | undefined;
  /** reading stopped for good (a violation, or the peer's close) */
  #deaf = false;
  /** pongs handed to the socket whose write has not completed */
  #pongsInFlight = 0;

  constructor(socket: Duplex, head: Uint8Array, o: WsConnectionOptions) {
    this.#socket = socket;
    this.#o = o;
    this.#decoder = new FrameDecoder({
      maxMessageBytes: o.maxMessageBytes,
      masked: true,
      peer: "the client",
    });
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", () => socket.destroy());
    // a half-close without a close frame: nothing more will come, the connection is over (1006)
    socket.on("end", () => {
      if (!this.#peerClose) socket.destroy();
    });
    socket.on("close", () => this.#finish());
    if (o.idleTimeoutMs > 0) {
      this.#idleTimer = setInterval(() => this.#idleTick(), o.idleTimeoutMs);
    }
    if (head.byteLength) queueMicrotask(() => this.#onData(head));
  }

  get bufferedAmount(): number {
    return this.#unsent;
  }

  /** Called after each completed write of a message (bufferedAmount fell); see merge.ts. */
  onWritten: (() => void) | null = null;

  /**
   * Sends one message: bytes as binary, a string as text. Dropped unless open. A withHeaderRoom
   * payload (lib/ws_framing.ts) is handed over: once written (the write callback, never in this
   * turn) its buffer is detached and freed, so the caller must not keep it or any view onto it.
   */
  send(data: Uint8Array | string): void {
    if (this.readyState !== OPEN) return;
    const text = typeof data === "string";
    const payload = text ? new TextEncoder().encode(data) : data;
    const op = text ? OP_TEXT : OP_BINARY;
    const len = payload.byteLength;
    this.#unsent += len;
    // An agent's frame forwarded as is has room for the header before it (agent_client.ts):
    // one buffer, one write, no join.
    const whole = len < COPY_BELOW ? encodeWsFrame(op, payload) : frameInPlace(op, payload);
    this.#enqueue({
      parts: whole ? [whole] : [frameHeader(op, len), payload],
      payload: len,
      // `whole` is ours (a copy, or a withHeaderRoom frame handed over): freed once written
      written: whole ? () => release(whole) : undefined,
    });
  }

  #enqueue(q: Queued): void {
    this.#queue.push(q);
    this.#pump();
  }

  /** Hands queued frames to the socket while less than WIRE_WINDOW is in its hands. */
  #pump(): void {
    const socket = this.#socket;
    while (this.#wire < WIRE_WINDOW && this.#queueHead < this.#queue.length) {
      if (socket.destroyed || socket.writableEnded) return;
      const q = this.#queue[this.#queueHead];
      this.#queue[this.#queueHead++] = undefined as unknown as Queued;
      let bytes = 0;
      for (const p of q.parts) bytes += p.byteLength;
      this.#wire += bytes;
      const done = () => {
        this.#wire -= bytes;
        this.#unsent -= q.payload;
        this.#writes++;
        // With more still waiting the kernel's buffers are full: this write went out because the
        // client took data. Without, it may just have filled them (a vanished client too).
        if (socket.writableLength > 0 || this.#queueHead < this.#queue.length) this.#taken++;
        q.written?.();
        this.#pump();
        this.onWritten?.();
      };
      if (q.parts.length === 0) this.#wire -= bytes; // a marker: only its `then`
      else if (q.parts.length === 1) socket.write(q.parts[0], done);
      else {
        // corked: header and payload go out in one write (one TLS record sequence), not two;
        // measured a third less CPU per MB than two writes (bench/api_ws_send.ts)
        socket.cork();
        for (let i = 0; i < q.parts.length - 1; i++) socket.write(q.parts[i]);
        socket.write(q.parts[q.parts.length - 1], done);
        socket.uncork();
      }
      q.then?.();
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
  }

  /**
   * Starts the closing handshake behind what is queued. The peer's close is awaited for the close
   * timeout once ours is written; until then the connection is cut only if the client stalls.
   */
  close(code = 1000, reason = ""): void {
    if (this.readyState !== OPEN) return;
    this.readyState = CLOSING;
    this.#sendClose(code, reason);
    // until our close is written (its `written` replaces this with the close timeout)
    const started = Date.now(), stallMs = this.#o.drainStallMs ?? DRAIN_STALL_MS;
    let writes = this.#writes, progressAt = started;
    this.#drainTimer = setInterval(() => {
      const now = Date.now();
      if (this.#writes !== writes) [writes, progressAt] = [this.#writes, now];
      if (now - progressAt < stallMs && now - started < DRAIN_MAX_MS) return;
      this.#closeEvent = { code: 1006, reason: "the client stopped reading before the close" };
      this.#socket.destroy();
    }, stallMs / 4);
  }

  #onData(chunk: Uint8Array): void {
    if (this.#deaf) return;
    this.#heard = true;
    this.#pinged = false;
    let frames: WsFrame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (e) {
      if (!(e instanceof FramingError)) throw e;
      const tooBig = e.code === CLOSE_TOO_BIG;
      this.#fail(e.code, tooBig ? "message too big" : e.message, () => {
        if (tooBig) this.#o.onTooBig?.(e.message);
        else this.#o.onProtocolError?.(e.message);
      });
      return;
    }
    for (const f of frames) {
      if (this.#deaf) return;
      this.#frame(f);
    }
  }

  #frame(f: WsFrame): void {
    if (f.opcode === OP_PING) {
      // Answering every ping of a client that reads nothing would queue pongs without bound.
      if (
        this.#pongsInFlight < PONGS_IN_FLIGHT && this.#socket.writableLength < PONG_BACKLOG &&
        this.#write(OP_PONG, f.payload, () => this.#pongsInFlight--)
      ) this.#pongsInFlight++;
      return;
    }
    if (f.opcode === OP_PONG) return;
    if (f.opcode === OP_CLOSE) {
      let close: { code: number; reason: string };
      try {
        close = parseClose(f.payload);
        if (f.payload.byteLength >= 2 && !validCloseCode(close.code)) {
          throw new FramingError(CLOSE_PROTOCOL_ERROR, `close code ${close.code} is not allowed`);
        }
      } catch (e) {
        const text = (e as Error).message;
        this.#fail((e as FramingError).code, text, () => this.#o.onProtocolError?.(text));
        return;
      }
      this.#peerClosed(close);
      return;
    }
    if (this.readyState !== OPEN) return;
    if (f.opcode === OP_TEXT) {
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(f.payload);
      } catch {
        this.#fail(
          CLOSE_INVALID_DATA,
          "text message is not UTF-8",
          () => this.#o.onProtocolError?.("the client sent text that is not UTF-8"),
        );
        return;
      }
      this.#o.onMessage(text);
    } else {
      // the decoder gives each message its own exactly sized buffer
      this.#o.onMessage(f.payload.buffer as ArrayBuffer);
    }
  }

  /**
   * The peer closed: it reads no more messages, so what is queued is dropped and our close
   * answers at once (RFC 6455 §5.5.1), then the server closes the TCP connection (§7.1.1).
   */
  #peerClosed(close: { code: number; reason: string }): void {
    this.#closeEvent = close;
    this.#peerClose = true;
    this.#deaf = true;
    this.readyState = CLOSING;
    const end = () => this.#socket.end(() => this.#socket.destroy());
    const ours = this.#closeFrame;
    this.#dropQueue();
    if (this.#closeHanded) this.#enqueue({ parts: [], payload: 0, then: end });
    else if (ours) {
      this.#closeThen = end;
      this.#enqueue(ours);
    } else this.#sendClose(close.code === 1005 ? 1000 : close.code, "", end);
    this.#cutAfter(this.#o.closeTimeoutMs ?? CLOSE_TIMEOUT_MS);
    this.#tell();
  }

  /**
   * Says why and ends the connection, cut after a second at most. The queue is dropped first, so
   * that what `tell` sends (the session's STATUS) goes out ahead of the close. What still arrives
   * is dropped as it comes: pausing the socket would not stop Deno's TLS socket from reading, only
   * make it hold what it read.
   */
  #fail(code: number, reason: string, tell?: () => void): void {
    this.#deaf = true;
    const ours = this.#closeFrame;
    this.#dropQueue();
    tell?.();
    this.#closeEvent = { code, reason };
    this.readyState = CLOSING;
    // only one close may be sent: close() queued one before, or `tell` did behind what it sent
    const toldClose = this.#closeFrame !== ours;
    if (ours && !toldClose) this.#enqueue(ours);
    else if (!toldClose && !this.#closeHanded) this.#sendClose(code, reason, undefined, true);
    this.#cutAfter(FAIL_TIMEOUT_MS);
  }

  #cutAfter(ms: number): void {
    clearInterval(this.#drainTimer);
    clearTimeout(this.#closeTimer);
    this.#closeTimer = setTimeout(() => this.#socket.destroy(), ms);
  }

  #idleTick(): void {
    // closing: the close timers decide
    if (this.readyState !== OPEN) return;
    const taken = this.#taken;
    if (this.#heard || taken !== this.#idleTaken) {
      this.#heard = false;
      this.#idleTaken = taken;
      return;
    }
    if (this.#pinged) {
      this.#closeEvent = { code: 1006, reason: "no pong within the idle timeout" };
      this.#socket.destroy();
      return;
    }
    this.#pinged = true;
    this.#write(OP_PING, new Uint8Array());
  }

  /**
   * The close goes behind the messages queued before it: nothing may follow it. Once written,
   * the peer's close is awaited for the close timeout (a violation's close: the cut).
   */
  #sendClose(code: number, reason: string, then?: () => void, destroy = false): void {
    this.#closeThen = then;
    const q: Queued = {
      parts: [encodeWsFrame(OP_CLOSE, closePayload(code, reason))],
      payload: 0,
      then: () => {
        this.#closeFrame = undefined;
        this.#closeHanded = true;
        this.#closeThen?.();
      },
      written: () => {
        if (destroy) this.#socket.destroy();
        else if (!this.#deaf) this.#cutAfter(this.#o.closeTimeoutMs ?? CLOSE_TIMEOUT_MS);
      },
    };
    this.#closeFrame = q;
    this.#enqueue(q);
  }

  /** What is queued will never be written: it no longer counts as buffered. */
  #dropQueue(): void {
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      this.#unsent -= this.#queue[i].payload;
    }
    this.#queue.length = 0;
    this.#queueHead = 0;
  }

  /** A ping or pong, ahead of the queue (control frames may come between messages). */
  /** A control frame; false when it was not written (closing or closed). */
  #write(op: number, payload: Uint8Array, done?: () => void): boolean {
    if (this.#closeHanded || this.#socket.destroyed || this.#socket.writableEnded) return false;
    this.#socket.write(encodeWsFrame(op, payload), done);
    return true;
  }

  #tell(): void {
    if (this.#told) return;
    this.#told = true;
    this.#o.onClose(this.#closeEvent.code, this.#closeEvent.reason);
  }

  #finish(): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.#dropQueue();
    clearInterval(this.#idleTimer);
    clearInterval(this.#drainTimer);
    clearTimeout(this.#closeTimer);
    this.#tell();
  }
}
