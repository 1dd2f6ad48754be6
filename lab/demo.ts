/**
 * `make demo`: a BOSH deployment `cf` in network namespaces (3 diego-cells and a router with
 * steady marked UDP traffic between them), the pcap api and agents, and the real client:
 *
 *     deno run -A main.ts bosh capture -d cf -g diego-cell -o demo.pcapng -F --duration 5s …
 *
 * Authentication takes the operator's path: the demo logs in to the lab UAA as the bosh CLI does
 * (password grant, client bosh_cli) and writes a bosh config into the lab's run dir whose access
 * token has already expired, so pcap-bosh has to refresh it through the Director's UAA. The real
 * ~/.bosh/config is never touched. Leaves ./demo.pcapng; exits non-zero if the capture failed.
 */
import { stringify } from "yaml";
import { isRoot, type LabVm, Landscape } from "./landscape.ts";
import { runClient, summarize } from "./demo_client.ts";
import type { SteadyTraffic } from "./traffic.ts";

const DEPLOYMENT = "cf";
const CELLS = 3;
const DURATION = "5s";
const OUTPUT = "demo.pcapng";

const say = (line: string) => console.log(`demo: ${line}`);

function explainWithoutRoot(): number {
  say("not running as root, so there is nothing real to capture here.");
  say("As root (e.g. `sudo make demo`) it would:");
  say(`  1. build deployment "${DEPLOYMENT}": ${CELLS} diego-cell VMs and a router VM, each a`);
  say("     network namespace with an agent, plus the api and UAA/Director simulators;");
  say("  2. run marked UDP traffic router → each cell and each cell → router;");
  say(
    `  3. run \`pcap bosh capture -d ${DEPLOYMENT} -g diego-cell -o ${OUTPUT} --duration ` +
      `${DURATION}\`;`,
  );
  say("  4. show packets per interface and the first packets with tshark.");
  say("Capturing needs CAP_NET_RAW and namespaces need CAP_SYS_ADMIN; nothing was done.");
  return 0;
}

/** What `bosh log-in` does: password grant as client bosh_cli; returns the refresh token. */
async function logIn(lab: Landscape): Promise<string> {
  const res = await lab.fetchLab(`${lab.uaa.url}/oauth/token`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa("bosh_cli:")}`,
      accept: "application/json",
    },
    body: new URLSearchParams({
      grant_type: "password",
      username: "admin",
      password: lab.adminPassword,
    }),
  });
  const body = await res.json();
  if (!res.ok || typeof body.refresh_token !== "string") {
    throw new Error(`log-in to the lab UAA failed: HTTP ${res.status} ${body.error ?? ""}`);
  }
  return body.refresh_token;
}

/** A bosh config in the run dir, as `bosh alias-env lab` + `bosh log-in` leave it. */
async function writeBoshConfig(lab: Landscape): Promise<string> {
  const path = `${lab.dir}/bosh-config.yml`;
  const config = {
    environments: [{
      url: lab.director.url,
      alias: "lab",
      username: "admin",
      // expired on purpose: pcap-bosh refreshes it like the bosh CLI does
      access_token: await lab.uaa.mintExpired({ userName: "admin" }),
      access_token_type: "bearer",
      refresh_token: await logIn(lab),
      // the lab's Director and UAA speak HTTPS with the lab CA, as `bosh alias-env --ca-cert`
      ca_cert: lab.pki.caCert,
    }],
  };
  await Deno.writeTextFile(path, stringify(config), { mode: 0o600 });
  return path;
}

async function startTraffic(lab: Landscape): Promise<SteadyTraffic[]> {
  const router = lab.vm("router", 0);
  const flows: SteadyTraffic[] = [];
  const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });
  try {
    for (let i = 0; i < CELLS; i++) {
      const cell = lab.vm("diego-cell", i);
      flows.push(
        await lab.traffic.steady({ from: ep(router), to: ep(cell), port: 5555, rate: 10 }),
      );
      flows.push(
        await lab.traffic.steady({ from: ep(cell), to: ep(router), port: 5600 + i, rate: 5 }),
      );
    }
  } catch (e) {
    await Promise.allSettled(flows.map((f) => f.stop()));
    throw e;
  }
  say(`traffic: router → each cell (udp 5555, 10/s), each cell → router (udp 5600+, 5/s)`);
  return flows;
}

function runBoshClient(lab: Landscape, config: string, output: string): Promise<number> {
  const args = [
    "bosh",
    "capture",
    "-d",
    DEPLOYMENT,
    "-g",
    "diego-cell",
    "-o",
    output,
    "-F",
    "--duration",
    DURATION,
    "-u",
    lab.apiUrl!,
    "--ca-cert",
    lab.pki.caPath,
    "-c",
    config,
    "-e",
    "lab",
  ];
  const drop = ["BOSH_CLIENT", "BOSH_CLIENT_SECRET", "BOSH_ENVIRONMENT", "BOSH_CA_CERT"];
  return runClient(say, args, { drop });
}

async function main(): Promise<number> {
  if (!isRoot()) return explainWithoutRoot();
  const output = `${Deno.cwd()}/${OUTPUT}`;
  say(`building deployment "${DEPLOYMENT}": ${CELLS} diego-cell VMs and a router VM`);
  const lab = await Landscape.start({
    deployment: DEPLOYMENT,
    groups: { "diego-cell": CELLS, router: 1 },
    api: true,
    log: (l) => console.error(l),
  });
  let flows: SteadyTraffic[] = [];
  try {
    say(`api at ${lab.apiUrl}, Director at ${lab.director.url}, UAA at ${lab.uaa.url}`);
    for (const vm of lab.vms) say(`  ${vm.group}/${vm.index} (${vm.id}) ${vm.ip}`);
    const config = await writeBoshConfig(lab);
    say(`bosh config: ${config} (environment "lab"; expired access token + refresh token)`);
    flows = await startTraffic(lab);
    const code = await runBoshClient(lab, config, output);
    if (code !== 0) {
      say(`the capture failed (exit ${code}); logs follow`);
      lab.dumpLogs(40);
      return code;
    }
    await summarize(say, output, OUTPUT);
    say(`wrote ${OUTPUT}; open it with: wireshark ${OUTPUT}`);
    return 0;
  } finally {
    await Promise.allSettled(flows.map((f) => f.stop()));
    await lab.stop();
    say("lab torn down");
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`demo: failed: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
