/**
 * Configuration of `pcap api` (api.yml). The keys are a superset of pcap-release's api config
 * (DESIGN §4) so its operators can keep their files; new keys live under `limits`, `audit` and
 * `timeouts`. Unknown keys are errors (strict objects) because a misspelt security setting that
 * is silently ignored is worse than a refused start.
 */
import { z } from "zod";
import { ConfigError, loadYamlConfig, readConfiguredFile } from "../lib/config_load.ts";
import type { LogLevel } from "../lib/log.ts";
import { byteSize, durationMs, filePath } from "../lib/config_schema.ts";
import { cleartextProblem } from "../lib/url_policy.ts";
import { configSummary } from "../lib/config_summary.ts";
import { checkCertificatePem, checkKeyPair } from "../lib/pem.ts";

// ---------- value parsers ----------

const duration = durationMs;
const path = filePath;
const port = z.number().int().min(1).max(65535);
const positiveInt = z.number().int().min(1);

// ---------- schema ----------

const bufferSchema = z.strictObject({
  size: positiveInt.default(100),
  upper_limit: positiveInt.default(95),
  lower_limit: positiveInt.default(60),
}).superRefine((b, ctx) => {
  // Same hysteresis rule as pcap-release: lower < upper <= size.
  if (b.upper_limit > b.size) {
    ctx.addIssue({
      code: "custom",
      path: ["upper_limit"],
      message: `must be <= buffer.size (${b.size}), got ${b.upper_limit}`,
    });
  }
  if (b.lower_limit >= b.upper_limit) {
    ctx.addIssue({
      code: "custom",
      path: ["lower_limit"],
      message: `must be < buffer.upper_limit (${b.upper_limit}), got ${b.lower_limit}`,
    });
  }
});

const listenSchema = z.strictObject({
  address: z.string().min(1).default("0.0.0.0"),
  port: port.default(8080),
  // Optional: behind gorouter the api may listen in plain HTTP on a private network.
  tls: z.strictObject({
    certificate: path,
    private_key: path,
    // Users authenticate with tokens; the api's listener does not ask for client certificates,
    // so refusing the key beats silently not enforcing it.
    client_cas: path.optional().refine((v) => v === undefined, {
      message: "the api does not verify client certificates; terminate client mTLS in " +
        "gorouter or a proxy in front of the api and remove this key",
    }),
  }).optional(),
});

const agentsMtlsSchema = z.strictObject({
  certificate: path,
  private_key: path,
  ca: path,
  server_name: z.string().min(1).optional(),
  skip_verify: z.boolean().default(false),
});

const boshSchema = z.strictObject({
  director_url: z.url({ protocol: /^https?$/, error: "must be an https URL" }).superRefine(
    (url, ctx) => {
      const problem = cleartextProblem(url);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    },
  ),
  agent_port: port.default(9494),
  token_scope: z.string().min(1).default("bosh.admin"),
  tls: z.strictObject({
    ca: path.optional(),
    server_name: z.string().min(1).optional(),
    skip_verify: z.boolean().default(false),
  }).prefault({}),
});

/** CF app capture: the Cloud Controller that authorizes it, and the agents on Diego cells. */
const cfSchema = z.strictObject({
  api_url: z.url({ protocol: /^https?$/, error: "must be an https URL" }).superRefine(
    (url, ctx) => {
      const problem = cleartextProblem(url);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    },
  ),
  agent_port: port.default(9494),
  // CF's consent switch for debugging inside a container (`cf enable-ssh`).
  require_ssh_enabled: z.boolean().default(true),
  tls: z.strictObject({
    ca: path.optional(),
    server_name: z.string().min(1).optional(),
    skip_verify: z.boolean().default(false),
  }).prefault({}),
});

const limitsSchema = z.strictObject({
  per_user_concurrent_captures: positiveInt.default(2),
  // Sockets of verified users that have no capture yet (waiting for or checking their start).
  max_waiting_sessions: positiveInt.default(64),
  per_user_waiting_sessions: positiveInt.default(4),
  // Sources are numbered 0..n-1 on the wire and 65535 is the api's own source number.
  max_targets: positiveInt.max(65534).default(100),
  // 0 means unlimited for duration and bytes.
  max_duration: duration.prefault(3600),
  max_bytes: byteSize.prefault(1024 ** 3),
});

