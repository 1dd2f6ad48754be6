/**
 * One capture on this agent, from engine activation to END: turns engine batches into protocol v1
 * frames, handed out as HTTP/1.1 chunks by nextChunk() (pull-based: the stream writer asks once
 * the socket has drained), applies the back-pressure hysteresis, sends periodic and final STATS,
 * and ends every path (stop, duration, shutdown, engine failure) the same way: drain the engine,
 * final STATS, STATUS CAPTURE_STOPPED, END. An abort (client gone) closes the engine at once.
 */
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  FRAME_HEADER_BYTES,
  FrameKind,
  packetsFrameInPlace,
} from "../protocol/frame_codec.ts";
import {
  type AgentStartRequest,
  type SourceStats,
  status,
  type StatusMessage,
} from "../protocol/messages.ts";
import type { Logger } from "../lib/log.ts";
import { settledWithin } from "../lib/deadline.ts";
import { capturedBytes, PACKETS_COUNT_BYTES } from "../protocol/records.ts";
import { Backpressure, type BufferLimits, type Transition } from "./backpressure.ts";
import { ALONE_BYTES, CHUNK_ROOM, FrameQueue } from "./engine/frame_queue.ts";
import { FramePool } from "../lib/frame_pool.ts";
import { BATCH_ROOM, mayHold } from "./frame_in_place.ts";
import type { EngineLike, OpenEngine } from "./engine/engine_like.ts";
import {
  agentHello,
  congestionStatus,
  maxDurationStatus,
  sourceDescriptor,
  sourceStats,
} from "./session_messages.ts";

export type { EngineLike, EngineOpenOptions, OpenEngine } from "./engine/engine_like.ts";

export interface SessionOptions {
  id: string;
  /** Agent id: origin of every message. */
  origin: string;
  request: AgentStartRequest;
  buffer: BufferLimits;
  maxDurationMs: number;
  capture: { bufferSize?: number; timeoutMs: number };
  /** Namespace to capture in (tests run the "VM" in a namespace); absent = the agent's own. */
  netns?: string;
  peer: string;
  log: Logger;
  openEngine: OpenEngine;
  statsIntervalMs?: number;
  /** Called after an abort (e.g. to cut the HTTP connection). */
  onAbort?: (reason: string) => void;
  /** How long a finished stream may wait for a reader before it is cut (bounds memory). */
  lingerMs?: number;
}

export interface SessionSummary {
  id: string;
  outcome: "stopped" | "aborted" | "failed";
  reason: string;
  packets: number;
  bytes: number;
  discarded: number;
  /** Most packet frames ever queued for the socket (bounded by buffer.upper_limit). */
  peakQueued: number;
  kernelDropped: number;
  durationMs: number;
}

const SOURCE = 0;
/** A pooled frame buffer: a full batch of the capture engine (256 KiB) with headers and room. */
const POOL_BUFFER_BYTES = (256 << 10) + 64;
/**
 * Frame buffers in flight beyond the queue: one in the socket, one being built. The pool may keep
 * as many idle as the queue can hold plus these (what a deep queue has in use anyway): a stream
 * whose queue fills and drains again builds every frame in reused memory. trim() hands back each
 * second what was not used, so an idle or slower stream holds no more than its last interval used.
 */
const POOL_SPARE = 2;

export class CaptureSession {
  readonly done: Promise<SessionSummary>;
  readonly startedAt = Date.now();

  #engine: EngineLike;
  #opts: SessionOptions;
  #log: Logger;
  #bp: Backpressure;
  #queue = new FrameQueue();
  #pool: FramePool;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #stopReason: string | null = null;
  #ended = false; // END is queued (or the stream was aborted)
  #closed = false; // stream closed/cancelled, engine released
  #engineClosed = false;
  #sent = { packets: 0, bytes: 0 };
  #framesInPlace = 0; // PACKETS frames sent from the engine's queue, not copied
  #resolveDone!: (s: SessionSummary) => void;
  #outcome: SessionSummary["outcome"] = "stopped";

