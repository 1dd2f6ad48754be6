/**
 * Verifies a user's UAA access token (DESIGN §2.3). The signing keys come ONLY from the UAA that
 * the Director names in /info — a token cannot point us at keys of its choosing (`jku`, `iss`
 * and friends are never dereferenced). Keys are cached for a limited lifetime (so a key the UAA
 * withdrew stops being trusted) and refetched on an unknown `kid`; fetches, failed ones included,
 * are spaced by the refetch interval so that a flood of forged kids, or of tokens while the UAA is
 * down, cannot turn us into a UAA hammer.
 */
import { createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify } from "jose";
import type { JSONWebKeySet, JWK, JWTPayload } from "jose";
import { ApiError, type ApiErrorKind } from "./errors.ts";
import { readLimited } from "../lib/read_limited.ts";

export type AuthErrorKind = Extract<
  ApiErrorKind,
  "UNAUTHENTICATED" | "PERMISSION_DENIED" | "CONNECTION_ERROR"
>;

/** Token failures; the message explains the problem and never contains the token. */
export class AuthError extends ApiError {
  constructor(override readonly kind: AuthErrorKind, message: string) {
    super(kind, message);
    this.name = "AuthError";
  }
}

export interface VerifiedToken {
  /** user_name for users, client_id for client-credentials tokens (for people to read) */
  user: string;
  /**
   * Stable identity for limits and audit: `user_id` (else `sub`), prefixed with the `origin`
   * claim when present. user_name is not unique across UAA origins (uaa, ldap, saml...).
   */
  key: string;
  /** user_id / sub claim */
  userId?: string;
  /** UAA identity-provider origin claim (e.g. "uaa", "ldap") */
  origin?: string;
  scopes: string[];
  clientId?: string;
  claims: JWTPayload;
}

/** Where the trusted UAA and the Director uuid come from (DirectorClient satisfies it). */
export interface UaaSource {
  uaaUrl(): Promise<string>;
  info(): Promise<{ uuid: string }>;
}

export interface TokenVerifierOptions {
  source: UaaSource;
  /** bosh.token_scope; `bosh.<director-uuid>.admin` is accepted as well */
  requiredScope: string;
  /**
   * Scopes of which the token must hold one; replaces `requiredScope` and the Director-uuid
   * admin scope (the CF resolver: any scope the CC accepts for reads).
   */
  acceptedScopes?: string[];
  /** `aud` must contain this (CF: `cloud_controller`, as the CC itself requires) */
  audience?: string;
  /** timeouts.uaa: bound of one token_keys fetch */
  timeoutMs: number;
  /** fetch trusting the UAA's CA (DirectorClient.uaaFetch: the bosh.tls settings) */
  fetch?: (url: string, init: { headers: Record<string, string>; signal: AbortSignal }) => Promise<
    Response
  >;
  /** minimum spacing of key fetches, failed ones included (default 30 s) */
  refetchIntervalMs?: number;
  /** how long fetched keys are trusted before they are fetched again (default 10 min) */
  keysTtlMs?: number;
  /** clock skew tolerated on exp/nbf/iat (default 30 s) */
  leewaySec?: number;
  /** injectable clock (ms) for tests */
  now?: () => number;
}

const ALGORITHMS = ["RS256", "RS384", "RS512"];
const MAX_TOKEN_CHARS = 16 * 1024;

type KeyResolver = ReturnType<typeof createLocalJWKSet>;

interface KeySet {
  uaaUrl: string;
  /** when the keys were fetched (verifier clock) */
  fetchedAt: number;
  /** kids published; a kid-less key is listed as undefined */
  kids: (string | undefined)[];
  /** jose's selector by kid and alg; imports each key lazily per algorithm */
  resolve: KeyResolver;
}

export class TokenVerifier {
  #keys: KeySet | null = null;
  #lastFetch = -Infinity;
  /** the last fetch's failure, replayed until the refetch interval allows another try */
  #failure: { uaaUrl: string; error: AuthError } | null = null;
  #inFlight: Promise<KeySet> | null = null;
  /** Count of token_keys fetches; exposed for metrics and tests. */
  fetchCount = 0;

  constructor(readonly opts: TokenVerifierOptions) {}

  #now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Authentication, then authorization: the identity of a token that may capture. */
  async verify(token: string): Promise<VerifiedToken> {
    const user = await this.authenticate(token);
    await this.authorize(user);
    return user;
  }

