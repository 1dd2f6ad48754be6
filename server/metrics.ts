/**
 * A tiny Prometheus registry (text exposition format 0.0.4): counters and gauges with labels,
 * enough for the api's /metrics without a dependency. Names and label names are validated at
 * registration, label values escaped at rendering, so a user-chosen value (a deployment name)
 * cannot forge extra series or lines.
 */

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type Labels = Record<string, string>;

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

export function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

abstract class Metric {
  readonly #series = new Map<string, { labels: string[]; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly type: "counter" | "gauge",
  ) {
    if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name ${name}`);
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith("__")) {
        throw new TypeError(`invalid label name ${l} on ${name}`);
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new TypeError(`duplicate label names on ${name}`);
    }
  }

  #values(labels: Labels): string[] {
    const keys = Object.keys(labels);
    const extra = keys.filter((k) => !this.labelNames.includes(k));
    const missing = this.labelNames.filter((k) => !(k in labels));
    if (extra.length || missing.length) {
      throw new TypeError(
        `${this.name} takes labels {${this.labelNames.join(",")}}, got {${keys.join(",")}}`,
      );
    }
    return this.labelNames.map((k) => String(labels[k]));
  }

  protected update(labels: Labels, f: (old: number) => number): void {
    const values = this.#values(labels);
    const key = JSON.stringify(values);
    const s = this.#series.get(key);
    if (s) s.value = f(s.value);
    else this.#series.set(key, { labels: values, value: f(0) });
  }

  /** Current value of one series (0 if never touched). */
  get(labels: Labels = {}): number {
    return this.#series.get(JSON.stringify(this.#values(labels)))?.value ?? 0;
  }

  /** Drops one series, e.g. a per-deployment gauge after the last capture there ended. */
  remove(labels: Labels = {}): void {
    this.#series.delete(JSON.stringify(this.#values(labels)));
  }

  render(): string {
    const lines = [
      `# HELP ${this.name} ${escapeHelp(this.help)}`,
      `# TYPE ${this.name} ${this.type}`,
    ];
    for (const { labels, value } of this.#series.values()) {
      const l = labels.length
        ? `{${labels.map((v, i) => `${this.labelNames[i]}="${escapeLabelValue(v)}"`).join(",")}}`
        : "";
      lines.push(`${this.name}${l} ${formatValue(value)}`);
    }
    return lines.join("\n") + "\n";
  }
}

export class Counter extends Metric {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, "counter");
  }
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`${this.name}: a counter cannot decrease (by=${by})`);
    this.update(labels, (v) => v + by);
  }
}

export class Gauge extends Metric {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, "gauge");
  }
  set(labels: Labels, value: number): void {
    this.update(labels, () => value);
  }
  inc(labels: Labels = {}, by = 1): void {
    this.update(labels, (v) => v + by);
  }
  dec(labels: Labels = {}, by = 1): void {
    this.update(labels, (v) => v - by);
  }
}

export class Registry {
  readonly #metrics = new Map<string, Metric>();

  #add<M extends Metric>(m: M): M {
    if (this.#metrics.has(m.name)) throw new TypeError(`metric ${m.name} registered twice`);
    this.#metrics.set(m.name, m);
    return m;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  /** The whole exposition, metrics in registration order. */
  render(): string {
    return [...this.#metrics.values()].map((m) => m.render()).join("");
  }
}

/** The api's metrics; `resolver` is "bosh" or "cf". */
export function createApiMetrics(registry = new Registry()) {
  return {
    registry,
    activeCaptures: registry.gauge(
      "pcap_api_active_captures",
      "Captures currently running on this api.",
      ["resolver"],
    ),
    captures: registry.counter(
      "pcap_api_captures_total",
      "Captures started, by how they ended.",
      ["resolver", "outcome"],
    ),
    packets: registry.counter(
      "pcap_api_packets_total",
      "Packets forwarded to clients.",
      ["resolver"],
    ),
    bytes: registry.counter(
      "pcap_api_bytes_total",
      "Captured bytes forwarded to clients.",
      ["resolver"],
    ),
    drops: registry.counter(
      "pcap_api_dropped_packets_total",
      "Packets discarded, by where: kernel, agent or api.",
      ["resolver", "stage"],
    ),
    congestion: registry.counter(
      "pcap_api_congestion_events_total",
      "CONGESTED status messages sent to clients.",
      ["resolver"],
    ),
    agentErrors: registry.counter(
      "pcap_api_agent_errors_total",
      "Agent failures (unreachable, TLS, protocol), by kind.",
      ["kind"],
    ),
    authFailures: registry.counter(
      "pcap_api_auth_failures_total",
      "Rejected requests, by status type (UNAUTHENTICATED, PERMISSION_DENIED, ...).",
      ["type"],
    ),
    auditErrors: registry.counter(
      "pcap_api_audit_write_errors_total",
      "Audit lines that could not be written (disk full, I/O error).",
    ),
    sourcesFailed: registry.counter(
      "pcap_api_sources_failed_total",
      "Sources that ended INSTANCE_UNAVAILABLE (agent unreachable or its capture failed).",
      ["resolver"],
    ),
  };
}
export type ApiMetrics = ReturnType<typeof createApiMetrics>;
