/**
 * One client WebSocket on a capture route (docs/protocol.md "Client API"): the phase machine,
 * authentication and audit. HELLO, then the start request is checked (token and targets through
 * the route's TargetResolver, filter, limits) and fanned out into a CaptureStream; the merged
 * stream flows until a stop (client, limit, SIGTERM) has drained every source; END and close
 * 1000. Refusals send one STATUS and close with 1008 (policy) naming the type; internal
 * failures close with 1011. An audit line is written for every capture request.
 */
import { encodeFrame, encodeJsonFrame, FrameKind } from "../protocol/frame_codec.ts";
import { checkPeerVersion, makeHello } from "../protocol/hello.ts";
import type { Logger } from "../lib/log.ts";
import { deadline } from "../lib/deadline.ts";
import type { ApiConfig } from "./config.ts";
import type { AuditLog } from "./audit.ts";
import type { ApiMetrics } from "./metrics.ts";
import type { AgentTlsOptions } from "./agent_client.ts";
import type { VerifiedToken } from "./token_verifier.ts";
import type { CaptureSlot, ConcurrencyLimiter } from "./limits.ts";
import { ApiError, asApiError } from "./errors.ts";
import type {
  AgentTarget,
  ResolverFacts,
  StartRequestBase,
  TargetResolver,
} from "./target_resolver.ts";
import { type FilterChecker, validateUserFilter } from "./filter_compose.ts";
import { agentRequest, captureBounds, planTargets } from "./capture_plan.ts";
import { API_SOURCE, ClientMerger, type SocketLike } from "./merge.ts";
import { Fanout, type SourceSummary } from "./fanout.ts";
import { type ClientPeer, writeCaptureAudit } from "./capture_audit.ts";
import { readClientMessage } from "./client_message.ts";
import { MAX_CONTROL_MESSAGE_BYTES } from "../protocol/messages.ts";
import { CaptureStream } from "./capture_stream.ts";
import { noneStarted, type Outcome } from "./capture_outcome.ts";

export type { ClientPeer } from "./capture_audit.ts";

/** What every session of the api shares (each route adds its resolver). */
export interface SessionDeps {
  config: ApiConfig;
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
  /** byte bounds of what is held for one client (merge.ts); defaults there */
  clientBuffer?: { maxBufferedBytes?: number; maxHeldBytes?: number };
  draining(): boolean;
}

type Phase = "awaiting-start" | "starting" | "running" | "stopping" | "done";

/**
 * What the upgrade established: the bearer token and the identity it proves (authenticated, not
 * yet authorized), and possibly a refusal decided there (a waiting-sockets cap), sent on open.
 */
export interface SessionAuth {
  token: string;
  user: VerifiedToken;
  refused?: ApiError;
}

const SHUTTING_DOWN = "the api is shutting down; retry in a moment";
type ServerSocket = SocketLike & { close(code?: number, reason?: string): void };

/** How long a finished session waits for the client to complete the closing handshake. */
const CLOSE_WAIT_MS = 3000;

