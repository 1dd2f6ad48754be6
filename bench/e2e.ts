// End to end against ssh + tcpdump (issue 13): what a user gets in a file, per path, on VM 1 of
// a 3-VM lab. Paths:
//   pcap: `pcap-bosh capture … -o file.pcapng` → api → agent (real processes);
//   ssh:  `ssh root@VM tcpdump -U -w - -i eth0 FILTER > file.pcap` against Debian's sshd run by
//         the bench inside the VM's namespace, once per cipher (aes128-gcm, chacha20-poly1305).
// Every process of a path is pinned to core 1 (agent, api, client / sshd + its sessions and
// tcpdump, ssh); the raw-socket generator (bench/gen/udpgen.c) to core 0. Each rung starts a fresh
// capture per path (paths alternate on every rung, their order rotating), sends a marked warm-up,
// then one burst whose frames carry a per-rung UDP source port; the packets of that port found in
// the written file (`tcpdump -r`) are what counts. CPU: user+sys of all the path's processes from
// just before the burst until the file stopped growing, per packet in the file: the sum over
// threads of /proc/<pid>/task/*/schedstat (ns), or /proc/<pid>/stat utime+stime (10 ms ticks,
// keeps ended threads' time) for a process one of whose threads ended meanwhile. Also the peak
// resident memory (VmHWM) of the process that writes the file: pcap-bosh, or the ssh client.
// Before the first rung it writes and deletes a file twice the largest rung's output, so that no
// path's file lands in guest memory never touched before (bench_support.ts pretouchPageCache).
//   deno run -A bench/e2e.ts [--quick] [--ladder 1500:50000,100000,max] [--burst 1]
//     [--agent-buffer-mib 16]   (the agents' capture.buffer_size; default the agent's 4 MiB)
//     [--report-freed-memory]   (leave the VM's free page reporting on: free_page_reporting.ts)
//   (also `deno task bench e2e [--quick]`)
import type { LabVm, Landscape } from "../lab/landscape.ts";
import { run } from "../lab/netns.ts";
import { PcapBoshCapture } from "./pcap_client.ts";
import { LabSshd, SSH_CIPHERS, type SshCipher, sshPreflight, SshTcpdump } from "./ssh_baseline.ts";
import {
  compileGenerator,
  cpuDeltaNs,
  type CpuSnapshot,
  cpuSnapshot,
  FILTER,
  generate,
  type GenTarget,
  HEADERS,
  pidOf,
  pin,
  pretouchPageCache,
  ratio,
  sleep,
  statusKb,
  table,
} from "./bench_support.ts";
import { genTargets, startBenchApi, startBenchLab } from "./fan_in.ts";
import { createTlsFetch } from "../lib/tls_fetch.ts";
import { holdFreedMemory } from "./free_page_reporting.ts";

/** Core of every process of the path under test; the generator has core 0. */
const PATH_CPU = "1";
const WARMUP = 2_000;
const WARMUP_PORT = 40000;

type PathName = "pcap" | `ssh ${SshCipher}`;

export interface E2eOptions {
  quick?: boolean;
  /** frame size (bytes on the wire, without FCS) → offered rates (Infinity = generator's max) */
  ladders?: Record<number, number[]>;
  /** seconds of each burst (the max rung sends maxFrames instead) */
  burstSecs?: number;
  /** the agents' kernel ring (capture.buffer_size) in bytes; default: the agent's own (4 MiB) */
  agentBuffer?: number;
  /** leave the VM's free page reporting as it is (default: held off, free_page_reporting.ts) */
  reportFreedMemory?: boolean;
}

interface Row {
  frame: number;
  path: PathName;
  cipher: string;
  rung: number | "max";
  offered: number;
  sent: number;
  inFile: number;
  lost: number;
  /** CPU µs per packet in the file, per process role */
  parts: Record<string, number>;
  /** peak resident MB of the process writing the file (pcap-bosh, ssh) */
  writerPeakMb: number;
  note: string;
}

interface Ctx {
  lab: Landscape;
  vm: LabVm;
  target: GenTarget;
  gen: string;
  sshd: LabSshd;
  agentPid: number;
  apiPid: number;
  tmp: string;
  port: number;
}

/** A running capture of one path: its processes by role, and how to end it. */
interface PathCapture {
  roles(): Record<string, number[]>;
  /** the process that writes the file */
  writerPid: number;
  cipher: string;
  stop(): Promise<string>;
}

