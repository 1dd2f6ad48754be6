// End to end and fan-in: N agents (real processes in lab VMs) → api (a process, `lab.startApi()`)
// → one client reading the WebSocket with cli/api_session.ts and counting packets.
// Fan-in: a ladder of per-agent rates into all N VMs at once (one raw-socket generator per VM,
// sending on the VM's bridge-side veth, all pinned to core 0); aggregate rate at zero loss and the
// api's CPU per packet (all its threads, /proc/<pid>/task/*/schedstat).
// End to end, one VM: agent→api→client against `tcpdump -U -w - | reader` in the same VM (what
// `bosh pcap` does, minus ssh and its encryption).
// Each rung is one capture: start, warm-up, one 1-s burst, settle, stop (drain), final STATS.
//   deno run -A bench/fan_in.ts [--quick]
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { ApiSession, type SessionClosed } from "../cli/api_session.ts";
import type { SourceStats, StatusMessage } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import {
  bestZeroLoss,
  compileGenerator,
  cpuNs,
  FILTER,
  generateAll,
  type GenTarget,
  pidOf,
  ratio,
  settle,
  sleep,
  table,
  TcpdumpPipe,
} from "./bench_support.ts";
import { withFreedMemoryHeld } from "./free_page_reporting.ts";

const PAYLOAD = 22; // 64-byte frames
const MAX_BURST = 600_000;

/** One 1-s burst per VM; Infinity = as fast as the generators go, MAX_BURST frames in all. */
function burst(gen: string, targets: GenTarget[], rate: number) {
  return Number.isFinite(rate)
    ? generateAll(gen, targets, PAYLOAD, rate, rate)
    : generateAll(gen, targets, PAYLOAD, 1e9, Math.round(MAX_BURST / targets.length));
}

/** A bench lab: N VMs with agents, api not yet started; `agentBuffer` sets capture.buffer_size. */
export function startBenchLab(n: number, agentBuffer?: number): Promise<Landscape> {
  return Landscape.start({
    groups: { bench: n },
    agentConfig: {
      log_level: "info",
      ...(agentBuffer ? { capture: { buffer_size: agentBuffer } } : {}),
    },
    log: () => {},
  });
}

/**
 * Starts the api process on the lab (no byte/duration limit); returns its pid. Agents get 20 s
 * to answer a start (5 s by default): on a loaded machine a slow start is a figure to report,
 * not a failed run.
 */
export async function startBenchApi(lab: Landscape): Promise<number> {
  await lab.startApi({
    log_level: "info",
    limits: { max_bytes: 0, max_duration: 0 },
    timeouts: { agent_connect: "20s" },
  });
  return pidOf(`${lab.dir}/api.yml`, "api");
}

export function genTargets(lab: Landscape, vms: LabVm[] = lab.vms): GenTarget[] {
  return vms.map((vm) => ({
    netns: lab.topology.netns,
    ns: lab.topology.bridgeNs!,
    dev: `${lab.runId}v${lab.vms.indexOf(vm)}`,
    ip: vm.ip,
  }));
}

/** One client capture through the api, counting what arrives. */
export class ApiReader {
  packets = 0;
  sources = 0;
  /** ms from the start request to the last expected SOURCE */
  allSourcesMs = NaN;
  /** wall clock (Date.now) of the start request, to line up with the agents' log times */
  startedAtWall = 0;
  readonly finals = new Map<number, SourceStats>();
  readonly statuses: StatusMessage[] = [];
  readonly session: ApiSession;
  readonly closed: Promise<SessionClosed>;
  #t0 = 0;

  constructor(lab: Landscape, token: string, private expect: number) {
    this.session = new ApiSession({
      apiUrl: lab.apiUrl!,
      path: "/v1/capture/bosh",
      authorization: `Bearer ${token}`,
      caCert: lab.pki.caCert,
    }, {
      onEvent: (e) => {
        if (e.kind === "packets") this.packets += e.count;
        else if (e.kind === "source") {
          if (++this.sources === this.expect) this.allSourcesMs = performance.now() - this.#t0;
        } else if (e.kind === "stats" && e.stats.final) this.finals.set(e.source, e.stats);
        else if (e.kind === "status") this.statuses.push(e.status);
      },
      onProtocolError: (e) => console.error(`bench client: protocol error: ${e.message}`),
    });
    this.closed = this.session.closed;
  }

