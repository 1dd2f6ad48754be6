// Capture benchmark: the engine vs `tcpdump` on the same offered-rate ladder of
// UDP frames over a veth into a namespace. A C AF_PACKET generator (bench/gen/)
// is pinned to core 0, the capturer to core 1, each capturer in its own
// process so its CPU time can be read from /proc. One capturer process serves a
// whole ladder: it is warmed up first, then each rung is one burst whose CPU is
// measured from just before the burst to the moment the last packet was
// delivered (the capturer's packet count stops growing).
//   deno run -A bench/capture.ts            (the ladder, prints tables)
//   deno run -A bench/capture.ts --quick    (fewer rungs)
//   … --baseline DIR   also runs the engine of another checkout (e.g. `git worktree add DIR
//                      main` or `git archive main | tar -x -C DIR`) as "engine@base", in the
//                      same lab and run, alternating with this one: before/after in one run
import { CaptureEngine } from "../agent/engine/capture_engine.ts";
import { Netns, newRunId, run } from "../lab/netns.ts";
import { withFreedMemoryHeld } from "./free_page_reporting.ts";

const BUFFER = 64 << 20;
const SNAPLEN = 262144;
const FILTER = "udp dst port 9";
// Frames go to a MAC that is not the capture end's: the capture namespace's IP
// stack drops them right after the packet taps, so the generator core does not
// also pay for UDP/ICMP processing. Both capturers see exactly the same frames.
const DST_MAC = "02:00:00:00:00:01";
const DST_IP = "198.18.50.2";
const WARMUP = 50_000;
const SETTLE_MS = 1500; // no growth for this long = done (tcpdump's block timeout is 1 s)

type Capturer = "engine" | "engine@base" | "tcpdump" | "engine>file" | "tcpdump>file";
const baselineAt = Deno.args.indexOf("--baseline");
/** Another checkout whose engine runs as "engine@base" (its bench/capture.ts child mode). */
const BASELINE = baselineAt >= 0 ? Deno.args[baselineAt + 1] : undefined;

export interface Trial {
  capturer: Capturer;
  frame: number;
  offered: number; // achieved generator rate, pps
  sent: number;
  captured: number;
  lost: number;
  kernelDropped: number;
  nsPerPacket: number; // capturer CPU (user+sys, all threads) per captured packet
}

export interface SizeResult {
  frame: number;
  trials: Trial[];
}

interface Counts {
  captured: number;
  dropped: number;
}

/** Child mode: one engine capture; prints "ready", a stats line per SIGUSR1, stops on stdin EOF. */
async function engineChild(device: string, netns: string, outFile?: string): Promise<void> {
  const eng = await CaptureEngine.open({
    device,
    netns,
    snaplen: SNAPLEN,
    filter: FILTER,
    bufferSize: BUFFER,
  });
  const file = outFile ? Deno.openSync(outFile, { write: true, create: true }) : null;
  const consume = (async () => {
    // Records are borrowed until the next next(): written out synchronously here.
    for (let b; (b = await eng.next());) {
      if (file) {
        for (let off = 0; off < b.records.length;) off += file.writeSync(b.records.subarray(off));
      }
    }
  })();
  const report = () => console.log(JSON.stringify(eng.stats()));
  Deno.addSignalListener("SIGUSR1", report);
  console.log("ready");
  for await (const _ of Deno.stdin.readable) { /* until the parent closes stdin */ }
  Deno.removeSignalListener("SIGUSR1", report);
  await eng.stop();
  await consume;
  file?.close();
  report();
}

/** CPU time (ns, user+sys) of all threads of pid, from schedstat (ns resolution). */
function cpuNs(pid: number): number {
  let sum = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
    } catch { /* thread ended */ }
  }
  return sum;
}

