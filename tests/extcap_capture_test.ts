/**
 * `pcap extcap` end to end with Debian's real tshark: a temporary HOME whose personal extcap
 * folder holds the launcher that `pcap extcap --install` wrote, a bosh config naming the lab's
 * Director, and the lab's real api, agents in namespaces, UAA and Director sims. tshark lists the
 * interface, starts the launcher, reads our pcapng from its FIFO and stops it with SIGTERM; the
 * files are read back with tshark.
 */
import { isRoot } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import { interfaces, packets } from "./support/capture_readback.ts";
import {
  eventually,
  installExtcap,
  processesWith,
  startTshark,
  type Tshark,
  tshark,
  tsharkExit,
  tsharkInterfaces,
} from "./support/extcap_home.ts";
import { preferenceName } from "../cli/extcap_protocol.ts";

const root = isRoot();
const quiet = () => {};
/** the capture's -a duration: long enough for start-up and traffic on a loaded 2-core box */
const DURATION_S = 25;

Deno.test({
  name: "pcap extcap with tshark on the lab" + (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    const lab = await Landscape.start({
      groups: { "diego-cell": 3, router: 1 },
      api: true,
      log: quiet,
    });
    const home = await Deno.makeTempDir({ prefix: "pcap-extcap-test-" });
    const running: Tshark[] = [];
    // a per-run alias, so that processes of this run are told apart by the interface name
    const alias = `lab-${lab.runId}`;
    const iface = `pcap-bosh-${alias}`;
    const pref = (call: string, value: string) => ["-o", `${preferenceName(iface, call)}:${value}`];
    try {
      await Deno.mkdir(`${home}/.bosh`);
      await Deno.writeTextFile(
        `${home}/.bosh/config`,
        `environments:\n- url: ${lab.director.url}\n  alias: ${alias}\n` +
          `  access_token: ${await lab.mintToken()}\n  access_token_type: bearer\n` +
          `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
      );
      const installed = await installExtcap(home);
      const env = installed.env;
      const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });
      const router = lab.vm("router");
      const cells = [0, 1, 2].map((i) => lab.vm("diego-cell", i));
      const options = [
        ...pref("--deployment", "cf"),
        ...pref("--groups", "diego-cell"),
        ...pref("--pcap-api-url", lab.apiUrl!),
        ...pref("--ca-cert", lab.pki.caPath),
      ];
      const activeCaptures = async (vm: LabVm) =>
        (await (await lab.fetchAgent(vm, "/health")).json()).active_captures as number;
      const allCells = async (n: number) =>
        (await Promise.all(cells.map(activeCaptures))).every((c) => c === n);
      // the lab's api writes one JSON line per capture into its audit file
      const audits = async () =>
        (await Deno.readTextFile(`${lab.dir}/audit.log`).catch(() => "")).split("\n")
          .filter((l) => l.includes('"event":"capture"')).map((l) => JSON.parse(l));
      const start = (args: string[]) => {
        const ts = startTshark(args, env);
        running.push(ts);
        return ts;
      };

      await t.step("tshark -D lists the interface from the launcher in the HOME", async () => {
        assertStringIncludes(installed.launcher, home);
        const list = await tsharkInterfaces(env);
        assertMatch(list, new RegExp(`\\d+\\. ${iface} \\(pcap BOSH ${alias} `));
      });

      await t.step("-a duration: marks from 3 VMs, each once, on its VM's interface", async () => {
        const file = `${home}/cells.pcapng`;
        const ts = start([
          "-i",
          iface,
          ...options,
          "-f",
          "udp port 5555",
          "-a",
          `duration:${DURATION_S}`,
          "-w",
          file,
        ]);
        await eventually("all 3 cells capturing", () => allCells(1));
        let ended = false;
        ts.done.then(() => ended = true);
        // different counts per cell and direction, so that misattribution shows
        const sent = await Promise.all(cells.map(async (cell, i) => {
          const [inbound, outbound] = await Promise.all([
            lab.traffic.udp({ from: ep(router), to: ep(cell), port: 5555, count: 3 + i }),
            lab.traffic.udp({ from: ep(cell), to: ep(router), port: 5555, count: 6 + 2 * i }),
          ]);
          return [...inbound, ...outbound].sort();
        }));
        assert(!ended, `tshark ended before the traffic was sent:\n${ts.stderr()}`);
        assertEquals(await tsharkExit(ts, (DURATION_S + 60) * 1000), 0, ts.stderr());
        const names = cells.map((vm) => `diego-cell/${vm.index} (${vm.id}) eth0`);
        const ifs = await interfaces(file);
        assertEquals(ifs.map((i) => i.name).sort(), [...names].sort());
        const pkts = await packets(file);
        for (const [i, name] of names.entries()) {
          const got = pkts.filter((p) => p.iface === name).flatMap((p) => p.tokens).sort();
          assertEquals(got, sent[i], `marker tokens on ${name}`);
        }
        assertEquals(pkts.length, sent.flat().length, "no packet twice, no other packet");
        await eventually("no agent capture left", () => allCells(0));
        // tshark ended it with SIGTERM at the duration: a clean stop, not a vanished client
        await eventually("the api's audit line", async () => (await audits()).length === 1);
        assertEquals((await audits()).map((a) => a.outcome), ["CAPTURE_STOPPED"]);
      });

      await t.step("a bad filter: tshark fails with our message, no hang", async () => {
        const r = await tshark(
          ["-i", iface, ...options, "-f", "udp port", "-a", "duration:60", "-w", `${home}/x`],
          env,
        );
        assert(r.code !== 0, `tshark exited ${r.code}`);
        assertMatch(r.stderr, /Error by extcap pipe: pcap extcap: filter "udp port" is not valid/);
      });

      await t.step("a missing option: tshark shows which preference to set", async () => {
        const r = await tshark(
          ["-i", iface, ...pref("--deployment", "cf"), "-a", "duration:60", "-w", `${home}/y`],
          env,
        );
        assert(r.code !== 0, `tshark exited ${r.code}`);
        assertStringIncludes(r.stderr, `nothing selected in ${iface}`);
        assertStringIncludes(r.stderr, `-o ${preferenceName(iface, "--groups")}:GROUP`);
      });

      await t.step("SIGTERM: the capture drains cleanly, no agent capture is left", async () => {
        const before = (await audits()).length;
        const ts = start(["-i", iface, ...options, "-w", `${home}/term.pcapng`]);
        await eventually("all 3 cells capturing", () => allCells(1));
        ts.child.kill("SIGTERM");
        // tshark 4.0 itself sometimes exits 1 when signalled (its dumpcap child reports an
        // interrupted select, or an empty error); what is ours to judge is that nothing came
        // from the extcap side: no pipe error, then the checks below on the lab.
        const code = await tsharkExit(ts, 60_000);
        assert(code === 0 || code === 1, `tshark exited ${code}:\n${ts.stderr()}`);
        assert(
          !/Error by extcap pipe/.test(ts.stderr()),
          `an extcap error reached tshark:\n${ts.stderr()}`,
        );
        await eventually(
          "the extcap process has exited",
          async () => (await processesWith(`${iface}\0`)).length === 0,
        );
        await eventually("no agent capture left", () => allCells(0));
        await eventually("the api's audit line", async () => (await audits()).length > before);
        const audit = (await audits()).slice(before);
        assertEquals(
          audit.map((a) => a.outcome),
          ["CAPTURE_STOPPED"],
          `${JSON.stringify(audit)}\ntshark stderr:\n${ts.stderr()}`,
        );
      });
    } catch (e) {
      for (const ts of running) console.error(`tshark stderr:\n${ts.stderr()}`);
      lab.dumpLogs(40);
      throw e;
    } finally {
      for (const ts of running) {
        try {
          ts.child.kill("SIGKILL");
        } catch { /* exited */ }
        await ts.done;
      }
      await lab.stop();
      await Deno.remove(home, { recursive: true });
    }
  },
});
