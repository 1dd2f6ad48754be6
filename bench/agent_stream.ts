// Agent → one local reader over mTLS, against `tcpdump -U -w - | reader` on the same traffic.
// A one-VM lab (real agent process in the VM namespace, pinned to core 1); the raw-socket
// generator (bench/gen/udpgen.c) sends on the bridge-side veth of the VM, pinned to core 0, so
// frames enter the VM's eth0 directly. The reader (this process) POSTs /captures with the api's
// client certificate and reads the stream as the api does (server/agent_stream_tls.ts: one reused
// buffer, read on demand; before 2026-12-02 a fetch body), decodes the frames with
// protocol/frame_codec.ts and counts packets.
// The baseline runs tcpdump (core 1) in the same namespace on the same interface and filter,
// writing into a pipe read by a Deno process that counts pcap records. Each rung is one capture:
// start, 20 000-frame warm-up, one burst of `rate × 1 s` frames, settle, stop.
//   deno run -A bench/agent_stream.ts [--quick]
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { FrameDecoder, FrameKind, validatePackets } from "../protocol/frame_codec.ts";
import {
  type BodyChunks,
  requestOverSocket,
  type SocketResponse,
} from "../server/agent_stream_tls.ts";
import {
  bestZeroLoss,
  compileGenerator,
  cpuNs,
  FILTER,
  generate,
  type GenTarget,
  HEADERS,
  pidOf,
  pin,
  ratio,
  settle,
  sleep,
  table,
  TcpdumpPipe,
} from "./bench_support.ts";
import { withFreedMemoryHeld } from "./free_page_reporting.ts";

const WARMUP = 20_000;
const MAX_BURST = 600_000;
const BUFFER = 64 << 20; // kernel ring for both capturers
const SNAPLEN = 65535;

interface Row {
  capturer: "agent" | "tcpdump";
  frame: number;
  offered: number;
  sent: number;
  received: number;
  lost: number;
  /** kernel (dropped + if_dropped) / engine / agent back-pressure drops, from the final STATS */
  drops: string;
  nsPerPacket: number;
  /** the reader's CPU: this process for the agent, the pcap-counting process for tcpdump */
  readerNs: number;
}

/** One capture stream from the agent, read and counted by this process. */
export class AgentReader {
  packets = 0;
  source = false;
  final: Record<string, number> | null = null;
  ended = false;
  readonly #done: Promise<void>;
  readonly #abort: AbortController;
  #id = "";

  private constructor(
    private lab: Landscape,
    private vm: LabVm,
    res: SocketResponse,
    abort: AbortController,
  ) {
    this.#abort = abort;
    this.#id = res.header("x-pcap-capture-id") ?? "";
    this.#done = this.#read(res.chunks!).catch((e) => {
      if (!this.#abort.signal.aborted) throw e;
    });
  }

  static async open(lab: Landscape, vm: LabVm, filter = FILTER): Promise<AgentReader> {
    const abort = new AbortController();
    // read as the api reads its agents (server/agent_stream_tls.ts), with its client certificate
    const url = new URL(vm.agentUrl);
    const res = await requestOverSocket(
      url.hostname.replace(/^\[|\]$/g, ""),
      Number(url.port),
      { ca: lab.pki.caCert, ...lab.certs.apiClient, skipVerify: false },
      {
        method: "POST",
        path: "/captures",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          protocol_version: 1,
          interface: vm.device,
          snaplen: SNAPLEN,
          filter,
        }),
      },
      abort.signal,
    );
    if (res.status !== 200) {
      const text = res.body ? await new Response(res.body).text() : "";
      throw new Error(`agent refused the capture: HTTP ${res.status} ${text}`);
    }
    const r = new AgentReader(lab, vm, res, abort);
    for (let i = 0; !r.source; i++) {
      if (i > 500 || r.ended) throw new Error("agent stream: no SOURCE frame within 5 s");
      await sleep(10);
    }
    return r;
  }

  async #read(body: BodyChunks): Promise<void> {
    const dec = new FrameDecoder();
    for (let chunk = await body.read(); chunk !== null; chunk = await body.read()) {
      for (const f of dec.push(chunk)) {
        if (f.kind === FrameKind.PACKETS) this.packets += validatePackets(f.payload).count;
        else if (f.kind === FrameKind.SOURCE) this.source = true;
        else if (f.kind === FrameKind.STATS) {
          const s = JSON.parse(new TextDecoder().decode(f.payload));
          if (s.final) this.final = s;
        } else if (f.kind === FrameKind.END) this.ended = true;
      }
    }
  }

  /** Asks the agent to stop (it drains), waits for END. */
  async stop(): Promise<void> {
    const res = await this.lab.fetchAgent(this.vm, `/captures/${this.#id}/stop`, {
      method: "POST",
    });
    await res.body?.cancel();
    let t: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#done, new Promise((r) => t = setTimeout(r, 10_000))]);
    clearTimeout(t);
    if (!this.ended) throw new Error("agent stream: no END within 10 s of the stop");
  }

  /** Drops the connection (the agent stops the capture). */
  async close(): Promise<void> {
    this.#abort.abort();
    await this.#done.catch(() => {});
  }
}

interface Ctx {
  lab: Landscape;
  vm: LabVm;
  gen: string;
  target: GenTarget;
  agentPid: number;
  tmp: string;
}

