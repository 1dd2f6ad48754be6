/**
 * Cloud Controller v3 client for the api (DESIGN §2, CF). The root (`GET /`, anonymous, cached)
 * names the UAA whose keys sign user tokens; everything else is asked WITH THE USER'S TOKEN, so
 * that the CC's own role rules decide what the user sees. Failures become ApiErrors whose kind
 * tells the client what to do:
 * - 401 → UNAUTHENTICATED (log in again / refresh);
 * - 403 → PERMISSION_DENIED;
 * - 404 → "not found, or not visible to you" (CC hides apps of spaces one has no role in);
 * - 503 from stats (CF-InstancesUnavailable) and anything else → CONNECTION_ERROR with CC's detail.
 */
import { z } from "zod";
import { ApiError } from "./limits.ts";
import { cleartextProblem } from "../lib/url_policy.ts";
import { createTlsFetch, type TlsFetch, type TlsRequestInit } from "./tls_fetch.ts";
import { describeZod } from "./director_client.ts";
import { readLimited } from "../lib/read_limited.ts";
import { resourceGuidProblem } from "../protocol/cf_ids.ts";
import type { InstanceStat } from "./cf_selection.ts";
import { answeredProblem } from "./upstream_answer.ts";

const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Bound on followed `pagination.next` links: a CC that never ends a list cannot hold us. */
const MAX_PAGES = 100;

const link = z.object({ href: z.string().min(1) }).nullable().optional();

/** The parts of `GET /` the api uses; other links are tolerated. */
export const ccRootSchema = z.object({
  links: z.looseObject({
    uaa: link,
    login: link,
    cloud_controller_v3: z.object({
      href: z.string(),
      meta: z.looseObject({ version: z.string() }).optional(),
    }).nullable().optional(),
  }),
});

export interface CcRoot {
  uaaUrl: string;
  loginUrl?: string;
  /** CC API version (links.cloud_controller_v3.meta.version), if announced */
  apiVersion?: string;
}

const appSchema = z.looseObject({
  guid: z.string(),
  name: z.string(),
  state: z.string().optional(),
  relationships: z.looseObject({
    space: z.object({ data: z.object({ guid: z.string() }) }),
  }),
});
const namedSchema = z.looseObject({
  guid: z.string(),
  name: z.string(),
  relationships: z.looseObject({
    organization: z.object({ data: z.object({ guid: z.string() }) }).optional(),
  }).optional(),
});
const permissionsSchema = z.looseObject({
  read_basic_data: z.boolean(),
  read_sensitive_data: z.boolean(),
});
const sshSchema = z.looseObject({ enabled: z.boolean(), reason: z.string().optional() });
const statSchema = z.looseObject({
  index: z.number().int().nonnegative(),
  state: z.string(),
  host: z.string().optional(),
  instance_guid: z.string().optional(),
  instance_internal_ip: z.string().optional(),
});
const listSchema = z.object({
  pagination: z.looseObject({ next: link }).optional(),
  resources: z.array(z.unknown()),
});

export interface CcApp {
  guid: string;
  name: string;
  spaceGuid: string;
  state?: string;
}
export interface CcSpace {
  guid: string;
  name: string;
  orgGuid: string;
}
export interface CcOrg {
  guid: string;
  name: string;
}
export interface CcPermissions {
  readBasic: boolean;
  readSensitive: boolean;
}
export interface CcSsh {
  enabled: boolean;
  reason: string;
}

export interface CcClientOptions {
  /** cf.api_url, e.g. https://api.sys.example.com */
  url: string;
  /** PEM of the CA that signed the CC's (and its UAA's) certificate: cf.tls.ca */
  caCert?: string;
  /** cf.tls.server_name: verify the CC's certificate against this name */
  serverName?: string;
  /** cf.tls.skip_verify */
  skipVerify?: boolean;
  /** bound of each request (timeouts.cloud_controller) */
  timeoutMs: number;
  /** how long the root document stays cached (default 5 min) */
  rootTtlMs?: number;
  now?: () => number;
}

interface ErrorEntry {
  code?: number;
  title?: string;
  detail?: string;
}

export class CcClient {
  readonly #base: string;
  readonly #cc: TlsFetch;
  readonly #uaa: TlsFetch;
  #root: { value: CcRoot; at: number } | null = null;
  #rootInFlight: Promise<CcRoot> | null = null;

