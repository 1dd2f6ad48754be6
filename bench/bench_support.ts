// Shared helpers of the agent/api benchmarks: CPU and memory of a process from /proc, the
// raw-socket generator of bench/gen/udpgen.c, a `tcpdump -U -w - | reader` baseline whose reader
// counts pcap records, waiting for a count to settle, and markdown tables.
//   deno run -A bench/bench_support.ts --pcap-reader FIFO   (child mode: counts pcap records)
import { type Netns, run } from "../lab/netns.ts";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The median; of an even count, the mean of the two middle values. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Frames go to a MAC nobody owns: the VM's IP stack drops them right after the packet taps. */
export const DST_MAC = "02:00:00:00:00:01";
export const UDP_PORT = 9;
export const FILTER = `udp dst port ${UDP_PORT}`;
/** Ethernet + IPv4 + UDP headers in front of the generator's payload. */
export const HEADERS = 42;

/** CPU time (ns, user+sys) of all threads of pid, from schedstat (ns resolution); 0 if gone. */
export function cpuNs(pid: number): number {
  let sum = 0;
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        sum += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
      } catch { /* thread ended */ }
    }
  } catch { /* process ended */ }
  return sum;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/**
 * CPU time (ns, user+sys) of pid from /proc/<pid>/stat: all threads, including ones that have
 * ended (cpuNs, which sums the living threads, loses those), at 10 ms resolution; 0 if gone.
 * For processes whose threads come and go (agent capture workers, tokio's blocking pool).
 */
export function procCpuNs(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields 14 (utime) and 15 (stime), i.e. 11 and 12 after the state field
    return (Number(f[11]) + Number(f[12])) * (1e9 / USER_HZ);
  } catch {
    return 0;
  }
}

/** CPU of one process at one moment: per living thread (schedstat, ns) and in all (stat). */
export interface CpuSnapshot {
  threads: Map<string, number>;
  statNs: number;
}

export function cpuSnapshot(pid: number): CpuSnapshot {
  const threads = new Map<string, number>();
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const ns = Number(
          Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0],
        );
        threads.set(t.name, ns);
      } catch { /* thread ended */ }
    }
  } catch { /* process ended */ }
  return { threads, statNs: procCpuNs(pid) };
}

/**
 * CPU ns a process used between two snapshots: exact (schedstat) when no thread of the first
 * ended by the second, else from /proc/<pid>/stat (10 ms ticks), which keeps ended threads' time.
 */
export function cpuDeltaNs(a: CpuSnapshot, b: CpuSnapshot): number {
  if ([...a.threads.keys()].some((t) => !b.threads.has(t))) return b.statNs - a.statNs;
  let ns = 0;
  for (const [t, v] of b.threads) ns += v - (a.threads.get(t) ?? 0);
  return ns;
}

/**
 * CPU ns of the living threads of pids by thread name (comm, digits folded: "worker-N"), from
 * schedstat. Differences of two calls split a window's CPU by thread kind (threads that end
 * in between are missed: use procCpuNs for totals).
 */
export function cpuByThreadName(pids: number[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const pid of pids) {
    let tasks: Deno.DirEntry[];
    try {
      tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const dir = `/proc/${pid}/task/${t.name}`;
        const name = Deno.readTextFileSync(`${dir}/comm`).trim().replace(/\d+$/, "N");
        const ns = Number(Deno.readTextFileSync(`${dir}/schedstat`).split(" ")[0]);
        m.set(name, (m.get(name) ?? 0) + ns);
      } catch { /* thread ended */ }
    }
  }
  return m;
}

/** A field of /proc/meminfo in KiB (0 when absent). */
export function meminfoKb(field: "MemTotal" | "MemAvailable"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(Deno.readTextFileSync("/proc/meminfo"));
  return m ? Number(m[1]) : 0;
}

/** A field of /proc/<pid>/status in KiB (VmRSS = resident now, VmHWM = peak resident). */
export function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m")
      .exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Writes and deletes a file of `bytes` in `dir`, so that the page cache's later allocations
 * reuse memory the guest has touched before. On this lab's VM the first touch of a guest page
 * costs a host fault: an output file landing in never-touched memory cost its writer 2–3 µs more
 * per 1500 B packet (`copy_folio_from_iter_atomic`), which is the VM's, not the writer's, and
 * fell on whichever path ran first (docs/benchmarks.md, "The output file's first touch"). Returns
 * the MB written.
 */
