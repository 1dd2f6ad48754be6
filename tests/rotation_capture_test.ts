/**
 * File rotation end to end: the real `pcap bosh capture` client with --rotate-size /
 * --rotate-every / --keep against the lab's api and agents. Marked UDP traffic is sent to two
 * cells across several rotations; the files left are read back with tshark and capinfos.
 */
import { isRoot } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { randomMarker } from "../lab/traffic.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { type Client, exitCode, killClient, startClient } from "./support/bosh_client.ts";
import { interfaces, packets } from "./support/capture_readback.ts";
import { waitFor } from "./support/agent_harness.ts";
import { run } from "../lab/netns.ts";

const root = isRoot();
const NAME_RE = /^cells_(\d{5})_(\d{14})\.(pcapng|pcap)$/;

async function rotated(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (NAME_RE.test(e.name)) names.push(e.name);
  return names.sort();
}

const seqOf = (name: string) => Number(NAME_RE.exec(name)![1]);

/** Highest file number in `dir` so far (0 when none). */
async function lastSeq(dir: string): Promise<number> {
  return Math.max(0, ...(await rotated(dir)).map(seqOf));
}

interface Sent {
  token: string;
  iface: string;
}

/** token → how often it was seen, with the interface it was seen on. */
async function readBack(dir: string, names: string[]) {
  const seen = new Map<string, { count: number; ifaces: Set<string> }>();
  const perFile: number[] = [];
  for (const n of names) {
    const pkts = await packets(`${dir}/${n}`);
    perFile.push(pkts.length);
    for (const p of pkts) {
      for (const tk of p.tokens) {
        const s = seen.get(tk) ?? { count: 0, ifaces: new Set<string>() };
        s.count++;
        s.ifaces.add(p.iface);
        seen.set(tk, s);
      }
    }
  }
  return { seen, perFile };
}

/**
 * What a ring must hold: every token at most once and on its cell's interface, and the tokens
 * present are exactly the newest ones sent (no gap inside what was kept).
 */
function assertTail(sent: Sent[], seen: Map<string, { count: number; ifaces: Set<string> }>) {
  for (const [tk, s] of seen) {
    assertEquals(s.count, 1, `${tk} seen ${s.count} times`);
    const want = sent.find((x) => x.token === tk);
    assert(want, `unknown token ${tk}`);
    assertEquals([...s.ifaces], [want.iface], `interface of ${tk}`);
  }
  const first = sent.findIndex((x) => seen.has(x.token));
  assert(first >= 0, "no marked packet in the files left");
  const missing = sent.slice(first).filter((x) => !seen.has(x.token)).map((x) => x.token);
  assertEquals(missing, [], "tokens missing after the first one kept");
  return sent.length - first;
}

