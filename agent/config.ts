/**
 * `pcap agent` configuration: a superset of pcap-release's agent YAML (id, log_level,
 * buffer{size,upper_limit,lower_limit}, listen{port,tls{certificate,private_key,client_cas}}) plus
 * listen.address, listen.tls.allowed_names, limits{} and capture{}. Every problem becomes one
 * ConfigError naming the file, the key and the fix; an agent never serves without mTLS.
 */
import { z } from "zod";
import { ConfigError, loadYamlConfig, readConfiguredFile } from "../lib/config_load.ts";
import type { LogLevel } from "../lib/log.ts";
import { filePath, positiveDurationMs } from "../lib/config_schema.ts";
import { configSummary } from "../lib/config_summary.ts";
import { checkCertificatePem, checkKeyPair } from "../lib/pem.ts";
import type { BufferLimits } from "./backpressure.ts";
import { CfAgentConfig } from "./cf_agent_config.ts";

const PosInt = z.number().int().positive();

/** Defaults of the listener's abuse bounds (docs/deployment.md). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_CONNECTIONS = 64;
const Path = filePath;

const TlsSchema = z.strictObject({
  /** pcap-api style switch; only `true` is accepted because the agent always requires mTLS. */
  enabled: z.literal(true, {
    message: "the agent always serves mutual TLS; remove `enabled` or set it to true",
  }).optional(),
  certificate: Path,
  private_key: Path,
  client_cas: Path.optional(),
  /** Older pcap-release templates call the client CA bundle `ca`. */
  ca: Path.optional(),
  allowed_names: z.array(z.string().min(1)).default([]),
  /** A connection that has not finished its TLS handshake by then is closed. */
  handshake_timeout: positiveDurationMs.default(DEFAULT_HANDSHAKE_TIMEOUT_MS),
});

export const AgentConfigSchema = z.strictObject({
  id: z.string().min(1, "must name this VM, e.g. router/d55baeba-f645-4219-8b49-2b4654a17165"),
  log_level: z.enum(["debug", "info", "warn", "error"]).default("info"),
  buffer: z.strictObject({
    size: PosInt.default(100),
    upper_limit: PosInt.default(98),
    lower_limit: z.number().int().nonnegative().default(70),
  }).default({ size: 100, upper_limit: 98, lower_limit: 70 }),
  listen: z.strictObject({
    address: z.string().min(1).default("0.0.0.0"),
    // 0 picks a free port (tests).
    port: z.number().int().min(0).max(65535).default(9494),
    /** Open TCP connections at once, handshaking or not; more are closed at accept. */
    max_connections: PosInt.default(DEFAULT_MAX_CONNECTIONS),
    tls: TlsSchema,
  }),
  limits: z.strictObject({
    concurrent_captures: PosInt.default(2),
    max_duration: positiveDurationMs.default(3_600_000),
  }).default({ concurrent_captures: 2, max_duration: 3_600_000 }),
  capture: z.strictObject({
    /** Kernel capture buffer in bytes (pcap_set_buffer_size). */
    buffer_size: z.number().int().min(65536).max(1 << 30).optional(),
    /** libpcap read timeout; bounds the latency of a quiet capture. */
    timeout_ms: z.number().int().min(1).max(10_000).default(100),
  }).default({ timeout_ms: 100 }),
  cf: CfAgentConfig,
});

export interface AgentConfig {
  file: string;
  id: string;
  logLevel: LogLevel;
  buffer: BufferLimits;
  listen: {
    address: string;
    port: number;
    allowedNames: string[];
    handshakeTimeoutMs: number;
    maxConnections: number;
    /** Paths as configured (for the summary); PEM contents are in `tls`. */
    paths: { certificate: string; privateKey: string; clientCas: string };
  };
  limits: { concurrentCaptures: number; maxDurationMs: number };
  capture: { bufferSize?: number; timeoutMs: number };
  /** CF container captures (agent/cf_agent_config.ts) */
  cf: CfAgentConfig;
}

/** PEM material for node:https; the key never goes into logs or errors. */
export interface AgentTls {
  cert: string;
  key: string;
  ca: string;
}