  constructor(readonly opts: CcClientOptions) {
    this.#base = opts.url.replace(/\/+$/, "");
    const problem = cleartextProblem(this.#base);
    if (problem) throw new ApiError("CONNECTION_ERROR", `cf.api_url ${problem}`);
    this.#cc = createTlsFetch({
      ca: opts.caCert,
      serverName: opts.serverName,
      skipVerify: opts.skipVerify,
    });
    // The UAA usually shares the CC's CA, but not its name: server_name applies to the CC only.
    this.#uaa = createTlsFetch({ ca: opts.caCert, skipVerify: opts.skipVerify });
  }

  get url(): string {
    return this.#base;
  }

  /** fetch for the CC's UAA (token keys) with the cf.tls trust settings. */
  readonly uaaFetch = (url: string, init?: TlsRequestInit): Promise<Response> =>
    this.#uaa.fetch(url, init);

  close(): void {
    this.#cc.close();
    this.#uaa.close();
  }

  /** `GET /`, cached for rootTtlMs; concurrent callers share one request. */
  root(): Promise<CcRoot> {
    const now = (this.opts.now ?? Date.now)();
    if (this.#root && now - this.#root.at < (this.opts.rootTtlMs ?? 300_000)) {
      return Promise.resolve(this.#root.value);
    }
    this.#rootInFlight ??= this.#get("/", undefined, "the root document")
      .then((body) => {
        const value = parseRoot(this.#base, body);
        this.#root = { value, at: (this.opts.now ?? Date.now)() };
        return value;
      })
      .finally(() => {
        this.#rootInFlight = null;
      });
    return this.#rootInFlight;
  }

  /** The UAA the CC names; the only place token keys may come from. */
  async uaaUrl(): Promise<string> {
    return (await this.root()).uaaUrl;
  }

  /** `GET /v3/apps/:guid`. */
  async appByGuid(guid: string, token: string): Promise<CcApp> {
    guidOrThrow(guid, "app guid");
    const body = await this.#get(`/v3/apps/${guid}`, token, `app ${guid}`);
    return toApp(this.#parse(appSchema, body, `app ${guid}`));
  }

  /** `GET /v3/apps?names=&space_guids=`; an outsider gets an empty list, hence "not visible". */
  async appByName(name: string, spaceGuid: string, token: string): Promise<CcApp> {
    guidOrThrow(spaceGuid, "space guid");
    const q = new URLSearchParams({ names: name, space_guids: spaceGuid });
    const all = await this.#list(`/v3/apps?${q}`, token, `app '${name}'`);
    const apps = all.map((a) => toApp(this.#parse(appSchema, a, `app '${name}'`)))
      .filter((a) => a.name === name);
    if (apps.length === 0) {
      throw new ApiError(
        "INVALID_REQUEST",
        `app '${name}' not found in space ${spaceGuid}, or not visible to you; ` +
          "check the name with 'cf apps' and the targeted space",
      );
    }
    return apps[0];
  }

  /** A space by name within an org named by name (`--org`/`--space`). */
  async spaceByName(orgName: string, spaceName: string, token: string): Promise<CcSpace> {
    const orgs = await this.#list(
      `/v3/organizations?${new URLSearchParams({ names: orgName })}`,
      token,
      `org '${orgName}'`,
    );
    const org = orgs.map((o) => this.#parse(namedSchema, o, `org '${orgName}'`))
      .find((o) => o.name === orgName);
    if (!org) {
      throw new ApiError(
        "INVALID_REQUEST",
        `org '${orgName}' not found, or not visible to you; check it with 'cf orgs'`,
      );
    }
    const q = new URLSearchParams({ names: spaceName, organization_guids: org.guid });
    const spaces = await this.#list(`/v3/spaces?${q}`, token, `space '${spaceName}'`);
    const space = spaces.map((s) => this.#parse(namedSchema, s, `space '${spaceName}'`))
      .find((s) => s.name === spaceName);
    if (!space) {
      throw new ApiError(
        "INVALID_REQUEST",
        `space '${spaceName}' not found in org '${orgName}', or not visible to you; ` +
          "check it with 'cf spaces'",
      );
    }
    return { guid: space.guid, name: space.name, orgGuid: org.guid };
  }

  /** `GET /v3/spaces/:guid` (names for the audit line and the capture's description). */
  async space(guid: string, token: string): Promise<CcSpace> {
    guidOrThrow(guid, "space guid");
    const s = this.#parse(
      namedSchema,
      await this.#get(`/v3/spaces/${guid}`, token, `space ${guid}`),
      `space ${guid}`,
    );
    const orgGuid = s.relationships?.organization?.data.guid;
    if (!orgGuid) {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Cloud Controller at ${this.#base} answered space ${guid} without its organization`,
      );
    }
    return { guid: s.guid, name: s.name, orgGuid };
  }

  /** `GET /v3/organizations/:guid`. */
  async org(guid: string, token: string): Promise<CcOrg> {
    guidOrThrow(guid, "org guid");
    const o = this.#parse(
      namedSchema,
      await this.#get(`/v3/organizations/${guid}`, token, `org ${guid}`),
      `org ${guid}`,
    );
    return { guid: o.guid, name: o.name };
  }

  /** `GET /v3/apps/:guid/permissions`. */
  async permissions(guid: string, token: string): Promise<CcPermissions> {
    guidOrThrow(guid, "app guid");
    const p = this.#parse(
      permissionsSchema,
      await this.#get(`/v3/apps/${guid}/permissions`, token, `app ${guid}`),
      `the permissions of app ${guid}`,
    );
    return { readBasic: p.read_basic_data, readSensitive: p.read_sensitive_data };
  }

  /** `GET /v3/apps/:guid/ssh_enabled`. */
  async sshEnabled(guid: string, token: string): Promise<CcSsh> {
    guidOrThrow(guid, "app guid");
    const s = this.#parse(
      sshSchema,
      await this.#get(`/v3/apps/${guid}/ssh_enabled`, token, `app ${guid}`),
      `ssh_enabled of app ${guid}`,
    );
    return { enabled: s.enabled, reason: s.reason ?? "" };
  }

  /** `GET /v3/apps/:guid/processes/:type/stats`: one entry per instance index. */
  async processStats(guid: string, type: string, token: string): Promise<InstanceStat[]> {
    guidOrThrow(guid, "app guid");
    if (!/^[A-Za-z0-9_-]{1,255}$/.test(type)) {
      throw new ApiError(
        "INVALID_REQUEST",
        `process type ${JSON.stringify(type.slice(0, 80))} may only contain letters, digits, ` +
          "'_' and '-'",
      );
    }
    const what = `process '${type}' of app ${guid}`;
    const body = await this.#get(`/v3/apps/${guid}/processes/${type}/stats`, token, what);
    const list = this.#parse(
      z.object({ resources: z.array(statSchema) }),
      body,
      `stats of ${what}`,
    );
    return list.resources.map((r) => ({
      index: r.index,
      state: r.state,
      host: r.host,
      instanceGuid: r.instance_guid,
      internalIp: r.instance_internal_ip,
    }));
  }

  /** Every resource of a paginated list, following `pagination.next` on the same origin. */
  async #list(path: string, token: string, what: string): Promise<unknown[]> {
    const out: unknown[] = [];
    let next: string | null = path;
    for (let page = 0; next !== null; page++) {
      if (page >= MAX_PAGES) {
        throw new ApiError(
          "CONNECTION_ERROR",
          `the Cloud Controller at ${this.#base} listed more than ${MAX_PAGES} pages for ${what}`,
        );
      }
      const body: z.output<typeof listSchema> = this.#parse(
        listSchema,
        await this.#get(next, token, what),
        `the list of ${what}`,
      );
      out.push(...body.resources);
      const href: string | undefined = body.pagination?.next?.href;
      next = href ? this.#samePath(href, what) : null;
    }
    return out;
  }

  /** A `next` link as a path on our CC; any other origin would receive the user's token. */
  #samePath(href: string, what: string): string {
    let u: URL;
    try {
      u = new URL(href, this.#base);
    } catch {
      u = new URL("invalid:");
    }
    if (u.origin !== new URL(this.#base).origin) {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Cloud Controller at ${this.#base} paginated ${what} to another origin ` +
          `(${JSON.stringify(href.slice(0, 100))}); refusing to send the token there`,
      );
    }
    return u.pathname + u.search;
  }

  #parse<T extends z.ZodType>(schema: T, body: unknown, what: string): z.output<T> {
    const r = schema.safeParse(body);
    if (!r.success) {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Cloud Controller at ${this.#base} answered ${what} with an unexpected shape ` +
          `(${describeZod(r.error)})`,
      );
    }
    return r.data;
  }

  async #get(path: string, token: string | undefined, what: string): Promise<unknown> {
    const url = this.#base + path;
    let res: Response;
    let text: string;
    try {
      // tls_fetch never follows redirects: one could carry the bearer token elsewhere.
      res = await this.#cc.fetch(url, {
        headers: {
          accept: "application/json",
          ...(token ? { authorization: `bearer ${token}` } : {}),
        },
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      text = await readLimited(res, MAX_BODY_BYTES);
    } catch (e) {
      throw new ApiError("CONNECTION_ERROR", connectionText(this.#base, e, this.opts.timeoutMs));
    }
    // a 3xx is returned, not followed (it could carry the token elsewhere): say so, not "retry"
    if (res.status >= 300 && res.status < 400) {
      throw new ApiError(
        "CONNECTION_ERROR",
        answeredProblem(
          `the Cloud Controller at ${this.#base}`,
          new Error("redirect"),
          "cf.api_url",
        )!,
      );
    }
    if (!res.ok) throw statusError(res.status, what, this.#base, ccErrors(text));
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Cloud Controller at ${this.#base} answered ${path.split("?")[0]} with a body that ` +
          `is not JSON (${text.length} bytes, starts ${JSON.stringify(text.slice(0, 40))}); ` +
          "check that cf.api_url names the Cloud Controller itself, or retry later",
      );
    }
  }
}

