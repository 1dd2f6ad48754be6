/**
 * BOSH Director client for the api: `/info` (cached; it names the UAA whose keys sign user
 * tokens) and the instances of a deployment, listed with the USER's token so the Director's own
 * authorization applies too (DESIGN §2). Every failure becomes an ApiError whose kind tells the
 * client what to do: fix the token, the request, or wait for the Director.
 */
import { z } from "zod";
import { ApiError } from "./errors.ts";
import { deploymentNameProblem } from "../protocol/messages.ts";
import { cleartextProblem } from "../lib/url_policy.ts";
import { createTlsFetch, type TlsFetch, type TlsRequestInit } from "./tls_fetch.ts";
import { readLimited } from "../lib/read_limited.ts";
import { answeredProblem } from "./upstream_answer.ts";

const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** The parts of GET /info the api uses; other fields are tolerated. */
export const directorInfoSchema = z.object({
  name: z.string().optional(),
  uuid: z.string().min(1),
  version: z.string().optional(),
  user_authentication: z.object({
    type: z.string(),
    options: z.looseObject({ url: z.string().optional() }).optional(),
  }),
});
export type DirectorInfo = z.infer<typeof directorInfoSchema>;

/** One entry of GET /deployments/:name/instances. VM-less instances carry nulls and no IPs. */
export const instanceSchema = z.object({
  agent_id: z.string().nullable().optional(),
  cid: z.string().nullable().optional(),
  job: z.string().min(1),
  index: z.number().int().nonnegative().nullable(),
  id: z.string().min(1),
  az: z.string().nullable().optional(),
  ips: z.array(z.string()).default([]),
  expects_vm: z.boolean().optional(),
});
export type Instance = z.infer<typeof instanceSchema>;

export interface DirectorClientOptions {
  /** bosh.director_url, e.g. https://10.0.0.6:25555 */
  url: string;
  /** PEM of the CA that signed the Director's certificate (bosh.tls.ca) */
  caCert?: string;
  /** bosh.tls.server_name: verify the Director's certificate against this name */
  serverName?: string;
  /** bosh.tls.skip_verify: accept any certificate from the Director and its UAA */
  skipVerify?: boolean;
  timeoutMs: number;
  /** How long /info stays cached (default 5 min). */
  infoTtlMs?: number;
  now?: () => number;
}

export class DirectorClient {
  readonly #base: string;
  readonly #director: TlsFetch;
  readonly #uaa: TlsFetch;
  #info: { value: DirectorInfo; at: number } | null = null;
  #infoInFlight: Promise<DirectorInfo> | null = null;

