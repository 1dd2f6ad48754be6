// Simulated Cloud Controller v3: root links, apps (list/get/permissions/ssh_enabled/processes),
// processes and their stats, spaces and organizations, with CF's role-based visibility and
// error bodies. Tokens are verified against the UAA simulator's /token_keys.
import { type Context, Hono, type Next } from "hono";
import { type SimServeOptions, SimService } from "./http_sim_server.ts";
import { TokenVerifier, type VerifiedToken } from "./sim_auth.ts";
import {
  appJson,
  type CcApp,
  type CcOrg,
  type CcSpace,
  INSTANCE_GUID_SINCE,
  paginate,
  processJson,
  statsJson,
} from "./cc_resources.ts";

export type {
  CcApp,
  CcInstance,
  CcInstanceState,
  CcOrg,
  CcProcess,
  CcSpace,
} from "./cc_resources.ts";
export { instanceGuid } from "./cc_resources.ts";

export type SpaceRole = "space_developer" | "space_manager" | "space_auditor" | "space_supporter";
export type OrgRole = "org_manager" | "org_auditor" | "billing_manager" | "organization_user";

export interface CcRole {
  /** UAA user id (token `user_id`) */
  userId: string;
  type: SpaceRole | OrgRole;
  /** space guid for space roles, org guid for org roles */
  target: string;
}

export interface CcSimConfig extends SimServeOptions {
  uaaUrl: string;
  uaaCaCert?: string;
  orgs?: CcOrg[];
  spaces?: CcSpace[];
  apps?: CcApp[];
  roles?: CcRole[];
  /** global `allow_ssh` of the foundation (default true) */
  allowSsh?: boolean;
  /**
   * API version announced in the root (default 3.195.0). Below INSTANCE_GUID_SINCE (3.191.0)
   * the process stats carry no `instance_guid`, as on an old CC.
   */
  apiVersion?: string;
}

/** Compares dotted versions numerically ("3.190.0" < "3.191.0"). */
export function versionBelow(v: string, than: string): boolean {
  const a = v.split(".").map(Number);
  const b = than.split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  }
  return false;
}

interface Visibility {
  basic: boolean;
  sensitive: boolean;
}

export function ccError(status: number, code: number, title: string, detail: string): Response {
  return Response.json({ errors: [{ detail, title, code }] }, { status });
}
const notFound = (what: string) => ccError(404, 10010, "CF-ResourceNotFound", `${what} not found`);

type Env = { Variables: { token: VerifiedToken } };

export class CcSim extends SimService {
  orgs: CcOrg[];
  spaces: CcSpace[];
  apps: CcApp[];
  roles: CcRole[];
  allowSsh: boolean;
  /** announced API version; see CcSimConfig.apiVersion */
  apiVersion: string;
  /** process stats answer 503 CF-InstancesUnavailable while true (Diego's BBS unreachable) */
  statsUnavailable = false;
  private readonly verifier: TokenVerifier;

  private constructor(private readonly cfg: CcSimConfig) {
    super();
    this.orgs = cfg.orgs ?? [];
    this.spaces = cfg.spaces ?? [];
    this.apps = cfg.apps ?? [];
    this.roles = cfg.roles ?? [];
    this.allowSsh = cfg.allowSsh ?? true;
    this.apiVersion = cfg.apiVersion ?? "3.195.0";
    // As the real CC: the UAA's own issuer, and `cloud_controller` in the audience.
    this.verifier = new TokenVerifier({
      uaaUrl: cfg.uaaUrl,
      caCert: cfg.uaaCaCert,
      issuer: `${cfg.uaaUrl.replace(/\/+$/, "")}/oauth/token`,
      audience: "cloud_controller",
    });
  }

  static async start(cfg: CcSimConfig): Promise<CcSim> {
    const sim = new CcSim(cfg);
    await sim.serve(
      sim.app().fetch,
      cfg,
      () => ccError(500, 10001, "UnknownError", "An unknown error occurred."),
    );
    return sim;
  }

  /** What a token may see of a space, following CC's role rules. */
  visibility(token: VerifiedToken, space: CcSpace): Visibility {
    const s = token.scopes;
    if (s.includes("cloud_controller.admin") || s.includes("cloud_controller.admin_read_only")) {
      return { basic: true, sensitive: true };
    }
    if (s.includes("cloud_controller.global_auditor")) return { basic: true, sensitive: false };
    const mine = this.roles.filter((r) => r.userId === token.userId);
    if (mine.some((r) => r.type === "space_developer" && r.target === space.guid)) {
      return { basic: true, sensitive: true };
    }
    const basic = mine.some((r) =>
      ((r.type === "space_manager" || r.type === "space_auditor" || r.type === "space_supporter") &&
        r.target === space.guid) ||
      (r.type === "org_manager" && r.target === space.orgGuid)
    );
    return { basic, sensitive: false };
  }

