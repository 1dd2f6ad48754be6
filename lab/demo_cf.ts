/**
 * `make demo-cf`: a CF foundation in network namespaces (2 Diego cells running an app "web" with
 * 3 instances, 2 on the first cell and 1 on the second, plus a neighbour app "billing" on each
 * cell), the CC and UAA simulators, the pcap api and agents, and the real client:
 *
 *     deno run -A main.ts cf capture web -o demo-cf.pcapng -F --duration 5s …
 *
 * Authentication takes the developer's path: the demo logs in to the lab UAA as `cf login` does
 * (password grant, client cf) and writes a cf CLI config (ConfigVersion 4) into
 * `<run dir>/cf-home/.cf/config.json` whose access token has already expired, so pcap-cf has to
 * refresh it; CF_HOME points there, so the real ~/.cf is never touched. Steady marked UDP traffic
 * goes from each cell into each container. Leaves ./demo-cf.pcapng and prints the packets per
 * instance; exits non-zero if the capture failed.
 */
import { isRoot, Landscape } from "./landscape.ts";
import type { LabCf } from "./lab_cf.ts";
import { deployApp, writeCfLogin } from "./cf_developer.ts";
import type { SteadyTraffic } from "./traffic.ts";
import { runClient, summarize } from "./demo_client.ts";

const APP = "web";
const OUTPUT = "demo-cf.pcapng";
const DURATION = "5s";
const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const DEVELOPER = { username: "developer", userId: crypto.randomUUID() };
/** cell of each instance of "web": index 0 and 2 on cell 0, index 1 on cell 1 */
const PLACEMENT = [0, 1, 0];
const PORT = 8080;

const say = (line: string) => console.log(`demo-cf: ${line}`);

function explainWithoutRoot(): number {
  say("not running as root, so there is nothing real to capture here.");
  say("As root (e.g. `sudo make demo-cf`) it would:");
  say("  1. build 2 Diego cell VMs (network namespaces with agents configured for containers),");
  say(`     app "${APP}" with 3 instances in containers on them (2 + 1) and a neighbour app,`);
  say("     the Cloud Controller and UAA simulators and the pcap api;");
  say("  2. log in as a space developer the way `cf login` does (cf CLI config in the run dir);");
  say(`  3. send marked UDP traffic into every container (port ${PORT});`);
  say(`  4. run \`pcap cf capture ${APP} -o ${OUTPUT} --duration ${DURATION}\`;`);
  say("  5. show packets per instance and the first packets with tshark.");
  say("Capturing needs CAP_NET_RAW and namespaces need CAP_SYS_ADMIN; nothing was done.");
  return 0;
}

/** "web" on the cells PLACEMENT names, and the neighbour "billing" with one instance per cell. */
async function deployApps(cf: LabCf): Promise<void> {
  const web = await deployApp(cf, { name: APP, space: SPACE, placement: PLACEMENT });
  const billing = await deployApp(cf, {
    name: "billing",
    space: SPACE,
    placement: cf.cells.map((_, i) => i),
  });
  for (const d of [web, billing]) {
    d.containers.forEach((c, i) =>
      say(`  ${d.app.name}/${i} ${c.handle} ${c.ip} on diego-cell/${d.cells[i]}`)
    );
  }
}

/** Steady marked UDP from each container's cell into it (web and the neighbours alike). */
async function startTraffic(lab: Landscape, cf: LabCf): Promise<SteadyTraffic[]> {
  const flows: SteadyTraffic[] = [];
  try {
    for (const { vm, cell } of cf.cells) {
      for (const c of cell.list()) {
        flows.push(
          await lab.traffic.steady({
            from: { ip: vm.ip, netns: vm.netns },
            to: { ip: c.ip, netns: c.netnsName },
            port: PORT,
            rate: 10,
          }),
        );
      }
    }
  } catch (e) {
    await Promise.allSettled(flows.map((f) => f.stop()));
    throw e;
  }
  say(`traffic: each cell → each of its containers (udp ${PORT}, 10/s)`);
  return flows;
}

function runCfClient(lab: Landscape, cfHome: string, output: string): Promise<number> {
  const args = [
    "cf",
    "capture",
    APP,
    "-o",
    output,
    "-F",
    "--duration",
    DURATION,
    "-u",
    lab.apiUrl!,
    "--ca-cert",
    lab.pki.caPath,
  ];
  return runClient(say, args, { drop: ["PCAP_API"], set: { CF_HOME: cfHome } });
}

async function main(): Promise<number> {
  if (!isRoot()) return explainWithoutRoot();
  const output = `${Deno.cwd()}/${OUTPUT}`;
  say(`building a CF foundation: 2 Diego cells, app "${APP}" with 3 instances`);
  const lab = await Landscape.start({
    groups: { "diego-cell": 2 },
    cf: {
      orgs: [ORG],
      spaces: [SPACE],
      roles: [{ userId: DEVELOPER.userId, type: "space_developer", target: SPACE.guid }],
    },
    api: true,
    log: (l) => console.error(l),
  });
  let flows: SteadyTraffic[] = [];
  try {
    const cf = lab.cf!;
    say(`api at ${lab.apiUrl}, Cloud Controller at ${cf.cc.url}, UAA at ${lab.uaa.url}`);
    for (const { vm } of cf.cells) say(`  ${vm.group}/${vm.index} (${vm.id}) ${vm.ip}`);
    say(`org ${ORG.name}, space ${SPACE.name}:`);
    await deployApps(cf);
    // expired on purpose: pcap-cf refreshes it like the cf CLI does
    const cfHome = await writeCfLogin(lab, { ...DEVELOPER, org: ORG, space: SPACE, expired: true });
    say(`cf config: ${cfHome}/.cf/config.json (space developer; expired token + refresh token)`);
    flows = await startTraffic(lab, cf);
    const code = await runCfClient(lab, cfHome, output);
    if (code !== 0) {
      say(`the capture failed (exit ${code}); logs follow`);
      lab.dumpLogs(40);
      return code;
    }
    await summarize(say, output, OUTPUT, "instance (interface)");
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
    console.error(`demo-cf: failed: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
