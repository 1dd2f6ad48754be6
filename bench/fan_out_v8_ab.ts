// A/B of the agents' V8 flags on one 50-agent lab: for each round and variant in turn, the
// agents are restarted with DENO_V8_FLAGS set to that variant (the api and the bench keep their
// own) and one quick fan-out is measured.
//   deno run -A bench/fan_out_v8_ab.ts --agents 50 --rounds 2 -- "" "--no-flush-bytecode"
import { Landscape } from "../lab/landscape.ts";
import { runFanOutBench } from "./fan_out.ts";
import { sleep, table } from "./bench_support.ts";

const arg = (name: string) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : undefined;
};
const n = arg("--agents") ?? 50;
const rounds = arg("--rounds") ?? 2;
const variants = Deno.args.slice(Deno.args.indexOf("--") + 1);
const lab = await Landscape.start({
  groups: { bench: n },
  agentConfig: { log_level: "info" },
  readyTimeoutMs: 120_000,
  log: () => {},
});
const results = new Map<string, number[]>(variants.map((v) => [v, []]));
try {
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      if (v) Deno.env.set("DENO_V8_FLAGS", v);
      else Deno.env.delete("DENO_V8_FLAGS");
      for (let i = 0; i < lab.vms.length; i += 10) {
        await Promise.all(lab.vms.slice(i, i + 10).map((vm) => lab.restartAgent(vm)));
      }
      Deno.env.delete("DENO_V8_FLAGS"); // the api started by the run keeps the default
      await sleep(3000);
      const text = await runFanOutBench({ quick: true, lab, agents: n, labStartSecs: 0 })
        .catch((e) => `failed: ${(e as Error).message.slice(0, 300)}`);
      console.log(`round ${r + 1}, agents' V8 flags "${v}":\n\n${text}\n`);
      const m = /\| \d+ agents: median \(runs [^)]*\) \| (\d+) \|/.exec(text);
      results.get(v)!.push(m ? Number(m[1]) : NaN);
    }
  }
} finally {
  await lab.stop();
}
console.log(table(
  ["agents' DENO_V8_FLAGS", ...Array.from({ length: rounds }, (_, i) => `round ${i + 1}, ms`)],
  variants.map((v) => [v || "(none)", ...results.get(v)!]),
));
