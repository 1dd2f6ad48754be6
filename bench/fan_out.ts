// Fan-out: time from the client's start request to every one of N agents streaming (all N
// SOURCE frames received by the client), through the api process, on a lab of N VMs with real
// agent processes. First the agents' memory (RSS idle and while capturing) and their idle CPU,
// so the report says what N costs on this machine. One unmeasured warm-up capture (token keys,
// connections, JIT), then `runs` measured ones; the median is reported.
//   deno run -A bench/fan_out.ts [--quick] [--agents N] [--agent-buffer BYTES]
//   deno run -A bench/fan_out.ts --ab 33554432,4194304 [--agents N] [--rounds R]  (ring A/B)
//   deno run -A bench/fan_out.ts --v8-ab '|--no-memory-reducer' [--agents N] [--rounds R]
//     (A/B of the agents' V8 flags, sets separated by "|"; the lab's default is the shipped
//     lib/v8_flags.ts)
// --agent-buffer sets the agents' capture.buffer_size (kernel ring; default 4 MiB, 32 MiB until
// 2026-12-02): with 50 agents starting at once, allocating and zeroing 50 big rings was most of
// the capture workers' CPU. The last table breaks a start down (the api's and the agents' own
// timings from their logs: "capture starting", "agents streaming", "capture started").
import { Landscape } from "../lab/landscape.ts";
import { ApiReader, startBenchApi, startBenchLab } from "./fan_in.ts";
import {
  cpuByThreadName,
  median,
  pidOf,
  procCpuNs,
  sleep,
  statusKb,
  table,
} from "./bench_support.ts";
import { withFreedMemoryHeld } from "./free_page_reporting.ts";

export interface FanOutOptions {
  quick?: boolean;
  /** a running lab with ≥ agents VMs (its api must not be running); default: its own */
  lab?: Landscape;
  agents?: number;
  /** how long the given lab took to start (for the report) */
  labStartSecs?: number;
  /** agents' capture.buffer_size for a lab of its own */
  agentBuffer?: number;
}

const mb = (kb: number) => Math.round(kb / 1024);

type Steps = Record<string, [number, number]>;

/** Per agent and run, from its "capture started" log line: when it began opening the engine
 * and how long that took, in ms after the client's start request, and the capture thread's
 * steps ([wall ms, CPU ms] each). */
function agentStarts(lab: Landscape, vms: Landscape["vms"], t0Wall: number) {
  const out: Array<{ reachedMs: number; openMs: number; steps: Steps }> = [];
  for (const vm of vms) {
    const lines = lab.logs(lab.agentLogName(vm)).split("\n").filter((l) =>
      l.includes('"capture started"')
    );
    const last = lines.at(-1);
    if (!last) continue;
    const j = JSON.parse(last);
    const at = Date.parse(j.time) - t0Wall;
    if (at < 0 || typeof j.open_ms !== "number") continue; // an earlier run's line
    out.push({ reachedMs: at - j.open_ms, openMs: j.open_ms, steps: j.open_steps ?? {} });
  }
  return out;
}

/** The api's own timings of the run (its "capture starting" and "agents streaming" lines). */
function apiPhases(lab: Landscape, t0Wall: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of lab.logs("api").split("\n")) {
    if (!l.includes('"capture starting"') && !l.includes('"agents streaming"')) continue;
    const j = JSON.parse(l);
    if (Date.parse(j.time) < t0Wall - 1) continue;
    for (const k of ["filter_ms", "resolve_ms", "plan_ms"]) if (k in j) out[k] = j[k];
    for (const k of ["tls_ms", "response_ms", "source_ms"]) {
      if (Array.isArray(j[k])) [out[k], out[`${k}_max`]] = j[k];
    }
  }
  return out;
}

interface FanOutRun {
  ms: number;
  /** median / max over agents: request reached the agent (ms after start), engine open (ms) */
  reached: [number, number];
  open: [number, number];
  /** CPU ms during the run: api, all agents together */
  apiCpuMs: number;
  agentsCpuMs: number;
  /** the agents' CPU ms in the run by thread kind (main "deno", capture "worker-N", …) */
  agentThreadsMs: Map<string, number>;
  /** median over agents of each capture-thread step: [wall ms, CPU ms] */
  steps: Steps;
  /** the api's phases (ms; tls/response/source after the fan-out began, median and _max) */
  api: Record<string, number>;
}

