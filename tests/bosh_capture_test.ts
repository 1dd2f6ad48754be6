/**
 * `pcap bosh capture` end to end: the real client (a `deno run main.ts bosh capture` child
 * process) against the lab's real api, agents in namespaces, UAA and Director sims. Outputs are
 * read back with tshark, capinfos and tcpdump. One landscape is shared by the steps.
 */
import { isRoot, run } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { markerTokens, randomMarker, readMarkers } from "../lab/traffic.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { type Client, delay, exitCode, killClient, startClient } from "./support/bosh_client.ts";
import { DRAIN_TIMEOUT_MS } from "../cli/bosh_capture.ts";
import { interfaces, packets } from "./support/capture_readback.ts";

const root = isRoot();
const quiet = () => {};
const dec = new TextDecoder();
/** the second Ctrl-C must end the client this fast: far below DRAIN_TIMEOUT_MS and the api's
 * own stop timeout (9 s in the lab), generous for a loaded 2-core box */
const SECOND_CTRL_C_BOUND_MS = 5_000;

/** Pid of the VM's agent: the lab's deno process in the VM namespace running its agent.yml. */
async function agentPid(lab: Landscape, vm: LabVm): Promise<number> {
  const config = `/${lab.agentLogName(vm)}.yml`;
  const { stdout } = await run("ip", ["netns", "pids", vm.netns!]);
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    let argv: string[];
    try {
      argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    } catch {
      continue; // exited meanwhile
    }
    if (argv[0] === Deno.execPath() && argv.some((a) => a.endsWith(config))) return Number(pid);
  }
  throw new Error(`no agent process of ${vm.group}/${vm.index} in ${vm.netns}`);
}

