/**
 * The cf CLI's login (`$CF_HOME/.cf/config.json`, else `~/.cf/config.json`), read and refreshed
 * the way the cf CLI does (DESIGN §2, CF):
 * - `ConfigVersion` must be 4;
 * - `AccessToken` is stored with its type (`"bearer eyJ..."`);
 * - the token is refreshed when it expires within a minute: `POST {AuthorizationEndpoint}/oauth/
 *   token`, grant_type=refresh_token, HTTP Basic with `UAAOAuthClient:UAAOAuthClientSecret`
 *   (default `cf:`), through the UAA token code the BOSH client uses;
 * - the file is written back atomically with mode 0600 and every field kept, known or not;
 * - a client-credentials login (`cf auth --client-credentials`) keeps neither a refresh token nor
 *   the secret, so an expired one can only be renewed by running `cf auth` again.
 * - `SSLDisabled` (`cf api --skip-ssl-validation`) makes the cf CLI skip certificate checks on the
 *   foundation's endpoints; pcap-cf does the same for the UAA it refreshes the token at, and says
 *   so loudly every time, unless a UAA CA is given explicitly (then that CA is verified).
 * Tokens never appear in errors.
 */
import { writeFileAtomic } from "./bosh_config.ts";
import {
  AuthError,
  type FetchFn,
  fetchTrusting,
  needsRefresh,
  refreshAccessToken,
} from "./uaa_token.ts";
import { createTlsFetch } from "../server/tls_fetch.ts";

export class CfConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CfConfigError";
  }
}

/** `$CF_HOME/.cf/config.json` (the cf CLI appends `.cf` to CF_HOME too), else `$HOME/.cf/…`. */
export function cfConfigPath(env: Record<string, string | undefined>): string {
  const home = env.CF_HOME || env.HOME;
  if (!home) throw new CfConfigError("neither CF_HOME nor HOME is set; cannot find the cf login");
  return `${home.replace(/\/+$/, "")}/.cf/config.json`;
}

export interface CfTargetRef {
  guid: string;
  name: string;
}

/** What pcap-cf uses of the login. */
export interface CfLogin {
  /** the CF API URL (`Target`) */
  target: string;
  authorizationEndpoint: string;
  uaaEndpoint?: string;
  /** without the "bearer " prefix; "" when not logged in */
  accessToken: string;
  refreshToken: string;
  client: string;
  clientSecret: string;
  grantType: string;
  sslDisabled: boolean;
  org?: CfTargetRef;
  space?: CfTargetRef & { allowSsh?: boolean };
}

type Json = Record<string, unknown>;

const str = (v: unknown): string => typeof v === "string" ? v : "";

function ref(v: unknown): CfTargetRef | undefined {
  const o = v as Json | null;
  if (!o || typeof o !== "object" || !str(o.GUID)) return undefined;
  return { guid: str(o.GUID), name: str(o.Name) };
}

export class CfConfig {
  readonly path: string;
  #raw: Json;

  private constructor(path: string, raw: Json) {
    this.path = path;
    this.#raw = raw;
  }

  static async load(path: string): Promise<CfConfig> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new CfConfigError(
          `cf config ${path} does not exist; run "cf api URL" and "cf login" first ` +
            "(or set CF_HOME)",
        );
      }
      throw new CfConfigError(`cannot read cf config ${path}: ${(e as Error).message}`);
    }
    return CfConfig.parse(text, path);
  }

  static parse(text: string, path: string): CfConfig {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new CfConfigError(`cf config ${path} is not valid JSON: ${(e as Error).message}`);
    }
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
      throw new CfConfigError(`cf config ${path} must be a JSON object`);
    }
    const version = (raw as Json).ConfigVersion;
    if (version !== 4) {
      throw new CfConfigError(
        `cf config ${path} has ConfigVersion ${JSON.stringify(version)}, pcap-cf reads version 4 ` +
          "(cf CLI v7 and later); log in with a current cf CLI",
      );
    }
    return new CfConfig(path, raw as Json);
  }

  login(): CfLogin {
    const r = this.#raw;
    const space = ref(r.SpaceFields);
    const allowSsh = (r.SpaceFields as Json | undefined)?.AllowSSH;
    return {
      target: str(r.Target).replace(/\/+$/, ""),
      authorizationEndpoint: str(r.AuthorizationEndpoint).replace(/\/+$/, ""),
      uaaEndpoint: str(r.UaaEndpoint) || undefined,
      accessToken: str(r.AccessToken).replace(/^bearer\s+/i, ""),
      refreshToken: str(r.RefreshToken),
      client: str(r.UAAOAuthClient) || "cf",
      clientSecret: str(r.UAAOAuthClientSecret),
      grantType: str(r.UAAGrantType),
      sslDisabled: r.SSLDisabled === true,
      org: ref(r.OrganizationFields),
      space: space && { ...space, allowSsh: typeof allowSsh === "boolean" ? allowSsh : undefined },
    };
  }

  /** Stores new tokens as the cf CLI does ("bearer " prefix), leaving every other field alone. */
  setTokens(t: { accessToken: string; tokenType: string; refreshToken?: string }): void {
    this.#raw.AccessToken = `${t.tokenType.toLowerCase()} ${t.accessToken}`;
    if (t.refreshToken) this.#raw.RefreshToken = t.refreshToken;
  }

  toString(): string {
    return JSON.stringify(this.#raw, null, 2) + "\n";
  }

  save(): Promise<void> {
    return writeFileAtomic(this.path, this.toString(), 0o600, "cf config");
  }
}

