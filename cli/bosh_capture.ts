/**
 * The capture session of `pcap-bosh capture` and `pcap-cf capture` (DESIGN §2, BOSH capture,
 * steps 2, 6 and 7), once the command (bosh_main.ts, cf_main.ts) has refused what it can locally, found the token and opened the
 * output: the WebSocket, the start request, frames into the reorder window and the writer.
 *
 * A stop (Ctrl-C, --duration, --max-packets, --max-bytes) asks the api to drain and waits for
 * END; a second Ctrl-C closes the socket at once. Either way the reorder window is flushed,
 * statistics blocks are written and the file is closed valid. stdout carries only capture data.
 */
import { createCaptureWriter, isStdout, OutputError } from "./capture_output.ts";
import { type CaptureOutput, RotatingOutput } from "./rotating_output.ts";
import type { CaptureWriter, SourceStatistics } from "./capture_writer.ts";
import { LinkTypeMismatchError } from "./pcap_writer.ts";
import { ReorderWindow } from "./reorder_window.ts";
import { FramePool } from "../lib/frame_pool.ts";
import type { BoshCaptureOptions } from "./bosh_flags.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";
import { formatCount, type ProgressDisplay, sanitize, type SourceProgress } from "./progress.ts";
import { type ApiEvent, ApiSession, type SessionClosed } from "./api_session.ts";
import type {
  BoshStartRequest,
  Hello,
  SourceDescriptor,
  SourceStats,
  StatusType,
} from "../protocol/messages.ts";
import { checkHello } from "../protocol/hello.ts";
import { VERSION } from "../version.ts";

const BOSH_CAPTURE_PATH = "/v1/capture/bosh";

/** What the session uses of a client's options; both pcap-bosh's and pcap-cf's provide it. */
export type CaptureRunOptions =
  & Pick<
    BoshCaptureOptions,
    | "output"
    | "format"
    | "snaplen"
    | "filter"
    | "durationMs"
    | "maxPackets"
    | "maxBytes"
    | "verbose"
    | "quiet"
  >
  & { pcapApiUrl: string };

/** The file's section and which client this is; `product`/`path` default to pcap-bosh's. */
export interface CaptureSection {
  comment: string;
  /** program name in messages and the SHB's user application, e.g. "pcap-cf" */
  product?: string;
  /** WebSocket route of the api, e.g. "/v1/capture/cf" */
  path?: string;
  /**
   * The caller retries once with a fresh token when the api refuses the token before anything
   * was captured: that refusal is then not reported, see `refusedUnauthenticated`.
   */
  retriesUnauthenticated?: boolean;
}
/** how long a stop may take before the client gives up waiting for END */
export const DRAIN_TIMEOUT_MS = 30_000;
/**
 * What each status type means for the outcome, decided once for every type: `fatal` fails the
 * capture even if it ended, `problem` explains a connection that closes without END.
 */
const STATUS_OUTCOME: Record<StatusType, "fatal" | "problem" | "info"> = {
  START_CAPTURE_FAILED: "fatal",
  UNAUTHENTICATED: "fatal",
  PERMISSION_DENIED: "fatal",
  INVALID_REQUEST: "fatal",
  CONNECTION_ERROR: "problem",
  INSTANCE_UNAVAILABLE: "info",
  CONGESTED: "info",
  LIMIT_REACHED: "info",
  CAPTURE_STOPPED: "info",
};

export interface CaptureIo {
  env: Record<string, string | undefined>;
  /** stderr text */
  writeErr(s: string): void;
  /** stdout text (the `instances` / --dry-run table); default: standard output */
  writeOut?(s: string): void;
  stderrIsTty: boolean;
  stdoutIsTty: boolean;
  width?: number;
  /** signals that stop the capture (default SIGINT, SIGTERM); [] for none */
  signals?: Deno.Signal[];
  /** silence from the api after which the connection counts as lost (default 45 s; tests) */
  apiIdleTimeoutMs?: number;
}

