/**
 * The agent's HTTPS endpoint. node:https does the mutual TLS (Deno.serve cannot verify client
 * certificates, DESIGN §10): no certificate, another CA or an expired one fail the handshake.
 * Routes are a Hono app served through @hono/node-server's request listener; allowed_names is
 * checked per request from the socket's peer certificate. A capture's stream bypasses the
 * listener's body path: agent/stream_writer.ts writes it to the socket (RESPONSE_ALREADY_SENT).
 */
import { createServer, type Server } from "node:https";
import type { TLSSocket } from "node:tls";
import type { Socket } from "node:net";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { getRequestListener, type HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { MIN_PEER_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import type { StatusType } from "../protocol/messages.ts";
import { VERSION } from "../version.ts";
import type { Logger } from "../lib/log.ts";
import { settledWithin } from "../lib/deadline.ts";
import type { AgentConfig, AgentTls } from "./config.ts";
import { CaptureSession, type OpenEngine } from "./capture_session.ts";
import { CaptureEngine, CaptureError } from "./engine/capture_engine.ts";
import { type PeerIdentity, peerIdentity, peerLabel, peerRefusal } from "./peer_identity.ts";
import { selfAcceptedAsClient } from "./self_trust.ts";
import { MAX_START_BODY_BYTES, parseStartRequest } from "./start_request.ts";
import { containerNetns } from "./container_target.ts";
import { ContainerLookupError } from "./container_lookup.ts";
import { errorResponseBody, httpStatusOf, StatusError } from "../protocol/status_errors.ts";
import { writeChunkedStream } from "./stream_writer.ts";
import { mallocTuningSummary } from "../ffi/malloc_tuning.ts";

export interface AgentServerOptions {
  config: AgentConfig;
  tls: AgentTls;
  log: Logger;
  /** How captures are opened; the real capture engine unless a test injects one. */
  openEngine: OpenEngine;
  /** Capture inside this network namespace (tests run the agent's "VM" as a namespace). */
  netns?: string;
  statsIntervalMs?: number;
  lingerMs?: number;
  /** Keep an idle capture worker ready so a start skips Worker start-up (default true). */
  prewarmEngine?: boolean;
}

export interface Health {
  healthy: boolean;
  draining: boolean;
  id: string;
  version: string;
  protocol_version: number;
  min_protocol_version: number;
  active_captures: number;
  /** idle capture workers ready for the next capture (its start then skips a worker's start-up) */
  warm_workers: number;
}

type Env = { Bindings: HttpBindings; Variables: { peer: PeerIdentity } };

function errorBody(type: StatusType, text: string, extra: Record<string, unknown> = {}) {
  return { type, text, ...extra };
}

export class AgentServer {
  readonly app: Hono<Env>;
  #opts: AgentServerOptions;
  #log: Logger;
  #server: Server;
  #sessions = new Map<string, CaptureSession>();
  /** capture streams still being written (a drain waits for their last bytes) */
  #writers = new Set<Promise<void>>();
  #opening = 0;
  #draining = false;
  #port = 0;
  /** open TCP connections (the server closes more than maxConnections at accept) */
  #connections = 0;
  #handshakeTimeouts = 0;
  /** last time each sampled warning was logged */
  #sampledAt = new Map<string, number>();

  private constructor(opts: AgentServerOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.app = this.#routes();
    const listener = getRequestListener(this.app.fetch, { overrideGlobalObjects: false });
    this.#server = createServer({
      key: opts.tls.key,
      cert: opts.tls.cert,
      ca: opts.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      // A connection that never finishes its handshake would hold a slot until the TCP
      // keep-alive gave up (node's default is 120 s).
      handshakeTimeout: opts.config.listen.handshakeTimeoutMs,
    }, listener);
    // Closed at accept, before any TLS work: idle or handshaking sockets cannot pile up.
    this.#server.maxConnections = opts.config.listen.maxConnections;
    this.#server.on("connection", (socket: Socket) => this.#countConnection(socket));
    this.#server.on("tlsClientError", (err: Error & { code?: string }, socket: TLSSocket) => {
      // The TLS stack reports certificate problems (other CA, expired) only as a reset.
      const reason = err.code === "ECONNRESET"
        ? "handshake aborted: client certificate not signed by client_cas, expired or invalid"
        : err.message;
      // Deno's TLS socket keeps the peer address on the underlying TCP socket (`_parent`).
      const parent = (socket as unknown as { _parent?: { remoteAddress?: string } })?._parent;
      if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT" || err.message === "TLS handshake timeout") {
        this.#handshakeTimeouts++;
        this.#logSampled("handshake_timeout", "TLS handshake timed out; connection closed", {
          remote_address: socket?.remoteAddress ?? parent?.remoteAddress,
          timeout_ms: opts.config.listen.handshakeTimeoutMs,
          handshake_timeouts_total: this.#handshakeTimeouts,
        });
        return;
      }
      this.#log.warn("TLS client refused", {
        remote_address: socket?.remoteAddress ?? parent?.remoteAddress,
        reason,
        code: err.code,
      });
    });
  }

  /** Listens on config.listen; resolves once bound (port 0 picks a free port). */
  static async start(opts: AgentServerOptions): Promise<AgentServer> {
    const s = new AgentServer(opts);
    const { address, port } = opts.config.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) =>
        reject(
          new Error(
            `cannot listen on ${address}:${port}: ${e.message}; check listen.address/listen.port in ${opts.config.file}`,
          ),
        );
      s.#server.once("error", onError);
      s.#server.listen(port, address, () => {
        s.#server.off("error", onError);
        resolve();
      });
    });
    if (opts.prewarmEngine ?? true) CaptureEngine.prewarm();
    const bound = s.#server.address();
    s.#port = typeof bound === "object" && bound ? bound.port : port;
    s.#log.info("agent listening", {
      address,
      port: s.#port,
      allowed_names: opts.config.listen.allowedNames,
      version: VERSION,
      malloc: mallocTuningSummary(),
    });
    s.#warnIfSelfAccepted();
    return s;
  }

  #countConnection(socket: Socket): void {
    this.#connections++;
    socket.once("close", () => this.#connections--);
    const max = this.#opts.config.listen.maxConnections;
    if (this.#connections >= max) {
      this.#logSampled("connection_cap", "connection cap reached; new connections are refused", {
        open_connections: this.#connections,
        max_connections: max,
        hint: "listen.max_connections bounds open connections; TLS handshakes that do not " +
          "finish within listen.tls.handshake_timeout are closed",
      });
    }
  }

  /** At most one line per kind every 10 s: abuse must not flood the log. */
  #logSampled(kind: string, msg: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    if (now - (this.#sampledAt.get(kind) ?? -Infinity) < 10_000) return;
    this.#sampledAt.set(kind, now);
    this.#log.warn(msg, fields);
  }

  /** Open TCP connections, handshaking or established. */
  get openConnections(): number {
    return this.#connections;
  }

  /** DESIGN §10: an empty allow-list plus a server certificate usable as a client one. */
  #warnIfSelfAccepted(): void {
    const { config, tls } = this.#opts;
    if (config.listen.allowedNames.length > 0) return;
    const why = selfAcceptedAsClient(tls.cert, tls.ca);
    if (!why) return;
    this.#log.warn(
      "SECURITY: this agent accepts its own server certificate as a client certificate",
      {
        certificate: config.listen.paths.certificate,
        client_cas: config.listen.paths.clientCas,
        reason: `listen.tls.allowed_names is empty, and ${why}`,
        risk: "the key of any VM with such a certificate can start captures on every agent",
        fix: "set listen.tls.allowed_names to the api's client certificate DNS name, or issue " +
          "agent certificates with extendedKeyUsage serverAuth only or from another CA",
      },
    );
  }

  get port(): number {
    return this.#port;
  }

  get activeCaptures(): number {
    return this.#sessions.size;
  }

  get draining(): boolean {
    return this.#draining;
  }

  health(): Health {
    return {
      healthy: !this.#draining,
      draining: this.#draining,
      id: this.#opts.config.id,
      version: VERSION,
      protocol_version: PROTOCOL_VERSION,
      min_protocol_version: MIN_PEER_VERSION,
      active_captures: this.#sessions.size,
      warm_workers: CaptureEngine.warmWorkers(),
    };
  }

  /**
   * Stops accepting connections, drains every capture (as a stop does) and closes. Captures not
   * finished within `timeoutMs` are aborted, so this always returns in bounded time.
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      this.#log.info("agent draining", { active_captures: this.#sessions.size });
    }
    // No capture starts from now on: the idle worker has no job left.
    CaptureEngine.releasePrewarmed();
    // Stop accepting, but keep established keep-alive connections (node's close() would drop
    // the idle ones) so that a client can still see `draining: true` on /health.
    const server = this.#server as Server & { closeIdleConnections(): void };
    const closeIdle = server.closeIdleConnections;
    server.closeIdleConnections = () => {};
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections = closeIdle;
    const sessions = [...this.#sessions.values()];
    for (const s of sessions) s.stop("agent is shutting down");
    const all = Promise.all(sessions.map((s) => s.done));
    if (!await settledWithin(all, timeoutMs)) {
      this.#log.warn("drain deadline passed; aborting remaining captures", {
        remaining: this.#sessions.size,
      });
      for (const s of this.#sessions.values()) s.abort("agent drain deadline passed");
      await settledWithin(all, 2500);
    }
    // A finished session's END may still sit in its socket: let the writers end their responses.
    await settledWithin(Promise.all(this.#writers), 2500);
    this.#server.closeAllConnections();
    await closed;
    this.#log.info("agent stopped");
  }

  #routes(): Hono<Env> {
    const app = new Hono<Env>();
    const log = this.#log;

    app.use("*", async (c, next) => {
      const peer = peerIdentity(c.env.incoming.socket as TLSSocket);
      const refusal = peerRefusal(peer, this.#opts.config.listen.allowedNames);
      if (refusal) {
        log.warn("client refused", {
          peer: peerLabel(peer),
          peer_sans: peer.sans,
          remote_address: peer.address,
          reason: refusal,
          path: c.req.path,
        });
        const text = peer.problem
          ? `client refused: ${peer.problem}; connect with a client certificate from client_cas`
          : `client certificate "${peerLabel(peer)}" is not allowed on this agent ` +
            "(listen.tls.allowed_names matches DNS subjectAltNames, or the CN of a certificate " +
            "without any); use a certificate with an allowed name";
        return c.json(errorBody("PERMISSION_DENIED", text), 403);
      }
      c.set("peer", peer);
      await next();
    });

    app.get("/health", (c) => c.json(this.health()));

    // Draining is refused before the body is read; the body limit answers from Content-Length
    // when there is one, so an oversized start request is never buffered.
    app.post(
      "/captures",
      async (c, next) => {
        if (!this.#draining) return await next();
        return this.#refuse(
          c.get("peer"),
          new StatusError(
            "INSTANCE_UNAVAILABLE",
            `agent ${this.#opts.config.id} is shutting down; retry later`,
          ),
        );
      },
      bodyLimit({
        maxSize: MAX_START_BODY_BYTES,
        // Read and drop (up to 1 MiB) what the client is still sending, so that it gets to read
        // the answer; then close the connection, whose unread rest would be the next request.
        onError: async (c) => {
          await discardBody(c.req.raw.body, 1 << 20);
          return this.#refuse(
            c.get("peer"),
            new StatusError(
              "INVALID_REQUEST",
              `request body exceeds ${
                MAX_START_BODY_BYTES / 1024
              } KiB; send a single AgentStartRequest`,
            ),
            { connection: "close" },
          );
        },
      }),
      async (c) => this.#startCapture(c.get("peer"), c.req.raw, await c.req.text(), c.env.outgoing),
    );

    app.post("/captures/:id/stop", (c) => {
      const id = c.req.param("id");
      const session = this.#sessions.get(id);
      if (!session) {
        return c.json(
          errorBody("INVALID_REQUEST", `no running capture with id "${id}" on this agent`),
          404,
        );
      }
      log.info("capture stop requested", { capture_id: id, peer: peerLabel(c.get("peer")) });
      session.stop(`stop requested by ${peerLabel(c.get("peer"))}`);
      return c.json({ id, stopping: true }, 202);
    });

    app.notFound((c) =>
      c.json(errorBody("INVALID_REQUEST", `no route ${c.req.method} ${c.req.path}`), 404)
    );
    app.onError((err, c) => {
      log.error("request failed", { path: c.req.path, error: err });
      return c.json(errorBody("CONNECTION_ERROR", `agent error: ${err.message}`), 500);
    });
    return app;
  }

  #refuse(peer: PeerIdentity, err: StatusError, headers: Record<string, string> = {}): Response {
    this.#log.warn("capture refused", {
      peer: peerLabel(peer),
      type: err.type,
      reason: err.message,
    });
    return Response.json(errorResponseBody(err), { status: httpStatusOf(err), headers });
  }

  async #startCapture(
    peer: PeerIdentity,
    req: Request,
    body: string,
    outgoing: HttpBindings["outgoing"],
  ): Promise<Response> {
    const cfg = this.#opts.config;
    const refuse = (err: StatusError) => this.#refuse(peer, err);
    // A stop between the body and here still refuses: the drain must not wait for a new capture.
    if (this.#draining) {
      return refuse(
        new StatusError("INSTANCE_UNAVAILABLE", `agent ${cfg.id} is shutting down; retry later`),
      );
    }
    const parsed = parseStartRequest(body);
    if (!parsed.ok) {
      return refuse(new StatusError(parsed.type, parsed.text, { httpStatus: parsed.status }));
    }
    const limit = cfg.limits.concurrentCaptures;
    if (this.#sessions.size + this.#opening >= limit) {
      return refuse(
        new StatusError(
          "LIMIT_REACHED",
          `agent ${cfg.id} already runs ${limit} captures (limits.concurrent_captures); ` +
            "stop one or retry later",
          { limit: { name: "concurrent_captures", value: limit } },
        ),
      );
    }
    const id = crypto.randomUUID();
    const log = this.#log.child({ capture_id: id, peer: peerLabel(peer) });
    this.#opening++;
    let session: CaptureSession;
    try {
      // A CF target: the container's netns, entered by the capture worker's thread only.
      let netns = this.#opts.netns;
      const target = parsed.request.target;
      if (target) netns = (await containerNetns(target, cfg.cf)).netns;
      session = await CaptureSession.open({
        id,
        origin: cfg.id,
        request: parsed.request,
        buffer: cfg.buffer,
        maxDurationMs: cfg.limits.maxDurationMs,
        capture: cfg.capture,
        netns,
        peer: peerLabel(peer),
        log,
        openEngine: this.#opts.openEngine,
        statsIntervalMs: this.#opts.statsIntervalMs,
        lingerMs: this.#opts.lingerMs,
        // An agent-side abort (drain deadline, unread tail) cuts the connection.
        onAbort: () => outgoing.destroy(),
      });
    } catch (e) {
      if (e instanceof CaptureError && e.filterRejected) {
        return refuse(
          new StatusError(
            "INVALID_REQUEST",
            `invalid filter "${parsed.request.filter}": ${e.detail}; fix the filter`,
          ),
        );
      }
      if (e instanceof ContainerLookupError) {
        log.warn("container capture refused", { reason: e.message });
        return refuse(new StatusError("START_CAPTURE_FAILED", `agent ${cfg.id}: ${e.message}`));
      }
      return refuse(
        new StatusError(
          "START_CAPTURE_FAILED",
          `cannot start capture on ${parsed.request.interface}: ${(e as Error).message}`,
        ),
      );
    } finally {
      this.#opening--;
    }
    this.#sessions.set(id, session);
    session.done.then(() => this.#sessions.delete(id));
    // A client that goes away must release the capture at once (the stream cancel does too).
    req.signal?.addEventListener("abort", () => session.abort("client disconnected"), {
      once: true,
    });
    if (this.#draining) session.stop("agent is shutting down");
    const written = writeChunkedStream(session, outgoing, 200, {
      "content-type": "application/octet-stream",
      "cache-control": "no-store",
      "x-pcap-capture-id": id,
    }, log);
    this.#writers.add(written);
    written.then(() => this.#writers.delete(written));
    return RESPONSE_ALREADY_SENT;
  }
}

/** Reads and drops at most `max` bytes of a body nobody will use (never buffered). */
async function discardBody(body: ReadableStream<Uint8Array> | null, max: number): Promise<void> {
  if (!body || body.locked) return;
  const reader = body.getReader();
  try {
    for (let seen = 0; seen <= max;) {
      const { done, value } = await reader.read();
      if (done) return;
      seen += value.byteLength;
    }
  } catch {
    // the client went away: nothing left to answer
  } finally {
    await reader.cancel().catch(() => {});
  }
}
