// Simulated BOSH Director: GET /info (unauthenticated), GET /deployments and
// GET /deployments/:name/instances with the Director's UAA token checks, team scoping,
// response fields and error bodies (shapes taken from the Director's controllers and errors.rb).
import { type Context, Hono, type Next } from "hono";
import { type SimServeOptions, SimService } from "./http_sim_server.ts";
import { TokenVerifier, type VerifiedToken } from "./sim_auth.ts";

export interface DirectorInstance {
  job: string;
  index: number;
  /** instance uuid */
  id: string;
  az?: string | null;
  ips: string[];
  /** false for instances without a VM (e.g. errands); agent_id/cid/vm_created_at are null then */
  expectsVm?: boolean;
  agentId?: string | null;
  cid?: string | null;
  vmCreatedAt?: string | null;
}

export interface DirectorDeployment {
  name: string;
  teams?: string[];
  releases?: Array<{ name: string; version: string }>;
  stemcells?: Array<{ name: string; version: string }>;
  cloudConfig?: string;
  instances: DirectorInstance[];
}

export interface DirectorSimConfig extends SimServeOptions {
  /** base URL of the (simulated) UAA; announced in /info and used to fetch /token_keys */
  uaaUrl: string;
  /** CA of the UAA when it is HTTPS */
  uaaCaCert?: string;
  uuid?: string;
  name?: string;
  deployments?: DirectorDeployment[];
  /**
   * Status for "authenticated but lacks the scope". The real Director answers 401 with
   * code 600000; set 403 to model a proxy that maps it.
   */
  forbiddenStatus?: 401 | 403;
}

export interface InstanceJson {
  agent_id: string | null;
  cid: string | null;
  job: string;
  index: number;
  id: string;
  az: string | null;
  ips: string[];
  vm_created_at: string | null;
  expects_vm: boolean;
}

/** The Director's JSON for one instance. Pure. */
export function instanceJson(i: DirectorInstance): InstanceJson {
  const hasVm = i.expectsVm !== false;
  return {
    agent_id: hasVm ? i.agentId ?? `agent-${i.id}` : null,
    cid: hasVm ? i.cid ?? `vm-${i.id.slice(0, 8)}` : null,
    job: i.job,
    index: i.index,
    id: i.id,
    az: i.az ?? "z1",
    ips: hasVm ? i.ips : [],
    vm_created_at: hasVm ? i.vmCreatedAt ?? "2026-01-01T00:00:00Z" : null,
    expects_vm: hasVm,
  };
}

/** Scopes that grant read access to a deployment, as the Director's PermissionAuthorizer lists them. */
export function readScopes(uuid: string, teams: string[]): string[] {
  return [
    "bosh.admin",
    `bosh.${uuid}.admin`,
    "bosh.read",
    `bosh.${uuid}.read`,
    ...teams.flatMap((t) => [`bosh.teams.${t}.admin`, `bosh.teams.${t}.read`]),
  ];
}

/** Builds a group of instances with ips from a base (e.g. 198.18.0.10 → .10, .11, ...). Pure. */
export function makeGroup(
  job: string,
  count: number,
  firstIp: string,
  opts: { az?: string } = {},
): DirectorInstance[] {
  const parts = firstIp.split(".").map(Number);
  return Array.from({ length: count }, (_, index) => {
    const ip = [...parts.slice(0, 3), parts[3] + index].join(".");
    return { job, index, id: crypto.randomUUID(), az: opts.az ?? `z${(index % 2) + 1}`, ips: [ip] };
  });
}

function directorError(status: number, code: number, description: string): Response {
  return Response.json({ code, description }, { status });
}

export class DirectorSim extends SimService {
  readonly uuid: string;
  deployments: DirectorDeployment[];
  private readonly verifier: TokenVerifier;

  private constructor(private readonly cfg: DirectorSimConfig) {
    super();
    this.uuid = cfg.uuid ?? crypto.randomUUID();
    this.deployments = cfg.deployments ?? [];
    this.verifier = new TokenVerifier({ uaaUrl: cfg.uaaUrl, caCert: cfg.uaaCaCert });
  }

  static async start(cfg: DirectorSimConfig): Promise<DirectorSim> {
    const sim = new DirectorSim(cfg);
    await sim.serve(
      sim.app().fetch,
      cfg,
      () => directorError(500, 100, "simulated director failure"),
    );
    return sim;
  }

  private canRead(token: VerifiedToken, d: DirectorDeployment): boolean {
    const allowed = readScopes(this.uuid, d.teams ?? []);
    return token.scopes.some((s) => allowed.includes(s));
  }

  private app(): Hono<{ Variables: { token: VerifiedToken } }> {
    const app = new Hono<{ Variables: { token: VerifiedToken } }>();
    app.get("/info", async (c) => {
      // /info never requires a token; with a valid one it names the user, like the Director.
      const auth = await this.verifier.verifyHeader(c.req.header("authorization"));
      return c.json({
        name: this.cfg.name ?? "lab-director",
        uuid: this.uuid,
        version: "282.0.0 (00000000)",
        user: auth.ok ? auth.token.userName ?? auth.token.clientId ?? null : null,
        cpi: "warden_cpi",
        stemcell_os: "ubuntu-jammy",
        stemcell_version: "1.600",
        user_authentication: {
          type: "uaa",
          options: { url: this.cfg.uaaUrl, urls: [this.cfg.uaaUrl] },
        },
        features: {
          local_dns: { status: true, extras: { domain_name: "bosh" } },
          power_dns: { status: false, extras: { domain_name: "bosh" } },
          snapshots: { status: false },
          config_server: { status: false, extras: { urls: [] } },
        },
      });
    });
    app.use("/deployments/*", (c, next) => this.authenticate(c, next));
    app.use("/deployments", (c, next) => this.authenticate(c, next));
    app.get("/deployments", (c) => {
      const token = c.get("token");
      const visible = this.deployments.filter((d) => this.canRead(token, d));
      return c.json(visible.map((d) => ({
        name: d.name,
        cloud_config: d.cloudConfig ?? "latest",
        releases: d.releases ?? [{ name: "pcap", version: "0.1.0" }],
        stemcells: d.stemcells ??
          [{ name: "bosh-warden-boshlite-ubuntu-jammy-go_agent", version: "1.600" }],
        teams: d.teams ?? [],
      })));
    });
    app.get("/deployments/:name/instances", (c) => {
      const name = c.req.param("name");
      const d = this.deployments.find((x) => x.name === name);
      if (!d) return directorError(404, 70000, `Deployment '${name}' doesn't exist`);
      if (!this.canRead(c.get("token"), d)) {
        const scopes = readScopes(this.uuid, d.teams ?? []).join(", ");
        return directorError(
          this.cfg.forbiddenStatus ?? 401,
          600000,
          `Require one of the scopes: ${scopes}`,
        );
      }
      return c.json(d.instances.map(instanceJson));
    });
    app.notFound(() => new Response("Not Found", { status: 404 }));
    return app;
  }

  private async authenticate(
    c: Context<{ Variables: { token: VerifiedToken } }>,
    next: Next,
  ): Promise<Response | void> {
    const auth = await this.verifier.verifyHeader(c.req.header("authorization"));
    if (!auth.ok) {
      // The Director's answer to a missing or bad token (BaseController#authenticate).
      return new Response(`Not authorized: '${new URL(c.req.url).pathname}'\n`, {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="BOSH Director"' },
      });
    }
    c.set("token", auth.token);
    await next();
  }
}
