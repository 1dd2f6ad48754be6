// Capture benchmark: the engine vs `tcpdump -w` on the same offered-rate ladder
// of UDP over a veth into a namespace. A C sendmmsg generator (bench/gen/) is
// pinned to core 0, the capturer to core 1. Each capturer runs in its own
// process so its CPU time can be read from /proc/<pid>/stat.
//   deno run -A bench/capture.ts            (the ladder, prints tables)
import { CaptureEngine } from "../agent/capture_engine.ts";
import { Netns, newRunId, run } from "../lab/netns.ts";

const BUFFER = 32 << 20;
const SNAPLEN = 262144;
const FILTER = "udp dst port 9";
const CLK_TCK = 100;

export interface Trial {
  capturer: "engine" | "tcpdump";
  frame: number;
  offered: number; // achieved generator rate, pps
  sent: number;
  captured: number;
  lost: number;
  kernelDropped: number;
  cpuSecPerMpkt: number;
}

export interface SizeResult {
  frame: number;
  trials: Trial[];
}

/** Child mode: one engine capture; prints "ready", stops on stdin EOF, prints stats JSON. */
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
    for (let b; (b = await eng.next());) {
      if (file) {
        for (let off = 0; off < b.records.length;) off += file.writeSync(b.records.subarray(off));
      }
    }
  })();
  console.log("ready");
  // Wait for the parent to close our stdin.
  for await (const _ of Deno.stdin.readable) { /* ignore */ }
  await eng.stop();
  await consume;
  file?.close();
  console.log(JSON.stringify(eng.stats()));
}

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
}

async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  re: RegExp,
  acc: { text: string },
): Promise<void> {
  const dec = new TextDecoder();
  while (!re.test(acc.text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`capturer exited before ready: ${acc.text}`);
    acc.text += dec.decode(value);
  }
}

async function drain(reader: ReadableStreamDefaultReader<Uint8Array>, acc: { text: string }) {
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    acc.text += dec.decode(value);
  }
}

interface Lab {
  lab: Netns;
  capNs: string;
  genNs: string;
  dev: string;
  gen: string;
}

async function trial(
  l: Lab,
  capturer: "engine" | "tcpdump",
  payload: number,
  rate: number,
): Promise<Trial> {
  const count = Math.round(rate * 1.0); // one second of traffic
  const child = capturer === "engine"
    ? l.lab.spawn(null, [
      "taskset",
      "-c",
      "1",
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--engine-child",
      l.dev,
      `/run/netns/${l.capNs}`,
    ], { stdin: "piped", stdout: "piped", stderr: "piped" })
    : l.lab.spawn(l.capNs, [
      "taskset",
      "-c",
      "1",
      "tcpdump",
      "-n",
      "-i",
      l.dev,
      "-B",
      String(BUFFER / 1024),
      "-s",
      String(SNAPLEN),
      "-w",
      "/dev/null",
      FILTER,
    ], { stdin: "piped", stdout: "piped", stderr: "piped" });
  const out = { text: "" }, err = { text: "" };
  const outR = child.stdout.getReader(), errR = child.stderr.getReader();
  if (capturer === "engine") await readUntil(outR, /ready/, out);
  else await readUntil(errR, /listening on/, err);
  const outDone = drain(outR, out), errDone = drain(errR, err);
  const t0 = cpuTicks(child.pid);
  const g = await l.lab.exec(l.genNs, [
    "taskset",
    "-c",
    "0",
    l.gen,
    "198.18.50.2",
    "9",
    String(payload),
    String(rate),
    String(count),
  ]);
  const [sentS, secsS] = g.stdout.trim().split(" ");
  // tcpdump keeps its 1 s buffer timeout: wait past it so unretired kernel blocks are delivered.
  await new Promise((r) => setTimeout(r, 1200));
  const t1 = cpuTicks(child.pid);
  if (capturer === "engine") await child.stdin.close();
  else {
    await child.stdin.close();
    child.kill("SIGINT");
  }
  await child.status;
  await Promise.all([outDone, errDone]);
  let captured: number, kernelDropped: number;
  if (capturer === "engine") {
    const s = JSON.parse(out.text.trim().split("\n").pop()!);
    captured = s.packets;
    kernelDropped = s.dropped + s.ifDropped + s.engineDropped;
  } else {
    captured = Number(/(\d+) packets? captured/.exec(err.text)?.[1] ?? NaN);
    kernelDropped = Number(/(\d+) packets? dropped by kernel/.exec(err.text)?.[1] ?? NaN);
  }
  const sent = Number(sentS);
  return {
    capturer,
    frame: payload + 42,
    offered: Math.round(sent / Number(secsS)),
    sent,
    captured,
    lost: sent - captured,
    kernelDropped,
    cpuSecPerMpkt: ((t1 - t0) / CLK_TCK) / (captured / 1e6),
  };
}

