/**
 * `make demo` (= `deno run -A lab/demo.ts`) in a temporary working directory: it must leave a
 * demo.pcapng that tshark reads, with one interface per diego-cell, named after the VM, and
 * nothing of the lab behind. Without root it must explain itself and exit 0.
 */
import { isRoot, run } from "../lab/netns.ts";
import { REPO_ROOT } from "../lab/lab_agents.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

const root = isRoot();

async function labNamespaces(): Promise<string[]> {
  const r = await run("ip", ["netns", "list"]);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter((n) =>
    /^pc[0-9a-z]{4}/.test(n ?? "")
  );
}

async function runDemo(cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/lab/demo.ts`],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "make demo leaves demo.pcapng with the three diego-cells" +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn() {
    const cwd = await Deno.makeTempDir({ prefix: "pcap-demo-test-" });
    try {
      const r = await runDemo(cwd);
      assertEquals(r.code, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
      const file = `${cwd}/demo.pcapng`;
      const names = await run("tshark", [
        "-r",
        file,
        "-n",
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
      ]);
      const perIface = new Map<string, number>();
      for (const n of names.stdout.split("\n").filter(Boolean)) {
        perIface.set(n, (perIface.get(n) ?? 0) + 1);
      }
      const ifaces = [...perIface.keys()].sort();
      assertEquals(ifaces.length, 3, ifaces.join("\n"));
      ifaces.forEach((name, i) =>
        assertMatch(name, new RegExp(`^diego-cell/${i} \\([0-9a-f-]{36}\\) eth0$`))
      );
      // the demo's steady traffic reaches every cell
      assert([...perIface.values()].every((n) => n > 10), JSON.stringify([...perIface]));
      // what the demo prints: per-interface counts and decoded packets
      assertMatch(r.stdout, /packets per interface/);
      // tshark pads its columns to the widest address, so the spacing varies
      assertMatch(r.stdout, /198\.18\.\d+\.\d+ +→ +198\.18\.\d+\.\d+ +UDP/);
      assertMatch(r.stdout, /lab torn down/);
      // Only the demo's own run counts: other labs may come and go meanwhile.
      const runId = /\/(pc[0-9a-z]{4})-lab-/.exec(r.stdout + r.stderr)?.[1];
      assert(runId, "the demo names its lab run directory");
      const left = (await labNamespaces()).filter((n) => n.startsWith(runId));
      assertEquals(left, [], "the demo left namespaces behind");
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
});

Deno.test({
  name: "demo without root explains what it would do and exits 0",
  ignore: root,
  async fn() {
    const cwd = await Deno.makeTempDir({ prefix: "pcap-demo-test-" });
    try {
      const r = await runDemo(cwd);
      assertEquals(r.code, 0, r.stderr);
      assertMatch(r.stdout, /not running as root/);
      assertEquals(await Deno.stat(`${cwd}/demo.pcapng`).then(() => true, () => false), false);
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
});
