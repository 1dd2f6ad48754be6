// `deno task lab up|down|status`: a landscape for the demo and for poking around by hand,
// removal of what crashed runs left behind, and a listing of what the lab has on this machine.
import { Command, CommanderError } from "commander";
import { isRoot, removeLeftovers, run } from "./netns.ts";
import { Landscape } from "./landscape.ts";
import { deployApp, writeCfLogin } from "./cf_developer.ts";

const PREFIX_RE = /^pc[0-9a-z]{4}/;
const RUN_DIR_RE = /^(pc[0-9a-z]{4})-lab-/;

function tmpDir(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

export interface RunDir {
  runId: string;
  path: string;
  pid: number | null;
  live: boolean;
}

function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

/** Run dirs of landscapes (`<tmp>/pcXXXX-lab-*`), with whether their owner is still alive. */
export function runDirs(): RunDir[] {
  const out: RunDir[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(tmpDir())];
  } catch {
    return out;
  }
  for (const e of entries) {
    const m = RUN_DIR_RE.exec(e.name);
    if (!m || !e.isDirectory) continue;
    const path = `${tmpDir()}/${e.name}`;
    let pid: number | null = null;
    try {
      pid = Number(JSON.parse(Deno.readTextFileSync(`${path}/run.json`)).pid) || null;
    } catch { /* no run.json: a run that died while starting */ }
    out.push({ runId: m[1], path, pid, live: pid !== null && pidAlive(pid) });
  }
  return out;
}

export interface LabProcess {
  pid: number;
  cmdline: string;
}

/** Host processes started by a landscape (their command line names a file in a run dir). */
export function runDirProcesses(): LabProcess[] {
  const re = new RegExp(`${tmpDir().replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}/pc[0-9a-z]{4}-lab-`);
  const out: LabProcess[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0").join(" ")
        .replace(/\s+/g, " ").trim();
      if (re.test(cmdline)) out.push({ pid: Number(e.name), cmdline });
    } catch { /* gone */ }
  }
  return out;
}

async function labNamespaces(): Promise<Array<{ name: string; pids: LabProcess[] }>> {
  const r = await run("ip", ["netns", "list"], { allowFailure: true });
  const names = r.stdout.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter((n) =>
    n && PREFIX_RE.test(n)
  );
  return await Promise.all(names.map(async (name) => {
    const p = await run("ip", ["netns", "pids", name], { allowFailure: true });
    const pids = p.stdout.split(/\s+/).filter(Boolean).map((pid) => {
      let cmdline = "?";
      try {
        cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").replace(
          /\s+/g,
          " ",
        ).trim();
      } catch { /* gone */ }
      return { pid: Number(pid), cmdline };
    });
    return { name, pids };
  }));
}

async function labHostLinks(): Promise<string[]> {
  const r = await run("ip", ["-o", "link", "show"], { allowFailure: true });
  return r.stdout.split("\n").flatMap((l) => {
    const m = /^\d+:\s+([^:@\s]+)/.exec(l);
    return m && PREFIX_RE.test(m[1]) ? [m[1]] : [];
  });
}

const short = (s: string, n = 110) => s.length > n ? s.slice(0, n - 1) + "…" : s;

async function status(): Promise<number> {
  const runs = runDirs();
  const nss = isRoot() ? await labNamespaces() : [];
  const links = isRoot() ? await labHostLinks() : [];
  const procs = runDirProcesses();
  console.log(`runs (${runs.length}):`);
  for (const r of runs) {
    console.log(`  ${r.runId}  ${r.live ? `live (pid ${r.pid})` : "dead"}  ${r.path}`);
  }
  console.log(`namespaces (${nss.length}):`);
  for (const ns of nss) {
    console.log(`  ${ns.name}  ${ns.pids.length} process(es)`);
    for (const p of ns.pids) console.log(`    ${p.pid}  ${short(p.cmdline)}`);
  }
  console.log(`host links (${links.length}): ${links.join(" ")}`);
  console.log(`processes of lab runs (${procs.length}):`);
  for (const p of procs) console.log(`  ${p.pid}  ${short(p.cmdline)}`);
  if (!isRoot()) console.log("(not root: namespaces and links are not listed)");
  return 0;
}

