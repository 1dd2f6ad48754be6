/**
 * Chaos: the api process fails under three running captures of the real client, and a client
 * dies under a running capture.
 * - SIGTERM: every capture drains; each client exits 0 with a valid file holding every packet
 *   sent before the signal, and the audit has one line per capture. (A second SIGTERM during the
 *   drain is tests/api_double_sigterm_test.ts.)
 * - SIGKILL: each client exits non-zero saying the connection to the api closed before the capture
 *   ended, its file is still valid, and the agents release their captures.
 * - client SIGKILL: the agents release their captures and their workers (threads and fds back to
 *   what they were before the capture).
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { exitCode, killClient } from "../support/bosh_client.ts";
import { chaosClients, checkCaptureFile } from "./support/chaos_client.ts";
import { extraItems, pidByArg, procInventory, procSample, record, until } from "./support/chaos.ts";

const root = isRoot();

Deno.test({
  name: "chaos: api and client faults under running captures" + (root ? "" : " (ignored)"),
  ignore: !root,
  async fn(t) {
    // 3 captures at once on each agent and of one user: lift both limits (2 by default)
    const lab = await Landscape.start({
      groups: { router: 3 },
      agentConfig: { limits: { concurrent_captures: 5 } },
      log: () => {},
    });
    const clients = await chaosClients(lab);
    const routers = [0, 1, 2].map((i) => lab.vm("router", i));
    const agentPids = await Promise.all(
      routers.map((vm) => pidByArg(`/${lab.agentLogName(vm)}.yml`, vm.netns)),
    );
    const steady = () =>
      until(
        "agents idle with their warm worker up",
        async () => {
          for (const vm of routers) {
            const h = await (await lab.fetchAgent(vm, "/health")).json();
            if (h.active_captures !== 0 || h.warm_workers !== 1) return false;
          }
          return true;
        },
        30_000,
      );
    const idle = () =>
      until(
        "agents hold no capture",
        async () => {
          for (const vm of routers) {
            const h = await (await lab.fetchAgent(vm, "/health")).json();
            if (h.active_captures !== 0) return false;
          }
          return true;
        },
        30_000,
        100,
      );
    const three = async (url: string, tag: string) => {
      const files = [0, 1, 2].map((i) => `${clients.dir}/${tag}-${i}.pcapng`);
      const cs = files.map((f, i) =>
        clients.start(url, ["-g", "router", "-f", `udp port ${5710 + i}`, "-o", f])
      );
      await Promise.all(cs.map((c) => c.waitFor(/capturing on router/, 3, 60_000)));
      const sent = await Promise.all(
        [0, 1, 2].map((i) =>
          lab.traffic.udp({ from: routers[i], to: routers[(i + 1) % 3], port: 5710 + i, count: 8 })
        ),
      );
      return { files, cs, sent };
    };
    const figures: Record<string, unknown> = {};
    try {
      await t.step("SIGTERM with 3 running captures: all drain", async () => {
        const url = await lab.startApi({
          drain_timeout: "8s",
          limits: { per_user_concurrent_captures: 5 },
        });
        const { files, cs, sent } = await three(url, "term");
        await lab.stopApi(); // SIGTERM; waits for the exit
        for (const [i, c] of cs.entries()) {
          assertEquals(await exitCode(c, 60_000), 0, c.stderr());
          const got = await checkCaptureFile(files[i]);
          const all = [...got.tokens.values()].flat();
          for (const tok of sent[i]) assert(all.includes(tok), `capture ${i}: ${tok} lost`);
          assertEquals(got.interfaces.length, 3);
          assert(got.interfaces.every((f) => f.statEntries === 1), JSON.stringify(got.interfaces));
        }
        const audit = Deno.readTextFileSync(`${lab.dir}/audit.log`).trim().split("\n")
          .map((l) => JSON.parse(l));
        assertEquals(audit.length, 3, JSON.stringify(audit));
        await idle();
      });

      await t.step("SIGKILL: clients exit with a clear error and a valid file", async () => {
        const url = await lab.startApi({ limits: { per_user_concurrent_captures: 5 } });
        const { files, cs } = await three(url, "kill");
        Deno.kill(await pidByArg(`${lab.dir}/api.yml`), "SIGKILL");
        for (const [i, c] of cs.entries()) {
          const code = await exitCode(c, 90_000);
          assert(code !== 0, `client ${i} exited 0 after the api was killed`);
          assertMatch(c.stderr(), /connection to the pcap API .* closed before the capture ended/);
          await checkCaptureFile(files[i]);
        }
        await lab.stopApi(); // forget the dead process
        await idle();
      });

      await t.step("client SIGKILL: agents release captures, threads and fds", async () => {
        const url = await lab.startApi();
        // the level to come back to: no capture, and the idle worker that replaces the one the
        // last capture took (started ~2 s after that capture began) is up
        await steady();
        const before = agentPids.map(procSample);
        const inventory = agentPids.map(procInventory);
        const c = clients.start(url, ["-g", "router", "-o", `${clients.dir}/gone.pcapng`]);
        await c.waitFor(/capturing on router/, 3, 60_000);
        const during = agentPids.map(procSample);
        const t0 = Date.now();
        await killClient(c);
        await idle();
        const releasedMs = Date.now() - t0;
        await steady();
        // the capture worker's thread and the capture's fds go away (tokio's blocking threads
        // linger up to 10 s, hence the generous deadline)
        // a miss throws what is left (thread names, fd targets), which until reports
        await until(
          "agent threads and fds back to their level before the capture",
          () =>
            agentPids.every((pid, i) => {
              const s = procSample(pid);
              if (s.threads <= before[i].threads && s.fds <= before[i].fds) return true;
              const now = procInventory(pid);
              throw new Error(
                `agent ${pid}: threads ${before[i].threads}→${s.threads}, fds ` +
                  `${before[i].fds}→${s.fds}; extra threads ` +
                  `${JSON.stringify(extraItems(inventory[i].threads, now.threads))}, extra fds ` +
                  JSON.stringify(extraItems(inventory[i].fds, now.fds)),
              );
            }),
          60_000,
          250,
        );
        figures.clientKill = {
          releasedMs,
          threads: before.map((b, i) => `${b.threads}/${during[i].threads}`),
          fds: before.map((b, i) => `${b.fds}/${during[i].fds}`),
        };
      });
      record("api and client faults", { faults: 3, crashes: 0, ...figures });
    } catch (e) {
      await lab.stopApi();
      console.error(clients.dump());
      lab.dumpLogs(40);
      throw e;
    } finally {
      await clients.close();
      await lab.stop();
    }
  },
});
