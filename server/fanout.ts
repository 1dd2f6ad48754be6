/**
 * Fans one capture out to its agents in parallel and writes every event of their streams into
 * the capture's one sink (DESIGN §2.4-2.5, §6). One source per agent stream, numbered by the
 * target's position in the selection. Every source ends the same way for the client: final STATS, then
 * CAPTURE_STOPPED (agent finished cleanly) or INSTANCE_UNAVAILABLE (it failed); the capture goes
 * on while at least one source lives.
 */
import { type Frame, frameKindName } from "../protocol/frame_codec.ts";
import { decodeEvent, type StreamEvent } from "../protocol/events.ts";
import {
  type AgentStartRequest,
  emptySourceStats,
  type SourceDescriptor,
  type SourceStats,
  type status,
} from "../protocol/messages.ts";
import type { Logger } from "../lib/log.ts";
import { AgentCapture, AgentError, type AgentTlsOptions } from "./agent_client.ts";
import { API_SOURCE } from "./merge.ts";
import { AgentStatusGate, truncateText } from "./agent_status.ts";
import type { AgentTarget } from "./target_resolver.ts";
import { type StartStep, StartTimings } from "./fanout_timing.ts";

/**
 * Where `Fanout` writes every event of its agent streams, packets and control frames
 * alike (capture_stream.ts's CaptureStream).
 */
export interface StreamSink {
  /** the client reads too slowly: PACKETS will most likely be discarded */
  readonly congested: boolean;
  /** the client is congested but draining: do not read the agents now (back-pressure) */
  readonly holdsBack: boolean;
  /** resolves once holdsBack is false */
  released(): Promise<void>;
  /** a source starts (its SOURCE descriptor, named by the resolver's target) */
  source(source: number, descriptor: SourceDescriptor): void;
  /** one validated PACKETS payload (u32 count + records) of `count` packets */
  packets(source: number, payload: Uint8Array, count: number): void;
  stats(source: number, stats: SourceStats): void;
  status(source: number, ...args: Parameters<typeof status>): void;
}

export interface FanoutOptions {
  targets: AgentTarget[];
  tls: AgentTlsOptions;
  /** the start request for one agent (its filter excludes that agent's own connection) */
  requestFor(target: AgentTarget): AgentStartRequest;
  /** receives every event of every agent stream: packets (validated) and control alike */
  sink: StreamSink;
  connectTimeoutMs: number;
  /** silence after which an agent counts as gone */
  idleTimeoutMs: number;
  /** how long agents may take to drain after a stop before they are cut off */
  stopTimeoutMs: number;
  onAgentError?(kind: string): void;
  log: Logger;
}

export interface SourceSummary {
  source: number;
  origin: string;
  outcome: "stopped" | "unavailable";
  stats: SourceStats | null;
  error?: string;
}

interface SourceState {
  source: number;
  target: AgentTarget;
  capture: AgentCapture | null;
  announced: boolean;
  lastStats: SourceStats | null;
  finalSent: boolean;
  stopRequested: boolean;
  /** bounds and rate-limits the agent's STATUS messages */
  statusGate: AgentStatusGate;
  /** the agent reported INSTANCE_UNAVAILABLE for this source (its capture failed) */
  agentFailure?: string;
  summary?: SourceSummary;
}

export class Fanout {
  readonly #opts: FanoutOptions;
  readonly #abort = new AbortController();
  readonly #states: SourceState[];
  /** where the start went per agent; logged once every source streams or failed */
  readonly #timings: StartTimings;
  #stopping = false;
  /** resolves when stop() or abort() is called: paused pumps read on */
  readonly #stopCalled: Promise<void>;
  #onStop!: () => void;
  /** resolves with the number of sources that started, once every dial settled */
  readonly started: Promise<number>;
  /** resolves once every source has ended */
  readonly done: Promise<SourceSummary[]>;

