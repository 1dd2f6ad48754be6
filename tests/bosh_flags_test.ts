import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "./support/assert.ts";
import {
  formatBytes,
  formatCount,
  formatElapsed,
  formatStatus,
  ProgressDisplay,
  renderProgress,
  sanitize,
} from "../cli/progress.ts";
import {
  HelpRequested,
  normalizeApiUrl,
  parseBoshCaptureArgs,
  parseByteSize,
  parseDuration,
  parseInstanceSelector,
  UsageError,
} from "../cli/bosh_flags.ts";

const ENV = { HOME: "/home/op", PCAP_API: "pcap.example.com" };
const BASE = ["capture", "-d", "cf", "-g", "router", "-o", "out.pcapng"];

function usage(argv: string[], text: string, env: Record<string, string> = ENV): void {
  assertThrows(() => parseBoshCaptureArgs(argv, env), UsageError, text);
}

Deno.test("flags: minimal command line gets the documented defaults", () => {
  const o = parseBoshCaptureArgs(BASE, ENV);
  assertEquals(o, {
    deployment: "cf",
    groups: ["router"],
    instances: [],
    output: "out.pcapng",
    forceOverwrite: false,
    pcapApiUrl: "https://pcap.example.com",
    boshEnvironment: undefined,
    boshConfig: "/home/op/.bosh/config",
    filter: undefined,
    interface: "eth0",
    snaplen: 65535,
    format: "pcapng",
    durationMs: undefined,
    maxPackets: undefined,
    maxBytes: undefined,
    caCert: undefined,
    insecure: false,
    verbose: false,
    quiet: false,
  });
});

Deno.test("flags: every flag, long and short, with instances", () => {
  const o = parseBoshCaptureArgs([
    "--deployment=cf",
    "-g",
    "diego-cell",
    "--instance-group",
    "router",
    "-g",
    "router",
    "--file",
    "-",
    "-u",
    "http://127.0.0.1:8080/",
    "-e",
    "prod",
    "-c",
    "/tmp/bosh.yml",
    "-f",
    "tcp port 443 and not host 10.0.0.1",
    "-i",
    "any",
    "-l",
    "96",
    "--format",
    "pcap",
    "--duration",
    "1h30m",
    "--max-packets",
    "1000",
    "--max-bytes",
    "1GiB",
    "--ca-cert",
    "ca.pem",
    "-kq",
    "diego-cell/3",
    "router/0f1e2d3c-aaaa-bbbb-cccc-111122223333",
    "4",
  ], { HOME: "/h", BOSH_ENVIRONMENT: "ignored-because-e-given" });
  assertEquals(o.groups, ["diego-cell", "router"]);
  assertEquals(o.output, "-");
  assertEquals(o.pcapApiUrl, "http://127.0.0.1:8080");
  assertEquals(o.boshEnvironment, "prod");
  assertEquals(o.boshConfig, "/tmp/bosh.yml");
  assertEquals(o.filter, "tcp port 443 and not host 10.0.0.1");
  assertEquals([o.interface, o.snaplen, o.format], ["any", 96, "pcap"]);
  assertEquals([o.durationMs, o.maxPackets, o.maxBytes], [5_400_000, 1000, 2 ** 30]);
  assertEquals([o.caCert, o.insecure, o.quiet, o.verbose], ["ca.pem", true, true, false]);
  assertEquals(o.instances, [
    { raw: "diego-cell/3", group: "diego-cell", index: 3 },
    {
      raw: "router/0f1e2d3c-aaaa-bbbb-cccc-111122223333",
      group: "router",
      id: "0f1e2d3c-aaaa-bbbb-cccc-111122223333",
    },
    { raw: "4", index: 4 },
  ]);
});

Deno.test("flags: environment supplies PCAP_API, BOSH_ENVIRONMENT and BOSH_CONFIG", () => {
  const o = parseBoshCaptureArgs(["-d", "cf", "-o", "x", "router/0"], {
    PCAP_API: "pcap.lab:8443",
    BOSH_ENVIRONMENT: "lab",
    BOSH_CONFIG: "/etc/bosh/config",
  });
  assertEquals(o.pcapApiUrl, "https://pcap.lab:8443");
  assertEquals(o.boshEnvironment, "lab");
  assertEquals(o.boshConfig, "/etc/bosh/config");
  assertEquals(o.groups, []);
  // flags win over the environment
  const f = parseBoshCaptureArgs([...BASE, "-u", "https://other", "-c", "c"], {
    ...ENV,
    BOSH_CONFIG: "/etc/x",
  });
  assertEquals([f.pcapApiUrl, f.boshConfig], ["https://other", "c"]);
});

