// Network namespace and veth primitives for the lab, tests and benchmarks.
// Every name a run creates starts with its run id (`pc` + 4 base36 chars) so
// that cleanup and removeLeftovers() can never touch anything else.

const RUN_ID_RE = /^pc[0-9a-z]{4}$/;
const LEFTOVER_RE = /^pc[0-9a-z]{4}/;
const IFNAMSIZ = 15;
/** Live runs register here (file name = run id, content = owner pid) so that removeLeftovers()
 * never tears down a lab that another process is still using. */
export const RUN_REGISTRY = "/tmp/pcap-lab-runs";

function registerRun(runId: string): void {
  try {
    Deno.mkdirSync(RUN_REGISTRY, { recursive: true });
    Deno.writeTextFileSync(`${RUN_REGISTRY}/${runId}`, String(Deno.pid));
  } catch {
    // Without a registry entry the run is merely treated as a leftover by `lab down`.
  }
}

function unregisterRun(runId: string): void {
  try {
    Deno.removeSync(`${RUN_REGISTRY}/${runId}`);
  } catch {
    // never registered or already gone
  }
}

/** True when the run's owner process is still alive. */
export function runIsLive(runId: string): boolean {
  try {
    const pid = Number(Deno.readTextFileSync(`${RUN_REGISTRY}/${runId}`).trim());
    return pid > 0 && Deno.statSync(`/proc/${pid}`).isDirectory;
  } catch {
    return false;
  }
}

/** A fresh run id: "pc" + 4 random [0-9a-z]. */
export function newRunId(): string {
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return "pc" + Array.from(bytes, (b) => alphabet[b % 36]).join("");
}

export function isRoot(): boolean {
  return Deno.uid() === 0;
}

export interface RunOptions {
  stdin?: string;
  env?: Record<string, string>;
  /** Do not throw on a non-zero exit status. */
  allowFailure?: boolean;
}

/** Runs a command to completion; throws an Error naming the command and its stderr. */
export async function run(
  cmd: string,
  args: string[],
  opts: RunOptions = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  const command = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  let child: Deno.ChildProcess;
  try {
    child = command.spawn();
  } catch (e) {
    throw new Error(`cannot run "${cmd}": ${(e as Error).message}`);
  }
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  const stdout = dec.decode(out.stdout);
  const stderr = dec.decode(out.stderr);
  if (!out.success && !opts.allowFailure) {
    throw new Error(
      `command failed (exit ${out.code}): ${[cmd, ...args].join(" ")}: ${
        stderr.trim() || stdout.trim()
      }`,
    );
  }
  return { stdout, stderr, code: out.code };
}

function checkIfName(name: string): void {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.length > IFNAMSIZ) {
    throw new Error(`invalid interface name "${name}": use ≤ ${IFNAMSIZ} chars of [A-Za-z0-9_.-]`);
  }
}

function nsArgs(ns: string | null): string[] {
  return ns === null ? [] : ["-n", ns];
}

export interface SpawnOptions {
  stdin?: "piped" | "inherit" | "null";
  stdout?: "piped" | "inherit" | "null";
  stderr?: "piped" | "inherit" | "null";
  env?: Record<string, string>;
  cwd?: string;
}

// ---- cleanup on SIGINT/SIGTERM ----
// A killed test or lab process would otherwise leave its namespaces behind: while any Netns holds
// resources, SIGINT/SIGTERM remove them all and then exit 130/143. The listeners are installed with
// the first resource and removed with the last cleanup, so an idle process keeps its defaults.
// An owner that tears down in its own order on a signal calls releaseSignalGuard(). When another
// guard (lab/topology.ts stopOnSignal) handles the same signal, both await the same in-flight
// cleanup() and exit with the same code, so nothing is removed twice or cut short.

const guarded = new Set<Netns>();
let signalsInstalled = false;
let signalled = false;

function cleanupAllAndExit(signal: string, code: number): void {
  if (signalled) Deno.exit(code); // a second signal: give up waiting
  signalled = true;
  console.error(`lab: ${signal}: removing ${guarded.size} lab run(s)…`);
  Promise.allSettled([...guarded].map((n) => n.cleanup())).then((results) => {
    for (const r of results) {
      if (r.status === "rejected") console.error(`lab: cleanup error: ${r.reason}`);
    }
    Deno.exit(code);
  });
}

