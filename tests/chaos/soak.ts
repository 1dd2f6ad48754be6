/**
 * Soak (long form only, not part of `deno task test`): continuous capture at a steady rate through
 * N agents (default 5) of a lab, one api process and one client that reads as fast as it can; the
 * capture is stopped and started again every `--restart` seconds. Every 10 s it samples RSS, open
 * fds and threads (capture workers are threads) of the api and each agent, the agents' active
 * captures and the lab's network namespaces. At the end it reports growth between the first and
 * the last minute and the packet accounting of every capture: what the kernel captured must equal
 * what the client received plus what was discarded on the way (unaccounted 0). Exit 1 when packets
 * are unaccounted for, or fds, threads or namespaces grew.
 *
 *   deno run -A tests/chaos/soak.ts [--minutes 30] [--agents 5] [--rate 2000] [--restart 60]
 *                                   [--out soak.json]
 */
import { parseArgs } from "node:util";
import { Landscape } from "../../lab/landscape.ts";
import { run } from "../../lab/netns.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import type { SourceStats } from "../../protocol/messages.ts";
import { compileGenerator, FILTER, generateAll } from "../../bench/bench_support.ts";
import { genTargets } from "../../bench/fan_in.ts";
import { startRawCapture, startUnlimitedApi } from "./support/chaos_client.ts";
import { procSample } from "./support/chaos.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string", default: "30" },
    agents: { type: "string", default: "5" },
    rate: { type: "string", default: "2000" },
    restart: { type: "string", default: "60" },
    out: { type: "string" },
  },
});
const MINUTES = Number(a.minutes), AGENTS = Number(a.agents), RATE = Number(a.rate);
const RESTART_S = Number(a.restart);
const SAMPLE_MS = 10_000;

interface Sample {
  t: number;
  api: ReturnType<typeof procSample>;
  agents: Array<ReturnType<typeof procSample>>;
  activeCaptures: number;
  namespaces: number;
}

interface CaptureTally {
  n: number;
  captured: number;
  delivered: number;
  discarded: number;
  unaccounted: number;
}

async function namespaces(runId: string): Promise<number> {
  const out = (await run("ip", ["netns", "list"])).stdout;
  return out.split("\n").filter((l) => l.startsWith(runId)).length;
}

/** One capture through the api until `stopAt`; returns its accounting. */
async function oneCapture(lab: Landscape, url: string, stopAt: number): Promise<CaptureTally> {
  const ws = await startRawCapture(lab, url, {
    bosh: { deployment: "cf", groups: ["soak"] },
    snaplen: 256,
    filter: FILTER,
  });
  const got = new Map<number, number>();
  const finals = new Map<number, SourceStats>();
  let stopped = false;
  const timer = setTimeout(() => {
    stopped = true;
    ws.sendText(JSON.stringify({ type: "stop" })).catch(() => {});
  }, Math.max(0, stopAt - Date.now()));
  try {
    while (true) {
      const m = await ws.next();
      if (m === null || (typeof m === "object" && "close" in m)) break;
      const e = decodeApiMessage(m);
      if (e.kind === "packets") got.set(e.source, (got.get(e.source) ?? 0) + e.count);
      else if (e.kind === "stats" && e.stats.final) finals.set(e.source, e.stats);
      else if (e.kind === "end") break;
    }
  } finally {
    clearTimeout(timer);
    ws.close();
  }
  if (!stopped) throw new Error("soak: the capture ended before its stop");
  const t: CaptureTally = { n: 1, captured: 0, delivered: 0, discarded: 0, unaccounted: 0 };
  if (finals.size !== AGENTS) throw new Error(`soak: ${finals.size} of ${AGENTS} final STATS`);
  for (const [src, f] of finals) {
    const drops = f.dropped + f.if_dropped + f.engine_dropped + f.agent_dropped + f.api_dropped;
    const delivered = got.get(src) ?? 0;
    t.captured += f.received;
    t.delivered += delivered;
    t.discarded += drops;
    t.unaccounted += f.received - delivered - drops;
  }
  return t;
}