/** Removes what crashed runs left behind; runs whose owner is alive are left alone. */
async function down(): Promise<number> {
  const live = runDirs().filter((r) => r.live && r.pid !== Deno.pid);
  if (live.length) {
    console.error(
      `lab down: leaving ${live.length} running lab run(s) alone: ` +
        live.map((r) => `${r.runId} (pid ${r.pid})`).join(", ") +
        "; stop them with Ctrl-C (or kill <pid>)",
    );
  }
  if (!isRoot()) {
    console.error("lab down: not root: namespaces and links cannot exist; cleaning files only");
  }
  // Host-side processes (api) of dead runs: matched by their run-dir config path, killed by pid.
  const liveIds = new Set(live.map((r) => r.runId));
  for (const p of runDirProcesses()) {
    const id = /\/(pc[0-9a-z]{4})-lab-/.exec(p.cmdline)?.[1];
    if (id && !liveIds.has(id)) {
      try {
        Deno.kill(p.pid, "SIGKILL");
        console.log(`killed ${p.pid} ${short(p.cmdline, 80)}`);
      } catch { /* gone */ }
    }
  }
  const removed = isRoot() ? await removeLeftovers() : [];
  for (const name of removed) console.log(`removed ${name}`);
  for (const r of runDirs()) {
    if (liveIds.has(r.runId)) continue;
    await Deno.remove(r.path, { recursive: true }).catch(() => {});
    console.log(`removed ${r.path}`);
  }
  console.log(removed.length ? `lab down: done` : "lab down: no leftover namespaces or links");
  return 0;
}

function parseGroups(values: string[]): Record<string, number> {
  const groups: Record<string, number> = {};
  for (const v of values) {
    const m = /^([A-Za-z0-9_.-]+)=(\d+)$/.exec(v);
    if (!m) throw new Error(`--group "${v}": use NAME=COUNT, e.g. --group diego-cell=3`);
    groups[m[1]] = Number(m[2]);
  }
  return Object.keys(groups).length ? groups : { "diego-cell": 2, router: 1 };
}

const CF_ORG = { guid: crypto.randomUUID(), name: "lab" };
const CF_SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: CF_ORG.guid };

interface UpOptions {
  deployment: string;
  group: string[];
  agents: boolean;
  api: boolean;
  loopback: boolean;
  cf: boolean;
}

/** With --cf: org "lab", space "dev", a space developer and app "web" with one instance per cell. */
async function cfLines(lab: Landscape): Promise<string[]> {
  const cf = lab.cf;
  if (!cf) return [];
  const org = cf.cc.orgs[0];
  const space = cf.cc.spaces[0];
  const web = await deployApp(cf, { name: "web", space, placement: cf.cells.map((_, i) => i) });
  const userId = cf.cc.roles[0].userId;
  const home = await writeCfLogin(lab, { username: "developer", userId, org, space });
  const capture = lab.apiUrl
    ? `CF_HOME=${home} deno run -A main.ts cf capture web -o web.pcapng -u ${lab.apiUrl} ` +
      `--ca-cert ${lab.pki.caPath}`
    : "(start with --api to capture through the api)";
  return [
    `  cf: Cloud Controller ${cf.cc.url}, org ${org.name}, space ${space.name}`,
    `    app web (${web.app.guid}):`,
    ...web.containers.map((c, i) =>
      `      web/${i} ${c.handle} ${c.ip} on diego-cell/${web.cells[i]} ` +
      `(ip netns exec ${c.netnsName} bash)`
    ),
    ...cf.cells.map(({ vm, cell }) =>
      `    ${vm.group}/${vm.index} container store ${cell.storePath}, runc root ${cell.runcRoot}`
    ),
    `    cf login (space developer): CF_HOME=${home}`,
    `    ${capture}`,
  ];
}

async function up(o: UpOptions): Promise<number> {
  const lab = await Landscape.start({
    deployment: o.deployment,
    groups: parseGroups(o.group),
    agents: o.agents,
    api: o.api,
    loopback: o.loopback,
    cf: o.cf
      ? {
        orgs: [CF_ORG],
        spaces: [CF_SPACE],
        roles: [{ userId: crypto.randomUUID(), type: "space_developer", target: CF_SPACE.guid }],
      }
      : undefined,
  });
  // The landscape tears itself down on SIGINT/SIGTERM (and exits); until then stay up.
  let lines: string[];
  try {
    lines = await upLines(lab, o);
  } catch (e) {
    await lab.stop().catch(() => {});
    throw e;
  }
  console.log(lines.join("\n"));
  await new Promise<void>(() => setInterval(() => {}, 1 << 30));
  return 0;
}