function table(r: SizeResult): string {
  const lines = [
    `${r.frame}-byte frames`,
    "| capturer | offered pps | sent | captured | lost | CPU s / Mpkt |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const t of r.trials) {
    lines.push(
      `| ${t.capturer} | ${t.offered} | ${t.sent} | ${t.captured} | ${t.lost} | ${
        t.cpuSecPerMpkt.toFixed(2)
      } |`,
    );
  }
  const best = (c: string) =>
    Math.max(0, ...r.trials.filter((t) => t.capturer === c && t.lost === 0).map((t) => t.offered));
  const top = (c: string) => r.trials.filter((t) => t.capturer === c).at(-1)!;
  const cpu = (c: string) => {
    const ok = r.trials.filter((t) => t.capturer === c && t.lost === 0);
    return (ok.at(-1) ?? top(c)).cpuSecPerMpkt;
  };
  lines.push(
    "",
    "| | engine | tcpdump | engine/tcpdump |",
    "| --- | ---: | ---: | ---: |",
    `| highest zero-loss pps | ${best("engine")} | ${best("tcpdump")} | ${
      (best("engine") / best("tcpdump")).toFixed(2)
    } |`,
    `| lost at top rate | ${top("engine").lost} | ${top("tcpdump").lost} | |`,
    `| CPU s/Mpkt (top zero-loss rate) | ${cpu("engine").toFixed(2)} | ${
      cpu("tcpdump").toFixed(2)
    } | ${(cpu("engine") / cpu("tcpdump")).toFixed(2)} |`,
  );
  return lines.join("\n");
}

export async function runCaptureBench(
  ladders: Record<number, number[]> = {
    22: [100_000, 200_000, 300_000, 500_000],
    1472: [50_000, 100_000, 200_000, 300_000],
  },
): Promise<SizeResult[]> {
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-" });
  const lab = new Netns(newRunId());
  const results: SizeResult[] = [];
  try {
    const gen = `${tmp}/udpgen`;
    await run("gcc", ["-O2", "-o", gen, new URL("./gen/udpgen.c", import.meta.url).pathname]);
    const genNs = await lab.addNamespace("g");
    const capNs = await lab.addNamespace("c");
    const dev = `${lab.runId}c`;
    await lab.addVethPair(`${lab.runId}g`, genNs, dev, capNs);
    await lab.addAddress(genNs, `${lab.runId}g`, "198.18.50.1/24");
    await lab.addAddress(capNs, dev, "198.18.50.2/24");
    await lab.setUp(genNs, `${lab.runId}g`);
    await lab.setUp(capNs, dev);
    // Static neighbour: no ARP in the measured traffic.
    const mac = JSON.parse((await lab.exec(capNs, ["ip", "-j", "link", "show", dev])).stdout)[0]
      .address;
    await lab.exec(genNs, [
      "ip",
      "neigh",
      "replace",
      "198.18.50.2",
      "lladdr",
      mac,
      "dev",
      `${lab.runId}g`,
    ]);
    const l: Lab = { lab, capNs, genNs, dev, gen };
    for (const [payload, rates] of Object.entries(ladders)) {
      const r: SizeResult = { frame: Number(payload) + 42, trials: [] };
      for (const rate of rates) {
        for (const c of ["engine", "tcpdump"] as const) {
          r.trials.push(await trial(l, c, Number(payload), rate));
        }
      }
      console.log(table(r) + "\n");
      results.push(r);
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
  } else {
    await runCaptureBench();
  }
}
