// `make build` needs the denort runtime; without it (and without network) it must say so plainly.
import { assertEquals, assertStringIncludes } from "./support/assert.ts";

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
