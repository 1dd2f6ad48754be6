/**
 * The merged stream towards one client (DESIGN §6, slow client): every frame goes out as one
 * WebSocket binary message; PACKETS frames are discarded while the client is congested, control
 * frames (SOURCE, STATUS, STATS, END) never are.
 *
 * Congestion is measured on the socket's `bufferedAmount` with the hysteresis of
 * `buffer{size,upper_limit,lower_limit}`, counted in FRAMES (WebSocket messages) still unsent, as
 * pcap-release counted messages in its channel. Because one frame may hold up to ~1 MiB of
 * packets, bytes are bounded too: `maxBufferedBytes` scaled by the same upper/size and
 * lower/size ratios. Both feed one level, max(frames, bytes·size/maxBufferedBytes), into
 * lib/hysteresis.ts: congested when either bound is reached; cleared when both are at or below
 * the lower marks.
 *
 * Control frames count in that level like any other, and they are bounded too: while congested
 * only the latest STATS of each source is kept (sent when the congestion clears, before a STATUS
 * of that source, and before END), agents' STATUS are truncated and rate-limited upstream
 * (agent_status.ts), and `maxHeldBytes` (default twice maxBufferedBytes) is a hard cap on what
 * the api holds for the client, control frames included: beyond it the merger sends one
 * LIMIT_REACHED, sends nothing more, and the session ends. Memory per capture therefore stays
 * below maxHeldBytes whatever the client and the agents do.
 */
import {
  enclosingFrame,
  encodeFrame,
  encodeJsonFrame,
  FrameKind,
  setFrameSource,
} from "../protocol/frame_codec.ts";
import { type SourceStats, status } from "../protocol/messages.ts";
import { type BufferLimits, Hysteresis } from "../lib/hysteresis.ts";

/** Frame source for messages about the capture as a whole (no SOURCE frame announces it). */
export const API_SOURCE = 0xffff;
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/**
 * A congested client whose buffered bytes have not fallen for this long counts as stalled: the
 * fan-out then reads its agents again (packets are discarded here, control frames count towards
 * the hard cap), so that a client that stopped reading is ended by the cap, not waited for.
 */
export const STALL_MS = 1_000;
/** The hard cap's name in its LIMIT_REACHED. */
export const HELD_BYTES_LIMIT = "client_buffer_bytes";

export interface SocketLike {
  send(data: Uint8Array): void;
  readonly bufferedAmount: number;
  readonly readyState: number;
  /**
   * Called after every completed write, i.e. whenever bufferedAmount fell (server/ws_connection.ts
   * has it): while congested the merger re-evaluates then, so that held-back agents are read again
   * as soon as the client has drained, not at the next tick of the 50 ms timer.
   */
  onWritten?: (() => void) | null;
}

export interface CongestionLimits extends BufferLimits {
  /** the byte bound that corresponds to `size` frames */
  maxBufferedBytes?: number;
  /** hard cap on bytes held for the client, control frames included (default 2 × maxBufferedBytes) */
  maxHeldBytes?: number;
}

/**
 * Frames still unsent, derived from bufferedAmount: the socket sends in order, so the unsent
 * bytes are the tail of what was queued; frames wholly sent are dropped from the head.
 */
export class FlightTracker {
  #sizes: number[] = [];
  #head = 0;
  #queued = 0;

  push(size: number): void {
    this.#sizes.push(size);
    this.#queued += size;
  }

  /** Frames (partly) unsent given the socket's bufferedAmount. */
  update(buffered: number): number {
    while (this.#head < this.#sizes.length && this.#queued - this.#sizes[this.#head] >= buffered) {
      this.#queued -= this.#sizes[this.#head++];
    }
    if (this.#head > 1024 && this.#head * 2 > this.#sizes.length) {
      this.#sizes = this.#sizes.slice(this.#head);
      this.#head = 0;
    }
    return this.#sizes.length - this.#head;
  }
}

export interface MergerHooks {
  /** a CONGESTED episode began (for metrics) */
  onCongested?(): void;
  /**
   * the hard cap was exceeded: the merger has sent its LIMIT_REACHED (`text`, `limit`) and sends
   * nothing more; the session must end
   */
  onOverflow?(text: string, limit: { name: string; value: number }): void;
}

const OPEN = 1;

