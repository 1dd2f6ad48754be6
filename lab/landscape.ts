// A small data centre in one call: topology (namespaces, bridge, host link), per-run PKI, UAA and
// Director simulators populated with the VMs, real agent processes in the VMs, optionally the
// api, and traffic generators. stop() removes everything; so do SIGINT/SIGTERM while it is up.
import { stringify } from "yaml";
import { isRoot } from "./netns.ts";
import { type CertPair, Pki } from "./pki.ts";
import { type MintOptions, UaaSim } from "./uaa_sim.ts";
import { DirectorSim } from "./director_sim.ts";
import { stopOnSignal, Topology } from "./topology.ts";
import { ProcessLogs } from "./process_logs.ts";
import {
  DEFAULT_AGENT_PORT,
  type Json,
  LabAgents,
  mergeConfig,
  modeCommand,
  REPO_ROOT,
  stopGracefully,
  waitHealthy,
} from "./lab_agents.ts";
import { Traffic } from "./traffic.ts";
import type { LoggedProcess } from "./process_logs.ts";

export interface LandscapeOptions {
  /** BOSH deployment name (default "cf") */
  deployment?: string;
  /** instance group → number of VMs, e.g. { "diego-cell": 3, router: 1 } */
  groups: Record<string, number>;
  /** start a real agent in every VM (default true) */
  agents?: boolean;
  /** start the api too; an object is merged into the generated api.yml (default false) */
  api?: boolean | Json;
  /** merged into every generated agent.yml */
  agentConfig?: Json;
  /** veth from the host namespace (default true; agents and api need it) */
  hostLink?: boolean;
  /** loopback mode even as root */
  loopback?: boolean;
  /** bound on waiting for each process to be ready (default 30 s) */
  readyTimeoutMs?: number;
  /** keep the run dir (logs, configs, certs) after stop() */
  keepDir?: boolean;
  /** where lab progress lines go (default stderr) */
  log?: (line: string) => void;
}

export interface LabVm {
  deployment: string;
  group: string;
  index: number;
  /** instance uuid */
  id: string;
  ip: string;
  /** namespace name, null in loopback mode */
  netns: string | null;
  /** capture device inside the VM: eth0 (lo in loopback mode) */
  device: string;
  agentPort: number;
  agentUrl: string;
  /** DNS SAN of the agent's server certificate */
  agentDnsName: string;
}

export interface LabCerts {
  /** the api's client certificate for agents */
  apiClient: CertPair;
  /** the api's server certificate (127.0.0.1, localhost, host ip) */
  apiServer: CertPair;
  agentServer(vm: LabVm): CertPair;
  /** certificates of a second CA the lab's parties must refuse (made on first use) */
  rogue(): Promise<{ caPath: string; client: CertPair; server: CertPair }>;
  /** a client certificate of the lab CA that has expired (made on first use) */
  expiredClient(): Promise<CertPair>;
}

const USER = "admin";

export class Landscape {
  readonly runId: string;
  readonly dir: string;
  readonly topology: Topology;
  readonly vms: LabVm[];
  readonly pki: Pki;
  readonly uaa: UaaSim;
  readonly director: DirectorSim;
  readonly certs: LabCerts;
  readonly traffic: Traffic;
  /** UAA password of user "admin" (scopes openid, bosh.admin) */
  readonly adminPassword: string;
  apiUrl: string | null = null;
  #opts: LandscapeOptions;
  #logs: ProcessLogs;
  #agents: LabAgents | null;
  #client: Deno.HttpClient;
  #api: LoggedProcess | null = null;
  #unguard: () => void = () => {};
  #stopping: Promise<void> | null = null;

