// UAA-style JWT minting for the lab: signing keys, UAA's /token_keys entry format, access-token
// claims as UAA writes them, and deliberately broken tokens for negative tests.
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { createHmac } from "node:crypto";

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** SPKI PEM of the public key, as UAA puts it in `value` */
  publicPem: string;
}

/** One entry of UAA's GET /token_keys `keys` array. */
export interface UaaTokenKey {
  kty: "RSA";
  e: string;
  use: "sig";
  kid: string;
  alg: "RS256";
  value: string;
  n: string;
}

export async function generateSigningKey(kid = `key-${crypto.randomUUID().slice(0, 8)}`): Promise<
  SigningKey
> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", {
    modulusLength: 2048,
    extractable: true,
  });
  return { kid, privateKey, publicKey, publicPem: await exportSPKI(publicKey) };
}

export async function toUaaTokenKey(key: SigningKey): Promise<UaaTokenKey> {
  const jwk = await exportJWK(key.publicKey);
  return {
    kty: "RSA",
    e: jwk.e!,
    use: "sig",
    kid: key.kid,
    alg: "RS256",
    value: key.publicPem,
    n: jwk.n!,
  };
}

export interface ClaimsInput {
  /** full issuer, `<uaa-url>/oauth/token` */
  issuer: string;
  clientId: string;
  scopes: string[];
  grantType: "password" | "refresh_token" | "client_credentials" | "authorization_code";
  /** user tokens only */
  userName?: string;
  userId?: string;
  /** seconds; negative makes an expired token */
  ttlSeconds?: number;
  /** issue time in seconds since epoch (default now) */
  iat?: number;
  /** set `nbf` (seconds since epoch) */
  nbf?: number;
  zid?: string;
  extra?: Record<string, unknown>;
}

/**
 * Audience as UAA derives it: the client id plus the resource part of every scope
 * (`bosh.admin` → `bosh`, `cloud_controller.read` → `cloud_controller`).
 */
export function audienceFor(clientId: string, scopes: string[]): string[] {
  const aud = new Set<string>([clientId]);
  for (const s of scopes) {
    const i = s.lastIndexOf(".");
    if (i > 0) aud.add(s.slice(0, i));
  }
  return [...aud];
}

/** Access-token claims in UAA's layout. Pure. */
export function buildClaims(input: ClaimsInput): Record<string, unknown> {
  const iat = input.iat ?? Math.floor(Date.now() / 1000);
  const jti = crypto.randomUUID().replaceAll("-", "");
  const claims: Record<string, unknown> = {
    jti,
    sub: input.userId ?? input.clientId,
    scope: [...input.scopes],
    client_id: input.clientId,
    cid: input.clientId,
    azp: input.clientId,
    grant_type: input.grantType,
    rev_sig: jti.slice(0, 8),
    iat,
    exp: iat + (input.ttlSeconds ?? 600),
    iss: input.issuer,
    zid: input.zid ?? "uaa",
    aud: audienceFor(input.clientId, input.scopes),
  };
  if (input.userName !== undefined) {
    claims.user_id = input.userId ?? input.userName;
    claims.user_name = input.userName;
    claims.origin = "uaa";
    claims.email = `${input.userName}@lab.invalid`;
    claims.auth_time = iat;
  }
  if (input.nbf !== undefined) claims.nbf = input.nbf;
  return { ...claims, ...input.extra };
}

/** RS256 JWT with UAA's header (`alg`, `kid`, `typ`, `jku`). */
export function signRs256(
  claims: Record<string, unknown>,
  key: SigningKey,
  jku?: string,
): Promise<string> {
  const header: { alg: string; kid: string; typ: string; jku?: string } = {
    alg: "RS256",
    kid: key.kid,
    typ: "JWT",
  };
  if (jku) header.jku = jku;
  return new SignJWT(claims).setProtectedHeader(header).sign(key.privateKey);
}

function b64url(data: string | Uint8Array): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Unsigned token (`alg: none`), the classic signature bypass. */
export function signNone(claims: Record<string, unknown>, kid?: string): string {
  const header = kid ? { alg: "none", typ: "JWT", kid } : { alg: "none", typ: "JWT" };
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}.`;
}

/**
 * HS256 token whose HMAC secret is the public key PEM: the algorithm-confusion attack against
 * verifiers that pick the algorithm from the token header. Built by hand because jose refuses
 * to use PEM text as an HMAC key.
 */
export function signHs256WithPublicPem(
  claims: Record<string, unknown>,
  publicPem: string,
  kid: string,
): string {
  const input = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid }))}.${
    b64url(JSON.stringify(claims))
  }`;
  const mac = createHmac("sha256", publicPem).update(input).digest();
  return `${input}.${b64url(new Uint8Array(mac))}`;
}

/** Decodes a JWT payload without verifying it (test helper; never use to authorize). */
export function decodePayloadUnverified(token: string): Record<string, unknown> {
  const part = token.split(".")[1] ?? "";
  const b64 = part.replaceAll("-", "+").replaceAll("_", "/");
  return JSON.parse(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)));
}