function parseRoot(base: string, body: unknown): CcRoot {
  const r = ccRootSchema.safeParse(body);
  if (!r.success) {
    throw new ApiError(
      "CONNECTION_ERROR",
      `the Cloud Controller at ${base} answered / with an unexpected shape ` +
        `(${describeZod(r.error)}); check cf.api_url`,
    );
  }
  const uaa = r.data.links.uaa?.href;
  if (!uaa) {
    throw new ApiError(
      "CONNECTION_ERROR",
      `the Cloud Controller at ${base} names no UAA (links.uaa) in its root; check cf.api_url`,
    );
  }
  const problem = cleartextProblem(uaa);
  if (problem) {
    // The token keys are the root of trust: a cleartext UAA would let anyone on the path
    // substitute their own keys.
    throw new ApiError(
      "CONNECTION_ERROR",
      `the Cloud Controller at ${base} names its UAA ${problem}; refusing to load token keys ` +
        "from it",
    );
  }
  return {
    uaaUrl: uaa.replace(/\/+$/, ""),
    loginUrl: r.data.links.login?.href?.replace(/\/+$/, ""),
    apiVersion: r.data.links.cloud_controller_v3?.meta?.version,
  };
}

function toApp(a: z.output<typeof appSchema>): CcApp {
  return { guid: a.guid, name: a.name, spaceGuid: a.relationships.space.data.guid, state: a.state };
}