const auditSchema = z.strictObject({
  enabled: z.boolean().default(true),
  file: path.optional(),
});

const metricsSchema = z.strictObject({
  // /metrics is reachable through the public route like every other path; switch it off there
  // when the counters (captures, users' activity) should not be public.
  enabled: z.boolean().default(true),
});

const timeoutsSchema = z.strictObject({
  director: duration.prefault(10),
  cloud_controller: duration.prefault(10),
  uaa: duration.prefault(10),
  agent_connect: duration.prefault(5),
});

export const apiConfigSchema = z.strictObject({
  id: z.string().min(1),
  log_level: z.enum(["debug", "info", "warn", "error"]).default("info"),
  buffer: bufferSchema.prefault({}),
  listen: listenSchema.prefault({}),
  agents_mtls: agentsMtlsSchema,
  concurrent_captures: positiveInt.default(5),
  drain_timeout: duration.prefault(10),
  bosh: boshSchema.optional(),
  cf: cfSchema.optional(),
  limits: limitsSchema.prefault({}),
  audit: auditSchema.prefault({}),
  metrics: metricsSchema.prefault({}),
  timeouts: timeoutsSchema.prefault({}),
}).superRefine((c, ctx) => {
  if (!c.bosh) {
    ctx.addIssue({
      code: "custom",
      path: ["bosh"],
      message: "no target resolver configured; add a bosh section (director_url)",
    });
  }
  if (c.limits.per_user_concurrent_captures > c.concurrent_captures) {
    ctx.addIssue({
      code: "custom",
      path: ["limits", "per_user_concurrent_captures"],
      message: `must be <= concurrent_captures (${c.concurrent_captures})`,
    });
  }
  if (c.limits.per_user_waiting_sessions > c.limits.max_waiting_sessions) {
    ctx.addIssue({
      code: "custom",
      path: ["limits", "per_user_waiting_sessions"],
      message: `must be <= limits.max_waiting_sessions (${c.limits.max_waiting_sessions})`,
    });
  }
  for (const [k, v] of Object.entries(c.timeouts)) {
    if (v <= 0) ctx.addIssue({ code: "custom", path: ["timeouts", k], message: "must be > 0" });
  }
});

export type RawApiConfig = z.output<typeof apiConfigSchema>;

// ---------- typed result ----------

/** A configured PEM file: where it came from and what it holds. */
export interface PemFile {
  path: string;
  pem: string;
}

export interface ApiConfig {
  file: string;
  id: string;
  logLevel: LogLevel;
  buffer: { size: number; upperLimit: number; lowerLimit: number };
  listen: {
    address: string;
    port: number;
    tls?: { certificate: PemFile; privateKey: PemFile };
  };
  agentsMtls: {
    certificate: PemFile;
    privateKey: PemFile;
    ca: PemFile;
    serverName?: string;
    skipVerify: boolean;
  };
  concurrentCaptures: number;
  drainTimeoutMs: number;
  bosh: {
    directorUrl: string;
    agentPort: number;
    tokenScope: string;
    tls: { ca?: PemFile; serverName?: string; skipVerify: boolean };
  };
  /** absent: no CF app capture (no /v1/capture/cf route) */
  cf?: {
    apiUrl: string;
    agentPort: number;
    requireSshEnabled: boolean;
    tls: { ca?: PemFile; serverName?: string; skipVerify: boolean };
  };
  limits: {
    perUserConcurrentCaptures: number;
    /** sockets of verified users without a capture yet, all users together */
    maxWaitingSessions: number;
    /** the same, per user (keyed like perUserConcurrentCaptures) */
    perUserWaitingSessions: number;
    maxTargets: number;
    /** 0 = unlimited */
    maxDurationMs: number;
    /** 0 = unlimited */
    maxBytes: number;
  };
  audit: { enabled: boolean; file?: string };
  metrics: { enabled: boolean };
  timeouts: {
    directorMs: number;
    cloudControllerMs: number;
    uaaMs: number;
    agentConnectMs: number;
  };
}