  /** Sends the start request for `vms` and waits until every one has sent its SOURCE. */
  async start(vms: LabVm[], filter = FILTER, timeoutMs = 30_000): Promise<void> {
    for (let i = 0; !this.session.isOpen; i++) {
      if (i > 1000) throw new Error("bench client: WebSocket not open within 10 s");
      await sleep(10);
    }
    this.#t0 = performance.now();
    this.startedAtWall = Date.now();
    this.session.start({
      type: "start",
      protocol_version: PROTOCOL_VERSION,
      bosh: {
        deployment: vms[0].deployment,
        groups: [...new Set(vms.map((v) => v.group))],
        instances: vms.map((v) => `${v.group}/${v.index}`),
      },
      interface: "eth0",
      snaplen: 65535,
      filter,
      limits: {},
    });
    const deadline = Date.now() + timeoutMs;
    let closed = false;
    this.closed.then(() => closed = true);
    while (this.sources < this.expect) {
      if (closed || Date.now() > deadline) {
        throw new Error(
          `bench client: ${this.sources}/${this.expect} sources after ${timeoutMs} ms; ` +
            `statuses ${JSON.stringify(this.statuses.slice(-3))}`,
        );
      }
      await sleep(2);
    }
  }

  /** Clean stop: every source drains, then the api closes the socket. */
  async stop(timeoutMs = 15_000): Promise<void> {
    this.session.stop();
    let t: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([this.closed, new Promise((r) => t = setTimeout(r, timeoutMs))]);
    clearTimeout(t);
    if (!r) throw new Error(`bench client: capture not ended within ${timeoutMs} ms of the stop`);
  }

  close(): Promise<SessionClosed> {
    this.session.close();
    return this.closed;
  }

  /** Summed final STATS: "kernel/engine/agent/api" drops. */
  drops(): string {
    const sum = (k: keyof SourceStats) =>
      [...this.finals.values()].reduce((n, s) => n + Number(s[k]), 0);
    return `${sum("dropped") + sum("if_dropped")}/${sum("engine_dropped")}/` +
      `${sum("agent_dropped")}/${sum("api_dropped")}`;
  }
}

interface Row {
  path: string;
  perAgent: number | string;
  offered: number;
  sent: number;
  received: number;
  lost: number;
  drops: string;
  apiCpu: number; // s per million packets
  agentsCpu: number;
}

interface Ctx {
  lab: Landscape;
  gen: string;
  apiPid: number;
  agentPids: number[];
  tmp: string;
}

const cpuOf = (pids: number[]) => () => pids.reduce((n, p) => n + cpuNs(p), 0);
const perMpkt = (ns: number, pkts: number) => pkts > 0 ? ns / 1e9 / (pkts / 1e6) : NaN;

async function apiRung(c: Ctx, vms: LabVm[], rate: number): Promise<Row> {
  const targets = genTargets(c.lab, vms);
  const r = new ApiReader(c.lab, await c.lab.mintToken(), vms.length);
  try {
    await r.start(vms);
    await generateAll(c.gen, targets, PAYLOAD, 20_000, 2_000);
    const base = (await settle(() => r.packets, 2_000 * vms.length)).count;
    const api = cpuOf([c.apiPid]), agents = cpuOf(c.agentPids);
    const api0 = api(), agents0 = agents();
    let agentsAt = 0;
    const g = await burst(c.gen, targets, rate);
    const end = await settle(() => r.packets, base + g.sent, () => {
      agentsAt = agents();
      return api();
    });
    await r.stop();
    const received = end.count - base;
    return {
      path: vms.length === 1 ? "agent→api→client" : `${vms.length} agents→api→client`,
      perAgent: Number.isFinite(rate) ? rate : "max",
      offered: Math.round(g.sent / g.secs),
      sent: g.sent,
      received,
      lost: g.sent - received,
      drops: r.drops(),
      apiCpu: perMpkt(end.cpu - api0, received),
      agentsCpu: perMpkt((agentsAt || agents()) - agents0, received),
    };
  } finally {
    await r.close();
  }
}