/** CPU ns and wake-ups (schedstat's timeslices) per thread name (comm) of pid, for --threads. */
function cpuByThread(pid: number): Map<string, [number, number]> {
  const m = new Map<string, [number, number]>();
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const dir = `/proc/${pid}/task/${t.name}`;
      const name = Deno.readTextFileSync(`${dir}/comm`).trim();
      const [ns, , slices] = Deno.readTextFileSync(`${dir}/schedstat`).split(" ").map(Number);
      const was = m.get(name) ?? [0, 0];
      m.set(name, [was[0] + ns, was[1] + slices]);
    } catch { /* thread ended */ }
  }
  return m;
}
const showThreads = Deno.args.includes("--threads");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One long-lived capturer process that can be asked for its counts. */
class CapturerProc {
  readonly #child: Deno.ChildProcess;
  readonly #kind: Capturer;
  #text = "";
  #done: Promise<void>;

  constructor(l: Lab, kind: Capturer, outFile?: string) {
    this.#kind = kind;
    const argv = kind.startsWith("engine")
      ? [
        Deno.execPath(),
        "run",
        "-A",
        kind === "engine@base" ? `${BASELINE}/bench/capture.ts` : new URL(import.meta.url).pathname,
        "--engine-child",
        l.dev,
        `/run/netns/${l.capNs}`,
        ...(outFile ? [outFile] : []),
      ]
      : ["tcpdump", "-p", "-n", "-i", l.dev, "-B", String(BUFFER / 1024), "-s", String(SNAPLEN)]
        .concat(["-w", outFile ?? "/dev/null", FILTER]);
    this.#child = l.lab.spawn(kind.startsWith("engine") ? null : l.capNs, [
      "taskset",
      "-c",
      "1",
      ...argv,
    ], { stdin: "piped", stdout: "piped", stderr: "piped" });
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s) this.#text += dec.decode(c);
    };
    this.#done = Promise.all([pump(this.#child.stdout), pump(this.#child.stderr)]).then(() => {});
  }

  get pid(): number {
    return this.#child.pid;
  }

  async ready(): Promise<void> {
    const re = this.#kind.startsWith("engine") ? /^ready$/m : /listening on/;
    for (let i = 0; !re.test(this.#text); i++) {
      if (i > 600) throw new Error(`${this.#kind} did not start: ${this.#text}`);
      await sleep(10);
    }
  }

  #parse(text: string): Counts[] {
    if (this.#kind.startsWith("engine")) {
      return text.split("\n").filter((l) => l.startsWith("{")).map((l) => {
        const s = JSON.parse(l);
        return { captured: s.packets, dropped: s.dropped + s.ifDropped + s.engineDropped };
      });
    }
    return [...text.matchAll(/(\d+) packets? captured[\s\S]*?(\d+) packets? dropped by kernel/g)]
      .map((m) => ({ captured: Number(m[1]), dropped: Number(m[2]) }));
  }

  /** Current counts (SIGUSR1: tcpdump prints its counters, the engine child its stats). */
  async counts(): Promise<Counts> {
    const n = this.#parse(this.#text).length;
    this.#child.kill("SIGUSR1");
    for (let i = 0; i < 400; i++) {
      const all = this.#parse(this.#text);
      if (all.length > n) return all.at(-1)!;
      await sleep(5);
    }
    throw new Error(`${this.#kind} did not report its counts: ${this.#text.slice(-500)}`);
  }

  async stop(): Promise<void> {
    await this.#child.stdin.close();
    if (!this.#kind.startsWith("engine")) this.#child.kill("SIGINT");
    await this.#child.status;
    await this.#done;
  }
}

interface Lab {
  lab: Netns;
  capNs: string;
  genNs: string;
  dev: string;
  genDev: string;
  gen: string;
}

async function generate(l: Lab, payload: number, rate: number, count: number) {
  const g = await l.lab.exec(l.genNs, [
    "taskset",
    "-c",
    "0",
    l.gen,
    l.genDev,
    DST_MAC,
    DST_IP,
    "9",
    String(payload),
    String(rate),
    String(count),
  ]);
  const [sent, secs] = g.stdout.trim().split(" ").map(Number);
  return { sent, secs };
}

/** Waits until the capturer has everything (or stops growing); returns counts and CPU then. */
async function settle(p: CapturerProc, target: number) {
  let last = await p.counts();
  let cpu = cpuNs(p.pid);
  let since = performance.now();
  while (last.captured < target && performance.now() - since < SETTLE_MS) {
    await sleep(20);
    const c = await p.counts();
    if (c.captured !== last.captured) {
      cpu = cpuNs(p.pid);
      last = c;
      since = performance.now();
    }
  }
  return { counts: last, cpu };
}

