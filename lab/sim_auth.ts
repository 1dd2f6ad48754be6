// Bearer-token verification for the simulated Director and Cloud Controller: RS256 only,
// keys fetched from the UAA simulator's /token_keys over HTTP(S) and refetched on an unknown kid,
// as the real services do.
import { createLocalJWKSet, errors, type JSONWebKeySet, jwtVerify } from "jose";

export interface VerifiedToken {
  scopes: string[];
  userId?: string;
  userName?: string;
  clientId?: string;
  claims: Record<string, unknown>;
}

export type AuthResult =
  | { ok: true; token: VerifiedToken }
  | { ok: false; reason: "missing" | "invalid" | "expired"; detail: string };

export interface TokenVerifierOptions {
  /** base URL of the UAA (simulator) */
  uaaUrl: string;
  /** CA certificate when the UAA is HTTPS with a lab certificate */
  caCert?: string;
  /** when set, `iss` must equal it */
  issuer?: string;
  /** when set, `aud` must contain it (the Cloud Controller wants `cloud_controller`) */
  audience?: string;
  /** leeway in seconds for exp/nbf */
  clockToleranceSec?: number;
}

export class TokenVerifier {
  private jwks: ReturnType<typeof createLocalJWKSet> | null = null;
  /** how many times /token_keys was fetched, for tests */
  fetchCount = 0;

  constructor(private readonly opts: TokenVerifierOptions) {}

  async verifyHeader(authorization: string | null | undefined): Promise<AuthResult> {
    const m = /^bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m) return { ok: false, reason: "missing", detail: "no bearer token" };
    return await this.verify(m[1]);
  }

  async verify(token: string): Promise<AuthResult> {
    try {
      if (!this.jwks) await this.refresh();
      let result;
      try {
        result = await jwtVerify(token, this.jwks!, this.verifyOptions());
      } catch (e) {
        if (!(e instanceof errors.JWKSNoMatchingKey)) throw e;
        await this.refresh(); // key rotation: the token may use a kid we have not seen yet
        result = await jwtVerify(token, this.jwks!, this.verifyOptions());
      }
      const c = result.payload as Record<string, unknown>;
      const scope = Array.isArray(c.scope) ? c.scope.filter((s) => typeof s === "string") : [];
      return {
        ok: true,
        token: {
          scopes: scope,
          userId: typeof c.user_id === "string" ? c.user_id : undefined,
          userName: typeof c.user_name === "string" ? c.user_name : undefined,
          clientId: typeof c.client_id === "string" ? c.client_id : undefined,
          claims: c,
        },
      };
    } catch (e) {
      if (e instanceof errors.JWTExpired) {
        return { ok: false, reason: "expired", detail: e.message };
      }
      return { ok: false, reason: "invalid", detail: e instanceof Error ? e.message : String(e) };
    }
  }

  private verifyOptions() {
    return {
      algorithms: ["RS256"],
      issuer: this.opts.issuer,
      audience: this.opts.audience,
      clockTolerance: this.opts.clockToleranceSec ?? 0,
    };
  }

  private async refresh(): Promise<void> {
    this.fetchCount++;
    const client = this.opts.caCert
      ? Deno.createHttpClient({ caCerts: [this.opts.caCert] })
      : undefined;
    try {
      const res = await fetch(`${this.opts.uaaUrl}/token_keys`, { client });
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`GET ${this.opts.uaaUrl}/token_keys answered ${res.status}`);
      }
      const body = (await res.json()) as JSONWebKeySet;
      this.jwks = createLocalJWKSet(body);
    } finally {
      client?.close();
    }
  }
}
