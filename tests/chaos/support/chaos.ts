/**
 * Shared pieces of the chaos campaign (docs/reliability.md): the short/long form switch, a seeded
 * PRNG for reproducible fuzzing, waits on conditions with deadlines, per-process resource samples
 * from /proc, and the figures each scenario records for the reliability table.
 */
import { run } from "../../../lab/netns.ts";

/** Long form: PCAP_LONG=1 (not in CI). */
export const LONG = Deno.env.get("PCAP_LONG") === "1";

/** Number of fuzz cases: the short form's count, or the long form's. */
export function cases(short: number, long: number): number {
  const n = Number(Deno.env.get("PCAP_CHAOS_CASES") ?? NaN);
  return Number.isInteger(n) && n > 0 ? n : LONG ? long : short;
}

/** Seed of this run's PRNGs: PCAP_CHAOS_SEED, or a fixed default so that CI runs repeat. */
export const SEED = Number(Deno.env.get("PCAP_CHAOS_SEED") ?? 0x5eed) >>> 0;

/** mulberry32: small, fast, good enough to pick fuzz cases; same seed, same sequence. */
export class Prng {
  #s: number;
  constructor(seed = SEED) {
    this.#s = seed >>> 0;
  }
  /** uniform in [0, 1) */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** printable-ish text of length n, with a share of control and non-ASCII characters */
  text(n: number): string {
    let s = "";
    for (let i = 0; i < n; i++) {
      const r = this.next();
      s += r < 0.1
        ? String.fromCharCode(this.int(32))
        : r < 0.15
        ? String.fromCharCode(0x80 + this.int(0x700))
        : String.fromCharCode(32 + this.int(95));
    }
    return s;
  }
}

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls cond every stepMs until it holds; throws naming `what` (and the last value seen) after
 * timeoutMs. For conditions, never for durations: the deadline is generous on purpose.
 */
export async function until<T>(
  what: string,
  cond: () => T | Promise<T>,
  timeoutMs = 30_000,
  stepMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (true) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    }
    await delay(stepMs);
  }
}

export interface ProcSample {
  rssKb: number;
  hwmKb: number;
  threads: number;
  fds: number;
}

/** A process's thread names and fd targets, from /proc: says what a leak is when counts differ. */
export function procInventory(pid: number): { threads: string[]; fds: string[] } {
  const threads: string[] = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      threads.push(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/comm`).trim());
    } catch { /* the thread has just exited */ }
  }
  const fds: string[] = [];
  for (const f of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      fds.push(Deno.readLinkSync(`/proc/${pid}/fd/${f.name}`).replace(/\[\d+\]$/, "[…]"));
    } catch { /* closed meanwhile */ }
  }
  return { threads: threads.sort(), fds: fds.sort() };
}

/** What `after` holds beyond `before` (a multiset difference). */
export function extraItems(before: string[], after: string[]): string[] {
  const left = new Map<string, number>();
  for (const b of before) left.set(b, (left.get(b) ?? 0) + 1);
  const extra: string[] = [];
  for (const a of after) {
    const n = left.get(a) ?? 0;
    if (n > 0) left.set(a, n - 1);
    else extra.push(a);
  }
  return extra;
}

/** RSS, peak RSS, threads and open fds of a process, from /proc. */
export function procSample(pid: number): ProcSample {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
  let fds = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) fds++;
  return { rssKb: field("VmRSS"), hwmKb: field("VmHWM"), threads: field("Threads"), fds };
}

/** Whether pid is alive and not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/**
 * Pid of the deno process whose command line has an argument ending in `argSuffix` (the lab
 * starts every agent and the api with its own config file), optionally among a namespace's pids.
 */
export async function pidByArg(argSuffix: string, netns?: string | null): Promise<number> {
  const pids = netns
    ? (await run("ip", ["netns", "pids", netns])).stdout.split(/\s+/).filter(Boolean)
    : [...Deno.readDirSync("/proc")].map((e) => e.name).filter((n) => /^\d+$/.test(n));
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    } catch {
      continue; // exited meanwhile
    }
    if (argv[0] === Deno.execPath() && argv.some((a) => a.endsWith(argSuffix))) {
      return Number(pid);
    }
  }
  throw new Error(`no deno process with an argument ending in ${argSuffix}`);
}

/**
 * Figures of a scenario for docs/reliability.md: printed, and appended as one JSON line to
 * $PCAP_CHAOS_FIGURES when set (the table is built from that file).
 */
export function record(scenario: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ scenario, long: LONG, seed: SEED, ...figures });
  console.log(`chaos figures: ${line}`);
  const file = Deno.env.get("PCAP_CHAOS_FIGURES");
  if (file) Deno.writeTextFileSync(file, line + "\n", { append: true });
}
