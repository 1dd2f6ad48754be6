// Cloud Controller v3 resource shapes for the CC simulator: the lab's typed model and the JSON
// the real API returns for it (apps, processes, process stats, paginated lists). Pure.

export interface CcOrg {
  guid: string;
  name: string;
}

export interface CcSpace {
  guid: string;
  name: string;
  orgGuid: string;
  /** space `allow_ssh` (default true) */
  allowSsh?: boolean;
}

/** Instance states of CC's process stats (LrpStateTranslator). */
export type CcInstanceState = "RUNNING" | "STARTING" | "CRASHED" | "DOWN" | "STOPPING" | "UNKNOWN";

export interface CcInstance {
  index: number;
  /** Diego ActualLRP instance guid == Garden container handle (28 chars, see instanceGuid()) */
  instanceGuid: string;
  /** cell address (the Diego cell VM's ip) */
  host: string;
  state?: CcInstanceState;
  /** container ip on the overlay */
  internalIp?: string;
  ports?: Array<{ external: number; internal: number }>;
}

export interface CcProcess {
  guid: string;
  type: string;
  instances: CcInstance[];
}

export interface CcApp {
  guid: string;
  name: string;
  spaceGuid: string;
  state?: "STARTED" | "STOPPED";
  /** app `enable_ssh` (default true) */
  sshEnabled?: boolean;
  processes: CcProcess[];
}

const TS = "2026-01-01T00:00:00Z";

/**
 * A Diego instance guid: the first 28 characters of a v4 UUID's text, as the BBS makes them
 * (`6907c81e-99c4-4322-4594-ac1d`), not a full UUID.
 */
export function instanceGuid(): string {
  return crypto.randomUUID().slice(0, 28);
}

/** The first CC API version whose process stats carry `instance_guid`. */
export const INSTANCE_GUID_SINCE = "3.191.0";

export function appJson(base: string, a: CcApp) {
  const self = `${base}/v3/apps/${a.guid}`;
  return {
    guid: a.guid,
    created_at: TS,
    updated_at: TS,
    name: a.name,
    state: a.state ?? "STARTED",
    lifecycle: { type: "buildpack", data: { buildpacks: [], stack: "cflinuxfs4" } },
    relationships: { space: { data: { guid: a.spaceGuid } } },
    metadata: { labels: {}, annotations: {} },
    links: {
      self: { href: self },
      space: { href: `${base}/v3/spaces/${a.spaceGuid}` },
      processes: { href: `${self}/processes` },
      packages: { href: `${self}/packages` },
      environment_variables: { href: `${self}/environment_variables` },
      current_droplet: { href: `${self}/droplets/current` },
      droplets: { href: `${self}/droplets` },
      tasks: { href: `${self}/tasks` },
      start: { href: `${self}/actions/start`, method: "POST" },
      stop: { href: `${self}/actions/stop`, method: "POST" },
      revisions: { href: `${self}/revisions` },
      deployed_revisions: { href: `${self}/revisions/deployed` },
      features: { href: `${self}/features` },
    },
  };
}

export function processJson(base: string, a: CcApp, p: CcProcess) {
  const self = `${base}/v3/processes/${p.guid}`;
  return {
    guid: p.guid,
    type: p.type,
    command: "[PRIVATE DATA HIDDEN]",
    instances: p.instances.length,
    memory_in_mb: 256,
    disk_in_mb: 1024,
    log_rate_limit_in_bytes_per_second: -1,
    health_check: { type: "port", data: { timeout: null, invocation_timeout: null } },
    readiness_health_check: { type: "process", data: { invocation_timeout: null } },
    relationships: { app: { data: { guid: a.guid } }, revision: null },
    metadata: { labels: {}, annotations: {} },
    created_at: TS,
    updated_at: TS,
    links: {
      self: { href: self },
      scale: { href: `${self}/actions/scale`, method: "POST" },
      app: { href: `${base}/v3/apps/${a.guid}` },
      space: { href: `${base}/v3/spaces/${a.spaceGuid}` },
      stats: { href: `${self}/stats` },
    },
  };
}

/**
 * GET /v3/processes/:guid/stats body, as CC builds it from the BBS: CRASHED instances have empty
 * `host` and `instance_guid`, DOWN ones neither field; `withInstanceGuid` false models a CC older
 * than INSTANCE_GUID_SINCE.
 */
export function statsJson(p: CcProcess, withInstanceGuid = true) {
  return {
    resources: p.instances.map((i) => {
      const state = i.state ?? "RUNNING";
      const running = state === "RUNNING";
      const common = {
        type: p.type,
        index: i.index,
        state,
        uptime: running ? 3600 : 0,
        isolation_segment: null,
        details: state === "CRASHED" ? "APP/PROC/WEB: Exited with status 1" : null,
      };
      if (state === "DOWN") return { ...common, usage: {} };
      const crashed = state === "CRASHED";
      return {
        ...common,
        routable: running,
        host: crashed ? "" : i.host,
        ...(withInstanceGuid ? { instance_guid: crashed ? "" : i.instanceGuid } : {}),
        instance_internal_ip: crashed ? "" : (i.internalIp ?? ""),
        mem_quota: 268435456,
        disk_quota: 1073741824,
        log_rate_limit: -1,
        fds_quota: 16384,
        instance_ports: crashed
          ? []
          : (i.ports ?? [{ external: 61000 + i.index, internal: 8080 }]).map((pt) => ({
            external: pt.external,
            internal: pt.internal,
            external_tls_proxy_port: pt.external + 1000,
            internal_tls_proxy_port: 61001,
          })),
        usage: running
          ? {
            time: TS,
            cpu: 0.01,
            cpu_entitlement: 0.1,
            mem: 50_000_000,
            disk: 100_000_000,
            log_rate: 0,
          }
          : {},
      };
    }),
  };
}

/** CC's paginated list response (`page`/`per_page` query, `pagination` block). */
export function paginate(reqUrl: string, all: unknown[]): Response {
  const url = new URL(reqUrl);
  const perPage = clampInt(url.searchParams.get("per_page"), 50, 1, 5000);
  const page = clampInt(url.searchParams.get("page"), 1, 1, 1_000_000);
  const totalPages = Math.max(1, Math.ceil(all.length / perPage));
  const href = (p: number) => {
    const u = new URL(url);
    u.searchParams.set("page", String(p));
    u.searchParams.set("per_page", String(perPage));
    return { href: u.toString() };
  };
  return Response.json({
    pagination: {
      total_results: all.length,
      total_pages: totalPages,
      first: href(1),
      last: href(totalPages),
      next: page < totalPages ? href(page + 1) : null,
      previous: page > 1 ? href(page - 1) : null,
    },
    resources: all.slice((page - 1) * perPage, page * perPage),
  });
}

function clampInt(v: string | null, dflt: number, min: number, max: number): number {
  const n = v === null ? dflt : Number(v);
  return Number.isInteger(n) ? Math.min(max, Math.max(min, n)) : dflt;
}