Deno.test({
  name: "pcap bosh capture on the lab" + (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    const lab = await Landscape.start({
      groups: { "diego-cell": 3, router: 1 },
      api: true,
      log: quiet,
    });
    const dir = await Deno.makeTempDir({ prefix: "pcap-bosh-test-" });
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
      const common = ["-d", "cf", "--ca-cert", lab.pki.caPath, "-f", "udp port 5555"];
      const client = (args: string[], stdout = false) => {
        const c = startClient([...common, ...args], env, stdout);
        clients.push(c);
        return c;
      };
      const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });
      const router = lab.vm("router");
      const cells = [0, 1, 2].map((i) => lab.vm("diego-cell", i));

      await t.step("one named interface per cell; exact marked packets per cell", async () => {
        const file = `${dir}/cells.pcapng`;
        const c = client(["-g", "diego-cell", "-o", file]);
        await c.waitFor(/capturing on diego-cell/, 3);
        // different counts per cell and direction, so that misattribution shows
        const sent = await Promise.all(cells.map(async (cell, i) => {
          const [inbound, outbound] = await Promise.all([
            lab.traffic.udp({
              from: ep(router),
              to: ep(cell),
              port: 5555,
              count: 3 + i,
              rate: 200,
            }),
            lab.traffic.udp({ from: ep(cell), to: ep(router), port: 5555, count: 6 + 2 * i }),
          ]);
          return [...inbound, ...outbound].sort();
        }));
        c.child.kill("SIGINT");
        assertEquals(await exitCode(c), 0, c.stderr());
        // interfaces appear in the order the sources started; compare by name
        const names = cells.map((vm) => `diego-cell/${vm.index} (${vm.id}) eth0`);
        const ifs = await interfaces(file);
        assertEquals(ifs.map((i) => i.name).sort(), [...names].sort());
        const pkts = await packets(file);
        for (const [i, name] of names.entries()) {
          const info = ifs.find((x) => x.name === name)!;
          assertEquals(info.packets, sent[i].length, `packets on ${name}`);
          assertEquals(info.statEntries, 1, `statistics block of ${name}`);
          const got = pkts.filter((p) => p.iface === name).flatMap((p) => p.tokens).sort();
          assertEquals(got, sent[i], `marker tokens on ${name}`);
        }
        for (let i = 1; i < pkts.length; i++) {
          assert(pkts[i].ns >= pkts[i - 1].ns, `timestamp of packet ${i + 1} goes back`);
        }
        assertMatch(c.stderr(), /captured \d+ packets .* from 3 sources/);
      });

      await t.step("-o - into tcpdump -r - shows packets while the capture runs", async () => {
        // status lines go to stderr; tcpdump would choke on anything but pcapng on stdout
        const c = client(["-g", "router", "-o", "-"], true);
        const tcpdump = new Deno.Command("tcpdump", {
          args: ["-r", "-", "-n", "-l", "-A"],
          stdin: "piped",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        let seen = "";
        const piping = c.child.stdout.pipeTo(tcpdump.stdin).catch(() => {});
        const reading = (async () => {
          for await (const chunk of tcpdump.stdout) seen += dec.decode(chunk, { stream: true });
        })();
        try {
          await c.waitFor(/capturing on router/, 1);
          const marker = randomMarker();
          const tokens = await lab.traffic.udp({
            from: ep(cells[0]),
            to: ep(router),
            port: 5555,
            count: 5,
            marker,
          });
          const until = Date.now() + 15_000;
          while (!tokens.every((tk) => seen.includes(tk)) && Date.now() < until) await delay(50);
          assert(tokens.every((tk) => seen.includes(tk)), `tcpdump output:\n${seen}`);
          let exited = false;
          c.done.then(() => exited = true);
          await delay(0);
          assert(!exited, "the capture ended before its packets were shown");
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c), 0, c.stderr());
        } finally {
          await killClient(c);
          await piping;
          await reading;
          await tcpdump.status;
        }
      });

      await t.step(
        "--format pcap with --max-packets stops by itself; tcpdump reads it",
        async () => {
          const file = `${dir}/router.pcap`;
          const c = client(["-g", "router", "-o", file, "--format", "pcap", "--max-packets", "7"]);
          await c.waitFor(/capturing on router/, 1);
          const marker = randomMarker();
          await lab.traffic.udp({
            from: ep(cells[1]),
            to: ep(router),
            port: 5555,
            count: 30,
            rate: 100,
            marker,
          });
          assertEquals(await exitCode(c), 0, c.stderr());
          assertMatch(c.stderr(), /max-packets 7 reached|packet limit/);
          const r = await run("tcpdump", ["-r", file, "-n"]);
          const lines = r.stdout.split("\n").filter((l) => / IP \d.* UDP/.test(l));
          assertEquals(lines.length, 7, r.stdout);
          assertEquals(await readMarkers(file), markerTokens(marker, 7));
        },
      );

      await t.step("BOSH_CLIENT/BOSH_CLIENT_SECRET client credentials, no config", async () => {
        const secret = crypto.randomUUID();
        lab.uaa.clients.push({
          id: "pcap-ops",
          secret,
          grantTypes: ["client_credentials"],
          authorities: ["bosh.admin"],
        });
        const file = `${dir}/cc.pcapng`;
        const c = startClient([...common, "-g", "router", "-o", file, "--duration", "1s"], {
          HOME: dir,
          PCAP_API: lab.apiUrl!,
          BOSH_ENVIRONMENT: lab.director.url,
          BOSH_CLIENT: "pcap-ops",
          BOSH_CLIENT_SECRET: secret,
          BOSH_CA_CERT: lab.pki.caPath,
        });
        clients.push(c);
        assertEquals(await exitCode(c), 0, c.stderr());
        assertEquals((await interfaces(file)).map((i) => i.name), [
          `router/0 (${router.id}) eth0`,
        ]);
        assertEquals(lab.uaa.grantCounts.client_credentials, 1);
      });

      await t.step("SIGINT twice stops at once and still leaves a valid file", async () => {
        const file = `${dir}/twice.pcapng`;
        const flows = await Promise.all(
          cells.map((cell) =>
            lab.traffic.steady({ from: ep(router), to: ep(cell), port: 5555, rate: 300 })
          ),
        );
        // A frozen agent makes the clean drain impossible: the api would wait for it for its
        // stop timeout (drain_timeout - 1 s = 9 s in the lab) and the client for DRAIN_TIMEOUT_MS
        // (30 s). Only a second Ctrl-C that really stops at once ends the client within the bound.
        const frozen = await agentPid(lab, cells[2]);
        let stopped = false;
        try {
          const c = client(["-g", "diego-cell", "-o", file]);
          await c.waitFor(/capturing on diego-cell/, 3);
          await delay(500);
          // frozen before the first Ctrl-C: after it, the agents could drain (~100 ms) before
          // the SIGSTOP lands, and the client would be gone before the second Ctrl-C
          Deno.kill(frozen, "SIGSTOP");
          stopped = true;
          c.child.kill("SIGINT");
          await c.waitFor(/stopping \(interrupted\)/, 1);
          // let the other two agents drain, so their final STATS show up in the file
          await delay(1000);
          const t0 = performance.now();
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c, DRAIN_TIMEOUT_MS + 10_000), 0, c.stderr());
          const took = performance.now() - t0;
          assert(
            took < SECOND_CTRL_C_BOUND_MS,
            `second Ctrl-C: exited after ${Math.round(took)} ms, not within ` +
              `${SECOND_CTRL_C_BOUND_MS} ms (drain timeout ${DRAIN_TIMEOUT_MS} ms)`,
          );
          assertMatch(c.stderr(), /interrupted again: stopping at once/);
          assertMatch(c.stderr(), /stopped at once; packets still in flight were not received/);
        } finally {
          if (stopped) Deno.kill(frozen, "SIGCONT");
          await Promise.all(flows.map((f) => f.stop()));
        }
        // the file is complete: capinfos reads it to the end, every interface has its ISB
        const info = await run("capinfos", ["-c", "-M", file]);
        assertMatch(info.stdout, /Number of packets:\s+[1-9]\d*/, info.stdout);
        const ifs = await interfaces(file);
        assertEquals(ifs.length, 3);
        assert(ifs.every((i) => i.statEntries === 1), JSON.stringify(ifs));
        const r = await run("tshark", ["-r", file, "-n"]);
        assert(r.stdout.split("\n").length > 10, "too few packets in the file");
      });
    } catch (e) {
      for (const c of clients) console.error(`client stderr:\n${c.stderr()}`);
      lab.dumpLogs(40);
      throw e;
    } finally {
      await Promise.all(clients.map(killClient));
      await lab.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