Deno.test("flags: bad input is a UsageError with a clear message", () => {
  usage([...BASE, "--bogus"], "unknown option '--bogus'");
  usage([...BASE, "--snaplen"], "argument missing");
  usage([...BASE, "-l", "0"], "snaplen must be 1..262144");
  usage([...BASE, "-l", "262145"], "snaplen must be 1..262144");
  usage([...BASE, "-l", "12x"], 'snaplen must be a whole number, not "12x"');
  usage([...BASE, "--max-packets", "-3"], "max-packets must be a whole number");
  usage([...BASE, "--max-bytes", "10XB"], '"10XB" is not a size');
  usage([...BASE, "--duration", "soon"], '"soon" is not a duration');
  usage([...BASE, "--duration", "0s"], "more than zero");
  usage([...BASE, "--format", "json"], "--format must be pcapng or pcap");
  usage([...BASE, "-v", "-q"], "-v/--verbose and -q/--quiet exclude each other");
  usage(["-g", "router", "-o", "x"], "missing -d/--deployment");
  usage(["-d", "cf", "-g", "router"], "missing -o/--file");
  usage(BASE, "missing -u/--pcap-api-url (or set PCAP_API)", { HOME: "/h" });
  usage(["-d", "cf", "-o", "x"], "nothing selected");
  usage(["-d", "cf", "-o", "x", "3"], 'instance "3" is an index');
  usage([...BASE, "a/b/c"], "is not GROUP/ID");
  usage([...BASE, "-u", "ftp://x"], "must use https");
  usage([...BASE, "-u", "https://x/?token=abc"], "must not carry a query");
  usage(["-d", "cf", "-g", "r", "-o", "x"], "HOME is not set", { PCAP_API: "p" });
  const e = assertThrows(
    () => parseBoshCaptureArgs([...BASE, "--deploymen", "x"], ENV),
    UsageError,
  );
  assertMatch(e.message, /Did you mean --deployment\?/);
  assertStringIncludes(e.message, "see pcap-bosh capture --help");
});

Deno.test("flags: --help returns the help text instead of exiting", () => {
  const e = assertThrows(() => parseBoshCaptureArgs(["capture", "--help"], ENV), HelpRequested);
  const text = (e as HelpRequested).text;
  assertStringIncludes(text, "Usage: pcap-bosh capture [flags] [INSTANCE...]");
  for (
    const f of ["--deployment", "--instance-group", "--force-overwrite", "--snaplen", "--max-bytes"]
  ) {
    assertStringIncludes(text, f);
  }
});

Deno.test("flags: value parsers", () => {
  assertEquals(parseDuration("30s"), 30_000);
  assertEquals(parseDuration("5m"), 300_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("1.5m"), 90_000);
  assertEquals(parseDuration("10"), 10_000);
  assertEquals(parseByteSize("1000"), 1000);
  assertEquals(parseByteSize("10MB"), 10_000_000);
  assertEquals(parseByteSize("10mb"), 10_000_000);
  assertEquals(parseByteSize("1GiB"), 1_073_741_824);
  assertEquals(parseByteSize("1.5 KiB"), 1536);
  assertEquals(parseByteSize("2k"), 2000);
  assertEquals(normalizeApiUrl("pcap.example.com"), "https://pcap.example.com");
  assertEquals(normalizeApiUrl("https://pcap.example.com:443/"), "https://pcap.example.com");
  assertEquals(normalizeApiUrl("pcap.example.com:8443/api"), "https://pcap.example.com:8443/api");
  assertEquals(parseInstanceSelector("0f1e2d3c"), { raw: "0f1e2d3c", id: "0f1e2d3c" });
  assertThrows(() => parseInstanceSelector("/0"), UsageError);
});