const lab = await Landscape.start({
  groups: { soak: AGENTS },
  agentConfig: { log_level: "info" },
  log: () => {},
});
const tmp = await Deno.makeTempDir({ prefix: "pcap-soak-" });
let failed = false;
try {
  const { url, apiPid, agentPids } = await startUnlimitedApi(lab);
  const gen = await compileGenerator(tmp);
  const end = Date.now() + MINUTES * 60_000;
  const gens = generateAll(gen, genTargets(lab), 200, RATE, Math.ceil(RATE * MINUTES * 60 + RATE));
  const samples: Sample[] = [];
  const sample = async () => {
    let active = 0;
    for (const vm of lab.vms) {
      active += (await (await lab.fetchAgent(vm, "/health")).json()).active_captures;
    }
    samples.push({
      t: Date.now(),
      api: procSample(apiPid),
      agents: agentPids.map(procSample),
      activeCaptures: active,
      namespaces: await namespaces(lab.runId),
    });
  };
  await sample();
  const sampler = setInterval(() => sample().catch(() => {}), SAMPLE_MS);
  const total: CaptureTally = { n: 0, captured: 0, delivered: 0, discarded: 0, unaccounted: 0 };
  try {
    while (Date.now() < end) {
      const t = await oneCapture(lab, url, Math.min(end, Date.now() + RESTART_S * 1000));
      for (const k of Object.keys(total) as Array<keyof CaptureTally>) total[k] += t[k];
      console.error(
        `soak: capture ${total.n}: ${t.captured} captured, ${t.delivered} delivered, ` +
          `${t.discarded} discarded, ${t.unaccounted} unaccounted`,
      );
    }
  } finally {
    clearInterval(sampler);
  }
  const sent = (await gens).sent;
  await sample();
  // first and last minute, by their medians (a single GC pause must not decide)
  const window = Math.max(1, Math.round(60_000 / SAMPLE_MS));
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const of = (f: (s: Sample) => number, part: "first" | "last") =>
    median((part === "first" ? samples.slice(0, window) : samples.slice(-window)).map(f));
  const metrics: Array<[string, (s: Sample) => number, number]> = [
    ["api RSS, MB", (s) => s.api.rssKb / 1024, 50],
    ["api fds", (s) => s.api.fds, 5],
    ["api threads", (s) => s.api.threads, 3],
    ["agent RSS (max), MB", (s) => Math.max(...s.agents.map((x) => x.rssKb)) / 1024, 50],
    ["agent fds (sum)", (s) => s.agents.reduce((n, x) => n + x.fds, 0), 5],
    ["agent threads (sum)", (s) => s.agents.reduce((n, x) => n + x.threads, 0), 5],
    ["lab namespaces", (s) => s.namespaces, 0],
  ];
  const rows = metrics.map(([name, f, bound]) => {
    const first = of(f, "first"), last = of(f, "last");
    const growth = last - first;
    if (!name.includes("RSS") && growth > bound) failed = true;
    return { name, first: Math.round(first), last: Math.round(last), growth: Math.round(growth) };
  });
  if (total.unaccounted !== 0) failed = true;
  const peak = {
    apiMb: Math.round(Math.max(...samples.map((s) => s.api.hwmKb)) / 1024),
    agentMb: Math.round(Math.max(...samples.flatMap((s) => s.agents.map((x) => x.hwmKb))) / 1024),
  };
  const report = {
    minutes: MINUTES,
    agents: AGENTS,
    ratePerAgent: RATE,
    restartSeconds: RESTART_S,
    captures: total.n,
    sent,
    ...total,
    peakRss: peak,
    samples: samples.length,
    growth: rows,
    ok: !failed,
  };
  console.log(
    `## Soak: ${MINUTES} min, ${AGENTS} agents × ${RATE} pps, restart every ` +
      `${RESTART_S} s\n`,
  );
  console.log("| measure | first minute | last minute | growth |\n| --- | --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.name} | ${r.first} | ${r.last} | ${r.growth} |`);
  console.log(
    `\ncaptures ${total.n}; packets sent ${sent}, captured ${total.captured}, delivered ` +
      `${total.delivered}, discarded ${total.discarded}, unaccounted ${total.unaccounted}; ` +
      `peak RSS api ${peak.apiMb} MB, agent ${peak.agentMb} MB; ${failed ? "FAILED" : "ok"}`,
  );
  if (a.out) await Deno.writeTextFile(a.out, JSON.stringify(report, null, 2) + "\n");
} catch (e) {
  failed = true;
  console.error(`soak failed: ${(e as Error).stack ?? e}`);
  lab.dumpLogs(30);
} finally {
  await lab.stopApi();
  await lab.stop();
  await Deno.remove(tmp, { recursive: true });
}
Deno.exit(failed ? 1 : 0);
