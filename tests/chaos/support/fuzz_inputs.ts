/**
 * Seeded hostile inputs for the agent's and the api's endpoints: names with path and URL tricks,
 * filters with control characters and breakout attempts, and start requests that are random,
 * truncated, oversized, of the wrong version, mutated field by field or sent out of order.
 * Pure given the PRNG.
 */
import type { Prng } from "./chaos.ts";

/** Deployment, group, instance and interface names that try to leave their place. */
export const TRICKY_NAMES = [
  "..",
  "../etc",
  "cf/../../info",
  "cf/..%2f..%2finfo",
  "%2e%2e",
  "%2e%2e%2fdeployments",
  "cf?limit=1",
  "cf#fragment",
  "cf;x=1",
  "cf\u0000",
  "cf\r\nX-Injected: 1",
  "cf\t",
  " cf",
  "cf ",
  "http://127.0.0.1:1/",
  "//127.0.0.1:1/x",
  "\\\\host\\share",
  "cf/instances",
  "c\u00e9f",
  "cf\u202e",
  "\u{1F600}",
  "x".repeat(300),
  "",
  "-",
  ".",
  "$(id)",
  "`id`",
  "cf|id",
  "*",
  "lo:0",
  "eth0.1",
  "nflog",
  "dbus-system",
  "any",
];

/** Filters that try to break out of the composition or confuse the compiler. */
export const TRICKY_FILTERS = [
  "port 80) or (port 443",
  "port 80 or (",
  ")",
  "((((((((((",
  "not (",
  "port 80\u0000 or port 443",
  "port 80\n or port 443",
  "port 80\r\nor port 443",
  "port\t80",
  "udp port 5555 and \u0007",
  "\u001b[31mport 80",
  "port 80 # comment",
  "port 80; rm -rf /",
  "$(reboot)",
  "`reboot`",
  "port 65536",
  "port -1",
  "host 999.1.1.1",
  "ether host zz:zz:zz:zz:zz:zz",
  "len > 99999999999999999999",
  "ip[0:4294967295] = 1",
  "port " + "1 or port ".repeat(50) + "2",
  "\u00e9",
  "x".repeat(5000),
];

const VERSIONS: unknown[] = [0, -1, 2, 99, 1.5, 2 ** 53, "1", null, true, [], {}];

function pickValue(r: Prng): unknown {
  return r.pick<unknown>([
    null,
    true,
    0,
    -1,
    2 ** 31,
    1e308,
    -0,
    "",
    r.text(1 + r.int(40)),
    r.pick(TRICKY_NAMES),
    r.pick(TRICKY_FILTERS),
    [],
    [r.text(5)],
    {},
    { nested: { deep: [1, 2, 3] } },
  ]);
}

/** One hostile request body for `base` (a valid start request). */
export function hostileBody(
  base: Record<string, unknown>,
  r: Prng,
): { kind: string; body: string } {
  const valid = JSON.stringify(base);
  switch (r.int(9)) {
    case 0:
      return { kind: "random text", body: r.text(r.int(400)) };
    case 1:
      return { kind: "random bytes", body: String.fromCharCode(...r.bytes(r.int(400))) };
    case 2:
      return { kind: "truncated", body: valid.slice(0, r.int(valid.length)) };
    case 3:
      return {
        kind: "oversized",
        body: JSON.stringify({ ...base, pad: "x".repeat(64 * 1024 + r.int(200_000)) }),
      };
    case 4:
      return {
        kind: "wrong version",
        body: JSON.stringify({ ...base, protocol_version: r.pick(VERSIONS) }),
      };
    case 5: {
      const keys = Object.keys(base);
      const k = r.pick(keys);
      return { kind: `field ${k}`, body: JSON.stringify({ ...base, [k]: pickValue(r) }) };
    }
    case 6: {
      const k = r.pick(["interface", "filter"]);
      const v = k === "filter" ? r.pick(TRICKY_FILTERS) : r.pick(TRICKY_NAMES);
      return { kind: `tricky ${k}`, body: JSON.stringify({ ...base, [k]: v }) };
    }
    case 7:
      return {
        kind: "unknown field",
        body: JSON.stringify({ ...base, [r.text(1 + r.int(12))]: pickValue(r) }),
      };
    default:
      return {
        kind: "wrong shape",
        body: JSON.stringify(r.pick<unknown>([[base], "start", 42, null, { start: base }])),
      };
  }
}