  private constructor(init: {
    opts: LandscapeOptions;
    dir: string;
    topology: Topology;
    vms: LabVm[];
    pki: Pki;
    uaa: UaaSim;
    director: DirectorSim;
    certs: LabCerts;
    client: Deno.HttpClient;
    adminPassword: string;
  }) {
    this.#opts = init.opts;
    this.dir = init.dir;
    this.topology = init.topology;
    this.runId = init.topology.runId;
    this.vms = init.vms;
    this.pki = init.pki;
    this.uaa = init.uaa;
    this.director = init.director;
    this.certs = init.certs;
    this.#client = init.client;
    this.adminPassword = init.adminPassword;
    this.#logs = new ProcessLogs(`${init.dir}/logs`);
    this.traffic = new Traffic(init.topology.netns);
    this.#agents = init.opts.agents === false ? null : new LabAgents({
      netns: init.topology.netns,
      logs: this.#logs,
      dir: init.dir,
      caPath: init.pki.caPath,
      client: init.client,
      readyTimeoutMs: init.opts.readyTimeoutMs ?? 30_000,
      extraConfig: init.opts.agentConfig,
      log: this.#log,
    });
  }

  get #log(): (line: string) => void {
    return this.#opts.log ?? ((l: string) => console.error(l));
  }

  /** Builds the landscape; on failure tears down what was built and throws with the log tails. */
  static async start(opts: LandscapeOptions): Promise<Landscape> {
    const specs = vmSpecs(opts);
    if (!specs.length) throw new Error("lab: no VMs requested; give groups like { router: 1 }");
    const log = opts.log ?? ((l: string) => console.error(l));
    const topology = await Topology.create({
      vms: specs,
      hostLink: opts.hostLink,
      loopback: opts.loopback,
      log,
    });
    const cleanups: Array<() => Promise<void> | void> = [() => topology.stop()];
    const cleanup = async () => {
      for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
    };
    const unguard = stopOnSignal({ stop: cleanup });
    topology.releaseSignalGuard(); // from here on the landscape tears it down, agents first
    let dir = "";
    try {
      dir = await Deno.makeTempDir({ prefix: `${topology.runId}-lab-` });
      const runDir = dir;
      if (!opts.keepDir) cleanups.push(() => Deno.remove(runDir, { recursive: true }));
      await Deno.writeTextFile(
        `${dir}/run.json`,
        JSON.stringify({ runId: topology.runId, pid: Deno.pid, started: new Date().toISOString() }),
      );
      const pki = await Pki.create(`${dir}/pki`, `pcap-lab-ca-${topology.runId}`);
      // Loopback mode: all agents share 127.0.0.1, so each gets its own free port.
      const ports = topology.vms.map(() => topology.loopback ? freePort() : DEFAULT_AGENT_PORT);
      const port = (i: number) => ports[i];
      const vms: LabVm[] = topology.vms.map((v, i) => {
        const id = crypto.randomUUID();
        return {
          deployment: v.deployment,
          group: v.group,
          index: v.index,
          id,
          ip: v.ip,
          netns: v.netns,
          device: v.device,
          agentPort: port(i),
          agentUrl: `https://${v.ip}:${port(i)}`,
          agentDnsName: `${id}.pcap-agent.internal`,
        };
      });
      const hostIps = [...new Set(["127.0.0.1", topology.hostIp])];
      const [apiClient, apiServer, simServer, ...agentCerts] = await Promise.all([
        pki.issue("pcap-api", { client: true }),
        pki.issue("pcap-api", { server: true, dns: ["localhost"], ips: hostIps }),
        // The Director and UAA simulators speak HTTPS like the real ones, so the lab exercises
        // the production trust path (bosh.tls.ca), not the loopback-http convenience.
        pki.issue("pcap-lab-bosh", { server: true, dns: ["localhost"], ips: ["127.0.0.1"] }),
        ...vms.map((vm) =>
          pki.issue(vm.agentDnsName, { server: true, dns: [vm.agentDnsName], ips: [vm.ip] })
        ),
      ]);
      const client = Deno.createHttpClient({
        caCerts: [pki.caCert],
        cert: apiClient.cert,
        key: apiClient.key,
      });
      cleanups.push(() => client.close());
      const adminPassword = crypto.randomUUID();
      const simTls = { cert: simServer.cert, key: simServer.key };
      const uaa = await UaaSim.start({
        tls: simTls,
        users: [{ username: USER, password: adminPassword, scopes: ["openid", "bosh.admin"] }],
      });
      cleanups.push(() => uaa.stop());
      const director = await DirectorSim.start({
        tls: simTls,
        uaaUrl: uaa.url,
        uaaCaCert: pki.caCert,
        deployments: [{
          name: opts.deployment ?? "cf",
          instances: vms.map((vm) => ({
            job: vm.group,
            index: vm.index,
            id: vm.id,
            az: `z${(vm.index % 2) + 1}`,
            ips: [vm.ip],
            agentId: `agent-${vm.id}`,
            cid: `${topology.runId}-vm-${vm.id.slice(0, 8)}`,
          })),
        }],
      });
      cleanups.push(() => director.stop());
      const lab = new Landscape({
        opts,
        dir,
        topology,
        vms,
        pki,
        uaa,
        director,
        certs: makeCerts(pki, apiClient, apiServer, vms, agentCerts),
        client,
        adminPassword,
      });
      cleanups.push(() => lab.#agents?.stopAll());
      if (lab.#agents) {
        await lab.#agents.start(
          vms.map((vm, i) => ({ vm: lab.#agentVm(vm), cert: agentCerts[i] })),
        );
      }
      if (opts.api) await lab.startApi(opts.api === true ? {} : opts.api);
      unguard();
      lab.#unguard = stopOnSignal(lab);
      log(`lab ${lab.runId}: up (${vms.length} VMs, run dir ${dir})`);
      return lab;
    } catch (e) {
      await cleanup();
      unguard();
      throw e;
    }
  }

  #agentVm(vm: LabVm) {
    return { ...vm, port: vm.agentPort };
  }

  /** The VM of group/index. */
  vm(group: string, index = 0): LabVm {
    const vm = this.vms.find((v) => v.group === group && v.index === index);
    if (!vm) throw new Error(`lab ${this.runId}: no VM ${group}/${index}`);
    return vm;
  }

  /** Where host-side processes appear to VMs (the host end of the host veth). */
  get hostIp(): string {
    return this.topology.hostIp;
  }

  /** A real RS256 token from the UAA sim (default user admin, scopes openid + bosh.admin). */
  mintToken(o: MintOptions = {}): Promise<string> {
    return this.uaa.mintValid(o);
  }

  /** fetch trusting the lab CA (Director and UAA simulators, the api). */
  fetchLab(url: string, init: RequestInit = {}): Promise<Response> {
    return fetch(url, { ...init, client: this.#client });
  }

  /** fetch against an agent with the api's client certificate. */
  fetchAgent(vm: LabVm, path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`${vm.agentUrl}${path}`, { ...init, client: this.#client });
  }

  /** Whole log of a lab process: `agent-<group>-<index>`, `api`. */
  logs(name: string): string {
    return this.#logs.read(name);
  }

  logPath(name: string): string {
    return this.#logs.path(name);
  }

  agentLogName(vm: LabVm): string {
    return LabAgents.logName(this.#agentVm(vm));
  }

  /** Prints the tails of all process logs to stderr (call when a test fails). */
  dumpLogs(lines = 80): void {
    this.#logs.dump(undefined, lines);
  }

  /** SIGKILLs the VM's agent, as a crash. */
  killAgent(vm: LabVm): Promise<void> {
    return this.#needAgents().kill(this.#agentVm(vm));
  }

  /** Gracefully stops and starts the VM's agent; resolves once it is healthy again. */
  restartAgent(vm: LabVm): Promise<void> {
    return this.#needAgents().restart(this.#agentVm(vm));
  }

  #needAgents(): LabAgents {
    if (!this.#agents) throw new Error(`lab ${this.runId} was started with agents: false`);
    return this.#agents;
  }

  /** The api.yml the lab would use (pure apart from reading this lab's state). */
  apiConfig(port: number, extra: Json = {}): Json {
    return mergeConfig({
      id: `lab-api-${this.runId}`,
      log_level: "debug",
      listen: {
        address: "127.0.0.1",
        port,
        tls: {
          certificate: this.certs.apiServer.certPath,
          private_key: this.certs.apiServer.keyPath,
        },
      },
      agents_mtls: {
        certificate: this.certs.apiClient.certPath,
        private_key: this.certs.apiClient.keyPath,
        ca: this.pki.caPath,
      },
      bosh: {
        director_url: this.director.url,
        agent_port: DEFAULT_AGENT_PORT,
        tls: { ca: this.pki.caPath },
      },
      audit: { enabled: true, file: `${this.dir}/audit.log` },
    }, extra);
  }

  /**
   * Spawns `deno run -A main.ts api --config <dir>/api.yml` in the host namespace and waits for
   * GET /health. Returns the api URL (https unless extra removes listen.tls with null).
   */
  async startApi(extra: Json = {}): Promise<string> {
    if (this.#api) throw new Error(`lab ${this.runId}: the api is already running`);
    const argv = modeCommand("api");
    if (!argv) throw new Error(`cannot start the api: ${REPO_ROOT}/main.ts has no api mode yet`);
    const cfg = this.apiConfig(freePort(), extra);
    const listen = cfg.listen as Json;
    const configPath = `${this.dir}/api.yml`;
    await Deno.writeTextFile(configPath, stringify(cfg));
    const tls = listen.tls !== undefined;
    const url = `${tls ? "https" : "http"}://${listen.address}:${listen.port}`;
    this.#api = this.#logs.spawn(
      this.topology.netns,
      null,
      "api",
      [Deno.execPath(), ...argv, "--config", configPath],
      { cwd: REPO_ROOT, env: { NO_COLOR: "1" } },
    );
    const client = Deno.createHttpClient({ caCerts: [this.pki.caCert] });
    try {
      await waitHealthy({
        url: `${url}/health`,
        client,
        proc: this.#api,
        timeoutMs: this.#opts.readyTimeoutMs ?? 30_000,
        what: `api (${url})`,
        logs: this.#logs,
      });
    } catch (e) {
      await this.stopApi();
      throw e;
    } finally {
      client.close();
    }
    this.apiUrl = url;
    return url;
  }

  async stopApi(): Promise<void> {
    const api = this.#api;
    this.#api = null;
    this.apiUrl = null;
    if (api) await stopGracefully(this.topology.netns, api);
  }

  /** Tears everything down (idempotent; concurrent calls share one teardown); throws if something could not be removed. */
  stop(): Promise<void> {
    this.#stopping ??= this.#teardown();
    return this.#stopping;
  }

  async #teardown(): Promise<void> {
    const errors: string[] = [];
    const step = async (what: string, fn: () => Promise<void> | void) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    await step("api", () => this.stopApi());
    await step("agents", () => this.#agents?.stopAll());
    await step("director sim", () => this.director.stop());
    await step("uaa sim", () => this.uaa.stop());
    await step("http client", () => this.#client.close());
    await step("topology", () => this.topology.stop());
    if (!this.#opts.keepDir) {
      await step("run dir", () => Deno.remove(this.dir, { recursive: true }));
    }
    this.#unguard();
    if (errors.length) throw new Error(`lab ${this.runId} teardown: ${errors.join("; ")}`);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Runs fn with a landscape and always tears it down; when fn throws, the process logs are
 * printed first so the failure explains itself.
 */
export async function withLandscape<T>(
  opts: LandscapeOptions,
  fn: (lab: Landscape) => Promise<T>,
): Promise<T> {
  const lab = await Landscape.start(opts);
  try {
    return await fn(lab);
  } catch (e) {
    lab.dumpLogs();
    throw e;
  } finally {
    await lab.stop();
  }
}

/** VM specs from the group counts, in the order given. Pure. */
export function vmSpecs(opts: Pick<LandscapeOptions, "deployment" | "groups">) {
  const deployment = opts.deployment ?? "cf";
  return Object.entries(opts.groups).flatMap(([group, n]) => {
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`lab: group "${group}" count ${n} is not a non-negative integer`);
    }
    return Array.from({ length: n }, (_, index) => ({ deployment, group, index }));
  });
}

function makeCerts(
  pki: Pki,
  apiClient: CertPair,
  apiServer: CertPair,
  vms: LabVm[],
  agentCerts: CertPair[],
): LabCerts {
  let rogue: Promise<{ caPath: string; client: CertPair; server: CertPair }> | null = null;
  let expired: Promise<CertPair> | null = null;
  return {
    apiClient,
    apiServer,
    agentServer(vm) {
      const i = vms.findIndex((v) => v.id === vm.id);
      if (i < 0) throw new Error(`lab: VM ${vm.group}/${vm.index} is not part of this lab`);
      return agentCerts[i];
    },
    rogue() {
      // Same names as the real ones, signed by a CA nobody trusts.
      rogue ??= (async () => {
        const other = await Pki.create(`${pki.dir}/rogue`, "pcap-lab-rogue-ca");
        const [client, server] = await Promise.all([
          other.issue("pcap-api", { client: true }),
          other.issue("pcap-api", { server: true, dns: ["localhost"], ips: ["127.0.0.1"] }),
        ]);
        return { caPath: other.caPath, client, server };
      })();
      return rogue;
    },
    expiredClient() {
      expired ??= pki.issue("pcap-api-expired", { client: true, expired: true });
      return expired;
    },
  };
}

/** A free TCP port on 127.0.0.1 (closed again; tiny race accepted in the lab). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export { isRoot };
