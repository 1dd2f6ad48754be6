/**
 * The api's HTTP surface (DESIGN §1): a Hono app served by node:http(s) (TLS when listen.tls is
 * set, http_listener.ts). Routes: GET /health, GET /metrics and one client capture WebSocket per
 * TargetResolver (/v1/capture/bosh, upgraded in ws_upgrade.ts), and one listing route per resolver
 * (POST /v1/instances/bosh, see instances_route.ts); a platform is added by adding its resolver
 * to `#resolvers`.
 *
 * Authentication of the WebSocket happens at the upgrade, before any socket exists: the token
 * comes ONLY from `Authorization: Bearer` and is verified (signature, claims, identity) there. A
 * missing, misplaced (query string) or invalid token is answered `401 {type, text}` with
 * `WWW-Authenticate: Bearer`; a UAA that cannot be reached, 502. Those refusals cost an attacker
 * nothing, so their audit lines are aggregated; the query string is never logged.
 *
 * Authorization (the token's scope, then the platform with the user's own token) happens once
 * the start request arrived, in the session: a refusal there is audited in full (user, user_id,
 * origin, client_id). Sockets of verified users that have no capture yet are capped, in total
 * (`limits.max_waiting_sessions`) and per user (`limits.per_user_waiting_sessions`), so one user
 * cannot hold them all; each waits at most `startTimeoutMs` for its start. A client that vanishes
 * without closing is noticed by the WebSocket's ping/pong idle timeout.
 *
 * Message size: the WebSocket's framing is the api's own (ws_connection.ts on the upgrade's raw
 * socket), because Deno's WebSocket assembles a fragmented message of any size before the api
 * sees it. A frame header or fragments passing MAX_CONTROL_MESSAGE_BYTES (64 KiB) close the
 * connection with 1009 at once, with a STATUS and an audit line: an oversized message is never
 * buffered (docs/security.md).
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { MIN_PEER_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { VERSION } from "../version.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { deadline, settledWithin } from "../lib/deadline.ts";
import type { ApiConfig } from "./config.ts";
import { AuditLog } from "./audit.ts";
import { type ApiMetrics, createApiMetrics, METRICS_CONTENT_TYPE } from "./metrics.ts";
import { DirectorClient } from "./director_client.ts";
import { TokenVerifier } from "./token_verifier.ts";
import { ConcurrencyLimiter } from "./limits.ts";
import { ApiError, errorResponse } from "./errors.ts";
import type { FilterChecker } from "./filter_compose.ts";
import { FilterCompiler } from "./filter_compiler.ts";
import { BoshResolver } from "./bosh_resolver.ts";
import { CcClient } from "./cc_client.ts";
import { CfResolver, cfTokenVerifier } from "./cf_resolver.ts";
import {
  type ClientPeer,
  ClientSession,
  type SessionAuth,
  type SessionDeps,
} from "./client_session.ts";
import { authenticateUpgrade, bearerToken, waitingRefusal } from "./upgrade_auth.ts";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Buffer } from "node:buffer";
import { MAX_CONTROL_MESSAGE_BYTES } from "../protocol/messages.ts";
import { HttpListener, switchingProtocols, writeResponse } from "./http_listener.ts";
import { EarlyBytes, readUpgrade, upgradePeerAddress } from "./ws_upgrade.ts";
import { WsConnection } from "./ws_connection.ts";
import type { TargetResolver } from "./target_resolver.ts";
import { instancesRoute } from "./instances_route.ts";
import { usable as streamSocketUsable } from "./agent_stream_tls.ts";
import { mallocTuningSummary } from "../ffi/malloc_tuning.ts";

export interface ApiServerOptions {
  config: ApiConfig;
  log?: Logger;
  /** audit sink for tests; default: the configured file or stderr */
  auditSink?: (line: string) => void;
  pingIntervalMs?: number;
  startTimeoutMs?: number;
  agentIdleTimeoutMs?: number;
  stopTimeoutMs?: number;
  checkFilter?: FilterChecker;
  /** test hook: bind here instead of listen.port */
  port?: number;
  /** WebSocket ping/pong idle timeout in seconds (ws_connection.ts); default 30 */
  wsIdleTimeoutSec?: number;
  /** test hook: byte bounds of what is held for one client (default 16 MiB / 32 MiB hard cap) */
  clientBuffer?: SessionDeps["clientBuffer"];
  /** test hook: called with each new session, before its socket opens */
  onSession?: (session: ClientSession) => void;
  /** test hook: more platforms, each on its own route, after the BOSH resolver */
  extraResolvers?: TargetResolver[];
}