  private visibleApp(token: VerifiedToken, guid: string): { app: CcApp; v: Visibility } | null {
    const app = this.apps.find((a) => a.guid === guid);
    const space = app && this.spaces.find((s) => s.guid === app.spaceGuid);
    if (!app || !space) return null;
    const v = this.visibility(token, space);
    return v.basic ? { app, v } : null;
  }

  private canSeeSpace(token: VerifiedToken, space: CcSpace): boolean {
    if (this.visibility(token, space).basic) return true;
    return this.roles.some((r) => r.userId === token.userId && r.target === space.guid);
  }

  private canSeeOrg(token: VerifiedToken, org: CcOrg): boolean {
    const s = token.scopes;
    if (
      s.some((x) =>
        x.startsWith("cloud_controller.admin") || x === "cloud_controller.global_auditor"
      )
    ) {
      return true;
    }
    return this.roles.some((r) =>
      r.userId === token.userId &&
      (r.target === org.guid ||
        this.spaces.some((sp) => sp.guid === r.target && sp.orgGuid === org.guid))
    );
  }

  private sshEnabled(app: CcApp): { enabled: boolean; reason: string } {
    const space = this.spaces.find((s) => s.guid === app.spaceGuid);
    // CC's AppSshEnabled reasons, checked in this order.
    if (!this.allowSsh) return { enabled: false, reason: "ssh is disabled globally" };
    if (space && space.allowSsh === false) {
      return { enabled: false, reason: `ssh is disabled for space '${space.name}'` };
    }
    if (app.sshEnabled === false) return { enabled: false, reason: "ssh is disabled for app" };
    return { enabled: true, reason: "" };
  }

  private stats(p: Parameters<typeof statsJson>[0]): Response {
    if (this.statsUnavailable) {
      return ccError(
        503,
        220002,
        "CF-InstancesUnavailable",
        "Stats server temporarily unavailable.",
      );
    }
    return Response.json(statsJson(p, !versionBelow(this.apiVersion, INSTANCE_GUID_SINCE)));
  }

