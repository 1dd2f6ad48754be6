// The single executable's dispatch: modes, help, version and busybox-style names.
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function pcap(args: string[], argv0 = Deno.execPath()) {
  const out = await new Deno.Command(argv0, {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("help lists the built modes; unknown modes and no mode are usage errors", async () => {
  const help = await pcap(["--help"]);
  assertEquals(help.code, 0);
  for (const mode of ["agent", "api", "bosh", "cf", "version"]) {
    assert(new RegExp(`^  ${mode}\\b`, "m").test(help.stdout), `help lists ${mode}`);
  }
  const unknown = await pcap(["frobnicate"]);
  assertEquals(unknown.code, 2);
  assertStringIncludes(unknown.stderr, 'unknown mode "frobnicate"');
  assertEquals((await pcap([])).code, 2);
  const version = await pcap(["version"]);
  assertEquals(version.code, 0);
  assert(/^pcap \d+\.\d+\.\d+ \(protocol v1/.test(version.stdout), version.stdout);
});

Deno.test("invoked as pcap-bosh or pcap-cf it behaves as `pcap bosh` / `pcap cf`", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink(Deno.execPath(), `${dir}/pcap-bosh`);
    await Deno.symlink(Deno.execPath(), `${dir}/pcap-cf`);
    const bosh = await pcap(["capture", "--help"], `${dir}/pcap-bosh`);
    assertEquals(bosh.code, 0, bosh.stderr);
    assertStringIncludes(bosh.stdout, "Usage: pcap-bosh capture");
    const cf = await pcap(["capture", "--help"], `${dir}/pcap-cf`);
    assertEquals(cf.code, 0, cf.stderr);
    assertStringIncludes(cf.stdout, "Usage: pcap-cf capture APP [flags]");
    const bare = await pcap([], `${dir}/pcap-cf`);
    assertEquals(bare.code, 2);
    assertStringIncludes(bare.stderr, "usage: pcap-cf capture APP [flags]");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