/** Median and all runs of "start → all N SOURCE frames" for the first n VMs. */
async function timeFanOut(
  lab: Landscape,
  n: number,
  runs: number,
  apiPid: number,
  agentPids: number[],
) {
  const vms = lab.vms.slice(0, n);
  const out: FanOutRun[] = [];
  let apiKb = 0;
  const cpu = (pids: number[]) => pids.reduce((s, p) => s + procCpuNs(p), 0) / 1e6;
  for (let i = 0; i <= runs; i++) {
    const r = new ApiReader(lab, await lab.mintToken(), vms.length);
    try {
      const api0 = cpu([apiPid]), agents0 = cpu(agentPids);
      const threads0 = cpuByThreadName(agentPids);
      await r.start(vms);
      const apiCpuMs = cpu([apiPid]) - api0, agentsCpuMs = cpu(agentPids) - agents0;
      const agentThreadsMs = new Map(
        [...cpuByThreadName(agentPids)].map(([k, v]) => [k, (v - (threads0.get(k) ?? 0)) / 1e6]),
      );
      apiKb = Math.max(apiKb, statusKb(apiPid, "VmRSS"));
      await r.stop();
      if (i > 0) { // run 0 warms up (keys, connections, JIT)
        const starts = agentStarts(lab, vms, r.startedAtWall);
        const mm = (xs: number[]): [number, number] => [median(xs), Math.max(...xs)];
        out.push({
          ms: r.allSourcesMs,
          reached: mm(starts.map((s) => s.reachedMs)),
          open: mm(starts.map((s) => s.openMs)),
          apiCpuMs,
          agentsCpuMs,
          agentThreadsMs,
          steps: Object.fromEntries(
            Object.keys(starts[0]?.steps ?? {}).map((k) => [k, [
              median(starts.map((a) => a.steps[k]?.[0] ?? 0)),
              median(starts.map((a) => a.steps[k]?.[1] ?? 0)),
            ]]),
          ),
          api: apiPhases(lab, r.startedAtWall),
        });
      }
    } finally {
      await r.close();
    }
    // Each start meets idle agents, as a user's would: capture threads released and the
    // pre-warmed worker replaced (an agent starts the replacement 2 s after a start, ~35 ms of
    // CPU; 50 of them at once must not land on the next measured start).
    await sleep(3000);
  }
  return { runs: out, apiKb };
}

