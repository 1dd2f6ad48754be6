/**
 * Chaos: an agent fails in the middle of a capture through the api with the real client writing a
 * file — SIGKILL, a graceful restart, its network cut (the bridge end of its veth down) and a hang
 * (SIGSTOP). In each case the capture goes on for the other sources (their packets sent after the
 * fault are in the file), the affected source ends with INSTANCE_UNAVAILABLE (CAPTURE_STOPPED for
 * the graceful restart, which drains), the file reads back with tshark, and the agent holds no
 * capture once it is back.
 */
import { isRoot, run } from "../../lab/netns.ts";
import type { LabVm } from "../../lab/landscape.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { withApiLab } from "../support/api_harness.ts";
import { exitCode } from "../support/bosh_client.ts";
import { chaosClients, checkCaptureFile } from "./support/chaos_client.ts";
import { pidByArg, record, until } from "./support/chaos.ts";

const root = isRoot();

interface Fault {
  name: string;
  /** status type the victim's source must end with */
  expect: RegExp;
  inject(vm: LabVm): Promise<void>;
  /** undoes the fault; the agent must be serving afterwards */
  repair(vm: LabVm): Promise<void>;
}

Deno.test({
  name: "chaos: agent faults mid-capture" + (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    await withApiLab({ groups: { router: 3 } }, async (lab, startApi) => {
      // agents send STATS every second, so 5 s of silence (the harness default) is a dead agent
      const api = await startApi();
      const clients = await chaosClients(lab);
      const [r0, r1, victim] = [0, 1, 2].map((i) => lab.vm("router", i));
      const vmIndex = lab.vms.indexOf(victim);
      const bridgeNs = `${lab.runId}-br`;
      const bridgePort = `${lab.runId}v${vmIndex}`;
      const agentPid = () => pidByArg(`/${lab.agentLogName(victim)}.yml`, victim.netns);
      let frozen = 0;
      const faults: Fault[] = [
        {
          name: "SIGKILL",
          expect: /INSTANCE_UNAVAILABLE/,
          inject: (vm) => lab.killAgent(vm),
          repair: (vm) => lab.restartAgent(vm),
        },
        {
          name: "graceful restart",
          expect: /CAPTURE_STOPPED|INSTANCE_UNAVAILABLE/,
          inject: (vm) => lab.restartAgent(vm),
          repair: () => Promise.resolve(),
        },
        {
          name: "link down",
          expect: /INSTANCE_UNAVAILABLE/,
          inject: async () => {
            await run("ip", ["-n", bridgeNs, "link", "set", bridgePort, "down"]);
          },
          repair: async () => {
            await run("ip", ["-n", bridgeNs, "link", "set", bridgePort, "up"]);
          },
        },
        {
          name: "SIGSTOP",
          expect: /INSTANCE_UNAVAILABLE/,
          inject: async () => {
            frozen = await agentPid();
            Deno.kill(frozen, "SIGSTOP");
          },
          repair: () => {
            Deno.kill(frozen, "SIGCONT");
            frozen = 0;
            return Promise.resolve();
          },
        },
      ];
      const figures: Record<string, unknown>[] = [];
      try {
        for (const fault of faults) {
          await t.step(`${fault.name}: the others go on, the file stays valid`, async () => {
            const file = `${clients.dir}/${fault.name.replace(/\W+/g, "-")}.pcapng`;
            const c = clients.start(api.server.url, [
              "-g",
              "router",
              "-f",
              "udp port 5700",
              "-o",
              file,
            ]);
            await c.waitFor(/capturing on router/, 3, 60_000);
            const before = await lab.traffic.udp({ from: r0, to: r1, port: 5700, count: 10 });
            const t0 = Date.now();
            let injected = false;
            try {
              await fault.inject(victim);
              injected = true;
              const origin = `router/2 \\(${victim.id}\\) \\(`;
              await c.waitFor(new RegExp(origin + fault.expect.source), 1, 60_000);
              const noticedMs = Date.now() - t0;
              const after = await lab.traffic.udp({ from: r1, to: r0, port: 5700, count: 10 });
              // a clean stop flushes every packet the agents captured before it
              c.child.kill("SIGINT");
              assertEquals(await exitCode(c, 60_000), 0, c.stderr());
              const got = await checkCaptureFile(file);
              const names = [r0, r1, victim].map((vm) => `router/${vm.index} (${vm.id}) eth0`);
              assertEquals(got.interfaces.map((i) => i.name).sort(), [...names].sort());
              for (const vm of [r0, r1]) {
                const toks = new Set(got.tokens.get(`router/${vm.index} (${vm.id}) eth0`));
                for (const tok of [...before, ...after]) {
                  assert(toks.has(tok), `${fault.name}: ${tok} missing on router/${vm.index}`);
                }
              }
              figures.push({ fault: fault.name, noticedMs, packets: got.packets });
            } finally {
              if (injected) await fault.repair(victim);
            }
            // back to serving, and holding no capture of the dead session
            await until(
              `agent router/2 after ${fault.name}: idle and healthy`,
              async () => {
                const h = await (await lab.fetchAgent(victim, "/health")).json();
                return h.healthy && h.active_captures === 0;
              },
              60_000,
              200,
            );
          });
        }
        await t.step("after all faults: a capture reaches all three agents", async () => {
          const file = `${clients.dir}/after.pcapng`;
          const c = clients.start(api.server.url, ["-g", "router", "-o", file, "--duration", "2s"]);
          assertEquals(await exitCode(c, 60_000), 0, c.stderr());
          assertEquals((await checkCaptureFile(file)).interfaces.length, 3);
        });
        record("agent faults", { faults: figures.length, crashes: 0, detail: figures });
      } catch (e) {
        console.error(clients.dump());
        throw e;
      } finally {
        if (frozen) Deno.kill(frozen, "SIGCONT");
        await run("ip", ["-n", bridgeNs, "link", "set", bridgePort, "up"], { allowFailure: true });
        await clients.close();
      }
    });
  },
});