/** The api's drop counters by stage (kernel, agent, api), from its /metrics. */
async function apiDrops(lab: Landscape): Promise<Record<string, number>> {
  const t = createTlsFetch({ ca: lab.pki.caCert });
  try {
    const text = await (await t.fetch(`${lab.apiUrl}/metrics`)).text();
    const out: Record<string, number> = {};
    for (
      const m of text.matchAll(/^pcap_api_dropped_packets_total\{[^}]*stage="(\w+)"[^}]*\} (\d+)/gm)
    ) {
      out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
    }
    return out;
  } finally {
    t.close();
  }
}

async function startPath(c: Ctx, path: PathName, file: string): Promise<PathCapture> {
  if (path === "pcap") {
    const drops0 = await apiDrops(c.lab);
    const p = await PcapBoshCapture.start(c.lab, c.vm, {
      filter: FILTER,
      file,
      cpus: PATH_CPU,
      dir: c.tmp,
    });
    return {
      roles: () => ({ agent: [c.agentPid], api: [c.apiPid], client: [p.pid] }),
      writerPid: p.pid,
      cipher: "TLS (api ↔ agent, client ↔ api)",
      stop: async () => {
        const code = await p.stop();
        if (code !== 0) return `exit ${code}: ${p.stderrTail()}`;
        // where the lost ones were dropped (the api counts every stage once a capture ended)
        await sleep(300);
        const d = await apiDrops(c.lab);
        const by = ["kernel", "agent", "api"].map((k) => `${k} ${(d[k] ?? 0) - (drops0[k] ?? 0)}`);
        return `${p.stderrTail().split("\n").at(-1)!} (dropped: ${by.join(", ")})`;
      },
    };
  }
  const s = await SshTcpdump.start(c.lab.topology.netns, c.sshd, {
    cipher: path.slice(4) as SshCipher,
    dev: c.vm.device,
    filter: FILTER,
    file,
    cpus: PATH_CPU,
  });
  return {
    roles: () => {
      const p = s.pids();
      return { tcpdump: p.tcpdump, sshd: p.sshd, ssh: [p.ssh] };
    },
    writerPid: s.pids().ssh,
    cipher: s.cipher,
    stop: async () => {
      await s.stop();
      return /\d+ packets? dropped by kernel/.exec(s.stderrTail())?.[0] ?? s.stderrTail();
    },
  };
}

const fileSize = (f: string) => {
  try {
    return Deno.statSync(f).size;
  } catch {
    return 0;
  }
};

/** Waits until the file reaches `target` bytes or stops growing for quietMs; the size then. */
async function settleFile(file: string, target: number, quietMs = 1500): Promise<number> {
  let last = fileSize(file);
  for (let since = performance.now(); last < target && performance.now() - since < quietMs;) {
    await sleep(20);
    const s = fileSize(file);
    if (s !== last) [last, since] = [s, performance.now()];
  }
  return last;
}

