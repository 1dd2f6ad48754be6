// What `make demo` and `make demo-cf` share: running the real client (`deno run main.ts …`) with
// a clean environment and a bound on its run time, and reading the capture back with tshark.
import { REPO_ROOT } from "./lab_agents.ts";
import { run } from "./netns.ts";
import { stopOnSignal } from "./topology.ts";

const CLIENT_TIMEOUT_MS = 60_000;

export type Say = (line: string) => void;

/**
 * Runs `deno run -A main.ts ARGS…` with the caller's environment minus `drop`, plus `set`;
 * resolves with its exit code. Its output goes to the terminal.
 */
export async function runClient(
  say: Say,
  args: string[],
  env: { drop?: string[]; set?: Record<string, string> } = {},
): Promise<number> {
  const argv = ["run", "-A", `${REPO_ROOT}/main.ts`, ...args];
  say(`running: deno run -A main.ts ${args.join(" ")}`);
  const vars = { ...Deno.env.toObject(), ...env.set };
  for (const k of env.drop ?? []) delete vars[k];
  const child = new Deno.Command(Deno.execPath(), {
    args: argv,
    env: vars,
    clearEnv: true,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // On Ctrl-C the client got its own SIGINT from the terminal and is draining; one more makes it
  // stop at once with a valid file. Kill it only if it does not finish in time.
  const unguard = stopOnSignal({
    stop: async () => {
      const kill = (sig: Deno.Signal) => {
        try {
          child.kill(sig);
        } catch { /* already exited */ }
      };
      kill("SIGINT");
      const t = setTimeout(() => kill("SIGKILL"), 5000);
      await child.status;
      clearTimeout(t);
    },
  });
  const timer = setTimeout(() => {
    say(`the client did not finish within ${CLIENT_TIMEOUT_MS / 1000} s; killing it`);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, CLIENT_TIMEOUT_MS);
  try {
    return (await child.status).code;
  } finally {
    clearTimeout(timer);
    unguard();
  }
}

/** Packets per interface name, read back with tshark. */
export async function packetsPerInterface(file: string): Promise<Map<string, number>> {
  const r = await run("tshark", ["-r", file, "-n", "-T", "fields", "-e", "frame.interface_name"]);
  const counts = new Map<string, number>();
  for (const line of r.stdout.split("\n")) {
    if (line.trim()) counts.set(line.trim(), (counts.get(line.trim()) ?? 0) + 1);
  }
  return counts;
}

/**
 * capinfos, packets per interface and the first packets; `name` is the file as shown, `per`
 * what an interface stands for ("interface", "instance (interface)").
 */
export async function summarize(
  say: Say,
  file: string,
  name: string,
  per = "interface",
): Promise<void> {
  const capinfos = await run("capinfos", ["-c", "-u", "-E", "-d", file]).catch(() => null);
  if (capinfos) console.log(capinfos.stdout.trimEnd());
  const counts = await packetsPerInterface(file);
  say(`packets per ${per} (tshark):`);
  for (const [n, c] of [...counts].sort()) console.log(`  ${String(c).padStart(6)}  ${n}`);
  say(`first packets (tshark -r ${name} -c 10):`);
  const r = await run("tshark", ["-r", file, "-c", "10"]);
  console.log(r.stdout.trimEnd());
}