export class ApiServer {
  readonly app: Hono;
  readonly metrics: ApiMetrics;
  readonly sessions = new Set<ClientSession>();
  readonly #deps: SessionDeps;
  /** one capture route each; the session and the stream are the same for all */
  readonly #resolvers: TargetResolver[];
  readonly #director: DirectorClient;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  #server: HttpListener | null = null;
  #draining = false;
  /** set by close(): an upgrade whose token check ends later is refused, not opened */
  #closed = false;
  #cc: CcClient | null = null;
  /** compiles user filters in a pre-warmed worker, under a deadline (unless a test injects) */
  readonly #compiler: FilterCompiler | null;
  /** upgrade requests between their arrival and their session (token being verified) */
  readonly #upgrading = new Set<Promise<Response | void>>();

  private constructor(readonly opts: ApiServerOptions, audit: AuditLog) {
    const { config } = opts;
    this.#log = opts.log ?? createLogger({ component: "api", level: config.logLevel });
    this.#audit = audit;
    this.metrics = createApiMetrics();
    this.#compiler = opts.checkFilter ? null : new FilterCompiler();
    this.#director = new DirectorClient({
      url: config.bosh.directorUrl,
      caCert: config.bosh.tls.ca?.pem,
      serverName: config.bosh.tls.serverName,
      skipVerify: config.bosh.tls.skipVerify,
      timeoutMs: config.timeouts.directorMs,
    });
    const verifier = new TokenVerifier({
      source: this.#director,
      requiredScope: config.bosh.tokenScope,
      timeoutMs: config.timeouts.uaaMs,
      fetch: this.#director.uaaFetch,
    });
    this.#resolvers = [
      new BoshResolver({
        verifier,
        director: this.#director,
        agentPort: config.bosh.agentPort,
        maxTargets: config.limits.maxTargets,
      }),
      ...(config.cf ? [this.#cfResolver(config.cf)] : []),
      ...(opts.extraResolvers ?? []),
    ];
    this.#deps = {
      config,
      limiter: new ConcurrencyLimiter({
        global: config.concurrentCaptures,
        perUser: config.limits.perUserConcurrentCaptures,
      }),
      metrics: this.metrics,
      audit,
      log: this.#log,
      agentTls: {
        ca: config.agentsMtls.ca.pem,
        cert: config.agentsMtls.certificate.pem,
        key: config.agentsMtls.privateKey.pem,
        serverName: config.agentsMtls.serverName,
        skipVerify: config.agentsMtls.skipVerify,
      },
      checkFilter: opts.checkFilter ?? this.#compiler!.check,
      pingIntervalMs: opts.pingIntervalMs ?? 15_000,
      startTimeoutMs: opts.startTimeoutMs ?? 10_000,
      agentIdleTimeoutMs: opts.agentIdleTimeoutMs ?? 30_000,
      stopTimeoutMs: opts.stopTimeoutMs ?? Math.max(1000, config.drainTimeoutMs - 1000),
      clientBuffer: opts.clientBuffer,
      draining: () => this.#draining,
    };
    this.app = this.#routes();
  }

  /** Builds the app and listens on listen.address:port (TLS if configured). */
  static async start(opts: ApiServerOptions): Promise<ApiServer> {
    let server: ApiServer | undefined;
    const audit = await AuditLog.open({
      ...opts.config.audit,
      sink: opts.auditSink,
      onError: (e) => server && server.#auditFailed(e),
    });
    const s = server = new ApiServer(opts, audit);
    s.#warnInsecure();
    const { listen } = opts.config;
    const port = opts.port ?? listen.port;
    try {
      s.#server = await HttpListener.start({
        address: listen.address,
        port,
        tls: listen.tls && { cert: listen.tls.certificate.pem, key: listen.tls.privateKey.pem },
        fetch: s.app.fetch,
        onUpgrade: (req, socket, head) => s.#onUpgrade(req, socket, head),
      });
    } catch (e) {
      audit.close();
      s.#director.close();
      s.#compiler?.close();
      throw new Error(
        `cannot listen on ${listen.address}:${port}: ${(e as Error).message}; ` +
          `check listen in ${opts.config.file}`,
      );
    }
    s.#log.info("api listening", {
      address: listen.address,
      port: s.port,
      tls: !!listen.tls,
      director: opts.config.bosh.directorUrl,
      version: VERSION,
      malloc: mallocTuningSummary(),
    });
    return s;
  }

  #auditFailed(e: Error): void {
    this.metrics.auditErrors.inc();
    this.#log.error("cannot write an audit line", { error: e });
  }

  /** skip_verify turns TLS into encryption without authentication: say so, loudly, at start. */
  #warnInsecure(): void {
    const { config } = this.opts;
    const what = [
      config.bosh.tls.skipVerify &&
      "bosh.tls.skip_verify: the Director's and its UAA's certificates are NOT verified; " +
        "anyone on the path can impersonate them and forge the token keys",
      config.agentsMtls.skipVerify &&
      "agents_mtls.skip_verify: agent certificates are NOT verified; anyone on the path can " +
        "impersonate an agent",
    ].filter((x): x is string => typeof x === "string");
    for (const text of what) {
      this.#log.warn(`INSECURE CONFIGURATION: ${text}; set the CA instead (${config.file})`);
    }
    if (
      !streamSocketUsable({ ...config.agentsMtls, ca: config.agentsMtls.ca.pem, cert: "", key: "" })
    ) {
      this.#log.warn(
        "agent streams are read through node:https (skip_verify, or this Deno lacks the TLS hooks " +
          "of server/agent_stream_tls.ts): a slow client makes the api discard, not the agents",
      );
    }
  }

  get port(): number {
    return this.#server?.port ?? 0;
  }

  get url(): string {
    const scheme = this.opts.config.listen.tls ? "https" : "http";
    const host = this.opts.config.listen.address.replace(/^0\.0\.0\.0$/, "127.0.0.1");
    return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${this.port}`;
  }

  get draining(): boolean {
    return this.#draining;
  }

  health() {
    return {
      healthy: !this.#draining,
      draining: this.#draining,
      id: this.opts.config.id,
      version: VERSION,
      protocol_version: PROTOCOL_VERSION,
      min_protocol_version: MIN_PEER_VERSION,
      resolvers: this.#resolvers.map((r) => r.name),
      active_captures: this.sessions.size,
    };
  }

  /**
   * SIGTERM: no new captures, /health 503, running captures stopped and drained to their
   * clients; whatever is left at `timeoutMs` is cut. Then the listener closes.
   */
  async drain(timeoutMs = this.opts.config.drainTimeoutMs): Promise<void> {
    this.#draining = true;
    this.#log.info("api draining", { active_captures: this.sessions.size, timeout_ms: timeoutMs });
    const until = Date.now() + timeoutMs;
    // Upgrades still checking their token become sessions (refused on open) before the count.
    await settledWithin(Promise.allSettled([...this.#upgrading]), timeoutMs);
    const sessions = [...this.sessions];
    for (const s of sessions) {
      try {
        s.drain();
      } catch (e) {
        // One broken session must not stop the others from draining.
        this.#log.error("drain of a session failed", { error: e as Error });
        s.abort();
      }
    }
    const all = Promise.all(sessions.map((s) => s.done));
    if (!await settledWithin(all, Math.max(0, until - Date.now()))) {
      this.#log.warn("drain deadline passed; cutting remaining captures", {
        remaining: this.sessions.size,
      });
      for (const s of this.sessions) s.abort();
      await deadline(all, 2000);
    }
    await this.close();
  }

  /** CF app capture: the Cloud Controller's UAA verifies tokens, the CC authorizes (cf.*). */
  #cfResolver(cf: NonNullable<ApiConfig["cf"]>): CfResolver {
    const { config } = this.opts;
    const cc = this.#cc = new CcClient({
      url: cf.apiUrl,
      caCert: cf.tls.ca?.pem,
      serverName: cf.tls.serverName,
      skipVerify: cf.tls.skipVerify,
      timeoutMs: config.timeouts.cloudControllerMs,
    });
    return new CfResolver({
      cc,
      verifier: cfTokenVerifier(cc, { timeoutMs: config.timeouts.uaaMs }),
      agentPort: cf.agentPort,
      requireSshEnabled: cf.requireSshEnabled,
      maxTargets: config.limits.maxTargets,
    });
  }

  /** Cuts every running capture now (a second SIGTERM); each session still writes its audit. */
  abortCaptures(): void {
    for (const s of this.sessions) s.abort();
  }

  /** Closes the listener and everything the api holds (after drain, or in tests). */
  async close(): Promise<void> {
    this.#closed = true;
    // upgrades still checking their token answer 503 (below) before the audit log closes
    await settledWithin(Promise.allSettled([...this.#upgrading]), 5_000);
    for (const s of this.sessions) s.abort();
    const server = this.#server;
    this.#server = null;
    if (server) await server.close();
    this.#director.close();
    this.#cc?.close();
    this.#compiler?.close();
    this.#audit.close();
    this.#log.info("api stopped");
  }

  #routes(): Hono {
    const app = new Hono();
    app.get("/health", (c) => c.json(this.health(), this.#draining ? 503 : 200));
    app.get("/metrics", (c) => {
      if (!this.opts.config.metrics.enabled) {
        throw new ApiError(
          "INVALID_REQUEST",
          "metrics are disabled (metrics.enabled)",
          undefined,
          404,
        );
      }
      c.header("content-type", METRICS_CONTENT_TYPE);
      return c.body(this.metrics.registry.render());
    });
    for (const resolver of this.#resolvers) this.#captureRoute(app, resolver);
    // the dry run / listing of each platform: same token rules and resolver as its capture
    for (const resolver of this.#resolvers) {
      instancesRoute(app, resolver, {
        agentTls: this.#deps.agentTls,
        probeTimeoutMs: this.opts.config.timeouts.agentConnectMs,
        checkFilter: this.opts.checkFilter ?? this.#compiler!.check,
        log: this.#log,
        bearer: (c) => bearerToken(c.req.header("authorization"), new URL(c.req.url)),
      });
    }
    app.notFound((c) =>
      errorResponse(
        new ApiError("INVALID_REQUEST", `no route ${c.req.method} ${c.req.path}`, undefined, 404),
      )
    );
    // The one place where a thrown error becomes an HTTP answer: an ApiError by its type,
    // Hono's own HTTPException as it is, anything else as an internal error that is logged.
    app.onError((err, c) => {
      if (err instanceof HTTPException) return err.getResponse();
      if (err instanceof ApiError) return errorResponse(err);
      this.#log.error("request failed", { path: c.req.path, error: err });
      return errorResponse(
        new ApiError("CONNECTION_ERROR", `api error: ${err.message}`, undefined, 500),
      );
    });
    return app;
  }

  /** A plain GET on a capture route: the WebSocket is reached by an upgrade (#onUpgrade). */
  #captureRoute(app: Hono, resolver: TargetResolver): void {
    app.get(resolver.path, () => {
      throw new ApiError(
        "INVALID_REQUEST",
        "this endpoint speaks WebSocket; connect with a pcap client",
        undefined,
        426,
      );
    });
  }

  /**
   * A WebSocket upgrade: the token is verified before a socket counts, the waiting-sockets caps
   * are checked where the session is added (so that concurrent upgrades cannot overshoot), and
   * the session gets the api's own WebSocket (ws_connection.ts).
   */
  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => socket.destroy());
    const early = new EarlyBytes(socket, head);
    if (socket.destroyed) return;
    const up = readUpgrade(req, this.#resolvers.map((r) => r.path), upgradePeerAddress(socket));
    if (up instanceof ApiError) return void writeResponse(socket, errorResponse(up));
    const resolver = this.#resolvers.find((r) => r.path === up.url.pathname)!;
    const upgrade = (async () => {
      const { authorization } = up;
      const raw = new Request(up.url, authorization ? { headers: { authorization } } : {});
      const auth = await authenticateUpgrade(raw, resolver, this.#deps, up.peer);
      if (auth instanceof Response) return void await writeResponse(socket, auth);
      if (this.#closed) {
        const closed = new ApiError(
          "START_CAPTURE_FAILED",
          "the api is shutting down; retry in a moment",
          undefined,
          503,
        );
        return void await writeResponse(socket, errorResponse(closed));
      }
      if (socket.destroyed) return;
      this.#open(resolver, auth, up.peer, { socket, head: early.take(), key: up.key });
    })().catch((e) => {
      this.#log.error("upgrade failed", { error: e as Error });
      socket.destroy();
    });
    this.#upgrading.add(upgrade);
    upgrade.finally(() => this.#upgrading.delete(upgrade));
  }

  #open(
    resolver: TargetResolver,
    verifiedAuth: SessionAuth,
    peer: ClientPeer,
    { socket, head, key }: { socket: Duplex; head: Uint8Array; key: string },
  ): void {
    const refused = waitingRefusal(this.sessions, verifiedAuth.user.key, this.opts.config.limits);
    const auth = refused ? { ...verifiedAuth, refused } : verifiedAuth;
    const session = new ClientSession(this.#deps, resolver, auth, peer);
    this.sessions.add(session);
    session.done.then(() => this.sessions.delete(session));
    this.opts.onSession?.(session);
    (socket as Duplex & { setNoDelay?(on: boolean): void }).setNoDelay?.(true);
    socket.write(switchingProtocols(key));
    const ws = new WsConnection(socket, head, {
      maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES,
      idleTimeoutMs: (this.opts.wsIdleTimeoutSec ?? 30) * 1000,
      onMessage: (data) => session.onMessage(data),
      onClose: () => session.onClose(),
      onTooBig: (text) => session.onTooBig(text),
      onProtocolError: (text) => session.onProtocolError(text),
    });
    session.onOpen(ws);
    if (this.#draining) session.drain();
  }
}