export class ClientMerger {
  readonly #socket: SocketLike;
  readonly #hysteresis: Hysteresis;
  readonly #size: number;
  readonly #maxBufferedBytes: number;
  readonly #maxHeldBytes: number;
  readonly #hooks: MergerHooks;
  /** the latest STATS of each source, held while congested */
  readonly #pendingStats = new Map<number, SourceStats>();
  #overflowed = false;
  readonly #flight = new FlightTracker();
  readonly #origins = new Map<number, string>();
  readonly #dropped = new Map<number, number>();
  #episode = new Map<number, number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  /** waiters of released(): woken when congestion clears, the client stalls, or sending ends */
  #waiters: (() => void)[] = [];
  /** bufferedAmount at the last evaluation, and when it last fell (the client made progress) */
  #lastBuffered = 0;
  #progressAt = 0;
  /** frames and bytes sent so far (for tests and metrics) */
  sentFrames = 0;
  sentBytes = 0;
  /** highest bufferedAmount seen: what a slow client made the api hold */
  bufferedHighWater = 0;

  constructor(socket: SocketLike, limits: CongestionLimits, hooks: MergerHooks = {}) {
    this.#socket = socket;
    this.#hysteresis = new Hysteresis(limits);
    this.#size = limits.size;
    this.#maxBufferedBytes = limits.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.#maxHeldBytes = limits.maxHeldBytes ?? 2 * this.#maxBufferedBytes;
    this.#hooks = hooks;
    if ("onWritten" in socket) socket.onWritten = () => this.#onWritten();
  }