export async function runFanOutBench(o: FanOutOptions = {}): Promise<string> {
  const n = o.agents ?? 50;
  const runs = o.quick ? 3 : 5;
  const sizes = o.quick ? [n] : [...new Set([10, Math.round(n / 2), n])].filter((k) => k <= n);
  const t0 = performance.now();
  const lab = o.lab ?? await startBenchLab(n, o.agentBuffer);
  const labSecs = o.labStartSecs ?? (performance.now() - t0) / 1000;
  try {
    const vms = lab.vms.slice(0, n);
    const agentPids = vms.map((vm) => pidOf(`${lab.dir}/${lab.agentLogName(vm)}.yml`, "agent"));
    const apiPid = await startBenchApi(lab);
    const rss = () => agentPids.map((p) => statusKb(p, "VmRSS"));
    const idle = rss();
    const cpu0 = agentPids.reduce((s, p) => s + procCpuNs(p), 0);
    await sleep(2000);
    const idleCpu = (agentPids.reduce((s, p) => s + procCpuNs(p), 0) - cpu0) / 2e9; // CPU-s per s
    // Memory while all n capture (idle link), sampled once every SOURCE has arrived.
    const r = new ApiReader(lab, await lab.mintToken(), n);
    let capturing: number[];
    try {
      await r.start(vms);
      capturing = rss();
      await r.stop();
    } finally {
      await r.close();
    }
    await sleep(300);
    const rows: Array<Array<string | number>> = [];
    const phaseRows: Array<Array<string | number>> = [];
    let apiKb = 0;
    for (const k of sizes) {
      const t = await timeFanOut(lab, k, runs, apiPid, agentPids.slice(0, k));
      apiKb = Math.max(apiKb, t.apiKb);
      const med = (f: (r: FanOutRun) => number) => Math.round(median(t.runs.map(f)));
      rows.push([
        `${k} agents: median (runs ${t.runs.map((r) => Math.round(r.ms)).join(", ")})`,
        med((r) => r.ms),
        `${med((r) => r.reached[0])} / ${med((r) => r.reached[1])}`,
        `${med((r) => r.open[0])} / ${med((r) => r.open[1])}`,
        med((r) => r.apiCpuMs),
        med((r) => r.agentsCpuMs / k),
        [...t.runs[0].agentThreadsMs.keys()].map((name) =>
          `${name} ${(median(t.runs.map((r) => r.agentThreadsMs.get(name) ?? 0)) / k).toFixed(1)}`
        ).filter((x) => !x.endsWith(" 0.0")).join(", "),
      ]);
      const medOf = (xs: number[]) => median(xs.filter(Number.isFinite)).toFixed(1);
      const api = (key: string) => medOf(t.runs.map((r) => r.api[key] ?? NaN));
      phaseRows.push([
        `${k} agents`,
        `${api("filter_ms")} / ${api("resolve_ms")} / ${api("plan_ms")}`,
        `${api("tls_ms")} / ${api("tls_ms_max")}`,
        `${api("response_ms")} / ${api("response_ms_max")}`,
        `${api("source_ms")} / ${api("source_ms_max")}`,
        Object.keys(t.runs[0].steps).map((step) =>
          `${step} ${medOf(t.runs.map((r) => r.steps[step][0]))}/${
            medOf(t.runs.map((r) => r.steps[step][1]))
          }`
        ).join(", "),
      ]);
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const text = [
      `Fan-out (lab start-up with ${lab.vms.length} agents: ${labSecs.toFixed(1)} s` +
      `${o.agentBuffer ? `; agents' capture.buffer_size ${o.agentBuffer}` : ""})`,
      "",
      table(["agent memory", "median MB", "max MB", `sum of ${n} MB`], [
        ["RSS idle", mb(median(idle)), mb(Math.max(...idle)), mb(sum(idle))],
        [
          "RSS capturing (idle link)",
          mb(median(capturing)),
          mb(Math.max(...capturing)),
          mb(
            sum(capturing),
          ),
        ],
      ]),
      "",
      `Idle agents use ${idleCpu.toFixed(3)} CPU-seconds per second together; api RSS while ` +
      `capturing: ${mb(apiKb)} MB.`,
      "",
      table([
        "start request → all SOURCE frames at the client",
        "ms",
        "request reached agent, ms after start (median / last agent)",
        "agent engine open ms (median / max)",
        "api CPU ms",
        "CPU ms per agent",
        "per agent by thread (ms)",
      ], rows),
      "",
      table([
        "phases (medians of runs)",
        "api: filter / resolve / plan ms",
        "api: TLS done, ms after dial (median / last)",
        "api: agent answered (median / last)",
        "api: SOURCE (median / last)",
        "capture thread per agent (median): step wall/CPU ms",
      ], phaseRows),
    ].join("\n");
    console.log(text + "\n");
    return text;
  } catch (e) {
    lab.dumpLogs(20);
    throw e;
  } finally {
    await lab.stopApi();
    if (!o.lab) await lab.stop();
  }
}

/** One side of an agent A/B: its label, and what to change before the agents restart. */
export interface AgentVariant {
  label: string;
  /** sets what the restarted agents start with (their config or their environment) */
  apply(): void;
  /** undoes what must not reach the api the run starts (optional) */
  after?(): void;
}

/**
 * A/B of the agents' set-up on one lab (same namespaces, same machine state): `rounds` times,
 * for each variant in turn, the agents are restarted with it and one quick fan-out is measured.
 * Alternating in one lab keeps lab start-up and namespace teardown (heavy kernel work that slows
 * every start) out of the comparison.
 */
export async function runAgentAb(
  lab: Landscape,
  n: number,
  variants: AgentVariant[],
  rounds: number,
  what: string,
): Promise<string> {
  const results = new Map<string, number[]>(variants.map((v) => [v.label, []]));
  const texts: string[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      for (const v of variants) {
        // Every measured run follows a restart, so each variant meets agents in the same state.
        v.apply();
        for (let i = 0; i < lab.vms.length; i += 10) { // 50 agents starting at once time out
          await Promise.all(lab.vms.slice(i, i + 10).map((vm) => lab.restartAgent(vm)));
        }
        v.after?.();
        await sleep(3000);
        // A run that fails (agents not answering in time on a loaded machine) is recorded as
        // such; the comparison goes on.
        const text = await runFanOutBench({ quick: true, lab, agents: n, labStartSecs: 0 })
          .catch((e) => `failed: ${(e as Error).message.slice(0, 300)}`);
        texts.push(`round ${r + 1}, ${what} ${v.label}:\n\n${text}`);
        if (text.startsWith("failed")) console.log(`round ${r + 1}, ${v.label}: ${text}\n`);
        else console.log(`(round ${r + 1}, ${what} ${v.label})\n`);
        const m = /\| \d+ agents: median \(runs [^)]*\) \| (\d+) \|/.exec(text);
        results.get(v.label)!.push(m ? Number(m[1]) : NaN);
      }
    }
  } finally {
    await lab.stop();
  }
  const summary = table(
    [what, ...Array.from({ length: rounds }, (_, i) => `round ${i + 1}, ms`)],
    variants.map((v) => [v.label, ...results.get(v.label)!]),
  );
  console.log(summary);
  return [...texts, `${n} agents, start → all SOURCE (median of 3 starts), by round:`, "", summary]
    .join("\n\n");
}

