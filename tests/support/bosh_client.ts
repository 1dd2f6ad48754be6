/**
 * The `pcap bosh capture` client as a child process for the tests (`deno run main.ts bosh
 * capture` with a clean environment), and a stand-in api that only counts connections.
 */
import { REPO_ROOT } from "../../lab/lab_agents.ts";

const dec = new TextDecoder();
/** the children get their own HOME, so point them at our module cache explicitly */
export const DENO_DIR = Deno.env.get("DENO_DIR") ??
  JSON.parse((await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output())
    .stdout.reduce((s, b) => s + String.fromCharCode(b), "")).denoDir;

export interface Client {
  child: Deno.ChildProcess;
  stderr: () => string;
  /** resolves with the exit code once the process ended and its pipes are drained */
  done: Promise<number>;
  waitFor(re: RegExp, count: number, timeoutMs?: number): Promise<void>;
}

export function startClient(args: string[], env: Record<string, string>, stdout = false): Client {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, "bosh", "capture", ...args],
    env: { NO_COLOR: "1", DENO_DIR, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: stdout ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reading = (async () => {
    for await (const chunk of child.stderr) text += dec.decode(chunk, { stream: true });
  })();
  const done = Promise.all([child.status, reading]).then(([s]) => s.code);
  return {
    child,
    stderr: () => text,
    done,
    async waitFor(re, count, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      const g = new RegExp(re.source, "g");
      while ((text.match(g) ?? []).length < count) {
        const exited = await Promise.race([done.then(() => true), delay(50).then(() => false)]);
        if (exited || Date.now() > until) {
          throw new Error(`client: waited for ${count}× ${re}; stderr:\n${text}`);
        }
      }
    },
  };
}

export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function killClient(c: Client): Promise<void> {
  try {
    c.child.kill("SIGKILL");
  } catch { /* exited */ }
  await c.done;
}

export async function exitCode(c: Client, timeoutMs = 30_000): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
  const code = await Promise.race([c.done, timeout]);
  clearTimeout(timer);
  if (code === null) {
    await killClient(c);
    throw new Error(`client did not exit within ${timeoutMs} ms; stderr:\n${c.stderr()}`);
  }
  return code;
}

/** A TCP listener standing in for the api that only counts connection attempts. */
export function fakeApi() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      conn.close();
    }
  })().catch(() => {});
  return {
    url: `https://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get connections() {
      return connections;
    },
    async close() {
      listener.close();
      await accepting;
    },
  };
}

/** Runs `main.ts ARGS...` to its end (e.g. `bosh instances …`): exit code, stdout, stderr. */
export async function runCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, ...args],
    env: { NO_COLOR: "1", DENO_DIR, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