  private constructor(engine: EngineLike, opts: SessionOptions) {
    this.#engine = engine;
    this.#opts = opts;
    this.#log = opts.log;
    this.#bp = new Backpressure(opts.buffer);
    this.#pool = new FramePool(POOL_BUFFER_BYTES, opts.buffer.size + POOL_SPARE);
    this.done = new Promise((r) => (this.#resolveDone = r));
  }

  /** Activates the engine (rejects with the engine's CaptureError) and starts streaming. */
  static async open(opts: SessionOptions): Promise<CaptureSession> {
    const r = opts.request;
    const t0 = performance.now();
    const engine = await opts.openEngine({
      device: r.interface,
      netns: opts.netns,
      snaplen: r.snaplen,
      promiscuous: r.promiscuous,
      filter: r.filter,
      bufferSize: opts.capture.bufferSize,
      timeoutMs: opts.capture.timeoutMs,
      batchRoom: BATCH_ROOM,
    });
    const session = new CaptureSession(engine, opts);
    session.#begin(performance.now() - t0);
    return session;
  }

  get id(): string {
    return this.#opts.id;
  }

  get stopping(): boolean {
    return this.#stopReason !== null;
  }

  /** Graceful stop: the engine flushes, everything captured so far is sent, then END. */
  stop(reason: string): void {
    if (this.#stopReason !== null || this.#closed) return;
    this.#stopReason = reason;
    this.#clearTimers();
    this.#log.debug("capture stopping", { reason });
    // The engine's stop() itself delivers everything captured before this call (it
    // waits for the kernel to retire the block in filling); #pump sends it, then END.
    this.#engine.stop().catch((e) => {
      this.#log.warn("engine stop failed; closing it", { error: e });
      this.#releaseEngine();
    });
  }

  /** Immediate end (client gone or shutdown deadline): releases the engine, drops the rest. */
  abort(reason: string): void {
    if (this.#closed) return;
    if (!this.#ended) this.#outcome = "aborted";
    this.#stopReason ??= reason;
    this.#ended = true;
    this.#queue.clear();
    this.#releaseEngine();
    // nextChunk() returns null without END (truncated); the server's hook cuts the connection so
    // that an HTTP client notices too.
    this.#close(reason);
    this.#opts.onAbort?.(reason);
  }

  /** `openMs`: how long the engine took to activate (logged: fan-out start-up is mostly this). */
  #begin(openMs: number): void {
    const { request: r, origin } = this.#opts;
    this.#push(encodeJsonFrame(FrameKind.HELLO, SOURCE, agentHello(origin)));
    this.#push(
      encodeJsonFrame(
        FrameKind.SOURCE,
        SOURCE,
        sourceDescriptor(origin, r.interface, this.#engine),
      ),
    );
    const interval = this.#opts.statsIntervalMs ?? 1000;
    this.#timers.push(setInterval(() => {
      this.#pushStats(false);
      this.#pool.trim();
    }, interval));
    this.#armDuration();
    this.#log.info("capture started", {
      interface: r.interface,
      filter: r.filter,
      snaplen: r.snaplen,
      promiscuous: r.promiscuous,
      requester: r.requester,
      link_type: this.#engine.linkType,
      open_ms: Math.round(openMs * 10) / 10,
      ...(this.#engine.openSteps ? { open_steps: this.#engine.openSteps } : {}),
    });
    this.#pump();
  }

  #armDuration(): void {
    const { request, maxDurationMs } = this.#opts;
    const asked = request.duration_ms;
    if (asked !== undefined && asked <= maxDurationMs) {
      this.#timers.push(
        setTimeout(() => this.stop(`duration of ${asked / 1000} s elapsed`), asked),
      );
      return;
    }
    this.#timers.push(setTimeout(() => {
      const seconds = maxDurationMs / 1000;
      this.#pushStatus(maxDurationStatus(this.#opts.origin, seconds));
      this.stop(`maximum duration of ${seconds} s reached`);
    }, maxDurationMs));
  }

  async #pump(): Promise<void> {
    let failure: string | null = null;
    try {
      for (;;) {
        const batch = await this.#engine.next();
        if (batch === null || this.#closed) break;
        this.#onBatch(batch.count, batch.records);
      }
    } catch (e) {
      if (this.#closed) return;
      failure = (e as Error).message;
    }
    if (this.#closed) return;
    if (failure !== null) {
      this.#outcome = "failed";
      this.#stopReason ??= `capture failed: ${failure}`;
      this.#pushStatus(status(
        "INSTANCE_UNAVAILABLE",
        this.#opts.origin,
        `capture on ${this.#opts.request.interface} failed: ${failure}`,
      ));
    }
    this.#finish();
  }

  #onBatch(count: number, records: Uint8Array): void {
    const bytes = capturedBytes(records.byteLength, count);
    const { accept, transition } = this.#bp.offer(this.#queue.packetFrames, count, bytes);
    if (transition) this.#announce(transition);
    if (!accept) return;
    this.#sent.packets += count;
    this.#sent.bytes += bytes;
    const frameBytes = FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES + records.byteLength;
    const engine = this.#engine;
    const queuedFrames = this.#queue.packetFrames, heldBytes = engine.heldBytes ?? 0;
    if (engine.hold && mayHold({ frameBytes, queuedFrames, heldBytes })) {
      // A large frame, written alone: framed in the engine's batch room, sent from its queue, and
      // handed back to it by release() once written.
      const frame = packetsFrameInPlace(SOURCE, count, records);
      this.#queue.push(frame, true, true, engine.hold());
      this.#framesInPlace++;
      return;
    }
    // Built with room for its chunk framing: it goes to the socket without another copy. A large
    // one (written alone) is built in a pooled buffer, handed back by release().
    const buffer = frameBytes >= ALONE_BYTES
      ? this.#pool.take(CHUNK_ROOM.before + frameBytes + CHUNK_ROOM.after)
      : undefined;
    const frame = encodePacketsFrame(SOURCE, count, records, { ...CHUNK_ROOM, buffer });
    this.#queue.push(frame, true, true);
  }

  #announce(t: Transition): void {
    if (t.kind === "congested") {
      this.#log.warn("client too slow, discarding packets", { queued: t.queued });
    } else this.#log.info("congestion cleared", { discarded: t.counts.packets });
    const { origin } = this.#opts;
    this.#pushStatus(congestionStatus(t, origin, this.#bp.limits, this.#bp.total.packets));
  }

  #stats(final: boolean): SourceStats {
    return sourceStats(this.#engine.stats(), this.#bp.total.packets, this.#sent, final);
  }

  #pushStats(final: boolean): void {
    if (this.#ended) return;
    try {
      this.#push(encodeJsonFrame(FrameKind.STATS, SOURCE, this.#stats(final)));
    } catch (e) {
      this.#log.debug("stats unavailable", { error: e });
    }
  }

  #pushStatus(msg: StatusMessage): void {
    if (!this.#ended) this.#push(encodeJsonFrame(FrameKind.STATUS, SOURCE, msg));
  }

  /** Final frames once the engine has delivered everything. */
  #finish(): void {
    this.#clearTimers();
    let finalStats: SourceStats | null = null;
    try {
      finalStats = this.#stats(true);
      this.#push(encodeJsonFrame(FrameKind.STATS, SOURCE, finalStats));
    } catch (e) {
      this.#log.warn("final stats unavailable", { error: e });
    }
    this.#releaseEngine();
    const reason = this.#stopReason ?? "capture ended";
    if (this.#outcome !== "failed") {
      this.#pushStatus(status("CAPTURE_STOPPED", this.#opts.origin, `capture stopped: ${reason}`));
    }
    this.#push(encodeFrame(FrameKind.END, SOURCE, new Uint8Array(0)));
    this.#ended = true;
    this.#kernelDropped = finalStats ? finalStats.dropped + finalStats.if_dropped : 0;
    // Bound how long a finished stream may sit unread (a reader that never reads again).
    const linger = this.#opts.lingerMs ?? 10_000;
    this.#timers.push(
      setTimeout(() => this.abort("client did not read the end of the stream"), linger),
    );
  }

  #kernelDropped = 0;

  #push(frame: Uint8Array, packets = false): void {
    this.#queue.push(frame, packets);
  }

  /**
   * The next HTTP/1.1 chunk to write (one or more whole frames), once there is one; null when the
   * stream is over: after END, or at once after an abort. Call it only once the previous chunk
   * was taken by the socket: what waits here is what back-pressure counts.
   */
  async nextChunk(): Promise<Uint8Array | null> {
    while (this.#queue.empty) {
      if (this.#closed) return null;
      if (this.#ended) {
        this.#close(this.#stopReason ?? "capture ended");
        return null;
      }
      await this.#queue.waitForData();
    }
    const chunk = this.#queue.takeChunk()!;
    const t = this.#bp.observe(this.#queue.packetFrames);
    if (t) this.#announce(t);
    return chunk;
  }

  /** The socket is done with a chunk from nextChunk() (its write callback): reuse its memory. */
  release(chunk: Uint8Array): void {
    if (!this.#queue.release(chunk)) this.#pool.give(chunk.buffer);
  }

  #releaseEngine(): void {
    if (this.#engineClosed) return;
    this.#engineClosed = true;
    try {
      this.#engine.close();
    } catch (e) {
      this.#log.warn("engine close failed", { error: e });
    }
  }

  #clearTimers(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
  }

  #close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearTimers();
    this.#releaseEngine();
    this.#queue.wake();
    const summary: SessionSummary = {
      id: this.#opts.id,
      outcome: this.#outcome,
      reason,
      packets: this.#sent.packets,
      bytes: this.#sent.bytes,
      discarded: this.#bp.total.packets,
      peakQueued: this.#queue.peak,
      kernelDropped: this.#kernelDropped,
      durationMs: Date.now() - this.startedAt,
    };
    const r = this.#opts.request;
    this.#log.info("capture ended", {
      outcome: summary.outcome,
      reason,
      interface: r.interface,
      filter: r.filter,
      packets: summary.packets,
      bytes: summary.bytes,
      discarded: summary.discarded,
      peak_queued: summary.peakQueued,
      kernel_dropped: summary.kernelDropped,
      duration_ms: summary.durationMs,
      frame_buffers: this.#pool.counts,
      frames_in_place: this.#framesInPlace,
    });
    // Report the session done only once the engine's thread is really gone (bounded wait).
    const finished = this.#engine.finished ?? Promise.resolve();
    settledWithin(finished, 2000).then(() => this.#resolveDone(summary));
  }
}
