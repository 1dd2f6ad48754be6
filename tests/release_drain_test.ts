/**
 * The rendered BOSH drain scripts against a live lab: a real `pcap bosh capture` client through
 * the real api to real agents. Draining an agent, then the api, while a capture runs: the client
 * receives CAPTURE_STOPPED, its file reads back with tshark, and the drained process exits within
 * the script's timeout (the script reports that itself; the test asserts no durations).
 */
import { isRoot, run } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { modeCommand } from "../lab/lab_agents.ts";
import { markerTokens, randomMarker } from "../lab/traffic.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import { type Client, exitCode, killClient, startClient } from "./support/bosh_client.ts";
import { packets } from "./support/capture_readback.ts";
import { cleanup, type Job, type Rendered, renderJob } from "./support/release_render.ts";
import { copy, makeReleasePki } from "./support/release_pki.ts";

const root = isRoot();
const ready = modeCommand("api") !== null;
const dec = new TextDecoder();

/** Pids whose command line holds `needle`, running this deno (the lab's api or agent). */
async function pidsRunning(candidates: string[], needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const pid of candidates) {
    try {
      const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
      if (argv[0] === Deno.execPath() && argv.some((a) => a.endsWith(needle))) {
        found.push(Number(pid));
      }
    } catch { /* exited meanwhile */ }
  }
  return found;
}

async function apiPid(lab: Landscape): Promise<number> {
  const all = [...Deno.readDirSync("/proc")].map((e) => e.name).filter((n) => /^\d+$/.test(n));
  const pids = await pidsRunning(all, `${lab.dir}/api.yml`);
  assertEquals(pids.length, 1, `api processes of lab ${lab.runId}`);
  return pids[0];
}

async function agentPid(lab: Landscape, vm: LabVm): Promise<number> {
  const { stdout } = await run("ip", ["netns", "pids", vm.netns!]);
  const pids = await pidsRunning(
    stdout.split(/\s+/).filter(Boolean),
    `/${lab.agentLogName(vm)}.yml`,
  );
  assertEquals(pids.length, 1, `agent processes of ${vm.group}/${vm.index}`);
  return pids[0];
}

