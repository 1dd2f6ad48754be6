// Simulated UAA: GET /token_keys, GET /token_key, POST /oauth/token (password, refresh_token and
// client_credentials grants) issuing real RS256 JWTs, with key rotation and helpers that mint
// valid and deliberately broken tokens for tests.
import { Hono } from "hono";
import { jwtVerify } from "jose";
import { type SimServeOptions, SimService } from "./http_sim_server.ts";
import {
  buildClaims,
  type ClaimsInput,
  generateSigningKey,
  signHs256WithPublicPem,
  type SigningKey,
  signNone,
  signRs256,
  toUaaTokenKey,
  type UaaTokenKey,
} from "./token_mint.ts";

export interface UaaUser {
  username: string;
  password: string;
  scopes: string[];
  /** default: a UUID derived once per sim */
  userId?: string;
}

export interface UaaClient {
  id: string;
  /** "" for public clients such as bosh_cli and cf */
  secret: string;
  grantTypes: Array<"password" | "refresh_token" | "client_credentials">;
  /** scopes of client_credentials tokens (UAA "authorities") */
  authorities?: string[];
  /** upper bound of user token scopes (UAA "scope"); default: all of the user's scopes */
  scopes?: string[];
}

export interface UaaSimConfig extends SimServeOptions {
  users?: UaaUser[];
  clients?: UaaClient[];
  accessTokenTtlSec?: number;
  refreshTokenTtlSec?: number;
}

export interface MintOptions {
  scopes?: string[];
  userName?: string;
  clientId?: string;
  ttlSec?: number;
  extra?: Record<string, unknown>;
}

type GrantType = "password" | "refresh_token" | "client_credentials";

const DEFAULT_CLIENTS: UaaClient[] = [
  { id: "bosh_cli", secret: "", grantTypes: ["password", "refresh_token"] },
  { id: "cf", secret: "", grantTypes: ["password", "refresh_token"] },
];

function oauthError(status: 400 | 401, error: string, description: string): Response {
  return Response.json({ error, error_description: description }, {
    status,
    headers: { "cache-control": "no-store", pragma: "no-cache" },
  });
}

export class UaaSim extends SimService {
  private keys: SigningKey[] = [];
  private activeKid = "";
  private readonly userIds = new Map<string, string>();
  /** refresh-token jti → still valid; revoke by deleting */
  private readonly refreshTokens = new Set<string>();
  /** token requests by grant type, for tests ("refresh only when needed") */
  readonly grantCounts: Record<GrantType, number> = {
    password: 0,
    refresh_token: 0,
    client_credentials: 0,
  };
  users: UaaUser[];
  clients: UaaClient[];
  /** like UAA's refresh-token rotation: a refresh token is good for one refresh only */
  rotateRefreshTokens = false;

  private constructor(private readonly cfg: UaaSimConfig) {
    super();
    this.users = [...(cfg.users ?? [])];
    this.clients = [...(cfg.clients ?? DEFAULT_CLIENTS)];
  }

  static async start(cfg: UaaSimConfig = {}): Promise<UaaSim> {
    const sim = new UaaSim(cfg);
    await sim.addKey(undefined, true);
    await sim.serve(
      sim.app().fetch,
      cfg,
      () => oauthError(401, "server_error", "simulated failure"),
    );
    return sim;
  }

  /** `iss` of every token: `<url>/oauth/token` */
  get issuer(): string {
    return `${this.url}/oauth/token`;
  }
  get signingKid(): string {
    return this.activeKid;
  }

  // ---- key rotation ----

  /** Adds a signing key; with activate it becomes the one new tokens are signed with. */
  async addKey(kid?: string, activate = false): Promise<string> {
    const key = await generateSigningKey(kid);
    this.keys.push(key);
    if (activate) this.activeKid = key.kid;
    return key.kid;
  }
  useKey(kid: string): void {
    if (!this.keys.some((k) => k.kid === kid)) throw new Error(`uaa sim: no key ${kid}`);
    this.activeKid = kid;
  }
  removeKey(kid: string): void {
    if (kid === this.activeKid) throw new Error(`uaa sim: cannot remove the signing key ${kid}`);
    this.keys = this.keys.filter((k) => k.kid !== kid);
  }
  /** New key becomes active; the old one stays in /token_keys unless keepOld is false. */
  async rotate(keepOld = true): Promise<string> {
    const old = this.activeKid;
    const kid = await this.addKey(undefined, true);
    if (!keepOld) this.removeKey(old);
    return kid;
  }
  async tokenKeys(): Promise<{ keys: UaaTokenKey[] }> {
    return { keys: await Promise.all(this.keys.map(toUaaTokenKey)) };
  }
  revokeRefreshTokens(): void {
    this.refreshTokens.clear();
  }