interface Source {
  writerId: number;
  name: string;
  /** for the live display */
  short: string;
  packets: number;
  bytes: number;
  startNs: bigint;
  stats?: SourceStats;
  statsNs?: bigint;
  state: SourceProgress["state"];
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

/** Interface name in the file: `diego-cell/2 (uuid) eth0`. Pure. */
export function sourceName(d: Pick<SourceDescriptor, "origin" | "interface" | "instance">): string {
  const i = d.instance;
  if (!i) return `${d.origin} ${d.interface}`;
  return i.index !== undefined
    ? `${i.group}/${i.index} (${i.id}) ${d.interface}`
    : `${i.group}/${i.id} ${d.interface}`;
}

/** Shorter name for the live display, where the uuid would push the counters off screen. */
function displayName(d: SourceDescriptor): string {
  const i = d.instance;
  return i?.index !== undefined ? `${i.group}/${i.index} ${d.interface}` : sourceName(d);
}

/** The end-of-capture counters of a source, as the writers take them. Pure. */
function statisticsOf(s: { startNs?: bigint; stats?: SourceStats; statsNs?: bigint }) {
  const st = s.stats;
  const out: SourceStatistics = { startNs: s.startNs, endNs: s.statsNs };
  if (!st) return { ...out, comment: "no statistics arrived from the agent" };
  return {
    ...out,
    received: st.received,
    kernelDropped: st.dropped,
    ifDropped: st.if_dropped,
    discards: { engine: st.engine_dropped, agent: st.agent_dropped, api: st.api_dropped },
    comment: st.final ? undefined : "capture ended before the final statistics arrived",
  };
}

/** A pooled message buffer: an agent's full frame (256 KiB) with the api's headers and room. */
const MESSAGE_BUFFER_BYTES = (256 << 10) + 1024;
/** As many idle buffers as the reorder window may pin (twice its 32 MiB bound), and a few. */
const MESSAGE_BUFFERS_KEPT = Math.ceil((64 << 20) / MESSAGE_BUFFER_BYTES) + 4;

type Phase = "running" | "stopping" | "aborted";

/** One capture on an open output: WebSocket frames in, blocks out, stop handling. */
export class CaptureRun {
  #phase: Phase = "running";
  #session!: ApiSession;
  #writer: CaptureWriter;
  #reorder: ReorderWindow;
  /** the api's large messages are decoded into these, and come back once written */
  readonly #messageBuffers = new FramePool(MESSAGE_BUFFER_BYTES, MESSAGE_BUFFERS_KEPT);
  #sources = new Map<number, Source>();
  #packets = 0;
  #bytes = 0;
  #limitHit = false;
  #ended = false;
  #failure: string | undefined;
  /** the last error-like status, to explain a connection that closes without END */
  #problem: string | undefined;
  #stoppedByUser = false;
  #finishing = false;
  #outputFailed = false;
  #t0 = performance.now();
  #timers: ReturnType<typeof setTimeout>[] = [];
  #signals: Array<[Deno.Signal, () => void]> = [];
  readonly #product: string;
  readonly #path: string;
  readonly #quietUnauthenticated: boolean;
  #unauthenticated = false;

