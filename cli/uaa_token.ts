/**
 * UAA tokens for the BOSH client, obtained the way the bosh CLI obtains them.
 *
 * - From `~/.bosh/config`: the stored access token is used as long as it is valid for at least
 *   another minute (its `exp`, read without verifying: we are the token's holder, not its judge).
 *   Otherwise the refresh token buys a new one from the UAA that the Director names in `/info`
 *   (client `bosh_cli`, empty secret, HTTP Basic), and the config is written back.
 * - From `BOSH_CLIENT`/`BOSH_CLIENT_SECRET`: a client-credentials token; no file is touched.
 *
 * TLS to the Director and its UAA trusts the environment's `ca_cert` (or BOSH_CA_CERT).
 * Tokens never appear in errors.
 */
import { createTlsFetch, type TlsRequestInit } from "../lib/tls_fetch.ts";
import { decodeJwt } from "jose";
import {
  BoshConfig,
  BoshConfigError,
  type BoshEnvironment,
  normalizeDirectorUrl,
} from "./bosh_config.ts";
import { withFileLock } from "./file_lock.ts";

export type FetchFn = (input: string | URL, init?: RequestInit) => Promise<Response>;

export class AuthError extends Error {
  /** true when only a new `bosh log-in` can help */
  readonly loginRequired: boolean;
  constructor(message: string, loginRequired = false, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuthError";
    this.loginRequired = loginRequired;
  }
}

export interface TokenSet {
  accessToken: string;
  tokenType: string;
  refreshToken?: string;
}

