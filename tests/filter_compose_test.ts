// Filter validation and composition. Compilation goes through the real libpcap (ffi/filter_check)
// and the composed filters' meaning is checked by running them with tcpdump over a small pcap
// file of known packets: the capture's own connection is excluded, the user's filter still
// selects what it should, and the classic paren break-out is refused (and shown to be real).
import {
  composedFilter,
  composeFilters,
  exclusionFilter,
  MAX_COMPOSED_FILTER_BYTES,
  MAX_FILTER_BYTES,
  validateUserFilter,
} from "../server/filter_compose.ts";
import { checkFilter } from "../ffi/filter_check.ts";
import { ApiError } from "../server/limits.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

const API = "198.18.0.1";
const AGENT = "198.18.0.2";
const AGENT_PORT = 9494;
const EXCL = exclusionFilter({ host: API, port: AGENT_PORT });

interface Pkt {
  name: string;
  src: string;
  dst: string;
  proto: "tcp" | "udp";
  sport: number;
  dport: number;
}

const PACKETS: Pkt[] = [
  { name: "own-out", src: API, dst: AGENT, proto: "tcp", sport: 40000, dport: AGENT_PORT },
  { name: "own-back", src: AGENT, dst: API, proto: "tcp", sport: AGENT_PORT, dport: 40000 },
  { name: "web", src: API, dst: AGENT, proto: "tcp", sport: 40001, dport: 80 },
  { name: "tls", src: "198.18.0.3", dst: "198.18.0.4", proto: "tcp", sport: 5555, dport: 443 },
  { name: "dns", src: API, dst: AGENT, proto: "udp", sport: 53, dport: 53 },
  { name: "udp-9494", src: API, dst: AGENT, proto: "udp", sport: 1000, dport: AGENT_PORT },
  { name: "other-9494", src: "198.18.0.5", dst: AGENT, proto: "tcp", sport: 41000, dport: 9494 },
];

function ip4(a: string): number[] {
  return a.split(".").map(Number);
}

/** Classic pcap (Ethernet) holding PACKETS in order; packet n has timestamp 1700000000 + n. */
function pcapFile(): Uint8Array {
  const parts: number[] = [];
  const u32 = (v: number) => parts.push(v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24);
  const u16 = (v: number) => parts.push(v & 255, v >>> 8);
  u32(0xa1b2c3d4), u16(2), u16(4), u32(0), u32(0), u32(65535), u32(1);
  PACKETS.forEach((p, n) => {
    const l4 = p.proto === "tcp"
      ? [
        p.sport >> 8,
        p.sport & 255,
        p.dport >> 8,
        p.dport & 255,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0x50,
        0x18,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
      ]
      : [p.sport >> 8, p.sport & 255, p.dport >> 8, p.dport & 255, 0, 9, 0, 0];
    const payload = [n];
    const ipLen = 20 + l4.length + payload.length;
    const ip = [
      0x45,
      0,
      ipLen >> 8,
      ipLen & 255,
      0,
      n,
      0x40,
      0,
      64,
      p.proto === "tcp" ? 6 : 17,
      0,
      0,
      ...ip4(p.src),
      ...ip4(p.dst),
    ];
    const frame = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, ...ip, ...l4, ...payload];
    u32(1700000000 + n), u32(0), u32(frame.length), u32(frame.length);
    parts.push(...frame);
  });
  return new Uint8Array(parts);
}

/** Names of the PACKETS that `filter` selects, as tcpdump applies it. */
async function matching(filter: string): Promise<string[]> {
  const pcapPath = await Deno.makeTempFile({ prefix: "pcap_filter_", suffix: ".pcap" });
  let out: Deno.CommandOutput;
  try {
    await Deno.writeFile(pcapPath, pcapFile());
    // The filter is one argv element: no shell ever sees it.
    out = await new Deno.Command("tcpdump", {
      args: ["-nn", "-tt", "-r", pcapPath, filter],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } finally {
    await Deno.remove(pcapPath);
  }
  const err = new TextDecoder().decode(out.stderr);
  assert(out.success, `tcpdump failed for ${JSON.stringify(filter)}: ${err}`);
  // With -tt each packet line starts with its epoch time; seconds past 1700000000 = position.
  const lines = new TextDecoder().decode(out.stdout).split("\n").filter((l) => /^\d+\./.test(l));
  return lines.map((l) => PACKETS[Number(l.split(".")[0]) - 1700000000].name);
}

async function rejected(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof ApiError, String(e));
    assertEquals(e.kind, "INVALID_REQUEST");
    assertMatch(e.message, re);
    return;
  }
  throw new Error("expected INVALID_REQUEST");
}

Deno.test("filter: the test harness itself sees every packet", async () => {
  assertEquals(await matching(""), PACKETS.map((p) => p.name));
});

Deno.test("filter: exclusion drops only the capture's own TCP stream", async () => {
  assertEquals(EXCL, `not (host ${API} and tcp port ${AGENT_PORT})`);
  assertEquals(composedFilter("", EXCL), EXCL);
  assertEquals(await composeFilters("", [EXCL]), [EXCL]);
  assertEquals(await matching(EXCL), ["web", "tls", "dns", "udp-9494", "other-9494"]);
});