  constructor(
    readonly o: CaptureRunOptions,
    readonly io: CaptureIo,
    readonly progress: ProgressDisplay,
    readonly output: CaptureOutput,
    section: CaptureSection,
  ) {
    this.#product = section.product ?? "pcap-bosh";
    this.#path = section.path ?? BOSH_CAPTURE_PATH;
    this.#quietUnauthenticated = section.retriesUnauthenticated ?? false;
    const w = {
      section: { comment: section.comment, userAppl: `${this.#product} ${VERSION}` },
      snaplen: o.snaplen,
    };
    this.#writer = output instanceof RotatingOutput
      ? output.writer({ ...w, statsFor: (id) => this.#statisticsOfWriterId(id) })
      : createCaptureWriter(o.format, output, w);
    this.#reorder = new ReorderWindow((source, batch, from, to) => {
      if (this.#outputFailed) return;
      const src = this.#sources.get(source)!;
      try {
        this.#writer.writeIndexed(src.writerId, batch, from, to);
      } catch (e) {
        this.#outputFailed = true; // e.g. the reader of -o - went away
        this.#fail((e as Error).message);
      }
    }, { onRelease: (buffer) => this.#messageBuffers.give(buffer) });
  }

  /** The api refused the token before any source was announced (nothing was written). */
  get refusedUnauthenticated(): boolean {
    return this.#unauthenticated && this.#sources.size === 0;
  }

  /** Stops cleanly, as the first Ctrl-C does (e.g. when the reader of the output has left). */
  stop(reason: string): void {
    if (this.#session) this.#stop(reason);
  }

  /** Connects, captures until the end, closes the output; returns the exit code. */
  async run(
    authorization: string,
    caCert: string | undefined,
    request: BoshStartRequest | CfStartRequest,
  ): Promise<number> {
    this.#session = new ApiSession(
      {
        apiUrl: this.o.pcapApiUrl,
        path: this.#path,
        authorization,
        caCert,
        idleTimeoutMs: this.io.apiIdleTimeoutMs,
        pool: this.#messageBuffers,
      },
      {
        onEvent: (e) => this.#onEvent(e),
        onProtocolError: (e) => this.#fail(`the pcap API sent a malformed message: ${e.message}`),
      },
    );
    if (this.o.verbose) this.progress.message(`connecting to ${this.#session.url}`);
    this.#session.start(request);
    this.#installSignals();
    if (this.o.durationMs) {
      this.#timers.push(setTimeout(() => this.#stop("--duration reached"), this.o.durationMs));
    }
    this.#timers.push(setInterval(() => this.#reorder.tick(performance.now()), 100));
    this.#timers.push(setInterval(() => this.#messageBuffers.trim(), 1000));
    const closed = await this.#session.closed;
    return this.#finish(closed);
  }

  /** A file of a rotating capture is completed mid-capture: its sources' counters so far. */
  #statisticsOfWriterId(id: number): SourceStatistics {
    for (const s of this.#sources.values()) if (s.writerId === id) return statisticsOf(s);
    return {};
  }

  #ms(): number {
    return performance.now() - this.#t0;
  }

  #installSignals(): void {
    for (const sig of this.io.signals ?? ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
      const h = () => {
        if (this.#finishing) return; // the file is being closed; let it finish
        if (this.#phase === "running") {
          this.#stoppedByUser = true;
          this.#stop("interrupted", " (Ctrl-C again to stop at once)");
        } else this.#abort("interrupted again: stopping at once");
      };
      Deno.addSignalListener(sig, h);
      this.#signals.push([sig, h]);
    }
  }

  /** Clean stop: the api drains every source and ends with END. */
  #stop(reason: string, hint = ""): void {
    if (this.#phase !== "running") return;
    this.#phase = "stopping";
    if (!this.#session.stop()) {
      this.#abort(`${reason} before the capture started`);
      return;
    }
    if (!this.o.quiet) {
      this.progress.message(`stopping (${reason}): receiving what is in flight${hint}`);
    }
    const t = setTimeout(
      () => this.#fail(`the pcap API did not finish within ${DRAIN_TIMEOUT_MS / 1000} s`),
      DRAIN_TIMEOUT_MS,
    );
    this.#timers.push(t);
  }

  #abort(reason: string): void {
    if (this.#phase === "aborted") return;
    this.#phase = "aborted";
    this.progress.message(`stopping: ${reason}`);
    this.#session.close();
  }

  #fail(message: string): void {
    this.#failure ??= message;
    this.#abort(message);
  }

  #onEvent(e: ApiEvent): void {
    switch (e.kind) {
      case "hello":
        return this.#hello(e.hello);
      case "source":
        return this.#addSource(e.source, e.descriptor);
      case "packets":
        return this.#packetsIn(e.source, e.count, e.records);
      case "status": {
        const s = e.status;
        if (s.type === "UNAUTHENTICATED" && this.#sources.size === 0) {
          this.#unauthenticated = true;
          this.#failure ??= `${s.type}: ${s.text}`;
          if (this.#quietUnauthenticated) return; // the caller retries with a fresh token
        }
        this.progress.status(s);
        const src = this.#sources.get(e.source);
        if (src && s.type === "INSTANCE_UNAVAILABLE") src.state = "unavailable";
        if (src && s.type === "CAPTURE_STOPPED" && src.state !== "unavailable") {
          src.state = "stopped";
        }
        // after its last packets: the others' need not wait for it any more
        if (src && src.state !== "capturing") this.#reorder.endSource(e.source);
        const outcome = STATUS_OUTCOME[s.type];
        if (outcome === "fatal") this.#failure ??= `${s.type}: ${s.text}`;
        if (outcome === "problem") this.#problem = `${s.type}: ${s.text}`;
        return;
      }
      case "stats": {
        const src = this.#sources.get(e.source);
        if (src) {
          src.stats = e.stats;
          src.statsNs = nowNs();
        }
        return;
      }
      case "end":
        this.#ended = true;
        return;
    }
  }

  #hello(hello: Hello): void {
    const problem = checkHello(hello, {
      peer: "the pcap API",
      self: "client",
      upgradeSelf: this.#product,
    });
    if (problem) this.#fail(problem);
  }