  private app(): Hono<Env> {
    const app = new Hono<Env>();
    const base = () => this.url;
    app.get("/", (c) =>
      c.json({
        links: {
          self: { href: base() },
          cloud_controller_v2: null,
          cloud_controller_v3: { href: `${base()}/v3`, meta: { version: this.apiVersion } },
          uaa: { href: this.cfg.uaaUrl },
          login: { href: this.cfg.uaaUrl },
          logging: null,
          log_cache: { href: `${base()}/log-cache-unavailable` },
          app_ssh: {
            href: "ssh.lab.invalid:2222",
            meta: { host_key_fingerprint: "", oauth_client: "ssh-proxy" },
          },
        },
      }));
    app.get("/v3", (c) =>
      c.json({
        links: {
          self: { href: `${base()}/v3` },
          apps: { href: `${base()}/v3/apps` },
          processes: { href: `${base()}/v3/processes` },
          spaces: { href: `${base()}/v3/spaces` },
          organizations: { href: `${base()}/v3/organizations` },
        },
      }));
    app.use("/v3/*", (c, next) => this.authenticate(c, next));

    app.get("/v3/apps", (c) => {
      const t = c.get("token");
      const names = listParam(c.req.query("names"));
      const spaces = listParam(c.req.query("space_guids"));
      const orgs = listParam(c.req.query("organization_guids"));
      const guids = listParam(c.req.query("guids"));
      const found = this.apps.filter((a) => {
        const sp = this.spaces.find((s) => s.guid === a.spaceGuid);
        return !!sp && this.visibility(t, sp).basic &&
          (!names || names.includes(a.name)) && (!spaces || spaces.includes(a.spaceGuid)) &&
          (!orgs || orgs.includes(sp.orgGuid)) && (!guids || guids.includes(a.guid));
      });
      return paginate(c.req.url, found.map((a) => appJson(base(), a)));
    });
    app.get("/v3/apps/:guid", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      return f ? c.json(appJson(base(), f.app)) : notFound("App");
    });
    app.get("/v3/apps/:guid/permissions", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      if (!f) return notFound("App");
      return c.json({ read_basic_data: f.v.basic, read_sensitive_data: f.v.sensitive });
    });
    app.get("/v3/apps/:guid/ssh_enabled", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      return f ? c.json(this.sshEnabled(f.app)) : notFound("App");
    });
    app.get("/v3/apps/:guid/processes", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      if (!f) return notFound("App");
      return paginate(c.req.url, f.app.processes.map((p) => processJson(base(), f.app, p)));
    });
    app.get("/v3/apps/:guid/processes/:type", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      const p = f?.app.processes.find((x) => x.type === c.req.param("type"));
      return f && p ? c.json(processJson(base(), f.app, p)) : notFound("Process");
    });
    app.get("/v3/apps/:guid/processes/:type/stats", (c) => {
      const f = this.visibleApp(c.get("token"), c.req.param("guid"));
      const p = f?.app.processes.find((x) => x.type === c.req.param("type"));
      return f && p ? this.stats(p) : notFound("Process");
    });
    const findProcess = (t: VerifiedToken, guid: string) => {
      for (const a of this.apps) {
        const p = a.processes.find((x) => x.guid === guid);
        if (p) return this.visibleApp(t, a.guid) ? { app: a, p } : null;
      }
      return null;
    };
    app.get("/v3/processes/:guid", (c) => {
      const f = findProcess(c.get("token"), c.req.param("guid"));
      return f ? c.json(processJson(base(), f.app, f.p)) : notFound("Process");
    });
    app.get("/v3/processes/:guid/stats", (c) => {
      const f = findProcess(c.get("token"), c.req.param("guid"));
      return f ? this.stats(f.p) : notFound("Process");
    });
    app.get("/v3/spaces", (c) => {
      const t = c.get("token");
      const names = listParam(c.req.query("names"));
      const orgs = listParam(c.req.query("organization_guids"));
      const found = this.spaces.filter((s) =>
        this.canSeeSpace(t, s) && (!names || names.includes(s.name)) &&
        (!orgs || orgs.includes(s.orgGuid))
      );
      return paginate(c.req.url, found.map((s) => spaceJson(base(), s)));
    });
    app.get("/v3/spaces/:guid", (c) => {
      const s = this.spaces.find((x) => x.guid === c.req.param("guid"));
      return s && this.canSeeSpace(c.get("token"), s)
        ? c.json(spaceJson(base(), s))
        : notFound("Space");
    });
    app.get("/v3/organizations", (c) => {
      const t = c.get("token");
      const names = listParam(c.req.query("names"));
      const found = this.orgs.filter((o) =>
        this.canSeeOrg(t, o) && (!names || names.includes(o.name))
      );
      return paginate(c.req.url, found.map((o) => orgJson(base(), o)));
    });
    app.get("/v3/organizations/:guid", (c) => {
      const o = this.orgs.find((x) => x.guid === c.req.param("guid"));
      return o && this.canSeeOrg(c.get("token"), o)
        ? c.json(orgJson(base(), o))
        : notFound("Organization");
    });
    app.notFound(() => ccError(404, 10000, "CF-NotFound", "Unknown request"));
    return app;
  }

  private async authenticate(c: Context<Env>, next: Next): Promise<Response | void> {
    const header = c.req.header("authorization");
    const auth = await this.verifier.verifyHeader(header);
    if (!auth.ok) {
      if (auth.reason === "missing") {
        return ccError(401, 10002, "CF-NotAuthenticated", "Authentication error");
      }
      return ccError(401, 1000, "CF-InvalidAuthToken", "Invalid Auth Token");
    }
    const s = auth.token.scopes;
    if (
      !s.some((x) =>
        x === "cloud_controller.read" || x.startsWith("cloud_controller.admin") ||
        x === "cloud_controller.global_auditor"
      )
    ) {
      return ccError(
        403,
        10003,
        "CF-NotAuthorized",
        "You are not authorized to perform the requested action",
      );
    }
    c.set("token", auth.token);
    await next();
  }
}

function listParam(v: string | undefined): string[] | null {
  return v === undefined || v === "" ? null : v.split(",");
}

function spaceJson(base: string, s: CcSpace) {
  return {
    guid: s.guid,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    name: s.name,
    relationships: { organization: { data: { guid: s.orgGuid } }, quota: { data: null } },
    metadata: { labels: {}, annotations: {} },
    links: {
      self: { href: `${base}/v3/spaces/${s.guid}` },
      organization: { href: `${base}/v3/organizations/${s.orgGuid}` },
    },
  };
}

function orgJson(base: string, o: CcOrg) {
  return {
    guid: o.guid,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    name: o.name,
    suspended: false,
    relationships: { quota: { data: null } },
    metadata: { labels: {}, annotations: {} },
    links: { self: { href: `${base}/v3/organizations/${o.guid}` } },
  };
}