const onSigint = () => cleanupAllAndExit("SIGINT", 130);
const onSigterm = () => cleanupAllAndExit("SIGTERM", 143);

function guard(n: Netns): void {
  guarded.add(n);
  if (!signalsInstalled) {
    Deno.addSignalListener("SIGINT", onSigint);
    Deno.addSignalListener("SIGTERM", onSigterm);
    signalsInstalled = true;
  }
}

function unguard(n: Netns): void {
  guarded.delete(n);
  if (guarded.size === 0 && signalsInstalled) {
    Deno.removeSignalListener("SIGINT", onSigint);
    Deno.removeSignalListener("SIGTERM", onSigterm);
    signalsInstalled = false;
  }
}

/** One run's namespaces, host-side links and processes. cleanup() removes them all. */
export class Netns {
  readonly runId: string;
  #namespaces: string[] = [];
  #hostLinks: string[] = [];
  #children = new Map<number, Deno.ChildProcess>();
  #signalGuard = true;
  #cleaning: Promise<void> | null = null;

  constructor(runId: string) {
    if (!RUN_ID_RE.test(runId)) {
      throw new Error(`invalid run id "${runId}": expected "pc" + 4 chars of [0-9a-z]`);
    }
    this.runId = runId;
    registerRun(runId);
  }

  /** Whether a SIGINT/SIGTERM would clean this run up (only while it holds resources). */
  get signalGuarded(): boolean {
    return guarded.has(this);
  }

  /**
   * For an owner that removes this run itself on SIGINT/SIGTERM (in its own order): the Netns no
   * longer handles those signals for it.
   */
  releaseSignalGuard(): void {
    this.#signalGuard = false;
    unguard(this);
  }

  #holds(): void {
    if (this.#signalGuard) guard(this);
  }

  /** Names of the namespaces created so far. */
  get namespaces(): readonly string[] {
    return this.#namespaces;
  }

  /** Creates namespace `${runId}${short}` with lo up; returns its name (/run/netns/<name>). */
  async addNamespace(short: string): Promise<string> {
    const name = this.runId + short;
    if (!/^[0-9a-z_-]+$/.test(short)) throw new Error(`invalid namespace suffix "${short}"`);
    await run("ip", ["netns", "add", name]);
    this.#namespaces.push(name);
    this.#holds();
    await run("ip", ["-n", name, "link", "set", "lo", "up"]);
    return name;
  }

  /** Creates veth pair a<->b; each end goes to its namespace (null = host). */
  async addVethPair(a: string, nsA: string | null, b: string, nsB: string | null): Promise<void> {
    checkIfName(a);
    checkIfName(b);
    const where = (ns: string | null) => (ns === null ? [] : ["netns", ns]);
    await run("ip", [
      "link",
      "add",
      a,
      ...where(nsA),
      "type",
      "veth",
      "peer",
      "name",
      b,
      ...where(nsB),
    ]);
    // Links inside our namespaces vanish with them; host ends need explicit deletion.
    if (nsA === null) this.#hostLinks.push(a);
    else if (nsB === null) this.#hostLinks.push(b);
    this.#holds();
  }

  async addAddress(ns: string | null, dev: string, cidr: string): Promise<void> {
    await run("ip", [...nsArgs(ns), "addr", "add", cidr, "dev", dev]);
  }

  async setUp(ns: string | null, dev: string): Promise<void> {
    await run("ip", [...nsArgs(ns), "link", "set", dev, "up"]);
  }

  /** Runs cmd inside namespace ns to completion; throws on failure. */
  exec(ns: string, cmd: string[], opts: RunOptions = {}) {
    return run("ip", ["netns", "exec", ns, ...cmd], opts);
  }