async function agentRung(c: Ctx, payload: number, rate: number): Promise<Row> {
  const r = await AgentReader.open(c.lab, c.vm);
  try {
    await generate(c.gen, c.target, payload, 100_000, WARMUP);
    const base = (await settle(() => r.packets, WARMUP)).count;
    const cpu0 = cpuNs(c.agentPid), reader0 = cpuNs(Deno.pid);
    let readerAt = reader0;
    const g = await burst(c, payload, rate);
    const end = await settle(() => r.packets, base + g.sent, () => {
      readerAt = cpuNs(Deno.pid);
      return cpuNs(c.agentPid);
    });
    await r.stop();
    const f = r.final ?? {};
    const received = end.count - base;
    return {
      capturer: "agent",
      frame: payload + HEADERS,
      offered: Math.round(g.sent / g.secs),
      sent: g.sent,
      received,
      lost: g.sent - received,
      drops: `${(f.dropped ?? 0) + (f.if_dropped ?? 0)}/${f.engine_dropped ?? 0}/${
        f.agent_dropped ?? 0
      }`,
      nsPerPacket: (end.cpu - cpu0) / Math.max(1, received),
      readerNs: (readerAt - reader0) / Math.max(1, received),
    };
  } finally {
    await r.close();
  }
}

async function tcpdumpRung(c: Ctx, payload: number, rate: number): Promise<Row> {
  const fifo = `${c.tmp}/pipe-${crypto.randomUUID().slice(0, 8)}`;
  const p = await TcpdumpPipe.start(c.lab.topology.netns, c.vm.netns!, c.vm.device, fifo, {
    cpus: "1",
    bufferKb: BUFFER / 1024,
    snaplen: SNAPLEN,
  });
  try {
    await generate(c.gen, c.target, payload, 100_000, WARMUP);
    const base = (await settle(() => p.count, WARMUP)).count;
    const cpu0 = cpuNs(p.pid), reader0 = cpuNs(p.readerPid);
    let readerAt = reader0;
    const g = await burst(c, payload, rate);
    const end = await settle(() => p.count, base + g.sent, () => {
      readerAt = cpuNs(p.readerPid);
      return cpuNs(p.pid);
    });
    const { kernelDropped } = await p.stop();
    const received = end.count - base;
    return {
      capturer: "tcpdump",
      frame: payload + HEADERS,
      offered: Math.round(g.sent / g.secs),
      sent: g.sent,
      received,
      lost: g.sent - received,
      drops: `${kernelDropped}/-/-`,
      nsPerPacket: (end.cpu - cpu0) / Math.max(1, received),
      readerNs: (readerAt - reader0) / Math.max(1, received),
    };
  } finally {
    await p.stop();
    await Deno.remove(fifo).catch(() => {});
  }
}

/** Infinity = as fast as the generator goes, MAX_BURST frames. */
function burst(c: Ctx, payload: number, rate: number) {
  return Number.isFinite(rate)
    ? generate(c.gen, c.target, payload, rate, Math.round(rate))
    : generate(c.gen, c.target, payload, 1e9, MAX_BURST);
}

function report(frame: number, rows: Row[]): string {
  const mbs = (pps: number) => (pps * frame / 1e6).toFixed(1);
  const a = bestZeroLoss(rows.filter((r) => r.capturer === "agent"));
  const t = bestZeroLoss(rows.filter((r) => r.capturer === "tcpdump"));
  return [
    `${frame}-byte frames`,
    "",
    table(
      [
        "capturer",
        "offered pps",
        "sent",
        "received",
        "lost",
        "drops kernel/engine/agent",
        "capturer CPU ns/pkt",
        "reader CPU ns/pkt",
      ],
      rows.map((r) => [
        r.capturer,
        r.offered,
        r.sent,
        r.received,
        r.lost,
        r.drops,
        Math.round(r.nsPerPacket),
        Math.round(r.readerNs),
      ]),
    ),
    "",
    table(["highest zero-loss rate", "agent", "tcpdump → reader", "agent/tcpdump"], [
      ["packets/s", a, t, ratio(a, t)],
      ["MB/s", mbs(a), mbs(t), ratio(a, t)],
    ]),
  ].join("\n");
}

export interface AgentStreamOptions {
  quick?: boolean;
}

export async function runAgentStreamBench(o: AgentStreamOptions = {}): Promise<string> {
  const ladders: Record<number, number[]> = o.quick
    ? { 22: [300_000, Infinity], 1458: [100_000, 200_000] }
    : {
      22: [100_000, 200_000, 300_000, 500_000, Infinity],
      1458: [50_000, 100_000, 150_000, 200_000, 250_000, 300_000, Infinity],
    };
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-agent-" });
  const lab = await Landscape.start({
    groups: { bench: 1 },
    agentConfig: { log_level: "info", capture: { buffer_size: BUFFER } },
    log: () => {},
  });
  const out: string[] = [];
  try {
    const vm = lab.vms[0];
    const agentPid = pidOf(`${lab.dir}/${lab.agentLogName(vm)}.yml`, "agent");
    await pin(agentPid, "1");
    const c: Ctx = {
      lab,
      vm,
      gen: await compileGenerator(tmp),
      target: {
        netns: lab.topology.netns,
        ns: lab.topology.bridgeNs!,
        dev: `${lab.runId}v0`,
        ip: vm.ip,
      },
      agentPid,
      tmp,
    };
    for (const [p, rates] of Object.entries(ladders)) {
      const rows: Row[] = [];
      for (const rate of rates) rows.push(await agentRung(c, Number(p), rate));
      for (const rate of rates) rows.push(await tcpdumpRung(c, Number(p), rate));
      const text = report(Number(p) + HEADERS, rows);
      console.log(text + "\n");
      out.push(text);
    }
  } catch (e) {
    lab.dumpLogs(40);
    throw e;
  } finally {
    await lab.stop();
    await Deno.remove(tmp, { recursive: true });
  }
  return out.join("\n\n");
}

if (import.meta.main) {
  console.log("## Agent → one reader over mTLS\n");
  await withFreedMemoryHeld(() => runAgentStreamBench({ quick: Deno.args.includes("--quick") }));
}