/** Validates already-parsed YAML; throws ConfigError. Pure apart from nothing: no file access. */
export function toAgentConfig(file: string, raw: z.output<typeof AgentConfigSchema>): AgentConfig {
  const { buffer, listen, limits, capture } = raw;
  if (buffer.upper_limit > buffer.size) {
    throw new ConfigError(
      file,
      "buffer.upper_limit",
      `${buffer.upper_limit} is above buffer.size ${buffer.size}; set it to at most the size`,
    );
  }
  if (buffer.lower_limit >= buffer.upper_limit) {
    throw new ConfigError(
      file,
      "buffer.lower_limit",
      `${buffer.lower_limit} must be below buffer.upper_limit ${buffer.upper_limit}; lower it`,
    );
  }
  const tls = listen.tls;
  if (tls.client_cas && tls.ca && tls.client_cas !== tls.ca) {
    throw new ConfigError(
      file,
      "listen.tls.ca",
      "both client_cas and its older name ca are set to different files; keep only client_cas",
    );
  }
  // Each capture holds a connection, its stop request needs another; keep one for /health.
  const needed = 2 * limits.concurrent_captures + 1;
  if (listen.max_connections < needed) {
    throw new ConfigError(
      file,
      "listen.max_connections",
      `${listen.max_connections} is too few for limits.concurrent_captures ` +
        `${limits.concurrent_captures}: each capture needs two connections (stream and stop) ` +
        `and /health one; set it to at least ${needed}`,
    );
  }
  const clientCas = tls.client_cas ?? tls.ca;
  if (!clientCas) {
    throw new ConfigError(
      file,
      "listen.tls.client_cas",
      "is required: the agent only serves clients with a certificate from this CA bundle; " +
        "add the path of the PEM CA that signed the api's client certificate",
    );
  }
  return {
    file,
    id: raw.id,
    logLevel: raw.log_level,
    buffer: {
      size: buffer.size,
      upperLimit: buffer.upper_limit,
      lowerLimit: buffer.lower_limit,
    },
    listen: {
      address: listen.address,
      port: listen.port,
      allowedNames: tls.allowed_names,
      handshakeTimeoutMs: tls.handshake_timeout,
      maxConnections: listen.max_connections,
      paths: { certificate: tls.certificate, privateKey: tls.private_key, clientCas },
    },
    limits: {
      concurrentCaptures: limits.concurrent_captures,
      maxDurationMs: limits.max_duration,
    },
    capture: { bufferSize: capture.buffer_size, timeoutMs: capture.timeout_ms },
    cf: raw.cf,
  };
}

/** Reads and cross-checks the certificate, key and CA files named by the config. */
export async function loadAgentTls(config: AgentConfig): Promise<AgentTls> {
  const { file } = config;
  const p = config.listen.paths;
  const cert = await readConfiguredFile(file, "listen.tls.certificate", p.certificate);
  const key = await readConfiguredFile(file, "listen.tls.private_key", p.privateKey);
  const ca = await readConfiguredFile(file, "listen.tls.client_cas", p.clientCas);
  checkCertificatePem(file, "listen.tls.certificate", p.certificate, cert);
  checkCertificatePem(file, "listen.tls.client_cas", p.clientCas, ca);
  checkKeyPair(
    file,
    { key: "listen.tls.certificate", path: p.certificate, pem: cert },
    { key: "listen.tls.private_key", path: p.privateKey, pem: key },
  );
  return { cert, key, ca };
}

/** Loads, validates and reads everything `pcap agent` needs; throws ConfigError. */
export async function loadAgentConfig(
  file: string,
): Promise<{ config: AgentConfig; tls: AgentTls }> {
  const raw = await loadYamlConfig(file, AgentConfigSchema);
  const config = toAgentConfig(file, raw);
  const tls = await loadAgentTls(config);
  return { config, tls };
}

/** One-paragraph summary for `--check-config`; no key material. */
export function describeAgentConfig(c: AgentConfig): string {
  const names = c.listen.allowedNames.length
    ? c.listen.allowedNames.join(", ")
    : "any certificate from client_cas";
  return configSummary(c.file, [
    ["id", c.id],
    ["listen", `https://${c.listen.address}:${c.listen.port} (mTLS, clients: ${names})`],
    [
      "connections",
      `at most ${c.listen.maxConnections}, TLS handshake within ${
        c.listen.handshakeTimeoutMs / 1000
      } s`,
    ],
    ["certificate", `${c.listen.paths.certificate}, client CAs: ${c.listen.paths.clientCas}`],
    [
      "buffer",
      `size ${c.buffer.size}, discard above ${c.buffer.upperLimit} until ${c.buffer.lowerLimit}`,
    ],
    [
      "limits",
      `${c.limits.concurrentCaptures} concurrent captures, max duration ${
        c.limits.maxDurationMs / 1000
      } s`,
    ],
    ["log_level", c.logLevel],
  ]);
}