async function tcpdumpRung(c: Ctx, vm: LabVm, rate: number): Promise<Row> {
  const fifo = `${c.tmp}/pipe-${crypto.randomUUID().slice(0, 8)}`;
  const p = await TcpdumpPipe.start(c.lab.topology.netns, vm.netns!, vm.device, fifo);
  const targets = genTargets(c.lab, [vm]);
  try {
    await generateAll(c.gen, targets, PAYLOAD, 20_000, 2_000);
    const base = (await settle(() => p.count, 2_000)).count;
    const g = await burst(c.gen, targets, rate);
    const end = await settle(() => p.count, base + g.sent);
    const { kernelDropped } = await p.stop();
    const received = end.count - base;
    return {
      path: "tcpdump -U -w - → pipe → reader",
      perAgent: Number.isFinite(rate) ? rate : "max",
      offered: Math.round(g.sent / g.secs),
      sent: g.sent,
      received,
      lost: g.sent - received,
      drops: `${kernelDropped}/-/-/-`,
      apiCpu: NaN,
      agentsCpu: NaN,
    };
  } finally {
    await p.stop();
    await Deno.remove(fifo).catch(() => {});
  }
}

function rowsTable(rows: Row[]): string {
  const f = (x: number) => Number.isFinite(x) ? x.toFixed(2) : "-";
  return table(
    [
      "path",
      "per-VM pps",
      "offered pps (all)",
      "sent",
      "received",
      "lost",
      "drops kernel/engine/agent/api",
      "api CPU s/Mpkt",
      "agents CPU s/Mpkt",
    ],
    rows.map((
      r,
    ) => [
      r.path,
      r.perAgent,
      r.offered,
      r.sent,
      r.received,
      r.lost,
      r.drops,
      f(r.apiCpu),
      f(r.agentsCpu),
    ]),
  );
}

export interface FanInOptions {
  quick?: boolean;
  /** a running lab with ≥ agents VMs (its api must not be running); default: its own */
  lab?: Landscape;
  agents?: number;
}

export async function runFanInBench(o: FanInOptions = {}): Promise<string> {
  const n = o.agents ?? 10;
  const fanRates = o.quick ? [5_000, 20_000] : [10_000, 20_000, 30_000, 45_000];
  const e2eRates = o.quick ? [100_000, Infinity] : [100_000, 200_000, 300_000, 450_000, Infinity];
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-fanin-" });
  const lab = o.lab ?? await startBenchLab(n);
  const out: string[] = [];
  try {
    const vms = lab.vms.slice(0, n);
    const c: Ctx = {
      lab,
      gen: await compileGenerator(tmp),
      apiPid: await startBenchApi(lab),
      agentPids: vms.map((vm) => pidOf(`${lab.dir}/${lab.agentLogName(vm)}.yml`, "agent")),
      tmp,
    };
    const fan: Row[] = [];
    for (const rate of fanRates) fan.push(await apiRung(c, vms, rate));
    const best = bestZeroLoss(fan);
    out.push(
      `Fan-in, ${n} agents, 64-byte frames\n\n${rowsTable(fan)}\n\n` +
        `Highest aggregate zero-loss rate: ${best} pps (${(best * 64 / 1e6).toFixed(1)} MB/s).`,
    );
    console.log(out.at(-1) + "\n");
    const e2e: Row[] = [];
    for (const rate of e2eRates) e2e.push(await apiRung(c, [vms[0]], rate));
    for (const rate of e2eRates) e2e.push(await tcpdumpRung(c, vms[0], rate));
    const a = bestZeroLoss(e2e.filter((r) => r.path.startsWith("agent")));
    const t = bestZeroLoss(e2e.filter((r) => r.path.startsWith("tcpdump")));
    out.push(
      `End to end, one VM, 64-byte frames\n\n${rowsTable(e2e)}\n\n` +
        table(["highest zero-loss rate", "agent→api→client", "tcpdump→pipe", "ratio"], [
          ["packets/s", a, t, ratio(a, t)],
        ]),
    );
    console.log(out.at(-1) + "\n");
  } catch (e) {
    lab.dumpLogs(30);
    throw e;
  } finally {
    await lab.stopApi();
    if (!o.lab) await lab.stop();
    await Deno.remove(tmp, { recursive: true });
  }
  return out.join("\n\n");
}

if (import.meta.main) {
  console.log("## End to end and fan-in\n");
  await withFreedMemoryHeld(() => runFanInBench({ quick: Deno.args.includes("--quick") }));
}