Deno.test("filter: composed filters keep the user's meaning minus the own connection", async () => {
  // [user filter, what the composed filter selects, own-stream packets the bare filter selects]
  const cases: [string, string[], string[]][] = [
    ["port 80 or port 443", ["web", "tls"], []],
    ["udp", ["dns", "udp-9494"], []],
    ["tcp port 9494", ["other-9494"], ["own-out", "own-back"]], // asking for it does not get it
    [`host ${API}`, ["web", "dns", "udp-9494"], ["own-out", "own-back"]],
    ["(tcp) and (port 80 or (port 443))", ["web", "tls"], []],
  ];
  for (const [user, expected, own] of cases) {
    assert(checkFilter(user).ok, `user filter ${user} compiles alone`);
    const [composed] = await composeFilters(await validateUserFilter(user), [EXCL]);
    assertEquals(composed, `(${EXCL}) and (${user})`);
    assert(checkFilter(composed).ok);
    assertEquals(await matching(composed), expected, user);
    // Without the exclusion the user's filter selects exactly that plus the own stream, so the
    // exclusion is what removes it (and a composition that lost it would fail above).
    const plain = await matching(user);
    const want = PACKETS.map((p) => p.name).filter((n) => expected.includes(n) || own.includes(n));
    assertEquals(plain, want, `bare ${user}`);
  }
  assert(cases.some(([, , own]) => own.length > 0), "no case shows the exclusion at work");
});

Deno.test("filter: paren break-out is refused; naive wrapping would leak", async () => {
  const attack = `port 80) or (tcp port ${AGENT_PORT}`;
  await rejected(
    () => validateUserFilter(attack),
    /closes a parenthesis it never opened at offset 7/,
  );
  await rejected(() => composeFilters(attack, [EXCL]), /closes a parenthesis/);
  await rejected(() => composeFilters("port 80) or (port 443", [EXCL]), /closes a parenthesis/);
  // Why the prefix check matters: libpcap accepts the naive composition, and it captures the
  // capture's own stream (feedback loop) despite the exclusion.
  const naive = `(${EXCL}) and (${attack})`;
  assert(checkFilter(naive).ok);
  const leaked = await matching(naive);
  assert(leaked.includes("own-out") && leaked.includes("own-back"), leaked.join(","));
  // Balanced overall yet negative at a prefix: still refused.
  await rejected(() => validateUserFilter(") or (port 80"), /offset 0/);
  await rejected(() => validateUserFilter("(port 80"), /1 parenthesis\(es\) open/);
});

Deno.test("filter: syntax errors carry libpcap's reason", async () => {
  await rejected(() => validateUserFilter("port eighty"), /does not compile: .+/);
  await rejected(() => validateUserFilter("host 1.2.3.4 and"), /does not compile/);
  await rejected(() => validateUserFilter("port 99999"), /does not compile: .*port/);
});

Deno.test("filter: length bound and control characters", async () => {
  // Largest valid filter: 64 primitives (the complexity bound) nested in parentheses to exactly
  // the byte bound.
  let core = Array.from({ length: 64 }, (_, i) => `port ${i + 1}`).join(" or ");
  if ((MAX_FILTER_BYTES - core.length) % 2) core = `(${core} )`;
  const depth = (MAX_FILTER_BYTES - core.length) / 2;
  const big = "(".repeat(depth) + core + ")".repeat(depth);
  assertEquals(new TextEncoder().encode(big).length, MAX_FILTER_BYTES);
  assert((await validateUserFilter(big)).includes("port 1 or"));
  // The longest user filter still combines with the exclusion within what agents accept.
  assert(MAX_COMPOSED_FILTER_BYTES >= MAX_FILTER_BYTES + EXCL.length + 16);
  const [composed] = await composeFilters(big, [EXCL]);
  assert(composed.length <= MAX_COMPOSED_FILTER_BYTES);
  await rejected(() => validateUserFilter(big + " "), /4097 bytes long, at most 4096/);
  // Multi-byte characters count as bytes, not characters.
  await rejected(() => validateUserFilter("é".repeat(2049)), /4098 bytes/);
  await rejected(
    () => validateUserFilter("port 80\0 or port 22"),
    /control character 0x00 at offset 7/,
  );
  await rejected(() => validateUserFilter("port 80\x1b[2J"), /control character 0x1b/);
  await rejected(() => validateUserFilter("port 80\x7f"), /control character 0x7f/);
  assertEquals(await validateUserFilter("  tcp\tport\r\n 80 "), "tcp port 80");
  assertEquals(await validateUserFilter("   "), "");
});

Deno.test("filter: exclusion accepts only literal addresses and ports", () => {
  const v6 = exclusionFilter({ host: "[fd00::1]", port: 443 });
  assertEquals(v6, "not (host fd00::1 and tcp port 443)");
  assert(checkFilter(v6).ok);
  for (const host of ["example.com", `${API} or host 1.1.1.1`, "1.2.3.256", ""]) {
    let threw = false;
    try {
      exclusionFilter({ host, port: 1 });
    } catch (e) {
      threw = e instanceof RangeError;
    }
    assert(threw, `host ${JSON.stringify(host)} must be refused`);
  }
  let threw = false;
  try {
    exclusionFilter({ host: API, port: 0 });
  } catch {
    threw = true;
  }
  assert(threw);
});
