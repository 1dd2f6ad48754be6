// The lab's api process: its api.yml (pure) and `deno run main.ts api` in the host namespace,
// ready once GET /health answers.
import { stringify } from "yaml";
import type { Netns } from "./netns.ts";
import type { LoggedProcess, ProcessLogs } from "./process_logs.ts";
import {
  DEFAULT_AGENT_PORT,
  type Json,
  mergeConfig,
  modeCommand,
  REPO_ROOT,
  waitHealthy,
} from "./lab_agents.ts";
import type { CertPair } from "./pki.ts";

export interface LabApiSetting {
  runId: string;
  dir: string;
  apiServer: CertPair;
  apiClient: CertPair;
  caPath: string;
  directorUrl: string;
}

/** The api.yml for the lab with `extra` merged in. Pure. */
export function labApiConfig(s: LabApiSetting, port: number, extra: Json = {}): Json {
  return mergeConfig({
    id: `lab-api-${s.runId}`,
    log_level: "debug",
    listen: {
      address: "127.0.0.1",
      port,
      tls: { certificate: s.apiServer.certPath, private_key: s.apiServer.keyPath },
    },
    agents_mtls: {
      certificate: s.apiClient.certPath,
      private_key: s.apiClient.keyPath,
      ca: s.caPath,
    },
    bosh: {
      director_url: s.directorUrl,
      agent_port: DEFAULT_AGENT_PORT,
      tls: { ca: s.caPath },
    },
    audit: { enabled: true, file: `${s.dir}/audit.log` },
  }, extra);
}

export interface LabApiStart {
  netns: Netns;
  logs: ProcessLogs;
  dir: string;
  caCert: string;
  config: Json;
  readyTimeoutMs: number;
}

/**
 * Writes `<dir>/api.yml` and spawns the api; resolves with its URL (https unless the config
 * has no listen.tls) once healthy. `onSpawn` gets the process at once, so the caller can stop
 * it when the health wait fails.
 */
export async function spawnLabApi(
  o: LabApiStart,
  onSpawn: (p: LoggedProcess) => void,
): Promise<string> {
  const argv = modeCommand("api");
  const listen = o.config.listen as Json;
  const configPath = `${o.dir}/api.yml`;
  await Deno.writeTextFile(configPath, stringify(o.config));
  const tls = listen.tls !== undefined;
  const url = `${tls ? "https" : "http"}://${listen.address}:${listen.port}`;
  const proc = o.logs.spawn(
    o.netns,
    null,
    "api",
    [Deno.execPath(), ...argv, "--config", configPath],
    { cwd: REPO_ROOT, env: { NO_COLOR: "1" } },
  );
  onSpawn(proc);
  const client = Deno.createHttpClient({ caCerts: [o.caCert] });
  try {
    await waitHealthy({
      url: `${url}/health`,
      client,
      proc,
      timeoutMs: o.readyTimeoutMs,
      what: `api (${url})`,
      logs: o.logs,
    });
  } finally {
    client.close();
  }
  return url;
}

/** A free TCP port on 127.0.0.1 (closed again; tiny race accepted in the lab). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