  /**
   * Authentication only: signature, claims and identity. Throws UNAUTHENTICATED (or
   * CONNECTION_ERROR when the keys cannot be loaded); a token without the scope passes.
   */
  async authenticate(token: string): Promise<VerifiedToken> {
    const alg = this.#checkHeader(token);
    const uaaUrl = await wrapConnection(this.opts.source.uaaUrl());
    const key = await this.#key(uaaUrl, alg.kid);
    const leeway = this.opts.leewaySec ?? 30;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: ALGORITHMS,
        issuer: `${uaaUrl}/oauth/token`,
        audience: this.opts.audience,
        clockTolerance: leeway,
        requiredClaims: ["exp"],
        currentDate: new Date(this.#now()),
      }));
    } catch (e) {
      throw new AuthError("UNAUTHENTICATED", joseText(e));
    }
    const nowSec = this.#now() / 1000;
    if (typeof payload.iat === "number" && payload.iat > nowSec + leeway) {
      throw new AuthError(
        "UNAUTHENTICATED",
        "the token was issued in the future (iat); check clocks",
      );
    }
    return identity(payload);
  }

  /**
   * Authorization: the token must hold one of the accepted scopes (the configured one or this
   * Director's uuid admin scope). Throws PERMISSION_DENIED, or CONNECTION_ERROR when the
   * Director's uuid cannot be learned.
   */
  async authorize(user: VerifiedToken): Promise<void> {
    const accepted = this.opts.acceptedScopes ??
      [
        this.opts.requiredScope,
        `bosh.${(await wrapConnection(this.opts.source.info())).uuid}.admin`,
      ];
    if (!user.scopes.some((s) => accepted.includes(s))) {
      throw new AuthError(
        "PERMISSION_DENIED",
        `user '${user.user}' lacks a required scope (one of ${accepted.join(", ")}); ` +
          "ask the BOSH operator to grant it",
      );
    }
  }

  /** Rejects garbage and non-RSA algorithms before any key lookup or network traffic. */
  #checkHeader(token: string): { alg: string; kid?: string } {
    if (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_CHARS) {
      throw new AuthError("UNAUTHENTICATED", "missing or oversized bearer token; log in again");
    }
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new AuthError("UNAUTHENTICATED", "the bearer token is not a JWT; log in again");
    }
    if (typeof header.alg !== "string" || !ALGORITHMS.includes(header.alg)) {
      throw new AuthError(
        "UNAUTHENTICATED",
        `token algorithm ${JSON.stringify(header.alg)} is not accepted (only ${
          ALGORITHMS.join(", ")
        })`,
      );
    }
    if (header.kid !== undefined && typeof header.kid !== "string") {
      throw new AuthError("UNAUTHENTICATED", "the token header has a non-string kid");
    }
    return { alg: header.alg, kid: header.kid };
  }

  get #interval(): number {
    return this.opts.refetchIntervalMs ?? 30_000;
  }

  async #key(uaaUrl: string, kid: string | undefined): Promise<KeyResolver> {
    let set = this.#keys;
    const expired = set !== null && this.#now() - set.fetchedAt >= (this.opts.keysTtlMs ?? 600_000);
    if (!set || set.uaaUrl !== uaaUrl || expired) {
      // First use, the Director moved its UAA, or the keys are too old to trust: a withdrawn key
      // must not outlive the cache. A failed refetch fails closed.
      set = await this.#fetchKeys(uaaUrl);
    }
    let found = knows(set, kid);
    if (!found && this.#now() - this.#lastFetch >= this.#interval) {
      set = await this.#fetchKeys(uaaUrl); // maybe a key rotation
      found = knows(set, kid);
    }
    if (!found) {
      throw new AuthError(
        "UNAUTHENTICATED",
        `the token is signed with key ${JSON.stringify(kid ?? "(no kid)")}, which the UAA at ` +
          `${uaaUrl} does not publish; log in again`,
      );
    }
    return set.resolve;
  }

  #fetchKeys(uaaUrl: string): Promise<KeySet> {
    const failed = this.#failure;
    if (
      !this.#inFlight && failed && failed.uaaUrl === uaaUrl &&
      this.#now() - this.#lastFetch < this.#interval
    ) {
      // The UAA failed moments ago: answer from memory instead of asking again for every token.
      return Promise.reject(new AuthError(failed.error.kind, failed.error.message));
    }
    this.#inFlight ??= this.#doFetch(uaaUrl).then((set) => {
      this.#failure = null;
      return set;
    }, (e) => {
      if (e instanceof AuthError) this.#failure = { uaaUrl, error: e };
      throw e;
    }).finally(() => {
      this.#inFlight = null;
    });
    return this.#inFlight;
  }

  async #doFetch(uaaUrl: string): Promise<KeySet> {
    this.#lastFetch = this.#now();
    this.fetchCount++;
    const url = `${uaaUrl}/token_keys`;
    let body: unknown;
    try {
      const init = {
        headers: { accept: "application/json" },
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      };
      const res = this.opts.fetch
        ? await this.opts.fetch(url, init)
        : await fetch(url, { ...init, redirect: "error" });
      const text = await readLimited(res, 1024 * 1024);
      // a returned 3xx is never followed: name it, so the operator fixes the UAA url
      if (res.status >= 300 && res.status < 400) {
        throw new Error(
          `the UAA answered with a redirect (${res.status}), which the api never follows; ` +
            "check the UAA url the Director names",
        );
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      body = JSON.parse(text);
    } catch (e) {
      const why = (e as Error)?.name === "TimeoutError"
        ? `no answer within ${this.opts.timeoutMs} ms (timeouts.uaa)`
        : (e as Error)?.message ?? String(e);
      throw new AuthError("CONNECTION_ERROR", `cannot load token keys from ${url}: ${why}`);
    }
    // Replaces the whole set: keys the UAA no longer lists are dropped.
    const set = importKeys(uaaUrl, body, this.#lastFetch);
    this.#keys = set;
    return set;
  }
}