  #addSource(id: number, d: SourceDescriptor): void {
    if (this.#sources.has(id)) return;
    const name = sourceName(d);
    let writerId: number;
    try {
      writerId = this.#writer.addSource({
        name,
        description: d.instance?.deployment ? `deployment ${d.instance.deployment}` : undefined,
        linkType: d.link_type,
        snaplen: d.snaplen,
        filter: this.o.filter,
      });
    } catch (e) {
      if (e instanceof LinkTypeMismatchError || e instanceof RangeError) {
        return this.#fail(e.message);
      }
      throw e;
    }
    this.#sources.set(id, {
      writerId,
      name,
      short: displayName(d),
      packets: 0,
      bytes: 0,
      startNs: nowNs(),
      state: "capturing",
    });
    this.#reorder.expectSource(id);
    if (!this.o.quiet) this.progress.message(`capturing on ${name}`);
    if (this.#sources.size === 1 && this.progress.live) {
      // the live block starts with the first source, so a refused capture draws none
      this.#timers.push(setInterval(() => this.progress.update(this.#progress(), this.#ms()), 250));
    }
  }

  #packetsIn(id: number, count: number, records: Uint8Array): void {
    const src = this.#sources.get(id);
    if (!src) return this.#fail(`the pcap API sent packets for unannounced source ${id}`);
    if (this.#limitHit || this.#phase === "aborted") return;
    const limit = this.o.maxPackets ? this.o.maxPackets - this.#packets : count;
    const { packets: n, bytes } = this.#reorder.pushRecords(id, records, performance.now(), limit);
    src.packets += n;
    src.bytes += bytes;
    this.#packets += n;
    this.#bytes += bytes;
    if (this.o.maxPackets && this.#packets >= this.o.maxPackets) {
      this.#limitHit = true;
      this.#stop(`--max-packets ${this.o.maxPackets} reached`);
    } else if (this.o.maxBytes && this.#bytes >= this.o.maxBytes) {
      this.#limitHit = true;
      this.#stop(`--max-bytes ${this.o.maxBytes} reached`);
    }
  }

  #progress(): SourceProgress[] {
    return [...this.#sources.values()].map((s) => {
      const st = s.stats;
      const drops = st
        ? st.dropped + st.if_dropped + st.engine_dropped + st.agent_dropped + st.api_dropped
        : 0;
      return { name: s.short, packets: s.packets, bytes: s.bytes, drops, state: s.state };
    });
  }

  #finish(closed: SessionClosed): number {
    this.#finishing = true;
    for (const t of this.#timers) clearTimeout(t);
    try {
      return this.#close(closed);
    } finally {
      // only now: a Ctrl-C while the file is closed must not kill us half-way
      for (const [sig, h] of this.#signals) Deno.removeSignalListener(sig, h);
    }
  }

  /** The api answered the upgrade with an HTTP error: say what it means. */
  #refusedAtUpgrade(status: number, refusal?: { type: string; text: string }): void {
    if (status === 401) this.#unauthenticated = true;
    // a 502's own reason names the upstream that failed (the UAA, or the Cloud Controller)
    if (status === 502 && refusal) {
      this.#failure ??=
        `${refusal.type}: the pcap API cannot verify the token now: ${refusal.text}`;
    }
    const text = UPGRADE_REFUSALS[status];
    if (text) this.#failure ??= text;
  }

  #close(closed: SessionClosed): number {
    try {
      this.#reorder.flush();
      for (const s of this.#sources.values()) this.#writer.writeStats(s.writerId, statisticsOf(s));
      this.#writer.end();
    } catch (e) {
      this.#failure ??= (e as Error).message;
    }
    try {
      this.output.close();
    } catch (e) {
      this.#failure ??= e instanceof OutputError ? e.message : String(e);
    }
    if (closed.lost && !this.#ended) this.#failure ??= closed.error;
    if (closed.httpStatus !== undefined) {
      this.#refusedAtUpgrade(closed.httpStatus, closed.refusal);
    }
    if (!this.#failure && !this.#ended && this.#phase !== "aborted") {
      this.#failure = this.#problem ?? connectionLost(this.#session.url, closed);
    }
    if (this.#failure && this.#sources.size === 0) {
      // nothing was captured: no summary (no live block was drawn), and no empty file
      if (this.output instanceof RotatingOutput) this.output.discard();
      else if (!isStdout(this.o.output)) {
        try {
          Deno.removeSync(this.o.output);
        } catch { /* already gone */ }
      }
    } else {
      const list = this.#progress();
      const where = this.output instanceof RotatingOutput ? this.output.describe() : this.o.output;
      this.progress.finish(list, this.#ms(), where);
      // formatSummary lists sources with losses; list the healthy ones too (full names)
      const names = [...this.#sources.values()].map((s) => s.name);
      list.forEach((p, i) => {
        if (this.o.quiet || p.drops > 0 || p.state === "unavailable") return;
        this.io.writeErr(`  ${sanitize(names[i])}: ${formatCount(p.packets)} packets\n`);
      });
    }
    if (this.#failure && this.#quietUnauthenticated && this.refusedUnauthenticated) return 1;
    if (this.#failure) {
      this.io.writeErr(`${this.#product}: capture failed: ${sanitize(this.#failure)}\n`);
      return 1;
    }
    if (this.#stoppedByUser && !this.#ended && !this.o.quiet) {
      this.io.writeErr(
        `${this.#product}: stopped at once; packets still in flight were not received\n`,
      );
    }
    return 0;
  }
}

/** What an HTTP refusal of the upgrade means (the api verifies the token before any socket). */
const UPGRADE_REFUSALS: Record<number, string> = {
  401: "UNAUTHENTICATED: the pcap API refused the token (HTTP 401): it is invalid, expired or " +
    "revoked; log in again",
  // Deno's WebSocket (no --ca-cert) cannot read the reason: name both services it may be
  502: "CONNECTION_ERROR: the pcap API cannot verify the token now (HTTP 502: the service its " +
    "token keys come from did not answer usably: the UAA, or for CF the Cloud Controller that " +
    "names it; the api's log says which); retry later",
};

function connectionLost(url: string, c: SessionClosed): string {
  const why = [c.error, c.reason, `code ${c.code}`].filter(Boolean).join(", ");
  return c.opened
    ? `the connection to the pcap API (${url}) closed before the capture ended (${why})`
    : `cannot connect to the pcap API at ${url} (${why}); check -u and --ca-cert`;
}