function abLab(
  n: number,
  capture: Record<string, number> = {},
  agentV8Flags?: () => readonly string[],
): Promise<Landscape> {
  return Landscape.start({
    groups: { bench: n },
    agentConfig: { log_level: "info", capture },
    agentV8Flags,
    readyTimeoutMs: 120_000,
    log: () => {},
  });
}

/** Kernel ring sizes: the lab writes each restarted agent's config from `capture`. */
export async function runRingAb(n: number, sizes: number[], rounds: number): Promise<string> {
  const capture = { buffer_size: sizes[0] };
  const lab = await abLab(n, capture);
  const variants = sizes.map((size) => ({
    label: `${size / (1 << 20)} MiB`,
    apply: () => capture.buffer_size = size,
    after: () => {
      const cfg = Deno.readTextFileSync(`${lab.dir}/${lab.agentLogName(lab.vms[0])}.yml`);
      if (!cfg.includes(`buffer_size: ${size}`)) throw new Error("agents not reconfigured");
    },
  }));
  return await runAgentAb(lab, n, variants, rounds, "kernel ring");
}

/**
 * The agents' V8 flags: each variant is a flag set ("" for V8's defaults, "," between flags)
 * that the restarted agents run with in place of the shipped PCAP_V8_FLAGS; the api and the
 * bench keep theirs.
 */
export async function runV8FlagsAb(n: number, flags: string[], rounds: number): Promise<string> {
  let current: readonly string[] = [];
  const lab = await abLab(n, {}, () => current);
  const variants = flags.map((f) => ({
    label: f || "(V8 defaults)",
    apply: () => current = f ? f.split(",") : [],
  }));
  return await runAgentAb(lab, n, variants, rounds, "agents' V8 flags");
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 ? Number(Deno.args[i + 1]) : undefined;
  };
  const ab = Deno.args.indexOf("--ab");
  if (ab >= 0) {
    const sizes = Deno.args[ab + 1].split(",").map(Number);
    await runRingAb(arg("--agents") ?? 50, sizes, arg("--rounds") ?? 3);
    Deno.exit(0);
  }
  const v8ab = Deno.args.indexOf("--v8-ab");
  if (v8ab >= 0) {
    // flag sets separated by "|", e.g. --v8-ab '|--no-memory-reducer' ("" = V8's defaults)
    const flags = (Deno.args[v8ab + 1] ?? "").split("|");
    if (flags.length < 2) throw new Error("--v8-ab wants at least two flag sets separated by |");
    await runV8FlagsAb(arg("--agents") ?? 50, flags, arg("--rounds") ?? 2);
    Deno.exit(0);
  }
  console.log("## Fan-out\n");
  await withFreedMemoryHeld(() =>
    runFanOutBench({
      quick: Deno.args.includes("--quick"),
      agents: arg("--agents"),
      agentBuffer: arg("--agent-buffer"),
    })
  );
}