/** `exp` (seconds since the epoch) of a JWT, without verifying it; undefined if unreadable. */
export function tokenExpiry(token: string): number | undefined {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** True when `token` is missing, unreadable, expired or expires within `marginSec`. */
export function needsRefresh(token: string | undefined, nowSec: number, marginSec = 60): boolean {
  if (!token) return true;
  const exp = tokenExpiry(token);
  return exp === undefined || exp - marginSec <= nowSec;
}

/**
 * `fetch` that trusts `caCert` (PEM) and nothing else (lib/tls_fetch.ts: not the default roots,
 * and no redirect is followed); the default roots without it. close() releases it.
 */
export function fetchTrusting(caCert?: string): { fetch: FetchFn; close(): void } {
  if (!caCert) return { fetch: (i, init) => fetch(i, init), close() {} };
  const tls = createTlsFetch({ ca: caCert });
  return {
    fetch: (input, init = {}) =>
      tls.fetch(String(input), {
        method: (init.method ?? "GET") as TlsRequestInit["method"],
        headers: Object.fromEntries(new Headers(init.headers)),
        body: init.body === undefined || init.body === null ? undefined : String(init.body),
        signal: init.signal ?? undefined,
      }),
    close: () => tls.close(),
  };
}

async function request(
  what: string,
  url: string,
  init: RequestInit,
  fetchFn: FetchFn,
  timeoutMs: number,
): Promise<Response> {
  try {
    return await fetchFn(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const why = (e as Error).name === "TimeoutError"
      ? `no answer within ${timeoutMs / 1000} s`
      : (e as Error).message;
    throw new AuthError(`cannot reach the ${what} at ${url}: ${why}`, false, { cause: e });
  }
}

/** The UAA URL from the Director's `/info` (`user_authentication.options.url`). */
async function fetchUaaUrl(
  directorUrl: string,
  fetchFn: FetchFn,
  timeoutMs = 15_000,
): Promise<string> {
  const url = `${directorUrl.replace(/\/$/, "")}/info`;
  const res = await request(
    "BOSH Director",
    url,
    {
      headers: { accept: "application/json" },
    },
    fetchFn,
    timeoutMs,
  );
  if (!res.ok) {
    await res.body?.cancel();
    throw new AuthError(`BOSH Director ${url} answered HTTP ${res.status}`);
  }
  let info: { user_authentication?: { type?: string; options?: { url?: unknown } } };
  try {
    info = await res.json();
  } catch {
    throw new AuthError(`BOSH Director ${url} did not answer with JSON`);
  }
  const auth = info.user_authentication;
  if (auth?.type !== "uaa" || typeof auth.options?.url !== "string") {
    throw new AuthError(
      `BOSH Director ${directorUrl} does not use UAA authentication ` +
        `(user_authentication.type is ${JSON.stringify(auth?.type)}); pcap needs a UAA token`,
    );
  }
  return auth.options.url.replace(/\/$/, "");
}

async function tokenRequest(
  uaaUrl: string,
  form: Record<string, string>,
  client: { id: string; secret: string },
  fetchFn: FetchFn,
  timeoutMs: number,
  describe: (status: number, error: string) => AuthError,
): Promise<TokenSet> {
  const url = `${uaaUrl}/oauth/token`;
  const basic = btoa(`${encodeURIComponent(client.id)}:${encodeURIComponent(client.secret)}`);
  const res = await request(
    "UAA",
    url,
    {
      method: "POST",
      headers: {
        accept: "application/json",
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${basic}`,
      },
      body: new URLSearchParams(form).toString(),
    },
    fetchFn,
    timeoutMs,
  );
  let body: Record<string, unknown> = {};
  try {
    body = await res.json();
  } catch { /* reported below by status or missing fields */ }
  if (!res.ok) throw describe(res.status, typeof body.error === "string" ? body.error : "");
  if (typeof body.access_token !== "string" || body.access_token === "") {
    throw new AuthError(`UAA ${url} answered without an access_token`);
  }
  return {
    accessToken: body.access_token,
    tokenType: typeof body.token_type === "string" ? body.token_type : "bearer",
    refreshToken: typeof body.refresh_token === "string" ? body.refresh_token : undefined,
  };
}

/** New tokens for a refresh token (client `bosh_cli` with an empty secret by default). */
export function refreshAccessToken(
  uaaUrl: string,
  refreshToken: string,
  fetchFn: FetchFn,
  opts: { clientId?: string; clientSecret?: string; timeoutMs?: number } = {},
): Promise<TokenSet> {
  return tokenRequest(
    uaaUrl,
    { grant_type: "refresh_token", refresh_token: refreshToken },
    { id: opts.clientId ?? "bosh_cli", secret: opts.clientSecret ?? "" },
    fetchFn,
    opts.timeoutMs ?? 15_000,
    (status, error) =>
      status === 401 || (status === 400 && /invalid_grant|invalid_token/.test(error))
        ? new AuthError(
          `the UAA at ${uaaUrl} no longer accepts the stored refresh token (HTTP ${status}` +
            `${error ? ` ${error}` : ""}); run "bosh log-in" and try again`,
          true,
        )
        : new AuthError(`UAA ${uaaUrl} refused to refresh the token: HTTP ${status} ${error}`),
  );
}

/** A client-credentials token (BOSH_CLIENT / BOSH_CLIENT_SECRET). */
function clientCredentialsToken(
  uaaUrl: string,
  clientId: string,
  clientSecret: string,
  fetchFn: FetchFn,
  timeoutMs = 15_000,
): Promise<TokenSet> {
  return tokenRequest(
    uaaUrl,
    { grant_type: "client_credentials" },
    { id: clientId, secret: clientSecret },
    fetchFn,
    timeoutMs,
    (status, error) =>
      new AuthError(
        `UAA ${uaaUrl} refused client "${clientId}" (HTTP ${status}${error ? ` ${error}` : ""}); ` +
          "check BOSH_CLIENT and BOSH_CLIENT_SECRET",
        status === 401,
      ),
  );
}

export interface BoshAuthOptions {
  /** path of the bosh config (`-c`, BOSH_CONFIG, default ~/.bosh/config) */
  configPath: string;
  /** alias or URL (`-e`, BOSH_ENVIRONMENT) */
  environment?: string;
  /** process environment: BOSH_CLIENT, BOSH_CLIENT_SECRET, BOSH_CA_CERT */
  env: Record<string, string | undefined>;
  /** UAA base URL, or how to find it; default: the Director's /info */
  uaaUrl?: string | ((directorUrl: string, fetchFn: FetchFn) => Promise<string>);
  /** replaces the CA-trusting fetch (tests) */
  fetch?: FetchFn;
  nowSec?: number;
  /** refresh when the token expires within this many seconds; default 60 */
  marginSec?: number;
  timeoutMs?: number;
}

export interface BoshAuth {
  directorUrl: string;
  /** PEM of the Director CA, if any */
  caCert?: string;
  accessToken: string;
  /** value for the Authorization header, e.g. `Bearer eyJ...` */
  authorization: string;
  /** where the token came from */
  source: "config" | "refreshed" | "client-credentials";
}

/** BOSH_CA_CERT holds PEM text or a file name, as for the bosh CLI. */
async function caFromEnv(value: string | undefined): Promise<string | undefined> {
  if (!value) return undefined;
  if (value.includes("-----BEGIN")) return value;
  try {
    return await Deno.readTextFile(value);
  } catch (e) {
    throw new AuthError(`cannot read BOSH_CA_CERT file ${value}: ${(e as Error).message}`);
  }
}

function authorization(type: string, token: string): string {
  return `${type.toLowerCase() === "bearer" ? "Bearer" : type} ${token}`;
}

/** The stored token of `env` when it is good for more than the margin, else undefined. */
function storedAuth(
  env: BoshEnvironment,
  directorUrl: string,
  caCert: string | undefined,
  nowSec: number,
  marginSec = 60,
): BoshAuth | undefined {
  if (!env.accessToken || needsRefresh(env.accessToken, nowSec, marginSec)) return undefined;
  return {
    directorUrl,
    caCert,
    accessToken: env.accessToken,
    authorization: authorization(env.accessTokenType ?? "bearer", env.accessToken),
    source: "config",
  };
}

/** Finds a usable BOSH token: stored, refreshed (and saved), or by client credentials. */
export async function boshAuth(o: BoshAuthOptions): Promise<BoshAuth> {
  const nowSec = o.nowSec ?? Math.floor(Date.now() / 1000);
  const timeoutMs = o.timeoutMs ?? 15_000;
  const clientId = o.env.BOSH_CLIENT;
  const clientSecret = o.env.BOSH_CLIENT_SECRET;
  const envCa = await caFromEnv(o.env.BOSH_CA_CERT);

  let config: BoshConfig | undefined;
  try {
    config = await BoshConfig.load(o.configPath);
  } catch (e) {
    // client credentials with a URL need no config file at all
    if (!(clientId && e instanceof BoshConfigError && o.environment)) throw e;
  }
  let selected;
  try {
    selected = config?.select(o.environment);
  } catch (e) {
    if (!clientId || !o.environment) throw e;
  }
  const directorUrl = normalizeDirectorUrl(selected?.url || o.environment || "");
  const caCert = envCa ?? selected?.caCert;

  const trusting = o.fetch ? { fetch: o.fetch, close() {} } : fetchTrusting(caCert);
  try {
    const uaa = () =>
      typeof o.uaaUrl === "string"
        ? Promise.resolve(o.uaaUrl.replace(/\/$/, ""))
        : (o.uaaUrl ?? ((d, f) => fetchUaaUrl(d, f, timeoutMs)))(directorUrl, trusting.fetch);

    if (clientId) {
      if (!clientSecret) {
        throw new AuthError("BOSH_CLIENT is set but BOSH_CLIENT_SECRET is not; set both");
      }
      const t = await clientCredentialsToken(
        await uaa(),
        clientId,
        clientSecret,
        trusting.fetch,
        timeoutMs,
      );
      return {
        directorUrl,
        caCert,
        accessToken: t.accessToken,
        authorization: authorization(t.tokenType, t.accessToken),
        source: "client-credentials",
      };
    }

    const stored = storedAuth(selected!, directorUrl, caCert, nowSec, o.marginSec);
    if (stored) return stored;
    // Refresh under the config's lock, re-reading it first: another pcap client may have
    // refreshed while this one waited, and a rotated refresh token works only once.
    return await withFileLock(o.configPath, async () => {
      const current = await BoshConfig.load(o.configPath);
      const env = current.select(o.environment);
      const already = storedAuth(env, directorUrl, caCert, nowSec, o.marginSec);
      if (already) return already;
      const where = env.alias ?? env.url;
      if (!env.refreshToken) {
        throw new AuthError(
          `not logged in to BOSH environment ${where} (no refresh token in ${o.configPath}); ` +
            `run "bosh -e ${where} log-in"`,
          true,
        );
      }
      const t = await refreshAccessToken(await uaa(), env.refreshToken, trusting.fetch, {
        timeoutMs,
      });
      current.setTokens(env.index, {
        accessToken: t.accessToken,
        accessTokenType: t.tokenType,
        refreshToken: t.refreshToken,
      });
      await current.save();
      return {
        directorUrl,
        caCert,
        accessToken: t.accessToken,
        authorization: authorization(t.tokenType, t.accessToken),
        source: "refreshed" as const,
      };
    });
  } finally {
    trusting.close();
  }
}