/** Packets of UDP source port `port` in a pcap or pcapng file, as tcpdump reads it. */
export async function countInFile(file: string, port: number): Promise<number> {
  const child = new Deno.Command("tcpdump", {
    args: ["-r", file, "-n", "-q", `udp src port ${port} and ${FILTER}`],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let lines = 0;
  for await (const chunk of child.stdout) {
    for (const b of chunk) if (b === 10) lines++;
  }
  const { code } = await child.status;
  const err = await new Response(child.stderr).text();
  if (code !== 0) throw new Error(`bench e2e: tcpdump -r ${file} failed (exit ${code}): ${err}`);
  return lines;
}

async function rung(c: Ctx, path: PathName, frame: number, rate: number, count: number) {
  const file = `${c.tmp}/${path.replace(/\W+/g, "-")}-${c.port}.${
    path === "pcap" ? "pcapng" : "pcap"
  }`;
  const payload = frame - HEADERS;
  const p = await startPath(c, path, file);
  let note = "";
  try {
    const size0 = fileSize(file);
    await generate(c.gen, c.target, payload, 20_000, WARMUP, WARMUP_PORT);
    const warm = await settleFile(file, Infinity);
    const perPacket = (warm - size0) / WARMUP;
    const roles = p.roles();
    const cpu = () =>
      Object.fromEntries(Object.entries(roles).map(([k, ps]) => [k, ps.map(cpuSnapshot)]));
    const cpu0 = cpu();
    const port = c.port;
    const g = await generate(c.gen, c.target, payload, rate, count, port);
    // CPU at the moment the file stopped growing (as settle() in bench_support)
    let cpu1 = cpu(), last = fileSize(file);
    const target = warm + g.sent * perPacket;
    for (let since = performance.now(); last < target && performance.now() - since < 1500;) {
      await sleep(20);
      const s = fileSize(file);
      if (s !== last) [last, since, cpu1] = [s, performance.now(), cpu()];
    }
    if (last >= target) cpu1 = cpu();
    const writerPeakMb = statusKb(p.writerPid, "VmHWM") / 1024;
    note = await p.stop();
    const inFile = await countInFile(file, port);
    const used = (a: CpuSnapshot[], b: CpuSnapshot[]) =>
      a.reduce((n, s, i) => n + cpuDeltaNs(s, b[i]), 0);
    const parts = Object.fromEntries(
      Object.keys(cpu0).map((k) => [k, inFile ? used(cpu0[k], cpu1[k]) / 1e3 / inFile : NaN]),
    );
    return {
      frame,
      path,
      cipher: p.cipher,
      rung: Number.isFinite(rate) ? rate : "max",
      offered: Math.round(g.sent / g.secs),
      sent: g.sent,
      inFile,
      lost: g.sent - inFile,
      parts,
      writerPeakMb,
      note,
    } satisfies Row;
  } catch (e) {
    if (!note) await p.stop().catch(() => {});
    throw e;
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

const total = (r: Row) => Object.values(r.parts).reduce((a, b) => a + b, 0);
const fmt = (x: number) => Number.isFinite(x) ? x.toFixed(2) : "-";
const shortPath = (p: PathName) => p === "pcap" ? "pcap-bosh → api → agent" : `ssh + tcpdump`;

function rowsTable(rows: Row[]): string {
  return table(
    [
      "path",
      "cipher",
      "rung pps",
      "offered pps",
      "sent",
      "in file",
      "lost",
      "CPU s/Mpkt",
      "µs/packet by process",
      "writer peak RSS MB",
      "client's last line",
    ],
    rows.map((r) => [
      shortPath(r.path),
      r.cipher,
      r.rung,
      r.offered,
      r.sent,
      r.inFile,
      r.lost,
      fmt(total(r)),
      Object.entries(r.parts).map(([k, v]) => `${k} ${fmt(v)}`).join(", "),
      r.writerPeakMb.toFixed(0),
      r.note.replaceAll("|", "/").slice(0, 150),
    ]),
  );
}

/** Per path: highest zero-loss offered rate, CPU at the highest rung every path passed. Pure. */
export function summary(rows: Row[], paths: PathName[]): string {
  const best = (p: PathName) =>
    rows.filter((r) => r.path === p && r.lost === 0).reduce<Row | null>(
      (b, r) => !b || r.offered > b.offered ? r : b,
      null,
    );
  const rungs = [...new Set(rows.map((r) => r.rung))];
  const common = rungs.filter((g) =>
    paths.every((p) => rows.some((r) => r.path === p && r.rung === g && r.lost === 0))
  ).at(-1);
  const pcapBest = best("pcap")?.offered ?? 0;
  return table(
    [
      "path",
      "cipher",
      "highest zero-loss pps",
      "pcap ÷ this",
      `CPU s/Mpkt at rung ${common ?? "-"} (all zero-loss)`,
      "CPU s/Mpkt at own best",
    ],
    paths.map((p) => {
      const b = best(p);
      const at = rows.find((r) => r.path === p && r.rung === common);
      return [
        shortPath(p),
        rows.find((r) => r.path === p)?.cipher ?? "-",
        b?.offered ?? 0,
        p === "pcap" ? "-" : ratio(pcapBest, b?.offered ?? 0),
        at ? fmt(total(at)) : "-",
        b ? fmt(total(b)) : "-",
      ];
    }),
  );
}

export async function runE2eBench(o: E2eOptions = {}): Promise<string> {
  const quick = o.quick ?? false;
  const ladders = o.ladders ?? (quick ? { 64: [100_000, Infinity], 1500: [50_000, Infinity] } : {
    64: [50_000, 100_000, 200_000, 300_000, 400_000, 600_000, Infinity],
    1500: [25_000, 50_000, 100_000, 150_000, 200_000, 300_000, Infinity],
  });
  const burstSecs = o.burstSecs ?? (quick ? 0.5 : 2);
  const maxFrames = (frame: number) => Math.round((frame < 500 ? 600_000 : 200_000) * burstSecs);
  await sshPreflight();
  const held = o.reportFreedMemory ? null : holdFreedMemory();
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-e2e-" });
  let lab: Landscape;
  try {
    lab = await startBenchLab(3, o.agentBuffer);
  } catch (e) {
    held?.restore();
    throw e;
  }
  let sshd: LabSshd | null = null;
  const out: string[] = [];
  try {
    const vm = lab.vms[0];
    const apiPid = await startBenchApi(lab);
    const agentPid = pidOf(`${lab.dir}/${lab.agentLogName(vm)}.yml`, "agent");
    await pin(agentPid, PATH_CPU);
    await pin(apiPid, PATH_CPU);
    sshd = await LabSshd.start(lab.topology.netns, vm.netns!, vm.ip, PATH_CPU);
    const c: Ctx = {
      lab,
      vm,
      target: genTargets(lab, [vm])[0],
      gen: await compileGenerator(tmp),
      sshd,
      agentPid,
      apiPid,
      tmp,
      port: WARMUP_PORT,
    };
    const paths: PathName[] = ["pcap", ...SSH_CIPHERS.map((k) => `ssh ${k}` as const)];
    const cpuModel = (await run("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo"])).stdout
      .replace(/.*:\s*/, "").trim();
    out.push(
      `Machine: ${navigator.hardwareConcurrency} cores (${cpuModel}), load average at start ` +
        `${(await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ")}; ` +
        `${quick ? "quick" : "full"} ladder, ${burstSecs} s bursts` +
        (o.agentBuffer ? `, agents' kernel ring ${o.agentBuffer / 2 ** 20} MiB` : "") +
        `; ${held?.note ?? "free page reporting left as it is (--report-freed-memory)"}.`,
    );
    // Every path's output then lands in memory touched before, as on any machine but this VM
    // (see pretouchPageCache): the largest rung's file, twice over for the writers' own memory.
    const largest = Math.max(
      ...Object.entries(ladders).flatMap(([frame, rates]) =>
        rates.map((r) =>
          (Number.isFinite(r) ? r * burstSecs : maxFrames(Number(frame))) * (Number(frame) + 32)
        )
      ),
    );
    const touchedMb = await pretouchPageCache(tmp, 2 * largest + 256 * 2 ** 20);
    out[0] += ` Page cache pre-touched: ${touchedMb} MB.`;
    console.log(out[0] + "\n");
    let turn = 0;
    for (const [frameText, rates] of Object.entries(ladders)) {
      const frame = Number(frameText);
      const rows: Row[] = [];
      for (const rate of rates) {
        const count = Number.isFinite(rate) ? Math.round(rate * burstSecs) : maxFrames(frame);
        // alternate: every rung runs every path, the first one rotating
        const order = paths.map((_, i) => paths[(i + turn) % paths.length]);
        turn++;
        for (const path of order) {
          c.port++;
          const r = await rung(c, path, frame, Number.isFinite(rate) ? rate : 1e9, count);
          r.rung = Number.isFinite(rate) ? rate : "max";
          rows.push(r);
          console.error(
            `e2e ${frame} B ${r.rung} ${path}: ${r.inFile}/${r.sent} in file, ` +
              `${fmt(total(r))} s/Mpkt`,
          );
        }
      }
      rows.sort((a, b) => paths.indexOf(a.path) - paths.indexOf(b.path));
      out.push(
        `${frame}-byte frames\n\n${rowsTable(rows)}\n\n${summary(rows, paths)}`,
      );
      console.log(out.at(-1) + "\n");
    }
  } catch (e) {
    lab.dumpLogs(20);
    if (sshd) console.error(`sshd log:\n${sshd.logText.slice(-2000)}`);
    throw e;
  } finally {
    await sshd?.stop();
    await lab.stopApi();
    await lab.stop();
    await Deno.remove(tmp, { recursive: true });
    held?.restore();
  }
  return out.join("\n\n");
}

if (import.meta.main) {
  // --ladder 1500:50000,100000,max (one size, chosen rates) and --burst SECONDS for a focused run
  const opt = (name: string) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Deno.args[i + 1] : undefined;
  };
  const ladder = opt("ladder")?.split(":");
  console.log("## End to end against ssh + tcpdump\n");
  await runE2eBench({
    quick: Deno.args.includes("--quick"),
    ...(ladder
      ? {
        ladders: {
          [Number(ladder[0])]: ladder[1].split(",").map((r) => r === "max" ? Infinity : Number(r)),
        },
      }
      : {}),
    ...(opt("burst") ? { burstSecs: Number(opt("burst")) } : {}),
    ...(opt("agent-buffer-mib") ? { agentBuffer: Number(opt("agent-buffer-mib")) * 2 ** 20 } : {}),
    reportFreedMemory: Deno.args.includes("--report-freed-memory"),
  });
}