Deno.test({
  name: "pcap bosh capture rotates files on the lab" + (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    const lab = await Landscape.start({
      groups: { "diego-cell": 2, router: 1 },
      api: true,
      log: () => {},
    });
    const dir = await Deno.makeTempDir({ prefix: "pcap-rotation-test-" });
    const clients: Client[] = [];
    try {
      const config = `${dir}/bosh-config.yml`;
      await Deno.writeTextFile(
        config,
        `environments:\n- url: ${lab.director.url}\n  alias: lab\n` +
          `  access_token: ${await lab.mintToken()}\n  access_token_type: bearer\n` +
          `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
      );
      const env = {
        HOME: dir,
        BOSH_CONFIG: config,
        BOSH_ENVIRONMENT: "lab",
        PCAP_API: lab.apiUrl!,
      };
      const common = ["-d", "cf", "-g", "diego-cell", "--ca-cert", lab.pki.caPath];
      const client = (args: string[]) => {
        const c = startClient([...common, "-f", "udp port 5555", ...args], env);
        clients.push(c);
        return c;
      };
      const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });
      const router = lab.vm("router");
      const cells = [0, 1].map((i) => lab.vm("diego-cell", i));
      const names = cells.map((vm) => `diego-cell/${vm.index} (${vm.id}) eth0`);
      /** one round: `count` marked datagrams to each cell in turn, in send order */
      const round = async (count: number, size: number): Promise<Sent[]> => {
        const out: Sent[] = [];
        for (const [i, cell] of cells.entries()) {
          const tokens = await lab.traffic.udp({
            from: ep(router),
            to: ep(cell),
            port: 5555,
            count,
            size,
            rate: 400,
            marker: randomMarker(),
          });
          out.push(...tokens.map((token) => ({ token, iface: names[i] })));
        }
        return out;
      };
      const checkFiles = async (sub: string, kept: string[]) => {
        for (const n of kept) {
          const path = `${sub}/${n}`;
          assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600, `mode of ${n}`);
          const ifs = await interfaces(path);
          assertEquals(ifs.map((i) => i.name).sort(), [...names].sort(), `interfaces of ${n}`);
          for (const i of ifs) assertEquals(i.statEntries, 1, `ISB of ${i.name} in ${n}`);
        }
      };

      await t.step("by size, ring of 3: the newest marks once each, 3 complete files", async () => {
        const sub = `${dir}/size`;
        await Deno.mkdir(sub);
        const c = client(["-o", `${sub}/cells.pcapng`, "--rotate-size", "20kB", "--keep", "3"]);
        await c.waitFor(/capturing on diego-cell/, 2);
        const sent: Sent[] = [];
        for (let r = 0; r < 4; r++) sent.push(...await round(30, 800));
        // ~200 kB of marks: the client must have rotated through several files
        await waitFor(async () => (await lastSeq(sub)) >= 6, 30_000, "six files started");
        c.child.kill("SIGINT");
        assertEquals(await exitCode(c), 0, c.stderr());
        const kept = await rotated(sub);
        assertEquals(kept.length, 3, `only the last 3 files remain: ${kept}`);
        const last = Math.max(...kept.map(seqOf));
        assertEquals(kept.map(seqOf), [last - 2, last - 1, last]);
        await checkFiles(sub, kept);
        const { seen, perFile } = await readBack(sub, kept);
        const tail = assertTail(sent, seen);
        assert(perFile.filter((n) => n > 0).length >= 2, `marks across rotations: ${perFile}`);
        assert(tail < sent.length, "the ring dropped the oldest files");
        assertStringIncludes(c.stderr(), "the ring removed");
      });

      await t.step("by time, ring of 3: a new file per interval, marks once each", async () => {
        const sub = `${dir}/time`;
        await Deno.mkdir(sub);
        const c = client(["-o", `${sub}/cells.pcapng`, "--rotate-every", "1s", "--keep", "3"]);
        await c.waitFor(/capturing on diego-cell/, 2);
        const sent: Sent[] = [];
        for (let r = 0; r < 5; r++) {
          const before = await lastSeq(sub);
          sent.push(...await round(5, 100));
          // the file with this round's marks is switched once its interval is over
          await waitFor(async () => (await lastSeq(sub)) > before, 30_000, `rotation ${r + 1}`);
        }
        c.child.kill("SIGINT");
        assertEquals(await exitCode(c), 0, c.stderr());
        const kept = await rotated(sub);
        assertEquals(kept.length, 3, `only the last 3 files remain: ${kept}`);
        assert(Math.max(...kept.map(seqOf)) >= 6, `several rotations: ${kept}`);
        await checkFiles(sub, kept);
        const { seen, perFile } = await readBack(sub, kept);
        assertTail(sent, seen);
        assert(perFile.filter((n) => n > 0).length >= 2, `marks across rotations: ${perFile}`);
        // the last round was sent before the final rotation, so it is in what was kept
        for (const s of sent.slice(-10)) assert(seen.has(s.token), `last round: ${s.token}`);
      });

      await t.step(
        "--format pcap by size, no ring: every mark exactly once across all files",
        async () => {
          const sub = `${dir}/pcap`;
          await Deno.mkdir(sub);
          const c = client([
            "-o",
            `${sub}/cells.pcap`,
            "--format",
            "pcap",
            "--rotate-size",
            "20kB",
          ]);
          await c.waitFor(/capturing on diego-cell/, 2);
          const sent: Sent[] = [];
          for (let r = 0; r < 3; r++) sent.push(...await round(20, 800));
          await waitFor(async () => (await lastSeq(sub)) >= 3, 30_000, "three files started");
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c), 0, c.stderr());
          const kept = await rotated(sub);
          assert(kept.length >= 3, `several files: ${kept}`);
          const all: string[] = [];
          for (const n of kept) {
            const info = (await run("capinfos", ["-t", "-E", `${sub}/${n}`])).stdout;
            assertStringIncludes(info, "nanosecond pcap");
            assertStringIncludes(info, "Ethernet");
            for (const p of await packets(`${sub}/${n}`)) all.push(...p.tokens);
          }
          assertEquals(all.sort(), sent.map((s) => s.token).sort());
        },
      );

      await t.step("rotation with -o - is refused before anything is captured", async () => {
        const c = client(["-o", "-", "--rotate-size", "10MB"]);
        assertEquals(await exitCode(c), 2);
        assertStringIncludes(c.stderr(), "cannot rotate standard output (-o -)");
      });
    } finally {
      for (const c of clients) await killClient(c);
      await lab.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