  // ---- direct minting ----

  private active(): SigningKey {
    return this.keys.find((k) => k.kid === this.activeKid)!;
  }

  claims(o: MintOptions = {}, grantType: ClaimsInput["grantType"] = "password") {
    const userName = o.userName ?? (o.clientId ? undefined : "admin");
    return buildClaims({
      issuer: this.issuer,
      clientId: o.clientId ?? "bosh_cli",
      scopes: o.scopes ?? ["openid", "bosh.admin"],
      grantType,
      userName,
      userId: userName ? this.userId(userName) : undefined,
      ttlSeconds: o.ttlSec ?? this.cfg.accessTokenTtlSec ?? 600,
      extra: o.extra,
    });
  }
  /** A token the real UAA would issue now. */
  mintValid(o: MintOptions = {}): Promise<string> {
    return signRs256(this.claims(o), this.active(), `${this.url}/token_keys`);
  }
  /** Expired `secondsAgo` seconds ago (default 1 h). */
  mintExpired(o: MintOptions = {}, secondsAgo = 3600): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const c = { ...this.claims(o), iat: now - secondsAgo - 600, exp: now - secondsAgo };
    return signRs256(c, this.active());
  }
  /** iat and nbf an hour in the future. */
  mintNotYetValid(o: MintOptions = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const c = { ...this.claims(o), iat: now + 3600, nbf: now + 3600, exp: now + 7200 };
    return signRs256(c, this.active());
  }
  /** Signed by a key that is not in /token_keys but claims the active kid. */
  async mintWrongKey(o: MintOptions = {}): Promise<string> {
    const rogue = await generateSigningKey(this.activeKid);
    return signRs256(this.claims(o), rogue);
  }
  /** Signed by a key whose kid the UAA never published. */
  async mintUnknownKid(o: MintOptions = {}): Promise<string> {
    return signRs256(this.claims(o), await generateSigningKey("unknown-kid"));
  }
  /** Valid signature but an issuer other than this UAA. */
  mintWrongIssuer(o: MintOptions = {}, issuer = "https://uaa.elsewhere.invalid/oauth/token") {
    return signRs256({ ...this.claims(o), iss: issuer }, this.active());
  }
  mintAlgNone(o: MintOptions = {}): string {
    return signNone(this.claims(o), this.activeKid);
  }
  mintHs256WithPublicKey(o: MintOptions = {}): string {
    const k = this.active();
    return signHs256WithPublicPem(this.claims(o), k.publicPem, k.kid);
  }
  static garbageToken(): string {
    return "not.a.jwt-" + crypto.randomUUID();
  }

  // ---- HTTP ----

  private userId(username: string): string {
    const u = this.users.find((x) => x.username === username);
    if (u?.userId) return u.userId;
    let id = this.userIds.get(username);
    if (!id) this.userIds.set(username, id = crypto.randomUUID());
    return id;
  }

  private app(): Hono {
    const app = new Hono();
    app.get("/token_keys", async (c) => c.json(await this.tokenKeys()));
    app.get("/token_key", async (c) => c.json(await toUaaTokenKey(this.active())));
    app.get("/info", (c) =>
      c.json({
        app: { version: "77.0.0-lab" },
        links: { uaa: this.url, login: this.url },
        "zone_name": "uaa",
        prompts: { username: ["text", "Email"], password: ["password", "Password"] },
      }));
    app.post("/oauth/token", (c) => this.token(c.req.raw));
    return app;
  }

  private authenticateClient(req: Request, form: URLSearchParams): UaaClient | null {
    let id = form.get("client_id") ?? "";
    let secret = form.get("client_secret") ?? "";
    const basic = /^basic\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "");
    if (basic) {
      let decoded: string;
      try {
        decoded = atob(basic[1]);
      } catch {
        return null;
      }
      const i = decoded.indexOf(":");
      if (i < 0) return null;
      id = decodeURIComponent(decoded.slice(0, i));
      secret = decodeURIComponent(decoded.slice(i + 1));
    }
    const client = this.clients.find((x) => x.id === id);
    return client && client.secret === secret ? client : null;
  }

  private async token(req: Request): Promise<Response> {
    const ctype = req.headers.get("content-type") ?? "";
    if (!ctype.startsWith("application/x-www-form-urlencoded")) {
      return oauthError(400, "invalid_request", "Content-Type must be form-urlencoded");
    }
    const form = new URLSearchParams(await req.text());
    const client = this.authenticateClient(req, form);
    if (!client) return oauthError(401, "unauthorized", "Bad credentials");
    const grant = form.get("grant_type") ?? "";
    if (grant !== "password" && grant !== "refresh_token" && grant !== "client_credentials") {
      return oauthError(400, "unsupported_grant_type", `Unsupported grant type: ${grant}`);
    }
    if (!client.grantTypes.includes(grant)) {
      return oauthError(401, "invalid_client", `Unauthorized grant type: ${grant}`);
    }
    this.grantCounts[grant]++;
    if (grant === "client_credentials") {
      return this.issue(client, grant, client.authorities ?? [], undefined, false);
    }
    if (grant === "password") {
      const username = form.get("username");
      const password = form.get("password");
      if (!username || password === null) {
        return oauthError(400, "invalid_request", "username and password are required");
      }
      const user = this.users.find((u) => u.username === username && u.password === password);
      if (!user) return oauthError(401, "unauthorized", "Bad credentials");
      return this.issue(client, grant, this.userScopes(client, user), user.username, true);
    }
    const refresh = form.get("refresh_token");
    if (!refresh) return oauthError(400, "invalid_request", "A refresh token must be supplied.");
    try {
      const { payload } = await jwtVerify(refresh, (h) => {
        const k = this.keys.find((x) => x.kid === h.kid);
        if (!k) throw new Error("unknown key");
        return k.publicKey;
      }, { issuer: this.issuer, algorithms: ["RS256"] });
      if (payload.cid !== client.id || !this.refreshTokens.has(String(payload.jti))) {
        throw new Error("revoked or issued to another client");
      }
      const user = this.users.find((u) => u.username === payload.user_name);
      if (!user) throw new Error("user no longer exists");
      if (this.rotateRefreshTokens) this.refreshTokens.delete(String(payload.jti));
      return this.issue(client, grant, this.userScopes(client, user), user.username, true);
    } catch (e) {
      const why = e instanceof Error && e.name === "JWTExpired" ? "expired" : "invalid";
      return oauthError(401, "invalid_token", `Invalid refresh token (${why})`);
    }
  }

  private userScopes(client: UaaClient, user: UaaUser): string[] {
    return client.scopes ? user.scopes.filter((s) => client.scopes!.includes(s)) : user.scopes;
  }

  private async issue(
    client: UaaClient,
    grant: GrantType,
    scopes: string[],
    userName: string | undefined,
    withRefresh: boolean,
  ): Promise<Response> {
    const ttl = this.cfg.accessTokenTtlSec ?? 600;
    const claimsFor = (ttlSeconds: number) =>
      buildClaims({
        issuer: this.issuer,
        clientId: client.id,
        scopes,
        grantType: grant,
        userName,
        userId: userName ? this.userId(userName) : undefined,
        ttlSeconds,
      });
    const claims = claimsFor(ttl);
    const access = await signRs256(claims, this.active(), `${this.url}/token_keys`);
    const body: Record<string, unknown> = {
      access_token: access,
      token_type: "bearer",
      expires_in: ttl - 1,
      scope: scopes.join(" "),
      jti: claims.jti,
    };
    if (withRefresh && client.grantTypes.includes("refresh_token")) {
      const r = claimsFor(this.cfg.refreshTokenTtlSec ?? 86_400);
      r.jti = `${r.jti}-r`;
      this.refreshTokens.add(r.jti as string);
      body.refresh_token = await signRs256(r, this.active());
    }
    return Response.json(body, { headers: { "cache-control": "no-store", pragma: "no-cache" } });
  }
}
