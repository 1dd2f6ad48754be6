import { checkFilter, libpcapAvailable } from "../ffi/filter_check.ts";
import { enterNetns, errno, strerror } from "../ffi/libc.ts";
import { libVersion, statusToStr } from "../ffi/libpcap.ts";

function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}
function assertMatch(s: string, re: RegExp): void {
  if (!re.test(s)) throw new Error(`${JSON.stringify(s)} does not match ${re}`);
}
function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected an exception");
}

Deno.test("libpcap loads and reports its version", () => {
  assert(libpcapAvailable());
  assertMatch(libVersion(), /^libpcap version 1\.\d+/);
  assertMatch(statusToStr(-5), /No such device/);
});

Deno.test("checkFilter accepts valid filters", () => {
  for (const f of ["", "udp", "tcp port 443 and host 198.18.0.1", "not arp", "vlan and udp"]) {
    const r = checkFilter(f);
    assert(r.ok, `${f}: ${JSON.stringify(r)}`);
  }
  assert(checkFilter("ip6", 1, 128).ok);
});

Deno.test("checkFilter rejects invalid filters with libpcap's text", () => {
  const cases: [string, RegExp][] = [
    ["udp port foo", /unknown port 'foo'/],
    ["tcp and", /syntax error/],
    ["host 300.1.1.1", /invalid IPv4 address '300\.1\.1\.1'/],
    ["ether host zz", /unknown ether host 'zz'/],
  ];
  for (const [f, re] of cases) {
    const r = checkFilter(f);
    assert(!r.ok, `${f} should be invalid`);
    assertMatch(r.error, re);
  }
  // Link-type specific: "ether" primitives do not exist on raw IP (DLT_RAW = 12 on Linux).
  const raw = checkFilter("ether host 00:11:22:33:44:55", 12);
  assert(!raw.ok);
  assertMatch(raw.error, /link-layer|ether/i);
  assert(checkFilter("udp", 12).ok);
});

Deno.test("libc errors carry the OS message and the attempt", () => {
  const missing = errorOf(() => enterNetns("/run/netns/pc-does-not-exist"));
  assertMatch(missing.message, /opening network namespace \/run\/netns\/pc-does-not-exist/);
  assertMatch(missing.message, /No such file or directory/);
  const notNs = errorOf(() => enterNetns("/etc/hostname"));
  assertMatch(
    notNs.message,
    /entering network namespace \/etc\/hostname \(setns\): Invalid argument/,
  );
  assertMatch(notNs.message, /not a network namespace file/);
  assert(errno() >= 0);
  assertMatch(strerror(2), /No such file/);
  // The failed attempts did not move this thread.
  assert(Deno.readLinkSync("/proc/thread-self/ns/net") === Deno.readLinkSync("/proc/self/ns/net"));
});

Deno.test("importing the bindings does not load libpcap (lazy)", async () => {
  // A child whose loader cannot find libpcap still imports fine and gets a clear error on use.
  const code = `
    import { checkFilter, libpcapAvailable } from ${
    JSON.stringify(new URL("../ffi/filter_check.ts", import.meta.url).href)
  };
    console.log(libpcapAvailable());
    try { checkFilter("udp"); } catch (e) { console.log(e.message); }
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { LD_PRELOAD: "", LD_LIBRARY_PATH: "/nonexistent" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert(out.success, new TextDecoder().decode(out.stderr));
  assertMatch(text, /^(true|false)\n/);
  if (text.startsWith("false")) assertMatch(text, /libpcap0\.8/);
});
