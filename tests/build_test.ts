// `make build` needs the denort runtime; without it (and without network) it must say so plainly.
import { assertEquals, assertStringIncludes } from "./support/assert.ts";
import { PCAP_V8_FLAGS, v8FlagsArgs } from "../lib/v8_flags.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function build(env: Record<string, string>) {
  const home = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command("sh", {
      args: [`${ROOT}/build.sh`],
      cwd: ROOT,
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: home, ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test("build without DENORT_BIN and without a cached runtime names DENORT_BIN", async () => {
  const r = await build({ DENO_DIR: "/nonexistent-deno-dir" });
  assertEquals(r.code, 1);
  assertStringIncludes(r.stderr, "Set DENORT_BIN to a local denort binary");
});

Deno.test("build with a DENORT_BIN that is not an executable says which path is wrong", async () => {
  const r = await build({ DENORT_BIN: "/nonexistent/denort" });
  assertEquals(r.code, 1);
  assertStringIncludes(r.stderr, "DENORT_BIN=/nonexistent/denort is not an executable file");
});

// build.sh embeds lib/v8_flags.ts's flags with --v8-flags; a flag V8 does not know would make
// every mode of the executable exit at start, so check them with the same V8 from source.
Deno.test("the V8 flags the build embeds are known to this V8, and build.sh passes them", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
      .output();
  const printed = await run(["run", "--quiet", "lib/v8_flags.ts"]);
  assertEquals(printed.code, 0);
  const flags = new TextDecoder().decode(printed.stdout).trim();
  assertEquals(flags, PCAP_V8_FLAGS.join(","));
  const help = await run(["run", "-A", "--quiet", ...v8FlagsArgs(), "main.ts", "--help"]);
  const stderr = new TextDecoder().decode(help.stderr);
  assertEquals(help.code, 0, stderr);
  assertEquals(stderr.includes("did not recognize"), false, stderr);
  const script = await Deno.readTextFile(`${ROOT}/build.sh`);
  assertStringIncludes(script, "v8flags=$(deno run --quiet lib/v8_flags.ts)");
  assertStringIncludes(script, `set -- --v8-flags="$v8flags"`);
});
