// Agent processes of the lab: one real `pcap agent` per VM, started inside the VM's namespace
// with a generated agent.yml, ready once GET /health answers over mTLS.
import { stringify } from "yaml";
import type { Netns } from "./netns.ts";
import type { CertPair } from "./pki.ts";
import { type LoggedProcess, ProcessLogs } from "./process_logs.ts";
import { PCAP_V8_FLAGS, v8FlagsArgs } from "../lib/v8_flags.ts";

export const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const DEFAULT_AGENT_PORT = 9494;

/** How long a graceful stop (SIGTERM: the agent drains) may take before SIGKILL. */
const STOP_GRACE_MS = 12_000;

export interface AgentVm {
  deployment: string;
  group: string;
  index: number;
  id: string;
  ip: string;
  netns: string | null;
  port: number;
}

export type Json = Record<string, unknown>;

/** Deep merge for config overrides; `null` in `extra` removes the key. Pure. */
export function mergeConfig(base: Json, extra: Json = {}): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    if (v === null) delete out[k];
    else if (isPlain(v) && isPlain(out[k])) out[k] = mergeConfig(out[k] as Json, v as Json);
    else out[k] = v;
  }
  return out;
}

function isPlain(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** agent.yml for one VM (keys of agent/config.ts). Pure. */
export function agentConfig(
  vm: AgentVm,
  tls: { certPath: string; keyPath: string; caPath: string },
  extra: Json = {},
): Json {
  return mergeConfig({
    id: `${vm.group}/${vm.id}`,
    log_level: "debug",
    listen: {
      address: vm.ip,
      port: vm.port,
      tls: { certificate: tls.certPath, private_key: tls.keyPath, client_cas: tls.caPath },
    },
  }, extra);
}

/**
 * argv (after `deno`) that runs a mode of the product through the `pcap` entry point, with the
 * V8 flags the compiled executable embeds.
 */
export function modeCommand(
  mode: "agent" | "api",
  v8Flags: readonly string[] = PCAP_V8_FLAGS,
): string[] {
  return ["run", "-A", ...v8FlagsArgs(v8Flags), `${REPO_ROOT}/main.ts`, mode];
}

export interface WaitHealthyOptions {
  url: string;
  client?: Deno.HttpClient;
  /** the process serving it: a crash ends the wait at once */
  proc?: LoggedProcess;
  timeoutMs: number;
  what: string;
  logs?: ProcessLogs;
}

/**
 * Polls `url` with backoff (25 ms doubling to 500 ms) until it answers 2xx with a body that does
 * not say `healthy: false`; bounded by timeoutMs. Failures carry the process log tail.
 */
export async function waitHealthy(o: WaitHealthyOptions): Promise<Json> {
  const deadline = Date.now() + o.timeoutMs;
  let delay = 25;
  let last = "no answer yet";
  const state: { exited: Deno.CommandStatus | null } = { exited: null };
  o.proc?.exit.then((s) => state.exited = s);
  const fail = (why: string) => {
    const tail = o.proc && o.logs ? o.logs.tail(o.proc.name, 30) : "";
    return new Error(
      `${o.what}: ${why}` +
        (o.proc ? `\nlog ${o.proc.logPath}, last lines:\n${tail}` : ""),
    );
  };
  while (true) {
    const exited = state.exited;
    if (exited) throw fail(`process exited with code ${exited.code} before it was ready`);
    try {
      const res = await fetch(o.url, {
        client: o.client,
        signal: AbortSignal.timeout(Math.max(100, Math.min(2000, deadline - Date.now()))),
      });
      const text = await res.text();
      if (res.ok) {
        let body: Json = {};
        try {
          body = JSON.parse(text);
        } catch { /* a health page need not be JSON */ }
        if (body.healthy !== false) return body;
        last = `unhealthy: ${text.slice(0, 200)}`;
      } else {
        last = `HTTP ${res.status}: ${text.slice(0, 200)}`;
      }
    } catch (e) {
      last = (e as Error).message;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw fail(`not ready at ${o.url} after ${o.timeoutMs} ms (last: ${last})`);
    await sleepOrExit(Math.min(delay, left), o.proc);
    delay = Math.min(delay * 2, 500);
  }
}

async function sleepOrExit(ms: number, proc?: LoggedProcess): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const sleep = new Promise<void>((r) => timer = setTimeout(r, ms));
  await (proc ? Promise.race([sleep, proc.exit]) : sleep);
  clearTimeout(timer);
}

/** SIGTERM, wait up to graceMs, then SIGKILL (through netns, which tracks the pid). */
export async function stopGracefully(
  netns: Netns,
  proc: LoggedProcess,
  graceMs = STOP_GRACE_MS,
): Promise<void> {
  try {
    proc.child.kill("SIGTERM");
  } catch {
    return; // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs));
  const done = await Promise.race([proc.exit.then(() => false), timedOut]);
  clearTimeout(timer);
  if (done) await netns.kill(proc.child);
}

export interface LabAgentsDeps {
  netns: Netns;
  logs: ProcessLogs;
  dir: string;
  caPath: string;
  /** the api's client certificate, used for health checks */
  client: Deno.HttpClient;
  readyTimeoutMs: number;
  extraConfig?: Json;
  /** per-VM additions merged after extraConfig (e.g. a Diego cell's own container store) */
  configFor?: (vm: AgentVm) => Json;
  /** V8 flags of each agent started from now on (default PCAP_V8_FLAGS); for the benches' A/B */
  v8Flags?: (vm: AgentVm) => readonly string[];
  log: (line: string) => void;
}

interface Running {
  vm: AgentVm;
  configPath: string;
  proc: LoggedProcess;
  expectedExit: boolean;
}

/** The agents of one lab, keyed by VM id. */
export class LabAgents {
  #deps: LabAgentsDeps;
  #running = new Map<string, Running>();
  #certs = new Map<string, CertPair>();

  constructor(deps: LabAgentsDeps) {
    this.#deps = deps;
  }

  static logName(vm: AgentVm): string {
    return `agent-${vm.group.replace(/[^A-Za-z0-9_.-]/g, "_")}-${vm.index}`;
  }

  url(vm: AgentVm): string {
    return `https://${vm.ip}:${vm.port}`;
  }

  isRunning(vm: AgentVm): boolean {
    return this.#running.has(vm.id);
  }

  /** Host pid of the VM's agent (`ip netns exec` execs in place), null when not running. */
  pid(vm: AgentVm): number | null {
    return this.#running.get(vm.id)?.proc.child.pid ?? null;
  }

  /** Writes the VM's agent.yml, starts the agent (not yet waiting for it). */
  spawn(vm: AgentVm, cert: CertPair): Running {
    if (this.#running.has(vm.id)) throw new Error(`agent of ${vm.group}/${vm.index} is running`);
    const argv = modeCommand("agent", this.#deps.v8Flags?.(vm));
    this.#certs.set(vm.id, cert);
    const name = LabAgents.logName(vm);
    const configPath = `${this.#deps.dir}/${name}.yml`;
    const cfg = agentConfig(
      vm,
      { ...cert, caPath: this.#deps.caPath },
      mergeConfig(this.#deps.extraConfig ?? {}, this.#deps.configFor?.(vm) ?? {}),
    );
    Deno.writeTextFileSync(configPath, stringify(cfg));
    const proc = this.#deps.logs.spawn(
      this.#deps.netns,
      vm.netns,
      name,
      [Deno.execPath(), ...argv, "--config", configPath],
      { cwd: REPO_ROOT, env: { NO_COLOR: "1" } },
    );
    const r: Running = { vm, configPath, proc, expectedExit: false };
    this.#running.set(vm.id, r);
    proc.exit.then((s) => {
      if (this.#running.get(vm.id) === r) this.#running.delete(vm.id);
      if (!r.expectedExit) {
        this.#deps.log(
          `lab: agent ${vm.group}/${vm.index} exited unexpectedly (code ${s.code}); log ${proc.logPath}`,
        );
      }
    });
    return r;
  }

  /** Starts the agents of vms in parallel and waits until each answers /health over mTLS. */
  async start(vms: Array<{ vm: AgentVm; cert: CertPair }>): Promise<void> {
    const started = vms.map(({ vm, cert }) => this.spawn(vm, cert));
    const results = await Promise.allSettled(started.map((r) => this.#ready(r)));
    const errors = results.flatMap((r) =>
      r.status === "rejected" ? [(r.reason as Error).message] : []
    );
    if (errors.length) {
      throw new Error(
        `${errors.length} of ${vms.length} agent(s) failed to start:\n${errors.join("\n")}`,
      );
    }
  }

  #ready(r: Running): Promise<Json> {
    return waitHealthy({
      url: `${this.url(r.vm)}/health`,
      client: this.#deps.client,
      proc: r.proc,
      timeoutMs: this.#deps.readyTimeoutMs,
      what: `agent ${r.vm.group}/${r.vm.index} (${r.vm.ip}:${r.vm.port}, netns ${
        r.vm.netns ?? "host"
      })`,
      logs: this.#deps.logs,
    });
  }

  /** SIGKILL: the VM's agent dies as in a crash. */
  async kill(vm: AgentVm): Promise<void> {
    const r = this.#running.get(vm.id);
    if (!r) return;
    r.expectedExit = true;
    await this.#deps.netns.kill(r.proc.child);
    this.#running.delete(vm.id);
  }

  /** SIGTERM (the agent drains), SIGKILL after a grace period. */
  async stop(vm: AgentVm): Promise<void> {
    const r = this.#running.get(vm.id);
    if (!r) return;
    r.expectedExit = true;
    await stopGracefully(this.#deps.netns, r.proc);
    this.#running.delete(vm.id);
  }

  /** Stops (gracefully) if running, starts again with the same config, waits until ready. */
  async restart(vm: AgentVm): Promise<void> {
    await this.stop(vm);
    const cert = this.#certs.get(vm.id);
    if (!cert) throw new Error(`agent of ${vm.group}/${vm.index} was never started`);
    await this.#ready(this.spawn(vm, cert));
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#running.values()].map((r) => this.stop(r.vm)));
  }
}
