/**
 * The merged stream towards one client (DESIGN §6, slow client): every frame goes out as one
 * WebSocket binary message; PACKETS frames are discarded while the client is congested, control
 * frames (SOURCE, STATUS, STATS, END) never are.
 *
 * Congestion is measured on the socket's `bufferedAmount` with the hysteresis of
 * `buffer{size,upper_limit,lower_limit}`, counted in FRAMES (WebSocket messages) still unsent, as
 * pcap-release counted messages in its channel. Because one frame may hold up to ~1 MiB of
 * packets, bytes are bounded too: `maxBufferedBytes` scaled by the same upper/size and
 * lower/size ratios. Congested when either bound is reached; cleared when both are below the
 * lower marks. Memory per capture therefore stays near maxBufferedBytes whatever the client does.
 */
import {
  enclosingFrame,
  encodeFrame,
  encodeJsonFrame,
  FrameKind,
  setFrameSource,
} from "../protocol/frame_codec.ts";
import { type SourceStats, status } from "../protocol/messages.ts";

/** Frame source for messages about the capture as a whole (no SOURCE frame announces it). */
export const API_SOURCE = 0xffff;
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

export interface SocketLike {
  send(data: Uint8Array): void;
  readonly bufferedAmount: number;
  readonly readyState: number;
}

export interface CongestionLimits {
  size: number;
  upperLimit: number;
  lowerLimit: number;
  maxBufferedBytes?: number;
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
}

const OPEN = 1;

export class ClientMerger {
  readonly #socket: SocketLike;
  readonly #limits: Required<CongestionLimits>;
  readonly #hooks: MergerHooks;
  readonly #flight = new FlightTracker();
  readonly #origins = new Map<number, string>();
  readonly #dropped = new Map<number, number>();
  #episode = new Map<number, number>();
  #congested = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** frames and bytes sent so far (for tests and metrics) */
  sentFrames = 0;
  sentBytes = 0;
  /** highest bufferedAmount seen: what a slow client made the api hold */
  bufferedHighWater = 0;

  constructor(socket: SocketLike, limits: CongestionLimits, hooks: MergerHooks = {}) {
    this.#socket = socket;
    this.#limits = { maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES, ...limits };
    this.#hooks = hooks;
  }

  get congested(): boolean {
    return this.#congested;
  }

  get open(): boolean {
    return this.#socket.readyState === OPEN;
  }

  /** Remembers a source's origin for congestion texts. */
  addSource(source: number, origin: string): void {
    this.#origins.set(source, origin);
  }

  /** Packets of `source` discarded by the api so far. */
  dropped(source: number): number {
    return this.#dropped.get(source) ?? 0;
  }

  /** Sends a frame that must never be discarded (HELLO, SOURCE, STATUS, STATS, PING, END). */
  control(frame: Uint8Array): void {
    this.#send(frame);
  }

  status(source: number, ...args: Parameters<typeof status>): void {
    this.#send(encodeJsonFrame(FrameKind.STATUS, source, status(...args)));
  }

  /** STATS for `source` with the api's own discards filled in. */
  stats(source: number, stats: SourceStats): void {
    this.#send(
      encodeJsonFrame(FrameKind.STATS, source, { ...stats, api_dropped: this.dropped(source) }),
    );
  }

  /**
   * Offers one PACKETS frame (payload = u32 count + records) of `count` packets. Returns true if
   * it was sent, false if discarded because the client is congested.
   */
  packets(source: number, payload: Uint8Array, count: number): boolean {
    this.#evaluate();
    if (this.#congested) {
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
  }

  #send(frame: Uint8Array): void {
    if (!this.open) return;
    this.#socket.send(frame);
    this.#flight.push(frame.byteLength);
    this.sentFrames++;
    this.sentBytes += frame.byteLength;
  }

  #evaluate(): void {
    if (!this.open) return;
    const bytes = this.#socket.bufferedAmount;
    if (bytes > this.bufferedHighWater) this.bufferedHighWater = bytes;
    const frames = this.#flight.update(bytes);
    const { size, upperLimit, lowerLimit, maxBufferedBytes } = this.#limits;
    if (!this.#congested) {
      if (frames >= upperLimit || bytes >= (maxBufferedBytes * upperLimit) / size) {
        this.#congested = true;
        this.#episode = new Map();
        this.#hooks.onCongested?.();
        this.status(
          API_SOURCE,
          "CONGESTED",
          "api",
          "the client reads too slowly; the api discards packets until it catches up",
          { counts: { buffered_frames: frames, buffered_bytes: bytes } },
        );
        // Clearing must be noticed even when no packets arrive to trigger an evaluation.
        this.#timer = setInterval(() => this.#evaluate(), 50);
      }
    } else if (frames <= lowerLimit && bytes <= (maxBufferedBytes * lowerLimit) / size) {
      this.#congested = false;
      clearInterval(this.#timer);
      this.#timer = undefined;
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
    }
  }
}

// The PACKETS helpers live in protocol/records.ts; these names stay for existing importers.
export {
  packetsBytes as batchBytes,
  truncatePackets as truncateBatch,
} from "../protocol/records.ts";