async function ladder(
  l: Lab,
  kind: Capturer,
  payload: number,
  rates: number[],
  outFile?: string,
): Promise<Trial[]> {
  const p = new CapturerProc(l, kind, outFile);
  const trials: Trial[] = [];
  try {
    await p.ready();
    await generate(l, payload, 200_000, WARMUP); // warm-up: JIT, ring pages, page cache
    let base = (await settle(p, WARMUP)).counts;
    for (const rate of rates) {
      // Max rung: Infinity = as fast as the generator goes, 600k frames.
      const count = Number.isFinite(rate) ? Math.round(rate) : 600_000;
      const cpu0 = cpuNs(p.pid);
      const byThread0 = showThreads ? cpuByThread(p.pid) : null;
      const g = await generate(l, payload, Number.isFinite(rate) ? rate : 1e9, count);
      const { counts, cpu } = await settle(p, base.captured + g.sent);
      const captured = counts.captured - base.captured;
      if (byThread0) {
        const parts = [...cpuByThread(p.pid)].map(([k, [ns, slices]]) => {
          const [ns0, slices0] = byThread0.get(k) ?? [0, 0];
          return { k, ns: (ns - ns0) / captured, slices: slices - slices0 };
        }).filter((t) => t.ns >= 1).map((t) => `${t.k} ${t.ns.toFixed(0)} (${t.slices} runs)`);
        console.log(
          `${kind} ${payload + 42} B, ${count} frames: ns/packet by thread: ${parts.join(", ")}`,
        );
      }
      trials.push({
        capturer: kind,
        frame: payload + 42,
        offered: Math.round(g.sent / g.secs),
        sent: g.sent,
        captured,
        lost: g.sent - captured,
        kernelDropped: counts.dropped - base.dropped,
        nsPerPacket: (cpu - cpu0) / captured,
      });
      base = counts;
    }
  } finally {
    await p.stop();
  }
  if (outFile) {
    // Captured-to-file: count what actually reached the file.
    const inFile = countRecords(await Deno.readFile(outFile), kind === "tcpdump>file");
    const total = trials.reduce((n, t) => n + t.captured, 0) + WARMUP;
    if (inFile !== total) {
      console.warn(`${kind}: ${inFile} records in the file, ${total} counted as captured`);
    }
    await Deno.remove(outFile);
  }
  return trials;
}

/** Records in a pcap file (24-byte header, 16-byte record headers) or in wire records. */
function countRecords(b: Uint8Array, pcapFile: boolean): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let n = 0;
  for (let off = pcapFile ? 24 : 0; off + 16 <= b.length; n++) {
    off += 16 + v.getUint32(off + 8, true);
  }
  return n;
}