  constructor(opts: FanoutOptions) {
    this.#opts = opts;
    this.#stopCalled = new Promise((r) => this.#onStop = r);
    this.#timings = new StartTimings(opts.targets.length, performance.now());
    this.#states = opts.targets.map((target, source) => ({
      source,
      target,
      capture: null,
      announced: false,
      lastStats: null,
      finalSent: false,
      stopRequested: false,
      statusGate: new AgentStatusGate(),
    }));
    const runs = this.#states.map((s) => this.#run(s));
    this.started = Promise.all(runs.map((r) => r.dialled)).then((ok) => ok.filter(Boolean).length);
    this.done = Promise.all(runs.map((r) => r.finished)).then(() =>
      this.#states.map((s) => s.summary!)
    );
  }

  /** Asks every agent to stop and drain; agents still dialling are stopped when they answer. */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#onStop();
    for (const s of this.#states) this.#stopOne(s);
  }

  /** Drops every agent connection at once (client gone). */
  abort(): void {
    this.#stopping = true;
    this.#onStop();
    this.#abort.abort();
    for (const s of this.#states) s.capture?.close();
  }

  #stopOne(s: SourceState): void {
    if (!s.capture || s.stopRequested || s.summary) return;
    s.stopRequested = true;
    const capture = s.capture;
    capture.stop(this.#opts.stopTimeoutMs).then((err) => {
      if (err) {
        this.#opts.log.warn("agent stop request failed", { origin: s.target.origin, error: err });
      }
    });
    // An agent that does not drain in time is cut off so the client's capture can end.
    const t = setTimeout(() => capture.close(), this.#opts.stopTimeoutMs);
    this.done.finally(() => clearTimeout(t));
  }

  #run(s: SourceState): { dialled: Promise<boolean>; finished: Promise<void> } {
    const dialled = AgentCapture.dial({
      endpoint: { origin: s.target.origin, host: s.target.address, port: s.target.port },
      tls: this.#opts.tls,
      request: this.#opts.requestFor(s.target),
      timeoutMs: this.#opts.connectTimeoutMs,
      signal: this.#abort.signal,
      onSecureConnect: () => this.#timed(s, "tls"),
    }).then((capture) => {
      this.#timed(s, "response");
      s.capture = capture;
      if (this.#stopping) {
        if (this.#abort.signal.aborted) capture.close();
        else this.#stopOne(s);
      }
      return true;
    }, (e) => {
      this.#fail(s, e);
      return false;
    });
    const finished = dialled.then(async (ok) => {
      if (!ok) return;
      try {
        await this.#pump(s);
        // A stream that ends properly after the agent said its capture failed is a failure.
        if (s.agentFailure !== undefined) this.#agentReportedFailure(s, s.agentFailure);
        s.summary = {
          source: s.source,
          origin: s.target.origin,
          outcome: s.agentFailure === undefined ? "stopped" : "unavailable",
          stats: s.lastStats,
          ...(s.agentFailure === undefined ? {} : { error: s.agentFailure }),
        };
      } catch (e) {
        this.#fail(s, e);
      } finally {
        this.#timed(s, "ended"); // a stream that ended without a SOURCE
        s.capture?.close();
      }
    });
    return { dialled, finished };
  }

  async #pump(s: SourceState): Promise<void> {
    const { sink } = this.#opts;
    // While the client is congested, PACKETS are assembled in reused memory: the stream will
    // most likely discard them (it still validates and counts them).
    const congested = () => sink.congested;
    const holdable = s.capture!.stopsWhenUnread;
    for await (const f of s.capture!.frames(this.#opts.idleTimeoutMs, congested)) {
      // Back-pressure to the agent: while the client is congested but draining, this stream
      // is not read, so TCP stops the agent, whose own back-pressure discards (and counts) the
      // excess before TLS instead of the api decrypting, validating and discarding it. Once
      // stopping, or when the client stalls, every frame is read (the api discards packets the
      // client cannot take; control frames count towards its hard cap, merge.ts).
      // (A loop: another source woken at the same time may have congested the client again.)
      // Only a stream whose socket stops when unread is held: one read through node:https
      // would go on filling the api's memory (agent_stream_tls.ts).
      while (holdable && sink.holdsBack && !this.#stopping) {
        await Promise.race([sink.released(), this.#stopCalled]);
      }
      const e = decodeEventOr(s, f);
      switch (e.kind) {
        case "source":
          this.#announce(s, e.descriptor);
          break;
        case "packets":
          if (!s.announced) throw protocolError(s, "sent packets before its SOURCE");
          if (e.count > 0) sink.packets(s.source, e.payload, e.count);
          break;
        case "stats":
          s.lastStats = e.stats;
          if (s.announced) sink.stats(s.source, e.stats);
          if (e.stats.final) s.finalSent = true;
          break;
        case "status": {
          if (e.status.type === "INSTANCE_UNAVAILABLE") {
            s.agentFailure ??= truncateText(e.status.text);
          }
          const verdict = s.statusGate.admit(e.status);
          if (!verdict.forward) {
            if (verdict.suppressed === 1) {
              this.#opts.log.warn("agent floods status messages; forwarding only some", {
                origin: s.target.origin,
              });
            }
            break;
          }
          const m = verdict.status;
          // The client knows sources by their instance origin, not the agent's own id.
          sink.status(
            s.announced ? s.source : API_SOURCE,
            m.type,
            s.target.origin,
            m.text,
            { counts: m.counts, limit: m.limit },
          );
          break;
        }
        default: // HELLO (checked by AgentCapture), PING, END
          break;
      }
    }
  }

  #announce(s: SourceState, d: SourceDescriptor): void {
    if (s.announced) return; // one source per agent stream
    const t = s.target;
    const desc: SourceDescriptor = {
      origin: t.origin,
      interface: d.interface,
      link_type: d.link_type,
      snaplen: d.snaplen,
      ...(t.instance ? { instance: t.instance } : {}),
    };
    s.announced = true;
    this.#opts.sink.source(s.source, desc);
    this.#timed(s, "source");
  }

  #timed(s: SourceState, step: StartStep | "ended"): void {
    const t = this.#timings;
    if (t.complete) return;
    if (step === "ended") t.settle(s.source);
    else t.note(s.source, step, performance.now());
    if (t.complete) this.#opts.log.info("agents streaming", { ...t.summary() });
  }

  #agentReportedFailure(s: SourceState, text: string): void {
    if (this.#abort.signal.aborted) return;
    this.#opts.onAgentError?.("capture");
    this.#opts.log.warn("agent capture failed", { origin: s.target.origin, error: text });
  }

  #fail(s: SourceState, e: unknown): void {
    this.#timed(s, "ended");
    const err = e instanceof AgentError
      ? e
      : new AgentError("protocol", String((e as Error)?.message ?? e));
    // After the client left nobody reads these; the session logs the abort.
    if (!this.#abort.signal.aborted) {
      this.#opts.onAgentError?.(err.kind);
      this.#opts.log.warn("agent failed", {
        origin: s.target.origin,
        kind: err.kind,
        error: err.message,
      });
      const { sink } = this.#opts;
      if (s.announced && !s.finalSent) {
        sink.stats(s.source, { ...(s.lastStats ?? emptySourceStats()), final: true });
        s.finalSent = true;
      }
      sink.status(
        s.announced ? s.source : API_SOURCE,
        "INSTANCE_UNAVAILABLE",
        s.target.origin,
        err.message,
      );
    }
    s.summary = {
      source: s.source,
      origin: s.target.origin,
      outcome: "unavailable",
      stats: s.lastStats,
      error: err.message,
    };
  }
}

function protocolError(s: SourceState, what: string): AgentError {
  return new AgentError("protocol", `agent ${s.target.origin} ${what}`);
}

/** The frame as a typed event (protocol/events.ts); anything malformed fails the source. */
function decodeEventOr(s: SourceState, f: Frame): StreamEvent {
  try {
    return decodeEvent(f);
  } catch (e) {
    throw protocolError(
      s,
      `sent a malformed ${frameKindName(f.kind)} frame: ${(e as Error).message}`,
    );
  }
}
