/**
 * The benchmarks' pure parts: argument dispatch of `deno task bench`, the bench sshd's config,
 * the e2e summary (zero-loss maximum, ratio, CPU at the highest rung every path passed) and the
 * CPU accounting across threads that end.
 */
import { parseArgs } from "../bench/run.ts";
import { summary } from "../bench/e2e.ts";
import { sshdConfig } from "../bench/ssh_baseline.ts";
import { cpuDeltaNs, cpuSnapshot } from "../bench/bench_support.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "./support/assert.ts";

Deno.test("bench: a bare name selects one benchmark, like --only", () => {
  assertEquals([...parseArgs(["e2e"]).only], ["e2e"]);
  assertEquals(parseArgs(["--", "--quick", "e2e"]).quick, true);
  assertEquals([...parseArgs(["--only", "fan_in,e2e"]).only].sort(), ["e2e", "fan_in"]);
  assertEquals(parseArgs([]).only.size, 7);
});

Deno.test("bench: unknown arguments and names are refused with the choices", () => {
  const e = assertThrows(() => parseArgs(["e2ee"]), Error);
  assertMatch(e.message, /unknown argument "e2ee".*e2e/);
  assertMatch(assertThrows(() => parseArgs(["--only", "nope"]), Error).message, /no benchmark/);
});

Deno.test("bench sshd config: only the VM address, keys from its dir, no passwords", () => {
  const c = sshdConfig({ ip: "198.18.9.2", dir: "/tmp/x" });
  assertMatch(c, /^ListenAddress 198\.18\.9\.2:22$/m);
  assertMatch(c, /^HostKey \/tmp\/x\/host_ed25519$/m);
  assertMatch(c, /^PasswordAuthentication no$/m);
  assertMatch(c, /^Ciphers aes128-gcm@openssh\.com,chacha20-poly1305@openssh\.com$/m);
  assert(!/^Port /m.test(c));
});

Deno.test("e2e summary: highest zero-loss rate per path and CPU at the common rung", () => {
  const row = (
    path: "pcap" | "ssh aes128-gcm@openssh.com",
    rung: number,
    offered: number,
    lost: number,
    cpu: number,
  ) => ({
    frame: 64,
    path,
    cipher: path === "pcap" ? "TLS" : "aes128-gcm@openssh.com",
    rung,
    offered,
    sent: offered,
    inFile: offered - lost,
    lost,
    parts: { a: cpu / 2, b: cpu / 2 },
    writerPeakMb: 10,
    note: "",
  });
  const text = summary([
    row("pcap", 100, 100, 0, 4),
    row("pcap", 200, 199, 0, 3),
    row("pcap", 300, 290, 5, 2),
    row("ssh aes128-gcm@openssh.com", 100, 100, 0, 1),
    row("ssh aes128-gcm@openssh.com", 200, 201, 3, 1),
  ], ["pcap", "ssh aes128-gcm@openssh.com"]);
  const lines = text.split("\n");
  assertMatch(lines[0], /CPU s\/Mpkt at rung 100 \(all zero-loss\)/);
  assertMatch(lines[2], /\| 199 \| - \| 4\.00 \| 3\.00 \|$/);
  assertMatch(lines[3], /\| 100 \| 1\.99 \| 1\.00 \| 1\.00 \|$/);
});

Deno.test("cpuDeltaNs: exact per-thread sum, /proc stat when a thread ended", () => {
  const snap = (threads: Record<string, number>, statNs: number) => ({
    threads: new Map(Object.entries(threads)),
    statNs,
  });
  // a thread started meanwhile counts whole
  assertEquals(
    cpuDeltaNs(snap({ "1": 100, "2": 50 }, 0), snap({ "1": 130, "2": 60, "3": 5 }, 0)),
    45,
  );
  // thread 2 ended: its time is only in stat
  assertEquals(cpuDeltaNs(snap({ "1": 100, "2": 50 }, 1e7), snap({ "1": 130 }, 3e7)), 2e7);
  // the bench's own process, live: monotonic
  const a = cpuSnapshot(Deno.pid);
  for (let i = 0, x = 0; i < 1e6; i++) x += i;
  assert(cpuDeltaNs(a, cpuSnapshot(Deno.pid)) > 0);
});
