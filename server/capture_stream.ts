/**
 * The data path of one client capture: every event of every agent stream arrives at ONE sink
 * (`StreamSink`, which `Fanout` writes to), which tallies packets against the limits, merges them
 * into the client's stream, counts them in the metrics and says when a limit ends the capture.
 * The client session only starts, stops and ends it.
 */
import { encodeJsonFrame, FrameKind } from "../protocol/frame_codec.ts";
import type { SourceDescriptor, SourceStats, status } from "../protocol/messages.ts";
import { packetsBytes } from "../protocol/records.ts";
import type { ApiMetrics } from "./metrics.ts";
import type { ClientMerger } from "./merge.ts";
import { CaptureTally } from "./capture_tally.ts";
import { durationLimitError, type EffectiveBounds } from "./limits.ts";
import type { ApiError } from "./errors.ts";
import type { SourceSummary, StreamSink } from "./fanout.ts";
import { endOutcome, type Outcome, recordDrops } from "./capture_outcome.ts";

export interface CaptureStreamOptions {
  merger: ClientMerger;
  metrics: ApiMetrics;
  /** the metrics' `resolver` label */
  resolver: string;
  bounds: EffectiveBounds;
  /** the client's max_packets (0 = none) */
  maxPackets: number;
  /** an api limit was reached (LIMIT_REACHED) */
  onLimit(err: ApiError): void;
  /** a client limit (packets, bytes, duration) was reached: stop cleanly */
  onStop(reason: string): void;
}

export class CaptureStream implements StreamSink {
  readonly #o: CaptureStreamOptions;
  readonly #tally: CaptureTally;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  constructor(opts: CaptureStreamOptions) {
    this.#o = opts;
    this.#tally = new CaptureTally(opts.bounds, opts.maxPackets);
    const { bounds } = opts;
    if (bounds.durationMs > 0) {
      this.#timer = setTimeout(() => {
        const err = durationLimitError(bounds);
        if (err) opts.onLimit(err);
        else opts.onStop(`duration of ${bounds.durationMs} ms reached`);
      }, bounds.durationMs);
    }
  }

  /** packets delivered to the client */
  get packetCount(): number {
    return this.#tally.packets;
  }

  /** captured bytes delivered to the client */
  get byteCount(): number {
    return this.#tally.bytes;
  }

  get congested(): boolean {
    return this.#o.merger.congested;
  }

  get holdsBack(): boolean {
    return this.#o.merger.holdsBack;
  }

  released(): Promise<void> {
    return this.#o.merger.released();
  }

  source(source: number, descriptor: SourceDescriptor): void {
    this.#o.merger.addSource(source, descriptor.origin);
    this.#o.merger.control(encodeJsonFrame(FrameKind.SOURCE, source, descriptor));
  }

  packets(source: number, payload: Uint8Array, count: number): void {
    if (this.#closed) return;
    const { merger, metrics, resolver } = this.#o;
    const batch = this.#tally.admit(payload, count);
    if (!batch || !merger.packets(source, batch.payload, batch.count)) return;
    const bytes = packetsBytes(batch.payload, batch.count);
    metrics.packets.inc({ resolver }, batch.count);
    metrics.bytes.inc({ resolver }, bytes);
    const verdict = this.#tally.record(batch.count, bytes);
    if (verdict && "limit" in verdict) this.#o.onLimit(verdict.limit);
    else if (verdict) this.#o.onStop(verdict.stop);
  }

  stats(source: number, stats: SourceStats): void {
    this.#o.merger.stats(source, stats);
  }

  status(source: number, ...args: Parameters<typeof status>): void {
    this.#o.merger.status(source, ...args);
  }

  /** Every source ended: adds each stage's drops to the metrics. */
  recordDrops(summaries: SourceSummary[]): void {
    const { merger, metrics, resolver } = this.#o;
    recordDrops(metrics, resolver, summaries, (source) => merger.dropped(source));
  }

  /** The outcome of a capture that started, given how its sources ended. */
  settle(outcome: Outcome, summaries: SourceSummary[]): { outcome: Outcome; detail?: string } {
    const { metrics, resolver } = this.#o;
    const end = endOutcome(outcome, summaries);
    if (end.failed > 0) metrics.sourcesFailed.inc({ resolver }, end.failed);
    return end;
  }

  /** The session ended: nothing more is delivered, the duration timer is cleared. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
