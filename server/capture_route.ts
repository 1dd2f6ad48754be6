/**
 * One client WebSocket on /v1/capture/bosh (docs/protocol.md "Client API"): HELLO, then the
 * start request is checked (token, Director, selection, filter, limits) and fanned out; the
 * merged stream flows until a stop (client, limit, SIGTERM) has drained every source; END and
 * close 1000. Refusals send one STATUS and close with 1008 (policy) naming the type; internal
 * failures close with 1011. An audit line is written for every capture request.
 */
import { encodeFrame, encodeJsonFrame, FrameKind } from "../protocol/frame_codec.ts";
import {
  BoshStartRequest,
  describeZodError,
  type Hello,
  MAX_CONTROL_MESSAGE_BYTES,
  StopRequest,
} from "../protocol/messages.ts";
import { checkPeerVersion, MIN_PEER_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { VERSION } from "../version.ts";
import type { Logger } from "../lib/log.ts";
import type { ApiConfig } from "./config.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { ApiMetrics } from "./metrics.ts";
import type { AgentTlsOptions } from "./agent_client.ts";
import type { Instance } from "./director_client.ts";
import type { VerifiedToken } from "./token_verifier.ts";
import {
  ApiError,
  ByteBudget,
  type CaptureSlot,
  type ConcurrencyLimiter,
  durationLimitError,
  effectiveBounds,
} from "./limits.ts";
import { selectTargets, type Target } from "./target_selection.ts";
import {
  composeFilter,
  exclusionFilter,
  type FilterChecker,
  validateUserFilter,
} from "./filter_compose.ts";
import { API_SOURCE, batchBytes, ClientMerger, type SocketLike, truncateBatch } from "./merge.ts";
import { Fanout, type SourceSummary } from "./fanout.ts";

export interface SessionDeps {
  config: ApiConfig;
  verifier: { verify(token: string): Promise<VerifiedToken> };
  director: { instances(deployment: string, token: string): Promise<Instance[]> };
  limiter: ConcurrencyLimiter;
  metrics: ApiMetrics;
  audit: AuditLog;
  log: Logger;
  agentTls: AgentTlsOptions;
  checkFilter?: FilterChecker;
  /** keepalive PING after this much silence towards the client */
  pingIntervalMs: number;
  /** the first message must arrive within this */
  startTimeoutMs: number;
  agentIdleTimeoutMs: number;
  stopTimeoutMs: number;
  draining(): boolean;
}

type Phase = "awaiting-start" | "starting" | "running" | "stopping" | "done";

/** The bearer token, or why the session is refused before it reads anything. */
export type SessionCredential = { value: string } | { problem: string } | { refused: ApiError };

/** Where the client connected from, as far as the api can tell. */
export interface ClientPeer {
  /** the TCP peer (gorouter, behind a route) */
  remote?: string;
  /** X-Forwarded-For as received: recorded for the audit, never trusted for anything */
  forwardedFor?: string;
}

const SHUTTING_DOWN = "the api is shutting down; retry in a moment";
type ServerSocket = SocketLike & { close(code?: number, reason?: string): void };

const enc = new TextEncoder();
/** How long a finished session waits for the client to complete the closing handshake. */
const CLOSE_WAIT_MS = 3000;

export class CaptureSession {
  #phase: Phase = "awaiting-start";
  #socket!: ServerSocket;
  #merger!: ClientMerger;
  #fanout: Fanout | null = null;
  #slot: CaptureSlot | null = null;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #user: VerifiedToken | null = null;
  #request: BoshStartRequest | null = null;
  #targets: Target[] = [];
  #filter = "";
  #start = new Date();
  #packets = 0;
  #bytes = 0;
  #outcome = "CAPTURE_STOPPED";
  #detail: string | undefined;
  #log: Logger;
  #stopReason = "";
  /** a refusal decided before the socket opened (drain during the upgrade); sent on open */
  #pendingRefusal: ApiError | null = null;
  #resolveDone!: () => void;
  /** resolves once the session ended AND its socket closed (bounded), so a drain never cuts a
   * closing handshake with the server's own 1001 */
  readonly done = new Promise<void>((r) => (this.#resolveDone = r));
  #socketClosed = Promise.withResolvers<void>();

  constructor(
    private readonly deps: SessionDeps,
    /** the bearer token, or the reason it is unusable, or a refusal decided up front */
    private readonly token: SessionCredential,
    private readonly peer: ClientPeer = {},
  ) {
    this.#log = deps.log.child({ remote: peer.remote });
  }

  /** Not yet authenticated and not over: counts against the api's cap on such sessions. */
  get unauthenticated(): boolean {
    return this.#phase !== "done" && this.#user === null;
  }

  /** highest number of bytes held for this client (bounded by the buffer limits) */
  get bufferedHighWater(): number {
    return this.#merger?.bufferedHighWater ?? 0;
  }

  get user(): string | undefined {
    return this.#user?.user;
  }

  onOpen(socket: ServerSocket): void {
    this.#socket = socket;
    if (this.#phase === "done") {
      // Cut by abort() before the upgrade completed.
      this.#close(1011, "api shutting down");
      return;
    }
    const { buffer } = this.deps.config;
    this.#merger = new ClientMerger(socket, buffer, {
      onCongested: () => this.deps.metrics.congestion.inc({ resolver: "bosh" }),
    });
    const hello: Hello = {
      protocol_version: PROTOCOL_VERSION,
      min_protocol_version: MIN_PEER_VERSION,
      component: "api",
      version: VERSION,
      id: this.deps.config.id,
    };
    this.#merger.control(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, hello));
    if (this.#pendingRefusal) {
      this.#refuse(this.#pendingRefusal);
      return;
    }
    if ("refused" in this.token) {
      this.#refuse(this.token.refused);
      return;
    }
    if ("problem" in this.token) {
      this.#refuse(new ApiError("UNAUTHENTICATED", this.token.problem));
      return;
    }
    this.#timers.push(setTimeout(() => {
      if (this.#phase === "awaiting-start") {
        this.#refuse(
          new ApiError(
            "INVALID_REQUEST",
            `no start request within ${this.deps.startTimeoutMs} ms; send it right after connecting`,
          ),
        );
      }
    }, this.deps.startTimeoutMs));
    let lastSent = -1;
    this.#timers.push(setInterval(() => {
      // Quiet captures still move bytes, so proxies' idle timeouts do not cut them.
      if (this.#merger.sentFrames === lastSent) {
        this.#merger.control(encodeFrame(FrameKind.PING, API_SOURCE, new Uint8Array()));
      }
      lastSent = this.#merger.sentFrames;
    }, this.deps.pingIntervalMs));
  }

  onMessage(data: unknown): void {
    const text = typeof data === "string" ? data : null;
    const size = text === null
      ? (data as ArrayBuffer)?.byteLength ?? 0
      : enc.encode(text).byteLength;
    let problem: string | null = null;
    let msg: unknown;
    if (size > MAX_CONTROL_MESSAGE_BYTES) {
      problem = `message of ${size} bytes exceeds the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`;
    } else if (text === null) {
      problem = "binary messages are not accepted; send JSON text messages";
    } else {
      try {
        msg = JSON.parse(text);
      } catch {
        problem = "message is not JSON; send a JSON start or stop request";
      }
    }
    const type = (msg as { type?: unknown })?.type;
    if (!problem && this.#phase === "awaiting-start") {
      if (type !== "start") {
        problem = `expected a start request first, got message type ${JSON.stringify(type)}`;
      } else {
        const parsed = BoshStartRequest.safeParse(msg);
        if (!parsed.success) problem = `invalid start request: ${describeZodError(parsed.error)}`;
        else {
          this.#phase = "starting";
          this.#begin(parsed.data).catch((e) => this.#refuse(e));
          return;
        }
      }
    } else if (!problem) {
      if (type === "stop" && StopRequest.safeParse(msg).success) {
        this.stop("stopped by the client");
        return;
      }
      problem = `unexpected message type ${JSON.stringify(type)}; only {"type":"stop"} is ` +
        "accepted after the start request";
    }
    const err = new ApiError("INVALID_REQUEST", problem!);
    if (this.#phase === "running" || this.#phase === "starting") {
      this.#merger.status(API_SOURCE, "INVALID_REQUEST", "api", err.message);
      this.stop("invalid client message");
    } else if (this.#phase === "awaiting-start") {
      this.#refuse(err);
    }
  }

  /** Client gone: drop every agent at once. */
  onClose(): void {
    this.#socketClosed.resolve();
    if (this.#phase === "done") return;
    this.#log.info("client disconnected", { phase: this.#phase });
    this.#fanout?.abort();
    if (!this.#fanout) {
      this.#finish("CLIENT_GONE", "client disconnected before the capture started");
    } else this.#outcome = "CLIENT_GONE";
  }

  /** Clean stop: agents drain, each source ends, then END and close 1000. */
  stop(reason: string): void {
    if (this.#phase === "awaiting-start") {
      this.#refuse(new ApiError("START_CAPTURE_FAILED", reason));
      return;
    }
    if (this.#phase !== "running" && this.#phase !== "starting") return;
    this.#phase = "stopping";
    this.#stopReason = reason;
    this.#log.info("stopping capture", { reason });
    this.#fanout?.stop();
  }

  /**
   * SIGTERM: a session that has no capture yet (not open, waiting for its start, or still
   * checking it) is refused with START_CAPTURE_FAILED so that the client retries rather than
   * keeping an empty file; a running capture is stopped and drained.
   */
  drain(): void {
    if (this.#phase === "awaiting-start" || this.#phase === "starting") {
      this.#refuse(new ApiError("START_CAPTURE_FAILED", SHUTTING_DOWN));
      return;
    }
    if (this.#phase === "running") {
      this.#merger.status(
        API_SOURCE,
        "CAPTURE_STOPPED",
        "api",
        "the api is shutting down; the capture is stopped and drained",
      );
    }
    this.stop(SHUTTING_DOWN);
  }

  /** Hard end (drain deadline passed). */
  abort(): void {
    this.#fanout?.abort();
    if (this.#phase === "done") return;
    if (this.#socket) this.#close(1011, "api shutting down");
    else this.#finish("START_CAPTURE_FAILED", SHUTTING_DOWN); // never opened: nothing to close
  }

  async #begin(req: BoshStartRequest): Promise<void> {
    this.#request = req;
    const d = this.deps;
    if (d.draining()) throw new ApiError("START_CAPTURE_FAILED", SHUTTING_DOWN);
    const tooOld = checkPeerVersion(req.protocol_version, "client", "api");
    if (tooOld) throw new ApiError("INVALID_REQUEST", tooOld);
    const token = (this.token as { value: string }).value;
    this.#user = await d.verifier.verify(token);
    this.#log = this.#log.child({ user: this.#user.user, user_key: this.#user.key });
    if (this.#leftWhileStarting()) return;
    // Keyed on the stable identity: user names repeat across UAA origins.
    this.#slot = d.limiter.acquire(this.#user.key);
    const userFilter = validateUserFilter(req.filter, { check: d.checkFilter });
    this.#filter = userFilter;
    const instances = await d.director.instances(req.bosh.deployment, token);
    const selection = selectTargets(
      instances,
      { groups: req.bosh.groups, instances: req.bosh.instances },
      d.config.limits.maxTargets,
    );
    if (selection.targets.length === 0) {
      throw new ApiError(
        "START_CAPTURE_FAILED",
        "no selected instance can be captured: " +
          selection.skipped.map((s) => `${s.origin} ${s.reason}`).join("; "),
      );
    }
    this.#targets = selection.targets;
    const port = d.config.bosh.agentPort;
    const filters = new Map(selection.targets.map((t) => [
      t.id,
      composeFilter(userFilter, exclusionFilter({ host: t.ip, port }), { check: d.checkFilter }),
    ]));
    if (this.#leftWhileStarting()) return;
    const bounds = effectiveBounds(
      { durationMs: req.limits.duration_ms, bytes: req.limits.max_bytes },
      { maxDurationMs: d.config.limits.maxDurationMs, maxBytes: d.config.limits.maxBytes },
    );
    const budget = new ByteBudget(bounds);
    const maxPackets = req.limits.max_packets ?? 0;
    for (const s of selection.skipped) {
      this.#merger.status(API_SOURCE, "INSTANCE_UNAVAILABLE", s.origin, `${s.origin} ${s.reason}`);
    }
    this.#phase = "running";
    this.#start = new Date();
    d.metrics.activeCaptures.inc({ resolver: "bosh" });
    this.#log.info("capture starting", {
      deployment: req.bosh.deployment,
      targets: this.#targets.length,
      interface: req.interface,
    });
    const fanout = new Fanout({
      deployment: req.bosh.deployment,
      targets: this.#targets,
      agentPort: port,
      tls: d.agentTls,
      requestFor: (t) => ({
        protocol_version: PROTOCOL_VERSION,
        interface: req.interface,
        snaplen: req.snaplen,
        filter: filters.get(t.id)!,
        promiscuous: false,
        // Safety net only: the api stops agents itself, a little before this.
        ...(bounds.durationMs > 0 ? { duration_ms: bounds.durationMs + 5000 } : {}),
        requester: this.#user!.user,
      }),
      merger: this.#merger,
      connectTimeoutMs: d.config.timeouts.agentConnectMs,
      idleTimeoutMs: d.agentIdleTimeoutMs,
      stopTimeoutMs: d.stopTimeoutMs,
      onAgentError: (kind) => d.metrics.agentErrors.inc({ kind }),
      log: this.#log,
      onPackets: (source, payload, count) => {
        if (this.#phase === "done") return;
        if (budget.exhausted || (maxPackets > 0 && this.#packets >= maxPackets)) return;
        if (maxPackets > 0 && this.#packets + count > maxPackets) {
          count = maxPackets - this.#packets;
          payload = truncateBatch(payload, count);
        }
        if (!this.#merger.packets(source, payload, count)) return;
        const bytes = batchBytes(payload, count);
        this.#packets += count;
        this.#bytes += bytes;
        d.metrics.packets.inc({ resolver: "bosh" }, count);
        d.metrics.bytes.inc({ resolver: "bosh" }, bytes);
        const limitErr = budget.add(bytes);
        if (limitErr) this.#limit(limitErr);
        else if (budget.exhausted) this.stop(`byte limit of ${bounds.bytes} reached`);
        else if (maxPackets > 0 && this.#packets >= maxPackets) {
          this.stop(`packet limit of ${maxPackets} reached`);
        }
      },
    });
    this.#fanout = fanout;
    if (bounds.durationMs > 0) {
      this.#timers.push(setTimeout(() => {
        const err = durationLimitError(bounds);
        if (err) this.#limit(err);
        else this.stop(`duration of ${bounds.durationMs} ms reached`);
      }, bounds.durationMs));
    }
    const started = await fanout.started;
    const summaries = await fanout.done;
    this.#end(started, summaries);
  }

  /**
   * True if the start was cancelled during an await (client gone, stop, SIGTERM); ends the
   * session accordingly so no slot or socket is left behind.
   */
  #leftWhileStarting(): boolean {
    if (this.#phase === "starting") return false;
    if (this.#phase === "stopping") {
      this.#merger.control(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
      this.#close(1000, "capture ended");
      this.#finish("CAPTURE_STOPPED", this.#stopReason);
    }
    this.#slot?.release();
    return true;
  }

  #limit(err: ApiError): void {
    if (this.#phase !== "running") return;
    this.#outcome = "LIMIT_REACHED";
    this.#detail = err.message;
    this.#merger.status(API_SOURCE, "LIMIT_REACHED", "api", err.message, { limit: err.limit });
    this.stop(err.message);
  }

  #end(started: number, summaries: SourceSummary[]): void {
    for (const s of summaries) {
      const st = s.stats;
      if (!st) continue;
      const m = this.deps.metrics.drops;
      m.inc({ resolver: "bosh", stage: "kernel" }, st.dropped + st.if_dropped);
      m.inc({ resolver: "bosh", stage: "agent" }, st.engine_dropped + st.agent_dropped);
      m.inc({ resolver: "bosh", stage: "api" }, this.#merger.dropped(s.source));
    }
    if (started === 0 && this.#outcome !== "CLIENT_GONE") {
      const reasons = summaries.map((s) => s.error).filter(Boolean).join("; ");
      this.#refuse(
        new ApiError("START_CAPTURE_FAILED", `no instance could start capturing: ${reasons}`),
      );
      return;
    }
    const failed = summaries.filter((s) => s.outcome === "unavailable");
    if (failed.length > 0) {
      this.deps.metrics.sourcesFailed.inc({ resolver: "bosh" }, failed.length);
    }
    if (this.#outcome === "CAPTURE_STOPPED" && failed.length > 0) {
      if (failed.length === summaries.length) this.#outcome = "INSTANCE_UNAVAILABLE";
      this.#detail = `${failed.length} of ${summaries.length} source(s) unavailable: ` +
        failed.map((s) => `${s.origin}: ${s.error ?? "failed"}`).join("; ").slice(0, 1000);
    }
    this.#merger.control(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
    this.#close(1000, "capture ended");
    this.#finish(this.#outcome, this.#detail ?? (this.#stopReason || undefined));
  }

  /** One STATUS with the error, close 1008/1011, audit. */
  #refuse(e: unknown): void {
    if (this.#phase === "done") return;
    if (!this.#merger) {
      // Not open yet (mid-upgrade): there is no socket to tell; onOpen sends it.
      this.#pendingRefusal ??= e instanceof ApiError
        ? e
        : new ApiError("START_CAPTURE_FAILED", `internal error: ${(e as Error)?.message ?? e}`);
      return;
    }
    const err = e instanceof ApiError ? e : new ApiError(
      "START_CAPTURE_FAILED",
      `internal error: ${(e as Error)?.message ?? String(e)}`,
    );
    if (!(e instanceof ApiError)) this.#log.error("capture failed", { error: e as Error });
    if (["UNAUTHENTICATED", "PERMISSION_DENIED"].includes(err.kind)) {
      this.deps.metrics.authFailures.inc({ type: err.kind });
    }
    this.#merger.status(API_SOURCE, err.kind, "api", err.message, { limit: err.limit });
    this.#fanout?.abort();
    this.#close(e instanceof ApiError ? 1008 : 1011, err.kind);
    this.#finish(err.kind, err.message);
  }

  #close(code: number, reason: string): void {
    try {
      this.#socket.close(code, reason);
    } catch { /* already closed */ }
  }

  #finish(outcome: string, detail?: string): void {
    if (this.#phase === "done") return;
    const wasRunning = this.#fanout !== null;
    this.#phase = "done";
    try {
      for (const t of this.#timers) clearTimeout(t);
      this.#merger?.close();
      this.#slot?.release();
      const d = this.deps;
      if (wasRunning) d.metrics.activeCaptures.dec({ resolver: "bosh" });
      d.metrics.captures.inc({ resolver: "bosh", outcome });
      this.#audit(outcome, detail);
      this.#log.info("capture ended", { outcome, packets: this.#packets, bytes: this.#bytes });
    } finally {
      // Whatever failed above, drain and shutdown must not wait forever for this session.
      this.#resolveWhenClosed();
    }
  }

  #audit(outcome: string, detail: string | undefined): void {
    const req = this.#request;
    const user = this.#user;
    const record: AuditRecord = {
      user: user?.user ?? "(unauthenticated)",
      userId: user?.userId,
      origin: user?.origin,
      clientId: user?.clientId,
      resolver: "bosh",
      deployment: req?.bosh.deployment,
      targets: this.#targets.map((t) => t.origin),
      interface: req?.interface ?? "",
      filter: this.#filter || req?.filter || "",
      snaplen: req?.snaplen ?? 0,
      start: this.#start,
      end: new Date(),
      packets: this.#packets,
      bytes: this.#bytes,
      outcome,
      detail,
      remote: this.peer.remote,
      forwardedFor: this.peer.forwardedFor,
    };
    // Refusals of sessions that never authenticated cost an attacker nothing: aggregate them.
    if (user) this.deps.audit.write(record);
    else this.deps.audit.writeUnauthenticated(record);
  }

  #resolveWhenClosed(): void {
    let t: ReturnType<typeof setTimeout> | undefined;
    Promise.race([
      this.#socketClosed.promise,
      new Promise<void>((r) => t = setTimeout(r, CLOSE_WAIT_MS)),
    ]).then(() => {
      clearTimeout(t);
      this.#resolveDone();
    });
  }
}
