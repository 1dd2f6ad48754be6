/** lib/service_shell.ts through both services: usage errors exit 2, config errors 1, help 0. */
import { assertEquals, assertStringIncludes } from "./support/assert.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function pcap(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

for (const mode of ["agent", "api"]) {
  Deno.test(`pcap ${mode}: unknown flag, missing or doubled --config are usage errors (2)`, async () => {
    const unknown = await pcap([mode, "--colour"]);
    assertEquals(unknown.code, 2);
    assertStringIncludes(unknown.stderr, "unknown option '--colour'");
    const none = await pcap([mode]);
    assertEquals(none.code, 2);
    assertStringIncludes(none.stderr, `pcap ${mode}: --config FILE is required`);
    const both = await pcap([mode, "--config", "a.yml", "--check-config", "b.yml"]);
    assertEquals(both.code, 2);
    assertStringIncludes(both.stderr, "either --config or --check-config");
    const noFile = await pcap([mode, "--check-config"]);
    assertEquals(noFile.code, 2);
    assertStringIncludes(noFile.stderr, "argument missing");
    const help = await pcap([mode, "--help"]);
    assertEquals(help.code, 0);
    assertStringIncludes(help.stdout, `Usage: pcap ${mode}`);
    assertStringIncludes(help.stdout, "--check-config <file>");
  });

  Deno.test(`pcap ${mode}: a missing config file exits 1 naming the file`, async () => {
    for (const flag of ["--check-config", "--config"]) {
      const r = await pcap([mode, flag, "/nonexistent/pcap.yml"]);
      assertEquals(r.code, 1, r.stderr);
      assertStringIncludes(
        r.stderr,
        `pcap ${mode}: invalid configuration: /nonexistent/pcap.yml: file not found`,
      );
    }
  });
}