function table(frame: number, trials: Trial[]): string {
  const lines = [
    `${frame}-byte frames`,
    "",
    "| capturer | offered pps | sent | captured | lost | kernel drops | CPU ns/packet |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const t of trials) {
    lines.push(
      `| ${t.capturer} | ${t.offered} | ${t.sent} | ${t.captured} | ${t.lost} | ${t.kernelDropped} | ${
        t.nsPerPacket.toFixed(0)
      } |`,
    );
  }
  const best = (c: string) =>
    Math.max(0, ...trials.filter((t) => t.capturer === c && t.lost === 0).map((t) => t.offered));
  const ok = (c: string) => trials.filter((t) => t.capturer === c && t.lost === 0);
  // CPU compared at the highest rung both capturers passed without loss.
  const common = ok("engine").map((t) => t.sent).filter((s) =>
    ok("tcpdump").some((u) => u.sent === s)
  ).at(-1);
  const at = (c: string) => ok(c).find((t) => t.sent === common)?.nsPerPacket ?? NaN;
  if (trials.some((t) => t.capturer === "engine@base")) {
    // before/after: each ran twice (base, new, tcpdump, new, base); per rung the mean
    lines.push("", "| rung (frames) | engine@base ns/packet | engine ns/packet | after/before |");
    lines.push("| ---: | ---: | ---: | ---: |");
    for (const sent of [...new Set(trials.map((t) => t.sent))]) {
      const mean = (c: Capturer) => {
        const xs = trials.filter((t) => t.capturer === c && t.sent === sent).map((t) =>
          t.nsPerPacket
        );
        return xs.reduce((a, b) => a + b, 0) / xs.length;
      };
      const b = mean("engine@base"), a = mean("engine");
      lines.push(`| ${sent} | ${b.toFixed(0)} | ${a.toFixed(0)} | ${(a / b).toFixed(2)} |`);
    }
  }
  lines.push(
    "",
    "| | engine | tcpdump | engine/tcpdump |",
    "| --- | ---: | ---: | ---: |",
    `| highest zero-loss pps | ${best("engine")} | ${best("tcpdump")} | ${
      (best("engine") / best("tcpdump")).toFixed(2)
    } |`,
    `| CPU ns/packet at ${common ?? "-"} pkts (both zero-loss) | ${at("engine").toFixed(0)} | ${
      at("tcpdump").toFixed(0)
    } | ${(at("engine") / at("tcpdump")).toFixed(2)} |`,
  );
  return lines.join("\n");
}

export interface CaptureBenchOptions {
  ladders?: Record<number, number[]>; // UDP payload bytes -> offered rates (Infinity = max)
  fileRates?: Record<number, number[]>; // captured-to-file rungs
}

export async function runCaptureBench(opts: CaptureBenchOptions = {}): Promise<SizeResult[]> {
  const ladders = opts.ladders ?? {
    22: [100_000, 300_000, 500_000, 600_000, Infinity],
    1472: [100_000, 200_000, 300_000, 500_000, Infinity],
  };
  const fileRates = opts.fileRates ?? { 22: [200_000, 500_000], 1472: [100_000, 200_000] };
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-" });
  const lab = new Netns(newRunId());
  const results: SizeResult[] = [];
  try {
    const gen = `${tmp}/udpgen`;
    await run("gcc", ["-O2", "-o", gen, new URL("./gen/udpgen.c", import.meta.url).pathname]);
    const genNs = await lab.addNamespace("g");
    const capNs = await lab.addNamespace("c");
    const dev = `${lab.runId}c`, genDev = `${lab.runId}g`;
    await lab.addVethPair(genDev, genNs, dev, capNs);
    await lab.addAddress(genNs, genDev, "198.18.50.1/24");
    await lab.addAddress(capNs, dev, `${DST_IP}/24`);
    await lab.setUp(genNs, genDev);
    await lab.setUp(capNs, dev);
    const l: Lab = { lab, capNs, genNs, dev, genDev, gen };
    for (const [payload, rates] of Object.entries(ladders)) {
      const trials: Trial[] = [];
      const kinds: Capturer[] = BASELINE
        ? ["engine@base", "engine", "tcpdump", "engine", "engine@base"]
        : ["engine", "tcpdump"];
      for (const c of kinds) trials.push(...await ladder(l, c, Number(payload), rates));
      const fr = fileRates[Number(payload)] ?? [];
      if (fr.length) {
        for (const c of ["engine>file", "tcpdump>file"] as const) {
          trials.push(...await ladder(l, c, Number(payload), fr, `${tmp}/${c.slice(0, 6)}.out`));
        }
      }
      console.log(table(Number(payload) + 42, trials) + "\n");
      results.push({ frame: Number(payload) + 42, trials });
    }
  } finally {
    await lab.cleanup();
    await Deno.remove(tmp, { recursive: true });
  }
  return results;
}

if (import.meta.main) {
  if (Deno.args[0] === "--engine-child") {
    await engineChild(Deno.args[1], Deno.args[2], Deno.args[3]);
  } else if (Deno.args.includes("--quick")) {
    await withFreedMemoryHeld(() =>
      runCaptureBench({
        ladders: { 22: [300_000, Infinity], 1472: [200_000, Infinity] },
        fileRates: {},
      })
    );
  } else {
    await withFreedMemoryHeld(() => runCaptureBench());
  }
}