/** Runs the rendered bin/drain the way BOSH does, with bpm's pid file path pointed at `pid`. */
async function drain(r: Rendered, job: Job, pid: number) {
  const run = `${r.root}/var/vcap/sys/run/bpm/${job}`;
  const logDir = `${r.root}/var/vcap/sys/log/${job}`;
  await Deno.mkdir(run, { recursive: true });
  await Deno.mkdir(logDir, { recursive: true });
  await Deno.writeTextFile(`${run}/${job}.pid`, `${pid}\n`);
  const out = await new Deno.Command(`${r.jobDir}/bin/drain`, {
    args: ["job_shutdown", "hash_unchanged"],
    env: { PCAP_DRAIN_PIDFILE: `${run}/${job}.pid`, PCAP_DRAIN_LOG: `${logDir}/drain.log` },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    log: await Deno.readTextFile(`${logDir}/drain.log`),
  };
}

function gone(pid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/stat`).split(" ")[2] === "Z";
  } catch {
    return true;
  }
}

Deno.test({
  name: "drain scripts drain live captures" +
    (root && ready ? "" : " (ignored: needs root and api)"),
  ignore: !root || !ready,
  async fn(t) {
    const pki = await makeReleasePki();
    const rendered: Rendered[] = [];
    const render = async (job: Job, extra: Record<string, unknown>) => {
      const props = copy(job === "pcap-agent" ? pki.agentProps : pki.apiProps);
      Object.assign(props[job] as Record<string, unknown>, extra);
      const r = await renderJob(job, props);
      rendered.push(r);
      assert(r.ok, r.errors);
      return r;
    };
    const apiTls = (pki.apiProps["pcap-api"] as Record<string, Record<string, unknown>>).listen.tls;
    const health = (r: Rendered) =>
      new Deno.Command(`${r.jobDir}/bin/health`, { stdout: "null", stderr: "null" }).output();
    const lab = await Landscape.start({
      groups: { router: 1, "diego-cell": 1 },
      api: { drain_timeout: "8s" },
      log: () => {},
    });
    const dir = await Deno.makeTempDir({ prefix: "release-drain-" });
    const clients: Client[] = [];
    try {
      const config = `${dir}/bosh-config.yml`;
      await Deno.writeTextFile(
        config,
        `environments:\n- url: ${lab.director.url}\n  alias: lab\n` +
          `  access_token: ${await lab.mintToken()}\n  access_token_type: bearer\n` +
          `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
      );
      const env = {
        HOME: dir,
        BOSH_CONFIG: config,
        BOSH_ENVIRONMENT: "lab",
        PCAP_API: lab.apiUrl!,
      };
      const capture = (group: string, file: string) => {
        const c = startClient(
          ["-d", "cf", "--ca-cert", lab.pki.caPath, "-f", "udp port 5555", "-g", group, "-o", file],
          env,
        );
        clients.push(c);
        return c;
      };
      const router = lab.vm("router");
      const cell = lab.vm("diego-cell");
      const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });

      const drainedCapture = async (group: string, job: Job, pid: number, r: Rendered) => {
        const file = `${dir}/${group}.pcapng`;
        const c = capture(group, file);
        await c.waitFor(new RegExp(`capturing on ${group}`), 1);
        const marker = randomMarker();
        const from = group === "router" ? cell : router;
        const to = group === "router" ? router : cell;
        await lab.traffic.udp({ from: ep(from), to: ep(to), port: 5555, count: 5, marker });
        // No wait for the packets to arrive: a drain must deliver what the kernel captured.
        const d = await drain(r, job, pid);
        assertEquals(d.code, 0, d.stderr);
        assertEquals(d.stdout, "0\n", "BOSH drain protocol: the seconds left to wait");
        assertStringIncludes(d.log, `sending SIGTERM to ${job} pid ${pid}`);
        assertStringIncludes(d.log, `${job} pid ${pid} exited`);
        assert(gone(pid), `${job} pid ${pid} still runs`);
        const code = await exitCode(c);
        assertMatch(c.stderr(), /CAPTURE_STOPPED/);
        const got = (await packets(file)).flatMap((p) => p.tokens);
        assertEquals(
          got.filter((tk) => tk.startsWith(marker)).sort(),
          markerTokens(marker, 5).sort(),
        );
        return { code, stderr: c.stderr() };
      };

      await t.step("agent drain: the capture on its VM ends with CAPTURE_STOPPED", async () => {
        const r = await render("pcap-agent", { drain_timeout: 20 });
        const res = await drainedCapture("router", "pcap-agent", await agentPid(lab, router), r);
        assertEquals(res.code, 0, res.stderr);
      });

      await t.step("api drain: running captures get CAPTURE_STOPPED and a valid file", async () => {
        const port = Number(new URL(lab.apiUrl!).port);
        const r = await render("pcap-api", { drain_timeout: 8, listen: { port, tls: apiTls } });
        // The route registrar's health check passes against the live api, and fails once it is gone.
        assertEquals((await health(r)).code, 0, "bin/health against the running api");
        const res = await drainedCapture("diego-cell", "pcap-api", await apiPid(lab), r);
        assertEquals((await health(r)).code === 0, false, "bin/health after the api stopped");
        assertEquals(res.code, 0, res.stderr);
        assertStringIncludes(res.stderr, "api (CAPTURE_STOPPED): the api is shutting down");
        assertMatch(res.stderr, /captured 5 packets .* from 1 source/);
      });

      await t.step("drain without a running process prints 0 at once", async () => {
        const r = await render("pcap-api", {});
        const d = await drain(r, "pcap-api", 2 ** 22 + 12345);
        assertEquals([d.code, d.stdout], [0, "0\n"]);
        assertStringIncludes(d.log, "nothing to drain");
      });
    } finally {
      for (const c of clients) await killClient(c);
      for (const r of rendered) await cleanup(r);
      await lab.stop();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
