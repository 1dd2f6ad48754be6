/**
 * `pcap bosh capture` end to end: the real client (a `deno run main.ts bosh capture` child
 * process) against the lab's real api, agents in namespaces, UAA and Director sims. Outputs are
 * read back with tshark, capinfos and tcpdump. One landscape is shared by the steps.
 */
import { isRoot, run } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { modeCommand, REPO_ROOT } from "../lab/lab_agents.ts";
import { markerTokens, randomMarker, readMarkers, tokensIn } from "../lab/traffic.ts";
import { decodeApiMessage, webSocketUrl } from "../cli/api_session.ts";
import { measureRecords, sourceName } from "../cli/bosh_capture.ts";
import { startRequest } from "../cli/bosh_main.ts";
import { parseBoshCaptureArgs } from "../cli/bosh_flags.ts";
import {
  DecodeError,
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "./support/assert.ts";

const root = isRoot();
const ready = modeCommand("api") !== null;
const quiet = () => {};
const dec = new TextDecoder();
/** the children get their own HOME, so point them at our module cache explicitly */
const DENO_DIR = Deno.env.get("DENO_DIR") ??
  JSON.parse((await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output())
    .stdout.reduce((s, b) => s + String.fromCharCode(b), "")).denoDir;

// ---- pure parts ----

Deno.test("decodeApiMessage validates every frame kind", () => {
  const desc = { origin: "router/0 (x)", interface: "eth0", link_type: 1, snaplen: 100 };
  assertEquals(decodeApiMessage(encodeJsonFrame(FrameKind.SOURCE, 3, desc)), {
    kind: "source",
    source: 3,
    descriptor: desc,
  });
  const recs = encodeRecords([{ tsNs: 5n, data: new Uint8Array([1, 2, 3]) }]);
  const p = decodeApiMessage(encodePacketsFrame(1, 1, recs));
  assertEquals(p.kind === "packets" ? [p.count, p.records.length] : [], [1, 19]);
  assertEquals(decodeApiMessage(encodeFrame(FrameKind.END, 0xffff, new Uint8Array())).kind, "end");
  assertThrows(() => decodeApiMessage("text"), DecodeError, "binary");
  assertThrows(
    () => decodeApiMessage(encodeJsonFrame(FrameKind.STATUS, 0, { type: "NOPE", text: "" })),
    DecodeError,
    "invalid STATUS",
  );
  assertThrows(() => decodeApiMessage(encodePacketsFrame(0, 2, recs)), DecodeError, "truncated");
});

Deno.test("source names, record measuring, start request", () => {
  const d = { origin: "o", interface: "eth0", link_type: 1, snaplen: 9 };
  assertEquals(
    sourceName({ ...d, instance: { group: "diego-cell", index: 2, id: "abc" } }),
    "diego-cell/2 (abc) eth0",
  );
  assertEquals(sourceName(d), "o eth0");
  const recs = encodeRecords([1, 2, 3].map((n) => ({ tsNs: 1n, data: new Uint8Array(n) })));
  assertEquals(measureRecords(recs, 2), { end: 16 * 2 + 3, bytes: 3 });
  assertEquals(measureRecords(recs, 9), { end: recs.length, bytes: 6 });
  const o = parseBoshCaptureArgs(
    ["-d", "cf", "-g", "router", "router/1", "-o", "x", "--max-packets", "5", "-u", "a.b"],
    { HOME: "/h" },
  );
  assertEquals(startRequest(o), {
    type: "start",
    protocol_version: 1,
    bosh: { deployment: "cf", groups: ["router"], instances: ["router/1"] },
    interface: "eth0",
    snaplen: 65535,
    filter: "",
    limits: { max_packets: 5 },
  });
  assertEquals(webSocketUrl("https://a.b:8443", "/v1/x"), "wss://a.b:8443/v1/x");
});

// ---- the client as a process ----

interface Client {
  child: Deno.ChildProcess;
  stderr: () => string;
  /** resolves with the exit code once the process ended and its pipes are drained */
  done: Promise<number>;
  waitFor(re: RegExp, count: number, timeoutMs?: number): Promise<void>;
}

function startClient(args: string[], env: Record<string, string>, stdout = false): Client {
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

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function killClient(c: Client): Promise<void> {
  try {
    c.child.kill("SIGKILL");
  } catch { /* exited */ }
  await c.done;
}

async function exitCode(c: Client, timeoutMs = 30_000): Promise<number> {
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
function fakeApi() {
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

Deno.test("flag errors exit 2 with a hint to --help", async () => {
  for (
    const args of [
      ["-g", "router", "-o", "x", "-u", "a"], // no -d
      ["-d", "cf", "-g", "router", "-o", "x", "-u", "a", "--snaplen", "0"],
      ["-d", "cf", "-g", "router", "-o", "x", "-u", "a", "--bogus"],
      ["-d", "cf", "-o", "x", "-u", "a"], // nothing selected
    ]
  ) {
    const c = startClient(args, { HOME: "/nonexistent" });
    assertEquals(await exitCode(c), 2, `exit code for ${args.join(" ")}: ${c.stderr()}`);
    assertMatch(c.stderr(), /--help/);
  }
  const help = startClient(["--help"], {});
  assertEquals(await exitCode(help), 0);
});

Deno.test("refused before contacting the api: existing file, bad filter", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-bosh-test-" });
  const api = fakeApi();
  try {
    const existing = `${dir}/old.pcapng`;
    await Deno.writeTextFile(existing, "keep me");
    const base = ["-d", "cf", "-g", "router", "-u", api.url, "-c", `${dir}/no-config`];
    const a = startClient([...base, "-o", existing], { HOME: dir });
    assertEquals(await exitCode(a), 1, a.stderr());
    assertMatch(a.stderr(), /already exists.*-F/);
    assertEquals(await Deno.readTextFile(existing), "keep me");

    const b = startClient([...base, "-o", `${dir}/new.pcapng`, "-f", "tcp port ("], { HOME: dir });
    assertEquals(await exitCode(b), 1, b.stderr());
    assertMatch(b.stderr(), /filter "tcp port \(" is not valid/);
    assertEquals(await Deno.stat(`${dir}/new.pcapng`).then(() => true, () => false), false);
    assertEquals(api.connections, 0, "the api was contacted");
  } finally {
    await api.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- on the lab ----

interface InterfaceInfo {
  name: string;
  packets: number;
  statEntries: number;
}

/** Interfaces of a pcapng file from `capinfos -I`. */
async function interfaces(file: string): Promise<InterfaceInfo[]> {
  const out = (await run("capinfos", ["-I", file])).stdout;
  return out.split(/Interface #\d+ info:/).slice(1).map((block) => ({
    name: /Name = (.*)/.exec(block)?.[1].trim() ?? "",
    packets: Number(/Number of packets = (\d+)/.exec(block)?.[1] ?? -1),
    statEntries: Number(/Number of stat entries = (\d+)/.exec(block)?.[1] ?? 0),
  }));
}

/** Per packet: interface name, epoch ns, marker tokens. */
async function packets(file: string) {
  const r = await run("tshark", [
    "-r",
    file,
    "-n",
    "-T",
    "fields",
    "-E",
    "separator=|",
    "-e",
    "frame.interface_name",
    "-e",
    "frame.time_epoch",
    "-e",
    "udp.payload",
  ]);
  return r.stdout.split("\n").filter((l) => l.trim()).map((line) => {
    const [iface, epoch, hex] = line.split("|");
    const [s, frac = ""] = epoch.split(".");
    const bytes = new Uint8Array((hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
    return {
      iface,
      ns: BigInt(s) * 1_000_000_000n + BigInt(frac.padEnd(9, "0").slice(0, 9)),
      tokens: tokensIn(bytes),
    };
  });
}

Deno.test({
  name: "pcap bosh capture on the lab" + (root && ready ? "" : " (ignored: needs root and api)"),
  ignore: !root || !ready,
  async fn(t) {
    const lab = await Landscape.start({
      groups: { "diego-cell": 3, router: 1 },
      api: true,
      log: quiet,
    });
    const dir = await Deno.makeTempDir({ prefix: "pcap-bosh-test-" });
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
      const common = ["-d", "cf", "--ca-cert", lab.pki.caPath, "-f", "udp port 5555"];
      const client = (args: string[], stdout = false) => {
        const c = startClient([...common, ...args], env, stdout);
        clients.push(c);
        return c;
      };
      const ep = (vm: LabVm) => ({ ip: vm.ip, netns: vm.netns });
      const router = lab.vm("router");
      const cells = [0, 1, 2].map((i) => lab.vm("diego-cell", i));

      await t.step("one named interface per cell; exact marked packets per cell", async () => {
        const file = `${dir}/cells.pcapng`;
        const c = client(["-g", "diego-cell", "-o", file]);
        await c.waitFor(/capturing on diego-cell/, 3);
        // different counts per cell and direction, so that misattribution shows
        const sent = await Promise.all(cells.map(async (cell, i) => {
          const [inbound, outbound] = await Promise.all([
            lab.traffic.udp({
              from: ep(router),
              to: ep(cell),
              port: 5555,
              count: 3 + i,
              rate: 200,
            }),
            lab.traffic.udp({ from: ep(cell), to: ep(router), port: 5555, count: 6 + 2 * i }),
          ]);
          return [...inbound, ...outbound].sort();
        }));
        c.child.kill("SIGINT");
        assertEquals(await exitCode(c), 0, c.stderr());
        // interfaces appear in the order the sources started; compare by name
        const names = cells.map((vm) => `diego-cell/${vm.index} (${vm.id}) eth0`);
        const ifs = await interfaces(file);
        assertEquals(ifs.map((i) => i.name).sort(), [...names].sort());
        const pkts = await packets(file);
        for (const [i, name] of names.entries()) {
          const info = ifs.find((x) => x.name === name)!;
          assertEquals(info.packets, sent[i].length, `packets on ${name}`);
          assertEquals(info.statEntries, 1, `statistics block of ${name}`);
          const got = pkts.filter((p) => p.iface === name).flatMap((p) => p.tokens).sort();
          assertEquals(got, sent[i], `marker tokens on ${name}`);
        }
        for (let i = 1; i < pkts.length; i++) {
          assert(pkts[i].ns >= pkts[i - 1].ns, `timestamp of packet ${i + 1} goes back`);
        }
        assertMatch(c.stderr(), /captured \d+ packets .* from 3 sources/);
      });

      await t.step("-o - into tcpdump -r - shows packets while the capture runs", async () => {
        // status lines go to stderr; tcpdump would choke on anything but pcapng on stdout
        const c = client(["-g", "router", "-o", "-"], true);
        const tcpdump = new Deno.Command("tcpdump", {
          args: ["-r", "-", "-n", "-l", "-A"],
          stdin: "piped",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        let seen = "";
        const piping = c.child.stdout.pipeTo(tcpdump.stdin).catch(() => {});
        const reading = (async () => {
          for await (const chunk of tcpdump.stdout) seen += dec.decode(chunk, { stream: true });
        })();
        try {
          await c.waitFor(/capturing on router/, 1);
          const marker = randomMarker();
          const tokens = await lab.traffic.udp({
            from: ep(cells[0]),
            to: ep(router),
            port: 5555,
            count: 5,
            marker,
          });
          const until = Date.now() + 15_000;
          while (!tokens.every((tk) => seen.includes(tk)) && Date.now() < until) await delay(50);
          assert(tokens.every((tk) => seen.includes(tk)), `tcpdump output:\n${seen}`);
          let exited = false;
          c.done.then(() => exited = true);
          await delay(0);
          assert(!exited, "the capture ended before its packets were shown");
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c), 0, c.stderr());
        } finally {
          await killClient(c);
          await piping;
          await reading;
          await tcpdump.status;
        }
      });

      await t.step(
        "--format pcap with --max-packets stops by itself; tcpdump reads it",
        async () => {
          const file = `${dir}/router.pcap`;
          const c = client(["-g", "router", "-o", file, "--format", "pcap", "--max-packets", "7"]);
          await c.waitFor(/capturing on router/, 1);
          const marker = randomMarker();
          await lab.traffic.udp({
            from: ep(cells[1]),
            to: ep(router),
            port: 5555,
            count: 30,
            rate: 100,
            marker,
          });
          assertEquals(await exitCode(c), 0, c.stderr());
          assertMatch(c.stderr(), /max-packets 7 reached|packet limit/);
          const r = await run("tcpdump", ["-r", file, "-n"]);
          const lines = r.stdout.split("\n").filter((l) => / IP \d.* UDP/.test(l));
          assertEquals(lines.length, 7, r.stdout);
          assertEquals(await readMarkers(file), markerTokens(marker, 7));
        },
      );

      await t.step("BOSH_CLIENT/BOSH_CLIENT_SECRET client credentials, no config", async () => {
        const secret = crypto.randomUUID();
        lab.uaa.clients.push({
          id: "pcap-ops",
          secret,
          grantTypes: ["client_credentials"],
          authorities: ["bosh.admin"],
        });
        const file = `${dir}/cc.pcapng`;
        const c = startClient([...common, "-g", "router", "-o", file, "--duration", "1s"], {
          HOME: dir,
          PCAP_API: lab.apiUrl!,
          BOSH_ENVIRONMENT: lab.director.url,
          BOSH_CLIENT: "pcap-ops",
          BOSH_CLIENT_SECRET: secret,
          BOSH_CA_CERT: lab.pki.caPath,
        });
        clients.push(c);
        assertEquals(await exitCode(c), 0, c.stderr());
        assertEquals((await interfaces(file)).map((i) => i.name), [
          `router/0 (${router.id}) eth0`,
        ]);
        assertEquals(lab.uaa.grantCounts.client_credentials, 1);
      });

      await t.step("SIGINT twice stops at once and still leaves a valid file", async () => {
        const file = `${dir}/twice.pcapng`;
        const flows = await Promise.all(
          cells.map((cell) =>
            lab.traffic.steady({ from: ep(router), to: ep(cell), port: 5555, rate: 300 })
          ),
        );
        try {
          const c = client(["-g", "diego-cell", "-o", file]);
          await c.waitFor(/capturing on diego-cell/, 3);
          await delay(500);
          c.child.kill("SIGINT");
          await c.waitFor(/stopping \(interrupted\)/, 1);
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c, 10_000), 0, c.stderr());
          assertMatch(c.stderr(), /interrupted again/);
        } finally {
          await Promise.all(flows.map((f) => f.stop()));
        }
        const ifs = await interfaces(file);
        assertEquals(ifs.length, 3);
        assert(ifs.every((i) => i.statEntries === 1), JSON.stringify(ifs));
        const r = await run("tshark", ["-r", file, "-n"]);
        assert(r.stdout.split("\n").length > 10, "too few packets in the file");
      });
    } catch (e) {
      for (const c of clients) console.error(`client stderr:\n${c.stderr()}`);
      lab.dumpLogs(40);
      throw e;
    } finally {
      await Promise.all(clients.map(killClient));
      await lab.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
