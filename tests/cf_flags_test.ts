// pcap-cf capture's command line (pure): defaults, repeatable --index, org/space, the derived
// pcap API URL, and a clear usage error for every kind of bad input.
import { derivePcapApiUrl, parseCfCaptureArgs } from "../cli/cf_flags.ts";
import { HelpRequested, UsageError } from "../cli/bosh_flags.ts";
import { assertEquals, assertThrows } from "./support/assert.ts";

const GUID = "5b1f1a2c-0000-4000-8000-000000000001";

Deno.test("cf flags: defaults, indexes, org/space, api url from -u or PCAP_API", () => {
  const o = parseCfCaptureArgs(["capture", "my-app", "-o", "a.pcapng"], {});
  assertEquals([o.app, o.process, o.indexes, o.interface, o.snaplen, o.format], [
    "my-app",
    "web",
    [],
    "eth0",
    65535,
    "pcapng",
  ]);
  assertEquals(o.pcapApiUrl, undefined);
  const p = parseCfCaptureArgs(
    [
      "my-app",
      "--index",
      "2",
      "--index",
      "0",
      "--index",
      "2",
      "--process",
      "worker",
      "-i",
      "lo",
      "--org",
      "acme",
      "--space",
      "dev",
      "-o",
      "-",
      "--duration",
      "30s",
      "--max-packets",
      "10",
    ],
    { PCAP_API: "pcap.sys.example.com" },
  );
  assertEquals([p.indexes, p.process, p.interface, p.org, p.space], [
    [0, 2],
    "worker",
    "lo",
    "acme",
    "dev",
  ]);
  assertEquals([p.pcapApiUrl, p.durationMs, p.maxPackets], [
    "https://pcap.sys.example.com",
    30_000,
    10,
  ]);
  const g = parseCfCaptureArgs(["--app-guid", GUID, "-o", "x", "-u", "https://p.example.com"], {});
  assertEquals([g.app, g.appGuid, g.pcapApiUrl], [undefined, GUID, "https://p.example.com"]);
  const tls = parseCfCaptureArgs([
    "a",
    "-o",
    "x",
    "--ca-cert",
    "api.pem",
    "--uaa-ca-cert",
    "uaa.pem",
  ], {});
  assertEquals([tls.caCert, tls.uaaCaCert, o.uaaCaCert], ["api.pem", "uaa.pem", undefined]);
  assertEquals(derivePcapApiUrl("https://api.sys.example.com"), "https://pcap.sys.example.com");
  assertEquals(
    derivePcapApiUrl("https://api.sys.example.com:8443/"),
    "https://pcap.sys.example.com:8443",
  );
  assertThrows(
    () => derivePcapApiUrl("https://cc.example.com"),
    UsageError,
    'does not start with "api."',
  );
  assertThrows(() => parseCfCaptureArgs(["--help"], {}), HelpRequested);
});

Deno.test("cf flags: every bad input is a usage error saying what to do", () => {
  const cases: Array<[string[], string]> = [
    [["-o", "x"], "name the app"],
    [["a", "--app-guid", "../x", "-o", "x"], "is not an app guid"],
    [["a"], "missing -o/--file"],
    [["a", "-o", "x", "--index", "-1"], "index"],
    [["a", "-o", "x", "--index", "one"], "whole number"],
    [["a", "-o", "x", "--org", "acme"], "--org needs --space"],
    [["a", "-o", "x", "--process", "a/b"], "not a process type"],
    [["a", "-o", "x", "--format", "json"], "--format must be pcapng or pcap"],
    [["a", "-o", "x", "-v", "-q"], "exclude each other"],
    [["a", "-o", "x", "-l", "0"], "snaplen must be 1..262144"],
    [["a", "-o", "x", "--duration", "soon"], "is not a duration"],
    [["a", "-o", "x", "-u", "http://pcap.example.com"], "clear text"],
    [["a", "b", "-o", "x"], "too many arguments"],
    [["a", "-o", "x", "--colour"], "unknown option"],
    [["a", "-o", "x", "--uaa-ca-cert"], "argument missing"],
  ];
  for (const [argv, msg] of cases) {
    assertThrows(() => parseCfCaptureArgs(argv, {}), UsageError, msg);
  }
});