  constructor(readonly opts: DirectorClientOptions) {
    this.#base = opts.url.replace(/\/+$/, "");
    const problem = cleartextProblem(this.#base);
    if (problem) throw new ApiError("CONNECTION_ERROR", `bosh.director_url ${problem}`);
    // The configured CA (the system roots still apply in addition). The UAA usually shares the
    // Director's CA, but not its name: server_name applies to the Director only.
    this.#director = createTlsFetch({
      ca: opts.caCert,
      serverName: opts.serverName,
      skipVerify: opts.skipVerify,
    });
    this.#uaa = createTlsFetch({ ca: opts.caCert, skipVerify: opts.skipVerify });
  }

  /** fetch for the Director's UAA (token keys) with the bosh.tls trust settings. */
  readonly uaaFetch = (url: string, init?: TlsRequestInit): Promise<Response> =>
    this.#uaa.fetch(url, init);

  close(): void {
    this.#director.close();
    this.#uaa.close();
  }

  /** GET /info, cached for infoTtlMs; concurrent callers share one request. */
  info(): Promise<DirectorInfo> {
    const now = (this.opts.now ?? Date.now)();
    if (this.#info && now - this.#info.at < (this.opts.infoTtlMs ?? 300_000)) {
      return Promise.resolve(this.#info.value);
    }
    this.#infoInFlight ??= this.#get("/info", undefined, "Director /info")
      .then((body) => {
        const parsed = directorInfoSchema.safeParse(body);
        if (!parsed.success) {
          throw new ApiError(
            "CONNECTION_ERROR",
            `the Director at ${this.#base} answered /info with an unexpected shape ` +
              `(${describeZod(parsed.error)}); check bosh.director_url`,
          );
        }
        this.#info = { value: parsed.data, at: (this.opts.now ?? Date.now)() };
        return parsed.data;
      })
      .finally(() => {
        this.#infoInFlight = null;
      });
    return this.#infoInFlight;
  }

  /** The UAA base URL the Director names; the only place token keys may come from. */
  async uaaUrl(): Promise<string> {
    const info = await this.info();
    const url = info.user_authentication.options?.url;
    if (info.user_authentication.type !== "uaa" || !url) {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Director at ${this.#base} does not use UAA authentication ` +
          `(type "${info.user_authentication.type}"); pcap api requires a UAA-backed Director`,
      );
    }
    const problem = cleartextProblem(url);
    if (problem) {
      // The token keys are the root of trust: a cleartext UAA would let anyone on the path
      // substitute their own keys and mint admin tokens.
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Director at ${this.#base} names its UAA ${problem}; refusing to load token keys ` +
          "from it (fix the UAA URL the Director announces)",
      );
    }
    return url.replace(/\/+$/, "");
  }

  /** GET /deployments/<name>/instances with the user's bearer token. */
  async instances(deployment: string, token: string): Promise<Instance[]> {
    const problem = deploymentNameProblem(deployment);
    if (problem) throw new ApiError("INVALID_REQUEST", problem);
    const path = `/deployments/${encodeURIComponent(deployment)}/instances`;
    const body = await this.#get(path, token, `deployment '${deployment}'`);
    const parsed = z.array(instanceSchema).safeParse(body);
    if (!parsed.success) {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Director answered the instance list of deployment '${deployment}' with an ` +
          `unexpected shape (${describeZod(parsed.error)})`,
      );
    }
    return parsed.data;
  }

  async #get(path: string, token: string | undefined, what: string): Promise<unknown> {
    const url = this.#base + path;
    let res: Response;
    let text: string;
    try {
      // tls_fetch never follows redirects: one could carry the bearer token elsewhere.
      res = await this.#director.fetch(url, {
        headers: {
          accept: "application/json",
          ...(token ? { authorization: `Bearer ${token}` } : {}),
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
          `the Director at ${this.#base}`,
          new Error("redirect"),
          "bosh.director_url",
        )!,
      );
    }
    if (!res.ok) throw statusError(res.status, what, this.#base, text);
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(
        "CONNECTION_ERROR",
        `the Director at ${this.#base} answered ${path} with a body that is not JSON ` +
          `(${text.length} bytes, starts ${JSON.stringify(text.slice(0, 40))})`,
      );
    }
  }
}

function statusError(status: number, what: string, base: string, body: string): ApiError {
  const detail = directorDescription(body);
  // The real Director answers 401 with code 600000 ("Require one of the scopes") when the token
  // is fine but lacks the scope; only a 401 without that code means a bad token.
  if (status === 401 && directorCode(body) !== 600000) {
    return new ApiError(
      "UNAUTHENTICATED",
      `the Director rejected your token (401)${detail}; log in again (bosh log-in)`,
    );
  }
  if (status === 403 || status === 401) {
    return new ApiError(
      "PERMISSION_DENIED",
      `the Director denied access to ${what} (${status})${detail}; you need a scope that covers it`,
    );
  }
  if (status === 404 && what.startsWith("deployment '")) {
    return new ApiError(
      "INVALID_REQUEST",
      `${what} not found on the Director; check the name with 'bosh deployments'`,
    );
  }
  return new ApiError(
    "CONNECTION_ERROR",
    `the Director at ${base} answered ${status} for ${what}${detail}; retry later`,
  );
}

function directorCode(body: string): number | undefined {
  try {
    const c = JSON.parse(body)?.code;
    return typeof c === "number" ? c : undefined;
  } catch {
    return undefined;
  }
}

/** The Director's own error text ({code, description}), bounded, never echoing headers. */
function directorDescription(body: string): string {
  try {
    const d = JSON.parse(body)?.description;
    return typeof d === "string" && d ? `: ${d.slice(0, 200)}` : "";
  } catch {
    return "";
  }
}

function connectionText(base: string, e: unknown, timeoutMs: number): string {
  const err = e as Error;
  if (err?.name === "TimeoutError") {
    return `the Director at ${base} did not answer within ${timeoutMs} ms; ` +
      "check that it is up or raise timeouts.director";
  }
  const why = err?.message ?? String(e);
  const answered = answeredProblem(`the Director at ${base}`, e, "bosh.director_url");
  if (answered) return answered;
  return `cannot reach the Director at ${base}: ${why}; ` +
    "check bosh.director_url, bosh.tls.ca and the network";
}

export function describeZod(err: z.ZodError): string {
  const issue = err.issues[0];
  return `${issue.path.map(String).join(".") || "(root)"}: ${issue.message}`;
}
