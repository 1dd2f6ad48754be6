// The agents' memory over a long idle after a capture, by V8 flag set, side by side in one lab:
// half the agents run V8's defaults, half the shipped lib/v8_flags.ts (--no-memory-reducer).
// The reducer is what shrinks an idle heap after a capture, so this is the cost of turning it off.
// Each agent captures the same traffic (64 B and 1500 B bursts) through the api; RSS is sampled
// before, at the end of the capture, and for `idle` seconds after the stop.
//   deno run -A bench/agent_idle_memory.ts [--quick] [--agents N]   (N per variant, default 2)
import { Landscape } from "../lab/landscape.ts";
import { PCAP_V8_FLAGS } from "../lib/v8_flags.ts";
import { ApiReader, genTargets, startBenchApi } from "./fan_in.ts";
import {
  compileGenerator,
  generateAll,
  median,
  settle,
  sleep,
  statusKb,
  table,
} from "./bench_support.ts";

const VARIANTS: { label: string; flags: readonly string[] }[] = [
  { label: "V8 defaults", flags: [] },
  { label: PCAP_V8_FLAGS.join(" "), flags: PCAP_V8_FLAGS },
];
const mb = (kb: number) => (kb / 1024).toFixed(1);

export async function runAgentIdleMemoryBench(o: { quick?: boolean; agents?: number } = {}) {
  const per = o.agents ?? 2;
  const marks = o.quick ? [5, 30, 60] : [5, 30, 60, 120, 300];
  const bursts = o.quick ? 1 : 3;
  const lab = await Landscape.start({
    groups: { bench: per * VARIANTS.length },
    agentConfig: { log_level: "info" },
    agentV8Flags: (vm) => VARIANTS[vm.index % VARIANTS.length].flags,
    log: () => {},
  });
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-idlemem-" });
  try {
    const gen = await compileGenerator(tmp);
    await startBenchApi(lab);
    const pids = lab.vms.map((vm) => lab.agentPid(vm)!);
    const samples = new Map<string, number[]>(); // column → RSS kB per agent
    const sample = (col: string, field: "VmRSS" | "VmHWM" = "VmRSS") =>
      samples.set(col, pids.map((p) => statusKb(p, field)));
    await sleep(10_000);
    sample("idle");
    const r = new ApiReader(lab, await lab.mintToken(), lab.vms.length);
    await r.start(lab.vms);
    const targets = genTargets(lab);
    let expect = 0;
    for (let b = 0; b < bursts; b++) {
      for (const [payload, rate, count] of [[22, 100_000, 300_000], [1458, 20_000, 60_000]]) {
        const g = await generateAll(gen, targets, payload, rate, count);
        expect += g.sent;
        await settle(() => r.packets, expect);
      }
    }
    sample("capturing");
    await r.stop();
    const lost = expect - r.packets;
    const t0 = performance.now();
    for (const s of marks) {
      await sleep(Math.max(0, s * 1000 - (performance.now() - t0)));
      sample(`+${s} s idle`);
    }
    sample("peak (VmHWM)", "VmHWM");
    const cols = [...samples.keys()];
    const rows = VARIANTS.map((v, i) => {
      const mine = lab.vms.flatMap((vm, k) => vm.index % VARIANTS.length === i ? [k] : []);
      return [v.label, ...cols.map((c) => mb(median(mine.map((k) => samples.get(c)![k]))))];
    });
    const text = `Agent RSS (MB, median of ${per} agents per variant), one capture of ` +
      `${expect} packets (${lost} not received), then idle\n\n` +
      table(["agents' V8 flags", ...cols], rows);
    console.log(text);
    return text;
  } catch (e) {
    lab.dumpLogs(30);
    throw e;
  } finally {
    await lab.stopApi();
    await lab.stop();
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--agents");
  await runAgentIdleMemoryBench({
    quick: Deno.args.includes("--quick"),
    agents: i >= 0 ? Number(Deno.args[i + 1]) : undefined,
  });
}
