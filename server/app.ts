/**
 * The api's HTTP surface (DESIGN §1): a Hono app served by Deno.serve (TLS when listen.tls is
 * set). Routes: GET /health, GET /metrics and one client capture WebSocket per TargetResolver
 * (/v1/capture/bosh), and one listing route per resolver (POST /v1/instances/bosh, see
 * instances_route.ts); a platform is added by adding its resolver to `#resolvers`.
 *
 * Authentication of the WebSocket: the token comes ONLY from `Authorization: Bearer`. A missing
 * token or one in the query string does not fail the upgrade (a browser-style WebSocket client
 * cannot read a 401 body); the socket opens, gets HELLO and one STATUS UNAUTHENTICATED that says
 * what to do, and is closed with 1008. The query string is never logged.
 *
 * Unauthenticated resource use is bounded: at most `maxUnauthenticatedSessions` sockets may wait
 * for their start request or its token check (more are refused with LIMIT_REACHED), each for at
 * most `startTimeoutMs`; their refusals are aggregated in the audit log. A client that vanishes
 * without closing is noticed by the WebSocket's ping/pong idle timeout.
 */
import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";
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
import { ApiError, errorResponse, limitReached } from "./errors.ts";
import type { FilterChecker } from "./filter_compose.ts";
import { BoshResolver } from "./bosh_resolver.ts";
import { CcClient } from "./cc_client.ts";
import { CfResolver, cfTokenVerifier } from "./cf_resolver.ts";
import { ClientSession, type SessionCredential, type SessionDeps } from "./client_session.ts";
import type { TargetResolver } from "./target_resolver.ts";
import { instancesRoute } from "./instances_route.ts";

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
  /** sockets allowed to wait unauthenticated (before/while their start is checked); default 64 */
  maxUnauthenticatedSessions?: number;
  /** WebSocket ping/pong idle timeout in seconds (Deno.upgradeWebSocket); default 30 */
  wsIdleTimeoutSec?: number;
  /** test hook: called with each new session, before its socket opens */
  onSession?: (session: ClientSession) => void;
  /** test hook: more platforms, each on its own route, after the BOSH resolver */
  extraResolvers?: TargetResolver[];
}

/** Default bound on sockets that have not authenticated yet. */
export const MAX_UNAUTHENTICATED_SESSIONS = 64;

const TOKEN_PARAMS = /^(access_token|token|bearer|authorization|auth)$/i;

/** The bearer token from the Authorization header, or why there is none usable. */
export function bearerToken(
  header: string | undefined,
  url: URL,
): { value: string } | { problem: string } {
  for (const [k, v] of url.searchParams) {
    if (TOKEN_PARAMS.test(k) || /^eyJ[\w-]+\.[\w-]+\./.test(v)) {
      return {
        problem: "a token in the URL is refused (URLs end up in proxy logs); send it in the " +
          "Authorization: Bearer header and log in again, as it may have leaked",
      };
    }
  }
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  if (!m) {
    return {
      problem: header
        ? "the Authorization header is not 'Bearer <token>'"
        : "no token: send your UAA access token in the Authorization: Bearer header " +
          "(log in with 'bosh log-in')",
    };
  }
  return { value: m[1] };
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
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #draining = false;
  #cc: CcClient | null = null;

  private constructor(readonly opts: ApiServerOptions, audit: AuditLog) {
    const { config } = opts;
    this.#log = opts.log ?? createLogger({ component: "api", level: config.logLevel });
    this.#audit = audit;
    this.metrics = createApiMetrics();
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
      checkFilter: opts.checkFilter,
      pingIntervalMs: opts.pingIntervalMs ?? 15_000,
      startTimeoutMs: opts.startTimeoutMs ?? 10_000,
      agentIdleTimeoutMs: opts.agentIdleTimeoutMs ?? 30_000,
      stopTimeoutMs: opts.stopTimeoutMs ?? Math.max(1000, config.drainTimeoutMs - 1000),
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
    const { promise, resolve } = Promise.withResolvers<void>();
    const base = {
      hostname: listen.address,
      port: opts.port ?? listen.port,
      onListen: () => resolve(),
      onError: (e: unknown) => {
        s.#log.error("request failed", { error: e as Error });
        return new Response("internal error", { status: 500 });
      },
    };
    try {
      s.#server = listen.tls
        ? Deno.serve(
          { ...base, cert: listen.tls.certificate.pem, key: listen.tls.privateKey.pem },
          s.app.fetch,
        )
        : Deno.serve(base, s.app.fetch);
    } catch (e) {
      audit.close();
      s.#director.close();
      throw new Error(
        `cannot listen on ${listen.address}:${base.port}: ${(e as Error).message}; ` +
          `check listen in ${opts.config.file}`,
      );
    }
    await promise;
    s.#log.info("api listening", {
      address: listen.address,
      port: s.port,
      tls: !!listen.tls,
      director: opts.config.bosh.directorUrl,
      version: VERSION,
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
  }

  get port(): number {
    return this.#server?.addr.port ?? 0;
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
    if (!await settledWithin(all, timeoutMs)) {
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
    for (const s of this.sessions) s.abort();
    const server = this.#server;
    this.#server = null;
    if (server) await server.shutdown();
    this.#director.close();
    this.#cc?.close();
    this.#audit.close();
    this.#log.info("api stopped");
  }

  #tooManyWaiting(max: number): ApiError {
    return limitReached(
      "unauthenticated_sessions",
      max,
      `the api already holds ${max} connections that have not sent a start request or are ` +
        "being checked; retry in a moment",
    );
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
        checkFilter: this.opts.checkFilter,
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

  /** The client capture WebSocket of one resolver. */
  #captureRoute(app: Hono, resolver: TargetResolver): void {
    app.get(
      resolver.path,
      upgradeWebSocket((c) => {
        const remote = (c.env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr?.hostname;
        const forwardedFor = c.req.header("x-forwarded-for")?.slice(0, 512);
        let credential: SessionCredential = bearerToken(
          c.req.header("authorization"),
          new URL(c.req.url),
        );
        const max = this.opts.maxUnauthenticatedSessions ?? MAX_UNAUTHENTICATED_SESSIONS;
        const waiting = [...this.sessions].filter((s) => s.unauthenticated).length;
        if (waiting >= max) {
          credential = { refused: this.#tooManyWaiting(max) };
        }
        const session = new ClientSession(this.#deps, resolver, credential, {
          remote,
          forwardedFor,
        });
        this.sessions.add(session);
        session.done.then(() => this.sessions.delete(session));
        this.opts.onSession?.(session);
        return {
          onOpen: (_e, ws) => {
            session.onOpen(ws.raw as WebSocket);
            if (this.#draining) session.drain();
          },
          onMessage: (e) => session.onMessage(e.data),
          onClose: () => session.onClose(),
          onError: () => session.onClose(),
        };
      }, { idleTimeout: this.opts.wsIdleTimeoutSec ?? 30 }),
      () => {
        throw new ApiError(
          "INVALID_REQUEST",
          "this endpoint speaks WebSocket; connect with a pcap client",
          undefined,
          426,
        );
      },
    );
  }
}
