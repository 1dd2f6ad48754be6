/**
 * A temporary HOME for Wireshark with pcap's extcap launcher installed the way a user installs
 * it (`pcap extcap --install`), and Debian's real tshark run from it.
 *
 * The children get a clean environment: HOME, PATH, the module cache (the launcher runs deno
 * from source), and whatever the test adds (BOSH_CONFIG, PCAP_API, …).
 */
import { REPO_ROOT } from "../../lab/lab_agents.ts";
import { delay, DENO_DIR } from "./bosh_client.ts";

const dec = new TextDecoder();

export interface ExtcapHome {
  home: string;
  env: Record<string, string>;
  /** where the launcher went, as --install printed it */
  launcher: string;
  installOutput: string;
}

/** The environment of a child in `home`, plus `extra`. */
export function homeEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    HOME: home,
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    DENO_DIR,
    NO_COLOR: "1",
    ...extra,
  };
}

/** `deno run main.ts extcap ARGS` in `env`; for --install and direct calls. */
export async function pcapExtcap(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", `${REPO_ROOT}/main.ts`, "extcap", ...args],
    env,
    clearEnv: true,
    cwd: "/",
    stdin: "null",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Installs the launcher into `home` with `pcap extcap --install`. */
export async function installExtcap(
  home: string,
  extra: Record<string, string> = {},
): Promise<ExtcapHome> {
  const env = homeEnv(home, extra);
  const r = await pcapExtcap(["--install"], env);
  if (r.code !== 0) throw new Error(`pcap extcap --install failed (${r.code}): ${r.stderr}`);
  const launcher = /installed the pcap extcap launcher: (.*)/.exec(r.stdout)?.[1].trim();
  if (!launcher) throw new Error(`pcap extcap --install said:\n${r.stdout}`);
  return { home, env, launcher, installOutput: r.stdout };
}

export interface Tshark {
  child: Deno.ChildProcess;
  stderr(): string;
  /** exit code once tshark ended and its pipes are drained */
  done: Promise<number>;
}

/** Starts tshark with `args` in `env` (cwd /: the launcher must not depend on it). */
export function startTshark(args: string[], env: Record<string, string>): Tshark {
  const child = new Deno.Command("tshark", {
    args,
    env,
    clearEnv: true,
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let err = "";
  const reading = Promise.all([
    (async () => {
      for await (const c of child.stderr) err += dec.decode(c, { stream: true });
    })(),
    child.stdout.pipeTo(new WritableStream()),
  ]);
  return {
    child,
    stderr: () => err,
    done: Promise.all([child.status, reading]).then(([s]) => s.code),
  };
}

/** tshark's exit code within `timeoutMs`; killed and thrown at when it hangs. */
export async function tsharkExit(t: Tshark, timeoutMs: number): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
  const code = await Promise.race([t.done, timeout]);
  clearTimeout(timer);
  if (code === null) {
    try {
      t.child.kill("SIGKILL");
    } catch { /* exited */ }
    await t.done;
    throw new Error(`tshark did not exit within ${timeoutMs} ms; stderr:\n${t.stderr()}`);
  }
  return code;
}

/** Runs tshark to its end (bounded), e.g. `-D`. */
export async function tshark(args: string[], env: Record<string, string>, timeoutMs = 60_000) {
  const t = startTshark(args, env);
  const code = await tsharkExit(t, timeoutMs);
  return { code, stderr: t.stderr() };
}

/** `tshark -D` in `env`: the listed interface names with their descriptions. */
export async function tsharkInterfaces(env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command("tshark", {
    args: ["-D"],
    env,
    clearEnv: true,
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  if (!out.success) throw new Error(`tshark -D failed: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** Pids of processes whose command line contains `needle` (e.g. a unique interface name). */
export async function processesWith(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      if (cmd.includes(needle)) pids.push(Number(e.name));
    } catch { /* exited meanwhile */ }
  }
  return pids;
}

/**
 * Polls `check` until it returns true or `timeoutMs` passes; then throws with `what`. A check
 * that throws (e.g. a pooled connection the agent has closed) counts as "not yet".
 */
export async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      last = ` (last: ${(e as Error).message})`;
    }
    if (Date.now() > until) throw new Error(`waited ${timeoutMs} ms for: ${what}${last}`);
    await delay(100);
  }
}