function guidOrThrow(v: string, what: string): void {
  // Guids go into CC paths: only the UUID form, never "..", "/" or query characters.
  const problem = resourceGuidProblem(v, what);
  if (problem) throw new ApiError("INVALID_REQUEST", problem);
}

/** CC's `{"errors":[{code,title,detail}]}` body, or [] when it is something else. */
export function ccErrors(body: string): ErrorEntry[] {
  try {
    const list = JSON.parse(body)?.errors;
    if (!Array.isArray(list)) return [];
    return list.filter((e) => e && typeof e === "object").map((e) => ({
      code: typeof e.code === "number" ? e.code : undefined,
      title: typeof e.title === "string" ? e.title.slice(0, 100) : undefined,
      detail: typeof e.detail === "string" ? e.detail.slice(0, 300) : undefined,
    }));
  } catch {
    return [];
  }
}

function describe(errors: ErrorEntry[]): string {
  const e = errors[0];
  if (!e) return "";
  return `: ${[e.title, e.detail].filter(Boolean).join(": ")}`;
}

function statusError(status: number, what: string, base: string, errors: ErrorEntry[]): ApiError {
  const detail = describe(errors);
  if (status === 401) {
    return new ApiError(
      "UNAUTHENTICATED",
      `the Cloud Controller rejected your token (401${detail}); log in again (cf login)`,
    );
  }
  if (status === 403) {
    return new ApiError(
      "PERMISSION_DENIED",
      `the Cloud Controller denied access to ${what} (403${detail}); you need a role that ` +
        "covers it (cloud_controller.read and a role in the app's space)",
    );
  }
  if (status === 404) {
    return new ApiError(
      "INVALID_REQUEST",
      `${what} not found, or not visible to you (${errors[0]?.title ?? "404"}); check the name ` +
        "and that you have a role in its space ('cf target', 'cf apps')",
    );
  }
  if (status === 503 && errors[0]?.title === "CF-InstancesUnavailable") {
    return new ApiError(
      "CONNECTION_ERROR",
      `the Cloud Controller cannot list the instances of ${what} right now (503${detail}); ` +
        "Diego is unavailable to it, retry later",
    );
  }
  return new ApiError(
    "CONNECTION_ERROR",
    `the Cloud Controller at ${base} answered ${status} for ${what}${detail}; retry later`,
  );
}

function connectionText(base: string, e: unknown, timeoutMs: number): string {
  const err = e as Error;
  if (err?.name === "TimeoutError") {
    return `the Cloud Controller at ${base} did not answer within ${timeoutMs} ms; ` +
      "check that it is up or raise timeouts.cloud_controller";
  }
  const answered = answeredProblem(`the Cloud Controller at ${base}`, e, "cf.api_url");
  if (answered) return answered;
  return `cannot reach the Cloud Controller at ${base}: ${err?.message ?? String(e)}; ` +
    "check cf.api_url, cf.tls.ca and the network";
}