export interface CfAuthOptions {
  configPath: string;
  /** PEM to trust for the UAA (--uaa-ca-cert, else --ca-cert), in addition to the system roots */
  caCert?: string;
  /** true when caCert was given for the UAA explicitly (--uaa-ca-cert): it wins over SSLDisabled */
  caCertForUaa?: boolean;
  /** warnings for the user (SSLDisabled); default: none */
  warn?: (line: string) => void;
  fetch?: FetchFn;
  nowSec?: number;
  /** refresh when the token expires within this many seconds; default 60 like the cf CLI */
  marginSec?: number;
  timeoutMs?: number;
}

export interface CfAuth {
  login: CfLogin;
  accessToken: string;
  /** value for the Authorization header */
  authorization: string;
  source: "config" | "refreshed";
}

/** The warning for a login with SSLDisabled, or null. Pure. */
export function sslDisabledWarning(
  login: CfLogin,
  configPath: string,
  uaaCaGiven: boolean,
): string | null {
  if (!login.sslDisabled) return null;
  if (uaaCaGiven) {
    return `note: ${configPath} has SSLDisabled (cf api --skip-ssl-validation), but a UAA CA ` +
      "was given with --uaa-ca-cert, so the UAA's certificate is verified against it";
  }
  return `WARNING: ${configPath} has SSLDisabled (cf api --skip-ssl-validation): like the cf ` +
    `CLI, pcap-cf does NOT verify the certificate of the UAA at ${
      login.authorizationEndpoint || "(none)"
    } when it refreshes your token, so anyone on the network path can read or replace it. ` +
    'Give the UAA\'s CA with --uaa-ca-cert (or log in with "cf api URL" without ' +
    "--skip-ssl-validation). The pcap API's certificate is verified regardless (--ca-cert).";
}

/** fetch for the UAA: the given CA, or no verification at all under SSLDisabled. */
function uaaFetch(login: CfLogin, o: CfAuthOptions): { fetch: FetchFn; close(): void } {
  if (!login.sslDisabled || o.caCertForUaa) return fetchTrusting(o.caCert);
  const tls = createTlsFetch({ skipVerify: true });
  return {
    fetch: (input, init = {}) =>
      tls.fetch(String(input), {
        method: init.method === "POST" ? "POST" : "GET",
        headers: Object.fromEntries(new Headers(init.headers).entries()),
        body: typeof init.body === "string" ? init.body : undefined,
        signal: init.signal ?? undefined,
      }),
    close: () => tls.close(),
  };
}

/** A usable token from the cf login: stored, or refreshed and written back. */
export async function cfAuth(o: CfAuthOptions): Promise<CfAuth> {
  const config = await CfConfig.load(o.configPath);
  const login = config.login();
  const warning = sslDisabledWarning(login, o.configPath, !!o.caCertForUaa);
  if (warning) o.warn?.(warning);
  const nowSec = o.nowSec ?? Math.floor(Date.now() / 1000);
  if (!login.target) {
    throw new AuthError(`no CF API is targeted in ${o.configPath}; run "cf api URL"`, true);
  }
  if (!login.accessToken) {
    throw new AuthError(`not logged in to ${login.target}; run "cf login"`, true);
  }
  if (!needsRefresh(login.accessToken, nowSec, o.marginSec ?? 60)) {
    return {
      login,
      accessToken: login.accessToken,
      authorization: `bearer ${login.accessToken}`,
      source: "config",
    };
  }
  if (login.grantType === "client_credentials" || !login.refreshToken) {
    throw new AuthError(
      login.grantType === "client_credentials"
        ? `the client-credentials token for ${login.target} has expired and cannot be ` +
          `refreshed; run \`cf auth\` again`
        : `the token for ${login.target} has expired and ${o.configPath} holds no refresh ` +
          `token; run "cf login"`,
      true,
    );
  }
  if (!login.authorizationEndpoint) {
    throw new AuthError(`${o.configPath} names no AuthorizationEndpoint; run "cf login"`, true);
  }
  const trusting = o.fetch ? { fetch: o.fetch, close() {} } : uaaFetch(login, o);
  try {
    const t = await refreshAccessToken(
      login.authorizationEndpoint,
      login.refreshToken,
      trusting.fetch,
      {
        clientId: login.client,
        clientSecret: login.clientSecret,
        timeoutMs: o.timeoutMs,
      },
    ).catch((e) => {
      if (e instanceof AuthError && e.loginRequired) {
        throw new AuthError(
          `the UAA at ${login.authorizationEndpoint} no longer accepts the stored refresh ` +
            `token; run "cf login" and try again`,
          true,
          { cause: e },
        );
      }
      throw e;
    });
    config.setTokens(t);
    await config.save();
    return {
      login: {
        ...login,
        accessToken: t.accessToken,
        refreshToken: t.refreshToken ?? login.refreshToken,
      },
      accessToken: t.accessToken,
      authorization: `bearer ${t.accessToken}`,
      source: "refreshed",
    };
  } finally {
    trusting.close();
  }
}