  /** Starts cmd (inside ns, or in the host when null); tracked and killed by pid on cleanup. */
  spawn(ns: string | null, cmd: string[], opts: SpawnOptions = {}): Deno.ChildProcess {
    const argv = ns === null ? cmd : ["ip", "netns", "exec", ns, ...cmd];
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: opts.stdin ?? "null",
      stdout: opts.stdout ?? "null",
      stderr: opts.stderr ?? "null",
      env: opts.env,
      cwd: opts.cwd,
    }).spawn();
    this.#children.set(child.pid, child);
    this.#holds();
    child.status.then(() => this.#children.delete(child.pid), () => {});
    return child;
  }

  /** Kills one tracked process (by pid) and waits for it. */
  async kill(child: Deno.ChildProcess): Promise<void> {
    await killAndWait(child);
    this.#children.delete(child.pid);
  }

  /**
   * Removes everything this run made. Idempotent; concurrent calls (a test's finally and a signal
   * handler) share one removal. Throws only if something could not be removed.
   */
  cleanup(): Promise<void> {
    this.#cleaning ??= this.#cleanup().finally(() => {
      this.#cleaning = null;
    });
    return this.#cleaning;
  }

  async #cleanup(): Promise<void> {
    const errors: string[] = [];
    const children = [...this.#children.values()];
    this.#children.clear();
    await Promise.all(children.map((c) => killAndWait(c).catch((e) => errors.push(String(e)))));
    for (const link of this.#hostLinks.splice(0)) {
      const r = await run("ip", ["link", "del", link], { allowFailure: true });
      if (r.code !== 0 && !/Cannot find device|does not exist/i.test(r.stderr)) {
        errors.push(`ip link del ${link}: ${r.stderr.trim()}`);
      }
    }
    for (const ns of this.#namespaces.splice(0).reverse()) {
      const err = await deleteNamespace(ns);
      if (err) errors.push(err);
    }
    unregisterRun(this.runId);
    unguard(this);
    if (errors.length) {
      throw new Error(`lab cleanup of ${this.runId} incomplete: ${errors.join("; ")}`);
    }
  }
}

async function killAndWait(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // already exited
  }
  await child.status;
  // Close any piped streams the caller left open so nothing leaks.
  for (const get of [() => child.stdout, () => child.stderr]) {
    try {
      await get().cancel();
    } catch {
      // not piped (the getter throws) or already consumed
    }
  }
}

/** Kills every process still inside ns (by pid), then deletes it. Returns an error text or null. */
async function deleteNamespace(ns: string): Promise<string | null> {
  const pids = await run("ip", ["netns", "pids", ns], { allowFailure: true });
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      Deno.kill(Number(pid), "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  // A killed process may hold the namespace for a moment; deletion still unmounts the name.
  const r = await run("ip", ["netns", "del", ns], { allowFailure: true });
  if (r.code !== 0 && !/No such file|does not exist/i.test(r.stderr)) {
    return `ip netns del ${ns}: ${r.stderr.trim()}`;
  }
  return null;
}

/**
 * Removes namespaces and host links left by crashed runs: only names matching ^pc[0-9a-z]{4},
 * and never those of a run whose owner process is still alive (see RUN_REGISTRY).
 */
export async function removeLeftovers(): Promise<string[]> {
  const isLeftover = (name: string) => LEFTOVER_RE.test(name) && !runIsLive(name.slice(0, 6));
  const removed: string[] = [];
  const list = await run("ip", ["netns", "list"], { allowFailure: true });
  for (const line of list.stdout.split("\n")) {
    const name = line.trim().split(/\s+/)[0];
    if (name && isLeftover(name)) {
      if (!(await deleteNamespace(name))) removed.push(name);
    }
  }
  const links = await run("ip", ["-o", "link", "show"], { allowFailure: true });
  for (const line of links.stdout.split("\n")) {
    // "12: pc7k2qv1@if11: <...>" — the name ends at '@' or ':'.
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && isLeftover(m[1])) {
      const r = await run("ip", ["link", "del", m[1]], { allowFailure: true });
      if (r.code === 0) removed.push(m[1]);
    }
  }
  for (const entry of safeReadDir(RUN_REGISTRY)) {
    if (!runIsLive(entry)) unregisterRun(entry);
  }
  return removed;
}

function safeReadDir(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}