Deno.test("flags: an http pcap API URL is refused unless it is loopback (the token is in it)", () => {
  for (
    const url of ["http://pcap.example.com", "http://10.0.0.5:8080", "HTTP://pcap.example.com"]
  ) {
    assertThrows(() => normalizeApiUrl(url), UsageError, "clear text");
  }
  assertEquals(normalizeApiUrl("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
  assertEquals(normalizeApiUrl("http://127.1.2.3:8080"), "http://127.1.2.3:8080");
  assertEquals(normalizeApiUrl("http://localhost:8080"), "http://localhost:8080");
  assertEquals(normalizeApiUrl("http://[::1]:8080"), "http://[::1]:8080");
  assertThrows(() => normalizeApiUrl("http://127.0.0.1.example.com"), UsageError, "clear text");
  assertThrows(() => normalizeApiUrl("ws://pcap.example.com"), UsageError, "https");
});

Deno.test("flags: --duration above 7 days is refused (timers would fire at once)", () => {
  assertEquals(parseDuration("168h"), 7 * 24 * 3600 * 1000);
  assertThrows(() => parseDuration("169h"), Error, "7 days");
  assertThrows(() => parseDuration(String(2 ** 31 / 1000)), Error, "7 days");
});

// ---- progress display (cli/progress.ts): pure formatting, checked on a tiny terminal model ----

/** Minimal terminal: printable text, \r, \n, ESC[nA (up), ESC[J (clear to end of screen). */
function screen(output: string): string[] {
  const rows: string[] = [""];
  let row = 0;
  let col = 0;
  for (let i = 0; i < output.length; i++) {
    const c = output[i];
    if (c === "\x1b") {
      // deno-lint-ignore no-control-regex
      const m = /^\x1b\[(\d*)([AJ])/.exec(output.slice(i));
      if (!m) throw new Error(`unexpected escape at ${i}`);
      if (m[2] === "A") row = Math.max(0, row - Number(m[1] || 1));
      else {
        rows[row] = rows[row].slice(0, col);
        rows.length = row + 1;
      }
      i += m[0].length - 1;
    } else if (c === "\r") col = 0;
    else if (c === "\n") {
      row++;
      col = 0;
      if (rows.length <= row) rows.push("");
    } else {
      const line = rows[row].padEnd(col);
      rows[row] = line.slice(0, col) + c + line.slice(col + 1);
      col++;
    }
  }
  return rows.filter((r, i) => r !== "" || i < rows.length - 1);
}

Deno.test("progress: live block is redrawn in place; messages scroll above it", () => {
  let out = "";
  const d = new ProgressDisplay({ write: (s) => (out += s), tty: true, quiet: false, width: 100 });
  const a = { name: "router/0 (aaaa) eth0", packets: 10, bytes: 2048, drops: 0 };
  const b = { name: "diego-cell/1 (bbbb) eth0", packets: 0, bytes: 0, drops: 0 };
  d.update([a, b], 1000);
  d.update([{ ...a, packets: 1500 }, { ...b, packets: 7, drops: 2 }], 65_000);
  d.status({ origin: "diego-cell/1 (bbbb)", type: "CONGESTED", text: "agent discarded 2 packets" });
  d.update([{ ...a, packets: 1501 }, { ...b, packets: 8, drops: 2, state: "unavailable" }], 66_000);
  assertEquals(screen(out), [
    "diego-cell/1 (bbbb) (CONGESTED): agent discarded 2 packets",
    "capturing 1m06s: 1,509 packets, 2.00 KiB, 2 dropped from 2 sources",
    "  router/0 (aaaa) eth0          1,501 pkts    2.00 KiB",
    "  diego-cell/1 (bbbb) eth0          8 pkts         0 B  2 dropped  unavailable",
  ]);
  d.finish(
    [{ ...a, packets: 1501 }, { ...b, packets: 8, drops: 2, state: "unavailable" }],
    66_000,
    "-",
  );
  assertEquals(screen(out), [
    "diego-cell/1 (bbbb) (CONGESTED): agent discarded 2 packets",
    "captured 1,509 packets (2.00 KiB) from 2 sources in 1m06s to stdout; 2 packets lost on the way",
    "  diego-cell/1 (bbbb) eth0: 8 packets, 2 lost, became unavailable",
  ]);
});

Deno.test("progress: quiet or non-TTY shows no live block; quiet hides informational status", () => {
  for (const [tty, quiet] of [[false, false], [true, true]]) {
    let out = "";
    const d = new ProgressDisplay({ write: (s) => (out += s), tty, quiet });
    const src = [{ name: "a", packets: 3, bytes: 300, drops: 0, state: "stopped" as const }];
    d.update(src, 5000);
    assertEquals(out, "");
    d.status({ origin: "a", type: "CAPTURE_STOPPED", text: "done" });
    d.status({ origin: "api", type: "LIMIT_REACHED", text: "max bytes 10 reached" });
    d.finish(src, 5000, "f.pcapng");
    const expected = [
      ...(quiet ? [] : ["a (CAPTURE_STOPPED): done"]),
      "api (LIMIT_REACHED): max bytes 10 reached",
      "captured 3 packets (300 B) from 1 source in 5s to f.pcapng",
    ];
    assertEquals(out, expected.join("\n") + "\n");
  }
});

Deno.test("progress: formatting helpers and hostile text", () => {
  assertEquals(
    formatStatus({ origin: "router/0", type: "INSTANCE_UNAVAILABLE", text: "gone" }),
    "router/0 (INSTANCE_UNAVAILABLE): gone",
  );
  assertEquals(sanitize("a\x1b[2Jb\nc\x07"), "ab c");
  assertEquals(formatBytes(0), "0 B");
  assertEquals(formatBytes(1536), "1.50 KiB");
  assertEquals(formatBytes(50 * 2 ** 20), "50.0 MiB");
  assertEquals(formatBytes(3 * 2 ** 30), "3.00 GiB");
  assertEquals(formatCount(1234567), "1,234,567");
  assertEquals(formatElapsed(7_390_000), "2h03m10s");
  const many = Array.from(
    { length: 13 },
    (_, i) => ({ name: `g/${i}`, packets: i, bytes: 0, drops: 0 }),
  );
  const lines = renderProgress(many, 0, 30, 10);
  assertEquals(lines.length, 12);
  assertEquals(lines[11], "  … and 3 more");
  assert(lines.every((l) => l.length <= 30));
});