/** What `up` prints, after writing the client files (and with --cf deploying app "web"). */
async function upLines(lab: Landscape, o: UpOptions): Promise<string[]> {
  const files = await writeClientFiles(lab);
  const p = lab.certs;
  return [
    `lab ${lab.runId} is up${lab.topology.loopback ? " (loopback mode: no namespaces)" : ""}`,
    `  subnet ${lab.topology.subnet}, host ${lab.hostIp}${
      lab.topology.hostLink ? ` (link ${lab.topology.hostLink})` : ""
    }`,
    `  VMs (deployment ${o.deployment}):`,
    ...lab.vms.map((vm) =>
      `    ${`${vm.group}/${vm.index}`.padEnd(16)} ${vm.id}  ${vm.agentUrl}` +
      (vm.netns ? `  netns ${vm.netns} (${vm.device})` : "  (lo)")
    ),
    `  agents: ${o.agents ? "running" : "not started"}`,
    `  api: ${lab.apiUrl ?? "not started (--api)"}`,
    `  director: ${lab.director.url}   uaa: ${lab.uaa.url} (user admin, password in ${files.password})`,
    `  token (bosh.admin, 12 h): ${files.token}`,
    `  bosh config: ${files.boshConfig}`,
    ...await cfLines(lab),
    `  certs: ${lab.pki.dir} (CA ${lab.pki.caPath}; api client ${p.apiClient.certPath})`,
    `  logs: ${lab.dir}/logs   run dir: ${lab.dir}`,
    `  enter a VM: ip netns exec ${lab.vms[0].netns ?? "<none>"} bash`,
    "Ctrl-C tears everything down.",
  ];
}

/** Token, password and a bosh CLI style config for clients; files are 0600, never printed. */
async function writeClientFiles(lab: Landscape) {
  const token = `${lab.dir}/token`;
  const password = `${lab.dir}/admin_password`;
  const boshConfig = `${lab.dir}/bosh_config.yml`;
  const write = (path: string, text: string) => Deno.writeTextFile(path, text, { mode: 0o600 });
  await write(
    token,
    (await lab.mintToken({ scopes: ["openid", "bosh.admin"], ttlSec: 43_200 })) + "\n",
  );
  await write(password, lab.adminPassword + "\n");
  const res = await lab.fetchLab(`${lab.uaa.url}/oauth/token`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa("bosh_cli:")}`,
    },
    body: new URLSearchParams({
      grant_type: "password",
      username: "admin",
      password: lab.adminPassword,
    }),
  });
  const grant = await res.json() as { access_token?: string; refresh_token?: string };
  await write(
    boshConfig,
    [
      "environments:",
      `- url: ${lab.director.url}`,
      "  alias: lab",
      `  access_token: ${grant.access_token ?? ""}`,
      "  access_token_type: bearer",
      `  refresh_token: ${grant.refresh_token ?? ""}`,
      "",
    ].join("\n"),
  );
  return { token, password, boshConfig };
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command("deno task lab")
    .description("The pcap lab: a small data centre of network namespaces on this machine.")
    .exitOverride();
  program.command("up")
    .description("build a landscape and keep it up until Ctrl-C")
    .option("-d, --deployment <name>", "BOSH deployment name", "cf")
    .option(
      "-g, --group <name=count>",
      "instance group and VM count (repeatable; default diego-cell=2 router=1)",
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option("--no-agents", "do not start agents")
    .option("--api", "start the api as well", false)
    .option("--loopback", "no namespaces: everything on 127.0.0.1 / lo", false)
    .option(
      "--cf",
      "a CF foundation too: Diego cells with app containers, the CC simulator, a cf login",
      false,
    )
    .action(async (o: UpOptions) => {
      code = await up(o);
    });
  program.command("down")
    .description("remove namespaces, links, processes and run dirs left by crashed lab runs")
    .action(async () => {
      code = await down();
    });
  program.command("status")
    .description("list lab runs, namespaces, links and processes on this machine")
    .action(async () => {
      code = await status();
    });
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    console.error(`lab: ${(e as Error).message}`);
    return 1;
  }
  return code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