/**
 * Reads every configured PEM file, collecting all failures so one --check-config run lists
 * every broken path rather than one per attempt.
 */
class PemLoader {
  readonly errors: ConfigError[] = [];
  constructor(private readonly file: string) {}

  /** Checks that the key belongs to the certificate, unless either failed to load. */
  pair(certKey: string, cert: PemFile, keyKey: string, key: PemFile): void {
    if (!cert.pem || !key.pem) return;
    try {
      checkKeyPair(this.file, { key: certKey, ...cert }, { key: keyKey, ...key });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.errors.push(e);
    }
  }

  async load(key: string, path: string): Promise<PemFile>;
  async load(key: string, path: string | undefined): Promise<PemFile | undefined>;
  async load(key: string, path: string | undefined): Promise<PemFile | undefined> {
    if (path === undefined) return undefined;
    try {
      const pem = await readConfiguredFile(this.file, key, path);
      if (!key.endsWith("private_key")) checkCertificatePem(this.file, key, path, pem);
      return { path, pem };
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.errors.push(e);
      return { path, pem: "" };
    }
  }
}

async function checkAuditDir(file: string, auditFile: string): Promise<ConfigError | null> {
  const dir = auditFile.includes("/") ? auditFile.slice(0, auditFile.lastIndexOf("/")) || "/" : ".";
  try {
    if ((await Deno.stat(dir)).isDirectory) return null;
  } catch { /* reported below */ }
  return new ConfigError(file, "audit.file", `directory ${dir} does not exist; create it`);
}

/** Turns validated raw config into ApiConfig; throws AggregateConfigError on file problems. */
async function resolve(file: string, raw: RawApiConfig): Promise<ApiConfig> {
  const pem = new PemLoader(file);
  const bosh = raw.bosh!; // enforced by the schema refinement
  const tls = raw.listen.tls;
  const cfg: ApiConfig = {
    file,
    id: raw.id,
    logLevel: raw.log_level,
    buffer: {
      size: raw.buffer.size,
      upperLimit: raw.buffer.upper_limit,
      lowerLimit: raw.buffer.lower_limit,
    },
    listen: {
      address: raw.listen.address,
      port: raw.listen.port,
      tls: tls && {
        certificate: await pem.load("listen.tls.certificate", tls.certificate),
        privateKey: await pem.load("listen.tls.private_key", tls.private_key),
      },
    },
    agentsMtls: {
      certificate: await pem.load("agents_mtls.certificate", raw.agents_mtls.certificate),
      privateKey: await pem.load("agents_mtls.private_key", raw.agents_mtls.private_key),
      ca: await pem.load("agents_mtls.ca", raw.agents_mtls.ca),
      serverName: raw.agents_mtls.server_name,
      skipVerify: raw.agents_mtls.skip_verify,
    },
    concurrentCaptures: raw.concurrent_captures,
    drainTimeoutMs: raw.drain_timeout,
    bosh: {
      directorUrl: bosh.director_url.replace(/\/+$/, ""),
      agentPort: bosh.agent_port,
      tokenScope: bosh.token_scope,
      tls: {
        ca: await pem.load("bosh.tls.ca", bosh.tls.ca),
        serverName: bosh.tls.server_name,
        skipVerify: bosh.tls.skip_verify,
      },
    },
    cf: raw.cf && {
      apiUrl: raw.cf.api_url.replace(/\/+$/, ""),
      agentPort: raw.cf.agent_port,
      requireSshEnabled: raw.cf.require_ssh_enabled,
      tls: {
        ca: await pem.load("cf.tls.ca", raw.cf.tls.ca),
        serverName: raw.cf.tls.server_name,
        skipVerify: raw.cf.tls.skip_verify,
      },
    },
    limits: {
      perUserConcurrentCaptures: raw.limits.per_user_concurrent_captures,
      maxWaitingSessions: raw.limits.max_waiting_sessions,
      perUserWaitingSessions: raw.limits.per_user_waiting_sessions,
      maxTargets: raw.limits.max_targets,
      maxDurationMs: raw.limits.max_duration,
      maxBytes: raw.limits.max_bytes,
    },
    audit: { enabled: raw.audit.enabled, file: raw.audit.file },
    metrics: { enabled: raw.metrics.enabled },
    timeouts: {
      directorMs: raw.timeouts.director,
      cloudControllerMs: raw.timeouts.cloud_controller,
      uaaMs: raw.timeouts.uaa,
      agentConnectMs: raw.timeouts.agent_connect,
    },
  };
  if (cfg.listen.tls) {
    pem.pair(
      "listen.tls.certificate",
      cfg.listen.tls.certificate,
      "listen.tls.private_key",
      cfg.listen.tls.privateKey,
    );
  }
  pem.pair(
    "agents_mtls.certificate",
    cfg.agentsMtls.certificate,
    "agents_mtls.private_key",
    cfg.agentsMtls.privateKey,
  );
  const errors = [...pem.errors];
  if (cfg.audit.enabled && cfg.audit.file) {
    const e = await checkAuditDir(file, cfg.audit.file);
    if (e) errors.push(e);
  }
  if (errors.length > 0) throw new AggregateConfigError(errors);
  return cfg;
}

