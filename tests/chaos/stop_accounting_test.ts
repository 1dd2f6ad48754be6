/**
 * Found by the soak (docs/reliability.md): a capture stopped while traffic keeps flowing reported
 * in its final STATS a kernel `received` count that included packets the agent neither delivered
 * nor counted as discarded — those that reached the ring during the stop's drain (one sender
 * batch, 128 packets, in the 3-minute soak). The engine now freezes the kernel counters when it
 * notices the stop and delivers exactly the packets they count. Each of 8 stops under 10 kpps must
 * account for every packet: delivered + discarded = received.
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import type { SourceStats } from "../../protocol/messages.ts";
import { compileGenerator, FILTER, generateAll } from "../../bench/bench_support.ts";
import { genTargets } from "../../bench/fan_in.ts";
import { assertEquals } from "../support/assert.ts";
import { startRawCapture, startUnlimitedApi } from "./support/chaos_client.ts";

Deno.test({
  name: "chaos: stops under continuous traffic account for every packet",
  ignore: !isRoot(),
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    const tmp = await Deno.makeTempDir({ prefix: "pcap-chaos-stop-" });
    try {
      const gen = await compileGenerator(tmp);
      const { url } = await startUnlimitedApi(lab);
      const rate = 10_000;
      const gens = generateAll(gen, genTargets(lab), 200, rate, rate * 20);
      const off: string[] = [];
      for (let i = 0; i < 8; i++) {
        const ws = await startRawCapture(lab, url, {
          bosh: { deployment: "cf", groups: ["router"] },
          filter: FILTER,
          // about a second, ended by the api's duration limit while traffic flows
          limits: { duration_ms: 1000 },
        });
        let got = 0, final: SourceStats | null = null;
        while (true) {
          const m = await ws.next();
          if (m === null || (typeof m === "object" && "close" in m)) break;
          const e = decodeApiMessage(m);
          if (e.kind === "packets") got += e.count;
          if (e.kind === "stats" && e.stats.final) final = e.stats;
        }
        ws.close();
        const f = final!;
        const drops = f.dropped + f.if_dropped + f.engine_dropped + f.agent_dropped +
          f.api_dropped;
        if (got + drops !== f.received) {
          off.push(`stop ${i}: received ${f.received}, delivered ${got}, discarded ${drops}`);
        }
      }
      await gens;
      assertEquals(off, [], "packets unaccounted at a stop");
    } finally {
      await lab.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