export class ClientSession {
  #phase: Phase = "awaiting-start";
  #socket!: ServerSocket;
  #merger!: ClientMerger;
  #fanout: Fanout | null = null;
  #slot: CaptureSlot | null = null;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #request: StartRequestBase | null = null;
  #facts: ResolverFacts = {};
  #targets: AgentTarget[] = [];
  #filter = "";
  #start = new Date();
  #stream: CaptureStream | null = null;
  #outcome: Outcome = "CAPTURE_STOPPED";
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
    /** the route's platform: authenticates, authorizes and resolves the start request */
    private readonly resolver: TargetResolver,
    /** the token verified at the upgrade and who it names */
    private readonly auth: SessionAuth,
    private readonly peer: ClientPeer = {},
  ) {
    this.#log = deps.log.child({
      remote: peer.remote,
      user: auth.user.user,
      user_key: auth.user.key,
    });
  }

  /**
   * No capture slot yet and not over: counts against the api's caps on waiting sockets. A socket
   * refused by a cap does not count while it is being told, so refusals cannot fill the caps.
   */
  get waiting(): boolean {
    return !this.auth.refused && this.#phase !== "done" && this.#slot === null;
  }

  /** the stable identity of the session's user (limits and audit key on it) */
  get userKey(): string {
    return this.auth.user.key;
  }

  /** highest number of bytes held for this client (bounded by the buffer limits) */
  get bufferedHighWater(): number {
    return this.#merger?.bufferedHighWater ?? 0;
  }

  get user(): string {
    return this.auth.user.user;
  }

  onOpen(socket: ServerSocket): void {
    this.#socket = socket;
    if (this.#phase === "done") {
      // Cut by abort() before the upgrade completed.
      this.#close(1011, "api shutting down");
      return;
    }
    const { buffer } = this.deps.config;
    this.#merger = new ClientMerger(socket, { ...buffer, ...this.deps.clientBuffer }, {
      onCongested: () => this.deps.metrics.congestion.inc({ resolver: this.resolver.name }),
      onOverflow: (text) => this.#overflow(text),
    });
    const hello = makeHello("api", this.deps.config.id);
    this.#merger.control(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, hello));
    if (this.#pendingRefusal) {
      this.#refuse(this.#pendingRefusal);
      return;
    }
    if (this.auth.refused) {
      this.#refuse(this.auth.refused);
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
    const msg = readClientMessage(
      data,
      this.#phase === "awaiting-start",
      this.resolver.startRequest,
    );
    if (msg.kind === "start") {
      this.#phase = "starting";
      this.#begin(msg.request).catch((e) => this.#refuse(e));
      return;
    }
    if (msg.kind === "stop") {
      this.stop("stopped by the client");
      return;
    }
    const err = new ApiError("INVALID_REQUEST", msg.problem);
    if (this.#phase === "running" || this.#phase === "starting") {
      this.#merger.status(API_SOURCE, "INVALID_REQUEST", "api", err.message);
      this.stop("invalid client message");
    } else if (this.#phase === "awaiting-start") {
      this.#refuse(err);
    }
  }

  /**
   * A client message over the limit, refused by the framing before it was buffered; the socket
   * closes itself with 1009. STATUS, then the audit line.
   */
  onTooBig(text: string): void {
    this.#log.warn("client message too big; connection closed", { phase: this.#phase, text });
    this.#violation(
      `message exceeds the size limit: ${text}; send only start and stop requests (at most ` +
        `${MAX_CONTROL_MESSAGE_BYTES} bytes each)`,
    );
  }

  /** A WebSocket protocol violation (the socket closes itself with its code). */
  onProtocolError(text: string): void {
    this.#log.info("client broke the WebSocket protocol; connection closed", { text });
    this.#violation(`WebSocket protocol error: ${text}; connect with a pcap client`);
  }

  #violation(text: string): void {
    if (this.#phase === "done") return;
    this.#merger?.status(API_SOURCE, "INVALID_REQUEST", "api", text);
    this.#fanout?.abort();
    this.#finish("INVALID_REQUEST", text);
  }

  /** Client gone (its close frame arrived, or the socket closed): drop every agent at once. */
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

  async #begin(req: StartRequestBase): Promise<void> {
    this.#request = req;
    const d = this.deps;
    const resolver = this.resolver;
    this.#facts = resolver.facts(req);
    if (d.draining()) throw new ApiError("START_CAPTURE_FAILED", SHUTTING_DOWN);
    const tooOld = checkPeerVersion(req.protocol_version, "client", "api");
    if (tooOld) throw new ApiError("INVALID_REQUEST", tooOld);
    const { token, user } = this.auth;
    // Authenticated at the upgrade; authorized now, so a refusal is audited with the identity.
    await resolver.authorize?.(user);
    if (this.#leftWhileStarting()) return;
    // Keyed on the stable identity: user names repeat across UAA origins.
    this.#slot = d.limiter.acquire(user.key);
    const t0 = performance.now();
    const userFilter = await validateUserFilter(req.filter, { check: d.checkFilter });
    if (this.#leftWhileStarting()) return;
    this.#filter = userFilter;
    const t1 = performance.now();
    const resolution = await resolver.resolve(req, { token, user });
    this.#facts = { ...this.#facts, ...resolution.facts };
    const t2 = performance.now();
    const plan = await planTargets(resolution, userFilter, d.checkFilter);
    // Where the start went before the agents are dialled (fan-out start-up; "agents streaming"
    // has the rest).
    const prepared = {
      filter_ms: ms(t1 - t0),
      resolve_ms: ms(t2 - t1),
      plan_ms: ms(performance.now() - t2),
    };
    this.#targets = plan.targets;
    if (this.#leftWhileStarting()) return;
    const bounds = captureBounds(req, d.config);
    for (const s of plan.skipped) {
      this.#merger.status(API_SOURCE, "INSTANCE_UNAVAILABLE", s.origin, `${s.origin} ${s.reason}`);
    }
    this.#phase = "running";
    this.#start = new Date();
    d.metrics.activeCaptures.inc({ resolver: resolver.name });
    this.#log.info("capture starting", {
      ...this.#facts,
      targets: this.#targets.length,
      interface: req.interface,
      ...prepared,
    });
    const stream = this.#stream = new CaptureStream({
      merger: this.#merger,
      metrics: d.metrics,
      resolver: resolver.name,
      bounds,
      maxPackets: req.limits.max_packets ?? 0,
      onLimit: (err) => this.#limit(err),
      onStop: (reason) => this.stop(reason),
    });
    const fanout = new Fanout({
      targets: this.#targets,
      tls: d.agentTls,
      requestFor: (t) => agentRequest(req, t, bounds, user.user),
      sink: stream,
      connectTimeoutMs: d.config.timeouts.agentConnectMs,
      idleTimeoutMs: d.agentIdleTimeoutMs,
      stopTimeoutMs: d.stopTimeoutMs,
      onAgentError: (kind) => d.metrics.agentErrors.inc({ kind }),
      log: this.#log,
    });
    this.#fanout = fanout;
    const started = await fanout.started;
    const summaries = await fanout.done;
    this.#end(stream, started, summaries);
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

  /**
   * The client held up more than the merger's hard cap (it has sent LIMIT_REACHED and sends
   * nothing more): the capture ends now, without a drain nobody would read.
   */
  #overflow(text: string): void {
    if (this.#phase === "done") return;
    this.#log.warn("client too slow: the bytes held for it passed the hard cap", { detail: text });
    this.#fanout?.abort();
    this.#close(1008, "LIMIT_REACHED");
    this.#finish("LIMIT_REACHED", text);
  }

  #limit(err: ApiError): void {
    if (this.#phase !== "running") return;
    this.#outcome = "LIMIT_REACHED";
    this.#detail = err.message;
    this.#merger.status(API_SOURCE, "LIMIT_REACHED", "api", err.message, { limit: err.limit });
    this.stop(err.message);
  }

  #end(stream: CaptureStream, started: number, summaries: SourceSummary[]): void {
    stream.recordDrops(summaries);
    if (started === 0 && this.#outcome !== "CLIENT_GONE") {
      this.#refuse(noneStarted(summaries));
      return;
    }
    const end = stream.settle(this.#outcome, summaries);
    this.#outcome = end.outcome;
    if (end.detail !== undefined) this.#detail = end.detail;
    this.#merger.control(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
    this.#close(1000, "capture ended");
    this.#finish(this.#outcome, this.#detail ?? (this.#stopReason || undefined));
  }

  /** One STATUS with the error, close 1008/1011, audit. */
  #refuse(e: unknown): void {
    if (this.#phase === "done") return;
    const err = asApiError(e);
    if (!this.#merger) {
      // Not open yet (mid-upgrade): there is no socket to tell; onOpen sends it.
      this.#pendingRefusal ??= err;
      return;
    }
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

  #finish(outcome: Outcome, detail?: string): void {
    if (this.#phase === "done") return;
    const wasRunning = this.#fanout !== null;
    this.#phase = "done";
    try {
      for (const t of this.#timers) clearTimeout(t);
      this.#stream?.close();
      this.#merger?.close();
      this.#slot?.release();
      const d = this.deps;
      if (wasRunning) d.metrics.activeCaptures.dec({ resolver: this.resolver.name });
      d.metrics.captures.inc({ resolver: this.resolver.name, outcome });
      const packets = this.#stream?.packetCount ?? 0;
      const bytes = this.#stream?.byteCount ?? 0;
      writeCaptureAudit(d.audit, {
        user: this.auth.user,
        request: this.#request,
        targets: this.#targets,
        resolver: this.resolver.name,
        facts: this.#facts,
        filter: this.#filter,
        start: this.#start,
        packets,
        bytes,
        outcome,
        detail,
        peer: this.peer,
      });
      this.#log.info("capture ended", { outcome, packets, bytes });
    } finally {
      // Whatever failed above, drain and shutdown must not wait forever for this session.
      this.#resolveWhenClosed();
    }
  }

  #resolveWhenClosed(): void {
    deadline(this.#socketClosed.promise, CLOSE_WAIT_MS).then(() => this.#resolveDone());
  }
}

const ms = (x: number) => Math.round(x * 10) / 10;