/** Several ConfigErrors at once (all broken file references); message lists them all. */
export class AggregateConfigError extends ConfigError {
  constructor(readonly errors: ConfigError[]) {
    super(errors[0].file, errors[0].key, errors[0].message.slice(errors[0].file.length + 2));
    this.message = errors.map((e) => e.message).join("\n");
    this.name = "AggregateConfigError";
  }
}

/** Loads, validates and resolves api.yml; throws ConfigError (message names file and key). */
export async function loadApiConfig(path: string): Promise<ApiConfig> {
  const raw = await loadYamlConfig(path, apiConfigSchema);
  return resolve(path, raw);
}

export type CheckResult = { ok: true; config: ApiConfig } | { ok: false; errors: string[] };

/** `pcap api --check-config FILE`: validation without starting; never throws ConfigError. */
export async function checkApiConfig(path: string): Promise<CheckResult> {
  try {
    return { ok: true, config: await loadApiConfig(path) };
  } catch (e) {
    if (e instanceof AggregateConfigError) {
      return {
        ok: false,
        errors: e.errors.map((x) => x.message),
      };
    }
    if (e instanceof ConfigError) return { ok: false, errors: [e.message] };
    throw e;
  }
}

/** Summary for `--check-config`, in the agent's style; paths only, no key material. */
export function describeApiConfig(c: ApiConfig): string {
  const unlimited = (n: number, unit: string) => (n === 0 ? "unlimited" : `${n}${unit}`);
  return configSummary(c.file, [
    ["id", c.id],
    [
      "listen",
      `${c.listen.tls ? "https" : "http"}://${c.listen.address}:${c.listen.port}` +
      (c.listen.tls ? ` (certificate: ${c.listen.tls.certificate.path})` : ""),
    ],
    [
      "bosh",
      `${c.bosh.directorUrl} (agents on port ${c.bosh.agentPort}, scope ${c.bosh.tokenScope})`,
    ],
    [
      "cf",
      c.cf
        ? `${c.cf.apiUrl} (agents on port ${c.cf.agentPort}, ` +
          `${c.cf.requireSshEnabled ? "app SSH required" : "app SSH not required"})`
        : "off (no cf section)",
    ],
    ["agents_mtls", `certificate: ${c.agentsMtls.certificate.path}, CA: ${c.agentsMtls.ca.path}`],
    [
      "buffer",
      `size ${c.buffer.size}, discard above ${c.buffer.upperLimit} until ${c.buffer.lowerLimit}`,
    ],
    [
      "limits",
      `${c.concurrentCaptures} concurrent captures (${c.limits.perUserConcurrentCaptures} per user), ` +
      `${c.limits.maxWaitingSessions} waiting sockets (${c.limits.perUserWaitingSessions} per user), ` +
      `${c.limits.maxTargets} targets, max duration ${
        unlimited(c.limits.maxDurationMs / 1000, " s")
      }, max bytes ${unlimited(c.limits.maxBytes, "")}`,
    ],
    ["drain_timeout", `${c.drainTimeoutMs / 1000} s`],
    ["audit", c.audit.enabled ? (c.audit.file ?? "log stream") : "disabled"],
    ["log_level", c.logLevel],
  ]);
}