/** Who a verified token names; limits and audit key on `key`. */
function identity(payload: JWTPayload): VerifiedToken {
  const scopes = scopeList(payload.scope);
  const clientId = str(payload.client_id) ?? str(payload.cid);
  const user = str(payload.user_name) ?? clientId ?? str(payload.sub);
  if (!user) throw new AuthError("UNAUTHENTICATED", "the token names no user or client");
  const userId = str(payload.user_id) ?? str(payload.sub);
  const origin = str(payload.origin);
  // Client-credentials tokens have no user_id; their sub is the client id.
  const id = userId ?? (clientId ? `client:${clientId}` : user);
  const key = origin ? `${origin}/${id}` : id;
  return { user, key, userId, origin, scopes, clientId, claims: payload };
}

function knows(set: KeySet, kid: string | undefined): boolean {
  // A kid-less token is acceptable only when there is no ambiguity about the key.
  return kid !== undefined ? set.kids.includes(kid) : set.kids.length === 1;
}

/** UAA `/token_keys` → a key set of its RSA signing keys (UAA's extra `value` PEM is ignored). */
function importKeys(uaaUrl: string, body: unknown, fetchedAt: number): KeySet {
  const list = (body as { keys?: unknown })?.keys;
  if (!Array.isArray(list)) {
    throw new AuthError(
      "CONNECTION_ERROR",
      `the UAA at ${uaaUrl} returned token keys without a keys list`,
    );
  }
  const keys: JWK[] = [];
  for (const jwk of list as JWK[]) {
    if (jwk?.kty !== "RSA" || typeof jwk.n !== "string" || typeof jwk.e !== "string") continue;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    if (jwk.alg !== undefined && !ALGORITHMS.includes(jwk.alg)) continue;
    keys.push({ kty: "RSA", n: jwk.n, e: jwk.e, kid: jwk.kid, alg: jwk.alg, use: jwk.use });
  }
  if (keys.length === 0) {
    throw new AuthError(
      "CONNECTION_ERROR",
      `the UAA at ${uaaUrl} publishes no usable RSA signing key`,
    );
  }
  const jwks: JSONWebKeySet = { keys };
  return {
    uaaUrl,
    fetchedAt,
    kids: keys.map((k) => k.kid),
    resolve: createLocalJWKSet(jwks),
  };
}

function scopeList(scope: unknown): string[] {
  if (Array.isArray(scope)) return scope.filter((s): s is string => typeof s === "string");
  if (typeof scope === "string") return scope.split(/\s+/).filter(Boolean);
  return [];
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v ? v : undefined;
}

/** Failures of /info (Director) surface as CONNECTION_ERROR AuthErrors. */
async function wrapConnection<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof AuthError) throw e;
    throw new AuthError("CONNECTION_ERROR", (e as Error)?.message ?? String(e));
  }
}

/** jose's errors → short user-facing texts; none of them includes the token. */
function joseText(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return "the token has expired; log in again";
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) {
    return "the token signature is invalid; log in again";
  }
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === "iss") return "the token was not issued by the Director's UAA (iss)";
    if (e.claim === "aud") return "the token is not meant for this platform (aud); log in again";
    if (e.claim === "nbf") return "the token is not valid yet (nbf); check clocks";
    return `the token's ${e.claim} claim is invalid: ${e.reason}`;
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return "the token algorithm is not accepted";
  if (e instanceof joseErrors.JWKSNoMatchingKey) {
    return "no UAA key matches the token's kid and algorithm; log in again";
  }
  if (e instanceof joseErrors.JOSEError) return `the token is invalid (${e.code})`;
  return "the token is invalid";
}