  /** A write completed: while congested, the client may have drained below the lower mark. */
  #onWritten(): void {
    if (this.#timer === undefined) return;
    this.#evaluate();
    if (this.#waiters.length && !this.holdsBack) this.#wake();
  }

  /** the hard cap was exceeded: nothing more is sent */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  get congested(): boolean {
    return this.#hysteresis.congested;
  }

  get open(): boolean {
    return this.#socket.readyState === OPEN;
  }

  /**
   * True while the agents' streams should not be read: the client is congested but still
   * draining (not stalled for STALL_MS), and the merger can still send. The fan-out then waits
   * on released(), so that the agents' own back-pressure drops the excess, before TLS.
   */
  get holdsBack(): boolean {
    // Only streams whose socket stops when unread are held (AgentCapture.stopsWhenUnread): Deno's
    // node:https keeps reading a paused response, which would pile the bytes up in the api.
    return this.congested && this.open && !this.#overflowed && this.#timer !== undefined &&
      performance.now() - this.#progressAt < STALL_MS;
  }

  /** Resolves once holdsBack is false (at once if it is false now). */
  released(): Promise<void> {
    if (!this.holdsBack) return Promise.resolve();
    return new Promise((r) => this.#waiters.push(r));
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const r of w) r();
  }

  /** Remembers a source's origin for congestion texts. */
  addSource(source: number, origin: string): void {
    this.#origins.set(source, origin);
  }

  /** Packets of `source` discarded by the api so far. */
  dropped(source: number): number {
    return this.#dropped.get(source) ?? 0;
  }

  /** Sends a frame that is never discarded (HELLO, SOURCE, PING, END) below the hard cap. */
  control(frame: Uint8Array): void {
    // Every source's last STATS goes out before the END of the capture.
    if (frame[0] === FrameKind.END) this.#flushStats();
    this.#send(frame);
  }

  status(source: number, ...args: Parameters<typeof status>): void {
    // A source's STATS precede its STATUS (e.g. the final STATS before CAPTURE_STOPPED).
    this.#flushStats(source);
    this.#send(encodeJsonFrame(FrameKind.STATUS, source, status(...args)));
  }

  /**
   * STATS for `source` with the api's own discards filled in. While congested only the latest
   * of each source is kept: they are cumulative, so the client loses nothing by it.
   */
  stats(source: number, stats: SourceStats): void {
    if (this.congested) {
      this.#pendingStats.set(source, stats);
      return;
    }
    this.#pendingStats.delete(source);
    this.#sendStats(source, stats);
  }

  #sendStats(source: number, stats: SourceStats): void {
    this.#send(
      encodeJsonFrame(FrameKind.STATS, source, { ...stats, api_dropped: this.dropped(source) }),
    );
  }

  /** Sends the held STATS of `source`, or of every source. */
  #flushStats(source?: number): void {
    for (const [s, stats] of [...this.#pendingStats]) {
      if (source !== undefined && s !== source) continue;
      this.#pendingStats.delete(s);
      this.#sendStats(s, stats);
    }
  }

  /**
   * Offers one PACKETS frame (payload = u32 count + records) of `count` packets. Returns true if
   * it was sent, false if discarded because the client is congested.
   */
  packets(source: number, payload: Uint8Array, count: number): boolean {
    this.#evaluate();
    if (this.congested) {
      this.#dropped.set(source, this.dropped(source) + count);
      this.#episode.set(source, (this.#episode.get(source) ?? 0) + count);
      return false;
    }
    // An agent's frame as received (owned, exactly sized) goes out as is under the client's
    // source number; anything else (a truncated batch, a borrowed frame) is encoded anew.
    const frame = enclosingFrame(payload, FrameKind.PACKETS);
    if (frame) setFrameSource(frame, source);
    this.#send(frame ?? encodeFrame(FrameKind.PACKETS, source, payload));
    this.#evaluate();
    return true;
  }

  /** Stops the congestion timer; call when the session ends. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#wake();
  }

  #send(frame: Uint8Array): void {
    if (!this.open || this.#overflowed) return;
    const held = this.#socket.bufferedAmount + frame.byteLength;
    if (held > this.#maxHeldBytes) {
      this.#overflow(held);
      return;
    }
    this.#write(frame);
  }

  /** The client holds up more than the hard cap: one last STATUS (past the cap), then nothing. */
  #overflow(held: number): void {
    this.#overflowed = true;
    this.#pendingStats.clear();
    const limit = { name: HELD_BYTES_LIMIT, value: this.#maxHeldBytes };
    const text = `the client reads too slowly: the api would hold ${held} bytes for it, over its ` +
      `hard cap of ${this.#maxHeldBytes} (packets are discarded while congested, status and ` +
      "statistics are not); the capture is ended";
    this.#write(
      encodeJsonFrame(
        FrameKind.STATUS,
        API_SOURCE,
        status("LIMIT_REACHED", "api", text, { limit }),
      ),
    );
    this.close();
    this.#hooks.onOverflow?.(text, limit);
  }

  #write(frame: Uint8Array): void {
    this.#socket.send(frame);
    this.#flight.push(frame.byteLength);
    this.sentFrames++;
    this.sentBytes += frame.byteLength;
  }

  #evaluate(): void {
    if (!this.open) return this.#wake();
    const bytes = this.#socket.bufferedAmount;
    if (bytes > this.bufferedHighWater) this.bufferedHighWater = bytes;
    if (bytes < this.#lastBuffered) this.#progressAt = performance.now();
    this.#lastBuffered = bytes;
    const frames = this.#flight.update(bytes);
    // Bytes in frame units: either bound reaching its upper mark congests, and clearing needs
    // both at their lower marks.
    const level = Math.max(frames, (bytes * this.#size) / this.#maxBufferedBytes);
    const change = this.#hysteresis.observe(level);
    if (change === "congested") {
      this.#progressAt = performance.now();
      this.#episode = new Map();
      this.#hooks.onCongested?.();
      this.status(
        API_SOURCE,
        "CONGESTED",
        "api",
        // Where the packets go depends on the streams: the agents discard those the api holds
        // back (their STATS say agent_dropped), the api those it reads on (api_dropped).
        "the client reads too slowly; packets are discarded until it catches up, by the agents " +
          "while the api holds their streams back, otherwise by the api",
        { counts: { buffered_frames: frames, buffered_bytes: bytes } },
      );
      // Clearing (and a stall) must be noticed even when no packets arrive to trigger an
      // evaluation.
      this.#timer = setInterval(() => {
        this.#evaluate();
        if (this.#waiters.length && !this.holdsBack) this.#wake();
      }, 50);
    } else if (change === "cleared") {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#flushStats();
      let total = 0;
      const parts: string[] = [];
      for (const [source, n] of this.#episode) {
        total += n;
        parts.push(`${this.#origins.get(source) ?? `source ${source}`}: ${n}`);
      }
      this.status(
        API_SOURCE,
        "CONGESTED",
        "api",
        `congestion towards the client cleared; the api discarded ${total} packet(s)` +
          (parts.length ? ` (${parts.join(", ")})` : ""),
        { counts: { cleared: 1, api_dropped: total } },
      );
      this.#wake();
    }
  }
}

// The PACKETS helpers live in protocol/records.ts; these names stay for existing importers.
export {
  packetsBytes as batchBytes,
  truncatePackets as truncateBatch,
} from "../protocol/records.ts";
