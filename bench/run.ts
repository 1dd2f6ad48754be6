// `deno task bench`: runs every benchmark in turn, the capture engine first.
//   deno task bench                          (everything, ~16 min on the 2-core lab machine)
//   deno task bench -- --quick               (fewer rungs and runs, ~5 min)
//   deno task bench -- --only fan_in,fan_out (a subset; --only may be repeated)
//   deno task bench e2e [--quick]            (one benchmark by name: bare names act as --only)
// e2e (pcap-bosh vs ssh + tcpdump) needs openssh-server: `make bench` installs it
// (scripts/install_deps.sh … bench); it runs its own 3-VM lab, ~65 s quick, ~5.5 min full.
// fan_out, fan_in and api_memory share one lab (50 VMs with fan_out, else 10) to save start-up;
// fan_out runs first, on agents that have not streamed yet (after fan_in's load some agents kept
// using CPU for a while, which slowed the next fan-out).
import type { Landscape } from "../lab/landscape.ts";
import { runCaptureBench } from "./capture.ts";
import { runAgentStreamBench } from "./agent_stream.ts";
import { runFanInBench, startBenchLab } from "./fan_in.ts";
import { runFanOutBench } from "./fan_out.ts";
import { runApiMemoryBench } from "./api_memory.ts";
import { runE2eBench } from "./e2e.ts";
import { runAgentIdleMemoryBench } from "./agent_idle_memory.ts";
import { holdFreedMemory } from "./free_page_reporting.ts";

const NAMES = [
  "capture",
  "agent_stream",
  "e2e",
  "fan_in",
  "fan_out",
  "api_memory",
  "agent_memory",
] as const;
type Name = typeof NAMES[number];

/** Selected benchmarks from the arguments. Pure. */
export function parseArgs(args: string[]): { quick: boolean; only: Set<Name> } {
  const only = new Set<Name>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--quick" || a === "--") continue; // `deno task bench -- …` passes the "--"
    const value = a === "--only"
      ? args[++i]
      : a.startsWith("--only=")
      ? a.slice(7)
      : (NAMES as readonly string[]).includes(a)
      ? a
      : null;
    if (value === null || value === undefined) {
      throw new Error(
        `bench: unknown argument "${a}"; use --quick and/or NAME or --only NAME[,NAME] ` +
          `(${NAMES.join(", ")})`,
      );
    }
    for (const n of value.split(",").filter(Boolean)) {
      if (!(NAMES as readonly string[]).includes(n)) {
        throw new Error(`bench: no benchmark "${n}"; choose from ${NAMES.join(", ")}`);
      }
      only.add(n as Name);
    }
  }
  return { quick: args.includes("--quick"), only: only.size ? only : new Set(NAMES) };
}

async function main(): Promise<void> {
  const { quick, only } = parseArgs(Deno.args);
  const started = performance.now();
  const held = holdFreedMemory();
  console.log(`bench: ${held.note}`);
  try {
    await runSelected(quick, only);
  } finally {
    held.restore();
  }
  console.log(`\nbench: done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

async function runSelected(quick: boolean, only: Set<Name>): Promise<void> {
  const section = (title: string, cmd: string) =>
    console.log(`\n## ${title}\n\nCommand: \`${cmd}${quick ? " --quick" : ""}\`\n`);
  if (only.has("capture")) {
    section("Capture engine", "deno run -A bench/capture.ts");
    if (quick) {
      await runCaptureBench({
        ladders: { 22: [300_000, Infinity], 1472: [200_000, Infinity] },
        fileRates: {},
      });
    } else {
      await runCaptureBench();
    }
  }
  if (only.has("agent_stream")) {
    section("Agent → one reader over mTLS", "deno run -A bench/agent_stream.ts");
    await runAgentStreamBench({ quick });
  }
  if (only.has("e2e")) {
    section("End to end against ssh + tcpdump", "deno run -A bench/e2e.ts");
    await runE2eBench({ quick });
  }
  const labBenches = ["fan_in", "fan_out", "api_memory"].filter((n) => only.has(n as Name));
  if (labBenches.length) {
    const fanOut = quick ? 30 : 50;
    const t0 = performance.now();
    const lab: Landscape = await startBenchLab(only.has("fan_out") ? fanOut : 10);
    const labStartSecs = (performance.now() - t0) / 1000;
    try {
      if (only.has("fan_out")) {
        section("Fan-out", `deno run -A bench/fan_out.ts --agents ${fanOut}`);
        await runFanOutBench({ quick, lab, agents: fanOut, labStartSecs });
      }
      if (only.has("fan_in")) {
        section("End to end and fan-in", "deno run -A bench/fan_in.ts");
        await runFanInBench({ quick, lab });
      }
      if (only.has("api_memory")) {
        section("Memory", "deno run -A bench/api_memory.ts");
        await runApiMemoryBench({ quick, lab });
      }
    } finally {
      await lab.stop();
    }
  }
  if (only.has("agent_memory")) {
    // its own small lab: half the agents with V8's defaults, half with the shipped flags
    section("Agent memory over a long idle", "deno run -A bench/agent_idle_memory.ts");
    await runAgentIdleMemoryBench({ quick });
  }
}

if (import.meta.main) await main();
