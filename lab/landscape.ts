// A small data centre in one call: topology (namespaces, bridge, host link), per-run PKI, UAA and
// Director simulators populated with the VMs, real agent processes in the VMs, optionally the
// api, and traffic generators. stop() removes everything; so do SIGINT/SIGTERM while it is up.
import { isRoot } from "./netns.ts";
import { Pki } from "./pki.ts";
import { type MintOptions, UaaSim } from "./uaa_sim.ts";
import { DirectorSim } from "./director_sim.ts";
import { stopOnSignal, Topology } from "./topology.ts";
import { ProcessLogs } from "./process_logs.ts";
import {
  DEFAULT_AGENT_PORT,
  type Json,
  LabAgents,
  mergeConfig,
  stopGracefully,
} from "./lab_agents.ts";
import { Traffic } from "./traffic.ts";
import type { LoggedProcess } from "./process_logs.ts";
import { directorInstances, type LabVm, labVms, vmSpecs } from "./lab_vms.ts";
import { issueLabCerts, type LabCerts } from "./lab_certs.ts";
import { freePort, labApiConfig, spawnLabApi } from "./lab_api.ts";
import { cellAgentConfig, labApiCfConfig, LabCf, type LabCfOptions } from "./lab_cf.ts";

export type { LabVm } from "./lab_vms.ts";
export type { LabCerts } from "./lab_certs.ts";
export type { LabCell, LabCfOptions } from "./lab_cf.ts";
export { vmSpecs };

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
  /** V8 flags of each agent (re)started from now on (default: the shipped PCAP_V8_FLAGS) */
  agentV8Flags?: (vm: { group: string; index: number }) => readonly string[];
  /**
   * A CF foundation on top: the agents of the Diego cell VMs (group "diego-cell" unless
   * `cellGroup` says otherwise) are configured for containers, each cell with its own container
   * store and runc root; the CC simulator runs on TLS behind the lab UAA; the api gets a `cf`
   * section. Containers are added with `lab.cf.addContainer` (default: no CF)
   */
  cf?: boolean | LabCfOptions;
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
  /** the CF foundation (option `cf`), null without it */
  readonly cf: LabCf | null;
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
    cf: LabCf | null;
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
    this.cf = init.cf;
    const cf = init.cf;
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
      v8Flags: init.opts.agentV8Flags,
      configFor: (vm) => {
        const labVm = init.vms.find((v) => v.id === vm.id);
        return cf && labVm && cf.isCell(labVm) ? cellAgentConfig(init.dir, labVm) : {};
      },
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
      const vms = labVms(topology.vms, ports);
      const hostIps = [...new Set(["127.0.0.1", topology.hostIp])];
      const { certs, simServer, agentCerts } = await issueLabCerts(pki, vms, hostIps);
      const client = Deno.createHttpClient({
        caCerts: [pki.caCert],
        cert: certs.apiClient.cert,
        key: certs.apiClient.key,
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
          instances: directorInstances(vms, topology.runId),
        }],
      });
      cleanups.push(() => director.stop());
      const cf = opts.cf
        ? await LabCf.start({
          opts: opts.cf === true ? {} : opts.cf,
          dir,
          netns: topology.netns,
          vms,
          tls: simTls,
          uaaUrl: uaa.url,
          caCert: pki.caCert,
        })
        : null;
      if (cf) cleanups.push(() => cf.stop());
      const lab = new Landscape({
        opts,
        dir,
        topology,
        vms,
        pki,
        uaa,
        director,
        certs,
        client,
        adminPassword,
        cf,
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

  /** Host pid of the VM's agent process, null when it is not running. */
  agentPid(vm: LabVm): number | null {
    return this.#needAgents().pid(this.#agentVm(vm));
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
    const cf = this.cf
      ? labApiCfConfig(this.cf.cc.url, this.vms[0].agentPort, this.pki.caPath)
      : {};
    return labApiConfig(
      {
        runId: this.runId,
        dir: this.dir,
        apiServer: this.certs.apiServer,
        apiClient: this.certs.apiClient,
        caPath: this.pki.caPath,
        directorUrl: this.director.url,
      },
      port,
      mergeConfig(cf, extra),
    );
  }

  /**
   * Spawns `deno run -A main.ts api --config <dir>/api.yml` in the host namespace and waits for
   * GET /health. Returns the api URL (https unless extra removes listen.tls with null).
   */
  async startApi(extra: Json = {}): Promise<string> {
    if (this.#api) throw new Error(`lab ${this.runId}: the api is already running`);
    let url: string;
    try {
      url = await spawnLabApi({
        netns: this.topology.netns,
        logs: this.#logs,
        dir: this.dir,
        caCert: this.pki.caCert,
        config: this.apiConfig(freePort(), extra),
        readyTimeoutMs: this.#opts.readyTimeoutMs ?? 30_000,
      }, (proc) => this.#api = proc);
    } catch (e) {
      await this.stopApi();
      throw e;
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
    await step("cf", () => this.cf?.stop());
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

export { isRoot };