export async function pretouchPageCache(dir: string, bytes: number): Promise<number> {
  const avail = meminfoKb("MemAvailable") * 1024;
  const total = Math.min(bytes, avail / 2);
  const file = `${dir}/pretouch.bin`;
  const f = await Deno.open(file, { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(1 << 20).fill(0xa5);
    for (let done = 0; done < total;) {
      const n = await f.write(chunk);
      done += n;
    }
  } finally {
    f.close();
    await Deno.remove(file);
  }
  return Math.round(total / 2 ** 20);
}

/** Pids whose command line contains `fragment` (e.g. a lab config path). */
export function pidsByCmdline(fragment: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ");
      if (cmd.includes(fragment)) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** The one process whose command line contains fragment; throws naming it otherwise. */
export function pidOf(fragment: string, what: string): number {
  const pids = pidsByCmdline(fragment);
  if (pids.length !== 1) {
    throw new Error(`bench: expected one ${what} process (cmdline ~ ${fragment}), found ${pids}`);
  }
  return pids[0];
}

/** Pids of all living descendants of pid (children, their children, …), from /proc/<pid>/stat. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      // fields after the command name "(comm)", which may itself hold spaces or parentheses
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...children.get(ppid) ?? [], Number(e.name)]);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const next = children.get(todo.pop()!) ?? [];
    out.push(...next);
    todo.push(...next);
  }
  return out;
}

/** The command name of pid (/proc/<pid>/comm), "" if gone. */
export function comm(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

/** Pins every thread of pid to the given CPUs (new threads inherit it). */
export async function pin(pid: number, cpus: string): Promise<void> {
  await run("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
}

/** Compiles bench/gen/udpgen.c (the capture bench's generator) into dir; returns the binary. */
export async function compileGenerator(dir: string): Promise<string> {
  const bin = `${dir}/udpgen`;
  await run("gcc", ["-O2", "-o", bin, new URL("./gen/udpgen.c", import.meta.url).pathname]);
  return bin;
}

export interface GenTarget {
  netns: Netns;
  /** namespace the generator runs in (the lab's bridge namespace) */
  ns: string;
  /** device it sends on: the bridge-side veth whose peer is the VM's eth0 */
  dev: string;
  /** destination IP (the VM's) */
  ip: string;
}

export interface GenResult {
  sent: number;
  secs: number;
}

/**
 * One paced burst of `count` frames of `payload` UDP bytes at `rate` pps (pinned to core 0);
 * `srcPort` (default 40000) marks the burst's frames.
 */
export async function generate(
  gen: string,
  t: GenTarget,
  payload: number,
  rate: number,
  count: number,
  srcPort = 40000,
): Promise<GenResult> {
  const g = await t.netns.exec(t.ns, [
    "taskset",
    "-c",
    "0",
    gen,
    t.dev,
    DST_MAC,
    t.ip,
    String(UDP_PORT),
    String(payload),
    String(rate),
    String(count),
    String(srcPort),
  ]);
  const [sent, secs] = g.stdout.trim().split(" ").map(Number);
  return { sent, secs };
}

/** Bursts into several VMs at once (one generator each, all on core 0). */
export async function generateAll(
  gen: string,
  targets: GenTarget[],
  payload: number,
  rate: number,
  count: number,
): Promise<GenResult> {
  const all = await Promise.all(targets.map((t) => generate(gen, t, payload, rate, count)));
  return {
    sent: all.reduce((n, g) => n + g.sent, 0),
    secs: Math.max(...all.map((g) => g.secs)),
  };
}

/**
 * Waits until count() reaches target, or stops growing for quietMs (tcpdump's kernel block
 * timeout is 1 s, so quiet must be longer). Returns the count and `cpu()` at the last growth.
 */
export async function settle(
  count: () => number,
  target: number,
  cpu: () => number = () => 0,
  quietMs = 1500,
): Promise<{ count: number; cpu: number }> {
  let last = count();
  let lastCpu = cpu();
  let since = performance.now();
  while (last < target && performance.now() - since < quietMs) {
    await sleep(20);
    const c = count();
    if (c !== last) {
      last = c;
      lastCpu = cpu();
      since = performance.now();
    }
  }
  return { count: last, cpu: lastCpu };
}

/**
 * Baseline of what `bosh pcap` does on a VM, without ssh: `tcpdump -U -w -` in the VM's
 * namespace writing into a pipe (a FIFO, same kernel object) read by a separate Deno process that
 * counts pcap records. tcpdump is pinned to `cpus`; the reader floats.
 */
export class TcpdumpPipe {
  readonly #tcpdump: Deno.ChildProcess;
  readonly #reader: Deno.ChildProcess;
  #out = "";
  #err = "";
  #done: Promise<void>;

  private constructor(tcpdump: Deno.ChildProcess, reader: Deno.ChildProcess) {
    this.#tcpdump = tcpdump;
    this.#reader = reader;
    const dec = () => new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
      const d = dec();
      for await (const c of s) add(d.decode(c, { stream: true }));
    };
    this.#done = Promise.all([
      pump(reader.stdout, (t) => this.#out += t),
      pump(tcpdump.stderr, (t) => this.#err += t),
    ]).then(() => {});
  }

  static async start(
    netns: Netns,
    ns: string,
    dev: string,
    fifo: string,
    opts: { cpus?: string; bufferKb?: number; snaplen?: number } = {},
  ): Promise<TcpdumpPipe> {
    await run("mkfifo", [fifo]);
    // The reader opens the FIFO first: a writer's open blocks until there is one.
    const reader = netns.spawn(null, [
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--pcap-reader",
      fifo,
    ], { stdout: "piped" });
    const args = ["-p", "-n", "-U", "-i", dev, "-s", String(opts.snaplen ?? 65535)]
      .concat(opts.bufferKb ? ["-B", String(opts.bufferKb)] : [], ["-w", "-", FILTER]);
    // `exec` keeps the pid: the tracked (and killed) process is tcpdump itself.
    const tcpdump = netns.spawn(ns, [
      "sh",
      "-c",
      'exec taskset -c "$0" tcpdump "$@" > "$FIFO"',
      opts.cpus ?? "0-1",
      ...args,
    ], { stderr: "piped", env: { FIFO: fifo } });
    const p = new TcpdumpPipe(tcpdump, reader);
    for (let i = 0; !/listening on/.test(p.#err); i++) {
      if (i > 1000) throw new Error(`tcpdump in ${ns} did not start: ${p.#err}`);
      await sleep(10);
    }
    return p;
  }

  get pid(): number {
    return this.#tcpdump.pid;
  }

  get readerPid(): number {
    return this.#reader.pid;
  }

  /** Records the reader has counted so far (it prints a line whenever the count grew). */
  get count(): number {
    const complete = this.#out.slice(0, this.#out.lastIndexOf("\n"));
    return Number(complete.slice(complete.lastIndexOf("\n") + 1)) || 0;
  }

  /** SIGINT to tcpdump (it flushes and exits; the reader sees EOF). Returns tcpdump's drops. */
  async stop(): Promise<{ count: number; kernelDropped: number }> {
    try {
      this.#tcpdump.kill("SIGINT");
    } catch { /* gone */ }
    await this.#tcpdump.status;
    await this.#reader.status;
    await this.#done;
    const m = /(\d+) packets? dropped by kernel/.exec(this.#err);
    return { count: this.count, kernelDropped: m ? Number(m[1]) : 0 };
  }
}

/**
 * Counts the records of a pcap stream (24-byte file header, then 16-byte record headers with
 * incl_len at offset 8); prints the count every 50 ms when it grew, and at EOF.
 */
async function pcapReader(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true });
  const hdr = new Uint8Array(16);
  const hv = new DataView(hdr.buffer);
  let fileHeader = 24; // bytes of the file header still to skip
  let have = 0; // bytes of the current record header gathered
  let skip = 0; // payload bytes of the current record still to skip
  let n = 0;
  let printed = -1;
  const report = () => {
    if (n !== printed) console.log(String(n));
    printed = n;
  };
  // On a timer, not per chunk: the last chunk of a burst must be reported too.
  const timer = setInterval(report, 50);
  for await (const chunk of f.readable) {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      if (fileHeader > 0) {
        const k = Math.min(fileHeader, len - off);
        fileHeader -= k;
        off += k;
      } else if (skip > 0) {
        const k = Math.min(skip, len - off);
        skip -= k;
        off += k;
      } else {
        const k = Math.min(16 - have, len - off);
        hdr.set(chunk.subarray(off, off + k), have);
        have += k;
        off += k;
        if (have === 16) {
          skip = hv.getUint32(8, true);
          have = 0;
          n++;
        }
      }
    }
  }
  clearInterval(timer);
  report();
}

/** A markdown table; numbers right-aligned. */
export function table(head: string[], rows: Array<Array<string | number>>): string {
  const align = head.map((_, i) => rows.some((r) => typeof r[i] === "number") ? "---:" : "---");
  return [
    `| ${head.join(" | ")} |`,
    `| ${align.join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(String).join(" | ")} |`),
  ].join("\n");
}

/** Ratio text ("1.23" or "-" when undefined). */
export function ratio(a: number, b: number): string {
  return a > 0 && b > 0 ? (a / b).toFixed(2) : "-";
}

/** Highest offered rate among zero-loss rows (0 if none). */
export function bestZeroLoss<T extends { offered: number; lost: number }>(rows: T[]): number {
  return Math.max(0, ...rows.filter((r) => r.lost === 0).map((r) => r.offered));
}

if (import.meta.main && Deno.args[0] === "--pcap-reader") {
  await pcapReader(Deno.args[1]);
}
