/**
 * `make demo-cf` (= `deno run -A lab/demo_cf.ts`) in a temporary working directory: it must leave
 * a demo-cf.pcapng that tshark reads, with one interface per instance of app "web" (3 instances
 * on 2 Diego cells) named `web/INDEX (INSTANCE-GUID) eth0`; each interface carries the traffic of
 * its own container only (none of the neighbour app's), and nothing of the lab is left behind.
 * Without root it must explain itself and exit 0.
 */
import { isRoot, run } from "../lab/netns.ts";
import { REPO_ROOT } from "../lab/lab_agents.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

const root = isRoot();

async function runDemo(cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/lab/demo_cf.ts`],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** "  web/1 <guid> <ip> on diego-cell/1" lines of the demo's output → name → {guid, ip, cell}. */
function placements(stdout: string) {
  const out = new Map<string, { guid: string; ip: string; cell: number }>();
  for (const m of stdout.matchAll(/^demo-cf: {3}(\S+\/\d) (\S+) (\S+) on diego-cell\/(\d)$/gm)) {
    out.set(m[1], { guid: m[2], ip: m[3], cell: Number(m[4]) });
  }
  return out;
}

Deno.test({
  name: "make demo-cf leaves demo-cf.pcapng: 3 instances on 2 cells, each its own traffic only" +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn() {
    const cwd = await Deno.makeTempDir({ prefix: "pcap-demo-cf-test-" });
    try {
      const r = await runDemo(cwd);
      assertEquals(r.code, 0, `demo-cf failed:\n${r.stdout}\n${r.stderr}`);
      const where = placements(r.stdout);
      const web = ["web/0", "web/1", "web/2"].map((n) => {
        const p = where.get(n);
        assert(p, `the demo names ${n}:\n${r.stdout}`);
        return { name: n, ...p };
      });
      assertEquals(new Set(web.map((w) => w.cell)), new Set([0, 1]), "instances on both cells");
      const neighbours = [...where].filter(([n]) => n.startsWith("billing/")).map(([, p]) => p);
      assertEquals(neighbours.length, 2, r.stdout);

      const fields = await run("tshark", [
        "-r",
        `${cwd}/demo-cf.pcapng`,
        "-n",
        "-Y",
        "udp.dstport == 8080",
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "ip.dst",
      ]);
      const dsts = new Map<string, Map<string, number>>();
      for (const line of fields.stdout.split("\n").filter(Boolean)) {
        const [iface, dst] = line.split("\t");
        const m = dsts.get(iface) ?? new Map<string, number>();
        m.set(dst, (m.get(dst) ?? 0) + 1);
        dsts.set(iface, m);
      }
      assertEquals(
        [...dsts.keys()].sort(),
        web.map((w) => `${w.name} (${w.guid}) eth0`),
        "one interface per instance, named APP/INDEX (INSTANCE-GUID) eth0",
      );
      for (const w of web) {
        const got = dsts.get(`${w.name} (${w.guid}) eth0`)!;
        assertEquals([...got.keys()], [w.ip], `${w.name} carries its own container's traffic only`);
        assert(got.get(w.ip)! > 10, `${w.name}: the steady traffic arrived (${got.get(w.ip)})`);
      }
      // what the demo prints: per-instance counts and decoded packets
      assertMatch(r.stdout, /packets per instance \(interface\)/);
      for (const w of web) assertMatch(r.stdout, new RegExp(`\\d+ {2}${w.name} \\(${w.guid}\\)`));
      assertMatch(r.stdout, /→ +198\.19\.\d+\.\d+ +UDP/);
      assertMatch(r.stdout, /lab torn down/);
      const runId = /\/(pc[0-9a-z]{4})-lab-/.exec(r.stdout + r.stderr)?.[1];
      assert(runId, "the demo names its lab run directory");
      const ns = await run("ip", ["netns", "list"]);
      const left = ns.stdout.split("\n").filter((l) => l.startsWith(runId));
      assertEquals(left, [], "the demo left namespaces behind");
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
});

Deno.test({
  name: "demo-cf without root explains what it would do and exits 0",
  ignore: root,
  async fn() {
    const cwd = await Deno.makeTempDir({ prefix: "pcap-demo-cf-test-" });
    try {
      const r = await runDemo(cwd);
      assertEquals(r.code, 0, r.stderr);
      assertMatch(r.stdout, /not running as root/);
      assertEquals(await Deno.stat(`${cwd}/demo-cf.pcapng`).then(() => true, () => false), false);
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
});
