/**
 * The real `pcap bosh capture` client for chaos scenarios: a bosh config holding a lab token,
 * clients started against a given api URL, and the check that an output file is valid pcapng
 * (tshark and capinfos read it to the end).
 */
import type { Landscape } from "../../../lab/landscape.ts";
import { run } from "../../../lab/netns.ts";
import { type Client, killClient, startClient } from "../../support/bosh_client.ts";
import { interfaces, packets } from "../../support/capture_readback.ts";
import { PROTOCOL_VERSION } from "../../../protocol/version.ts";
import { RawWebSocket } from "./raw_ws.ts";
import { pidByArg } from "./chaos.ts";

export interface ChaosClients {
  dir: string;
  /** starts `pcap bosh capture -d cf --ca-cert … <args>` against apiUrl */
  start(apiUrl: string, args: string[]): Client;
  /** SIGKILLs every client still running and removes the dir */
  close(): Promise<void>;
  /** stderr of every client, for failure messages */
  dump(): string;
}

export async function chaosClients(lab: Landscape): Promise<ChaosClients> {
  const dir = await Deno.makeTempDir({ prefix: "pcap-chaos-" });
  const config = `${dir}/bosh-config.yml`;
  await Deno.writeTextFile(
    config,
    `environments:\n- url: ${lab.director.url}\n  alias: lab\n` +
      `  access_token: ${await lab.mintToken()}\n  access_token_type: bearer\n` +
      `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
  );
  const clients: Client[] = [];
  return {
    dir,
    start(apiUrl, args) {
      const env = { HOME: dir, BOSH_CONFIG: config, BOSH_ENVIRONMENT: "lab", PCAP_API: apiUrl };
      const c = startClient(["-d", "cf", "--ca-cert", lab.pki.caPath, ...args], env);
      clients.push(c);
      return c;
    },
    async close() {
      await Promise.all(clients.map(killClient));
      await Deno.remove(dir, { recursive: true });
    },
    dump: () => clients.map((c, i) => `client ${i} stderr:\n${c.stderr()}`).join("\n"),
  };
}

export interface FileCheck {
  packets: number;
  interfaces: Array<{ name: string; packets: number; statEntries: number }>;
  /** marker tokens per interface name */
  tokens: Map<string, string[]>;
}

/**
 * Reads a capture file with tshark (must exit 0, no "cut short" warning) and capinfos; throws
 * with their output when the file is not valid.
 */
export async function checkCaptureFile(file: string): Promise<FileCheck> {
  const t = await run("tshark", ["-r", file, "-n", "-q"], { allowFailure: true });
  if (t.code !== 0 || /cut short|appears to be damaged|corrupt/i.test(t.stderr)) {
    throw new Error(`tshark cannot read ${file} (exit ${t.code}): ${t.stderr.trim()}`);
  }
  const ifs = await interfaces(file);
  const pkts = await packets(file);
  const tokens = new Map<string, string[]>();
  for (const p of pkts) tokens.set(p.iface, [...(tokens.get(p.iface) ?? []), ...p.tokens]);
  return { packets: pkts.length, interfaces: ifs, tokens };
}

/** A raw WebSocket capture (tests/chaos/support/raw_ws.ts) of `bosh` with a lab token, started. */
export async function startRawCapture(
  lab: Landscape,
  url: string,
  start:
    & { bosh: { deployment: string; groups: string[] }; filter: string }
    & Record<
      string,
      unknown
    >,
): Promise<RawWebSocket> {
  const ws = await RawWebSocket.connect({
    url,
    path: "/v1/capture/bosh",
    headers: { authorization: `Bearer ${await lab.mintToken()}` },
    caCert: lab.pki.caCert,
  });
  await ws.sendText(JSON.stringify({
    type: "start",
    protocol_version: PROTOCOL_VERSION,
    interface: "eth0",
    snaplen: 65535,
    ...start,
  }));
  return ws;
}

/** Starts the lab's api process without byte or duration limits; its pid and the agents'. */
export async function startUnlimitedApi(
  lab: Landscape,
): Promise<{ url: string; apiPid: number; agentPids: number[] }> {
  const url = await lab.startApi({ log_level: "info", limits: { max_bytes: 0, max_duration: 0 } });
  return {
    url,
    apiPid: await pidByArg(`${lab.dir}/api.yml`),
    agentPids: await Promise.all(
      lab.vms.map((vm) => pidByArg(`/${lab.agentLogName(vm)}.yml`, vm.netns)),
    ),
  };
}
