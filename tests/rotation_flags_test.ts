// --rotate-size, --rotate-every, --keep and --dry-run on both clients' command lines.
import { assertEquals, assertThrows } from "./support/assert.ts";
import { parseBoshCaptureArgs, UsageError } from "../cli/bosh_flags.ts";
import { parseCfCaptureArgs } from "../cli/cf_flags.ts";

const ENV = { HOME: "/home/op", PCAP_API: "pcap.example.com" };
const BOSH = ["capture", "-d", "cf", "-g", "router"];
const CF = ["capture", "my-app"];

Deno.test("rotation flags: parsed into a policy on both clients", () => {
  const b = parseBoshCaptureArgs(
    [...BOSH, "-o", "c.pcapng", "--rotate-size", "100MB", "--rotate-every", "1h", "--keep", "5"],
    ENV,
  );
  assertEquals(b.rotation, { sizeBytes: 100_000_000, everyMs: 3_600_000, keep: 5 });
  const c = parseCfCaptureArgs(
    [...CF, "-o", "a.pcap", "--format", "pcap", "--rotate-every", "30s"],
    ENV,
  );
  assertEquals(c.rotation, { everyMs: 30_000 });
  assertEquals(c.format, "pcap");
  assertEquals(parseBoshCaptureArgs([...BOSH, "-o", "c.pcapng"], ENV).rotation, undefined);
});

Deno.test("rotation flags: -o -, --keep alone, small and bad values are usage errors", () => {
  for (const parse of [parseBoshCaptureArgs, parseCfCaptureArgs]) {
    const base = parse === parseBoshCaptureArgs ? BOSH : CF;
    const bad = (args: string[], text: string) =>
      assertThrows(() => parse([...base, ...args], ENV), UsageError, text);
    bad(["-o", "-", "--rotate-size", "10MB"], "cannot rotate standard output (-o -)");
    bad(["-o", "-", "--rotate-every", "1m"], "pass -o FILE");
    bad(["-o", "x.pcapng", "--keep", "3"], "--keep needs --rotate-size or --rotate-every");
    bad(["-o", "x.pcapng", "--rotate-size", "10"], "at least 1000 bytes");
    bad(["-o", "x.pcapng", "--rotate-every", "500ms"], "at least 1 s");
    bad(["-o", "x.pcapng", "--rotate-size", "lots"], "is not a size");
    bad(["-o", "x.pcapng", "--rotate-every", "soon"], "is not a duration");
    bad(["-o", "x.pcapng", "--rotate-size", "1MB", "--keep", "0"], "keep must be 1..");
    bad(["-o", "x.pcapng", "--rotate-size", "1MB", "--keep", "two"], "keep must be a whole number");
  }
});

Deno.test("--dry-run: no -o needed; without it -o still is", () => {
  const b = parseBoshCaptureArgs([...BOSH, "--dry-run"], ENV);
  assertEquals([b.dryRun, b.output], [true, ""]);
  const c = parseCfCaptureArgs([...CF, "--dry-run"], ENV);
  assertEquals([c.dryRun, c.output], [true, ""]);
  assertThrows(() => parseBoshCaptureArgs(BOSH, ENV), UsageError, "missing -o/--file");
});
