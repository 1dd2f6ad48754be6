/**
 * The filter text rules (protocol/filter_rules.ts): the complexity bound and the refusal of host
 * and network names. Cross-checked against libpcap itself in a network namespace of its own with
 * no interfaces up, so that a name libpcap would resolve fails there without any query leaving
 * the machine: every name the rules refuse is one libpcap looks up, and every accepted filter
 * compiles without one.
 */
import {
  checkFilterRules,
  FilterRuleError,
  KEYWORDS,
  MAX_AGENT_FILTER_PRIMITIVES,
  MAX_FILTER_PRIMITIVES,
} from "../protocol/filter_rules.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { isRoot } from "../lab/netns.ts";

function refusal(filter: string, max?: number): string {
  try {
    checkFilterRules(filter, max);
  } catch (e) {
    assert(e instanceof FilterRuleError, String(e));
    return e.message;
  }
  throw new Error(`${JSON.stringify(filter)} was accepted`);
}

const terms = (n: number, term = (i: number) => `port ${i + 1}`) =>
  Array.from({ length: n }, (_, i) => term(i)).join(" or ");

Deno.test("filter rules: at most 64 primitives, with a message that says what to do", () => {
  checkFilterRules(terms(MAX_FILTER_PRIMITIVES));
  assertMatch(
    refusal(terms(MAX_FILTER_PRIMITIVES + 1)),
    /too complex: it has 65 primitives .*at most 64 .*simplify it, e\.g\. "portrange 1-431"/,
  );
  // The case, in both spellings; inherited qualifiers count as terms too.
  assertMatch(refusal(terms(431)), /431 primitives/);
  assertMatch(refusal(terms(431, (i) => i ? `${i + 1}` : "port 1")), /431 primitives/);
  assertMatch(refusal(terms(100).replaceAll(" or ", " && ")), /100 primitives/);
  // `and`, `or`, `&&`, `||` join terms; `not`, `&` and `|` (bitwise) do not.
  checkFilterRules("not port 1 and not (tcp[13] & 2 != 0 or tcp[13] | 4 == 4)");
  // The agent allows the api's exclusion on top of the user's bound.
  const composed = `(not (host 10.0.0.1 and tcp port 9494)) and (${terms(MAX_FILTER_PRIMITIVES)})`;
  checkFilterRules(composed, MAX_AGENT_FILTER_PRIMITIVES);
  assertMatch(refusal(composed), /66 primitives/);
});

/** Refused as host or network names: each one libpcap would resolve. */
const NAMED: [string, string][] = [
  ["host example.com", "example.com"],
  ["src db", "db"],
  ["dst host 1foo.example", "1foo.example"],
  ["net corp", "corp"],
  ["ether host gw", "gw"],
  ["ether src gw", "gw"],
  ["host 10.0.0.1 or web", "web"], // inherits `host`
  ["port 80 and host 10.0.0.1 or web", "web"],
  ["udp and src or dst cache-1", "cache-1"],
  ["host \\tcp", "tcp"], // escaped keyword: a name
  ["host TCP", "TCP"], // keywords are case-sensitive
  ["ip6 host beef", "beef"],
];

/** Accepted: keywords, literals, and names from local tables (services, protocols). */
const PLAIN = [
  "tcp port 443",
  "tcp port https or http",
  "port 80 or https",
  "src port 80 or domain",
  "ip proto \\tcp",
  "ip proto \\udp or ip proto 1",
  "tcp[tcpflags] & (tcp-syn|tcp-ack) != 0",
  "icmp[icmptype] == icmp-echo",
  "ip[2:2] > 576",
  "ether host aa:bb:cc:dd:ee:ff or ether host aabb.ccdd.eeff or ether host aa-bb-cc-dd-ee-ff",
  "ether host aabbccddeeff",
  "host fe80::1 or host ::ffff:1.2.3.4 or host abcd::1",
  "net 10.0.0.0/8 or net 172.16 or net 192.168.0.0 mask 255.255.0.0",
  "portrange 1-1024",
  "vlan 100 and host 10.0.0.1",
  "llc i",
  "not port 22 and not arp",
  "greater 100 and less 1500",
  "ether broadcast or ip multicast",
  "ip6 and icmp6",
];

Deno.test("filter rules: host and network names are refused, naming the name", () => {
  for (const [filter, name] of NAMED) {
    const text = refusal(filter);
    assertMatch(text, new RegExp(`names "${name.replace(/\./g, "\\.")}" at offset \\d+`), filter);
    assertMatch(text, /DNS query .* use an IP address/, filter);
  }
  // Even names /etc/hosts would answer: the rule does not depend on the machine's resolver.
  assertMatch(refusal("host localhost"), /names "localhost"/);
  for (const filter of PLAIN) checkFilterRules(filter);
});

/** Runs libpcap over `filters` in a fresh network namespace with no interface up. */
async function compileIsolated(filters: string[]): Promise<Record<string, string>> {
  const script = `
    import { checkFilter } from ${
    JSON.stringify(new URL("../ffi/filter_check.ts", import.meta.url).href)
  };
    const out = {};
    for (const f of JSON.parse(Deno.args[0])) {
      const r = checkFilter(f);
      out[f] = r.ok ? "ok" : r.error;
    }
    console.log(JSON.stringify(out));`;
  const out = await new Deno.Command("unshare", {
    args: ["-n", Deno.execPath(), "eval", script, JSON.stringify(filters)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert(out.success, `isolated libpcap run failed: ${err}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test({
  name: "filter rules agree with libpcap: refused names are looked up, accepted filters are not",
  ignore: !isRoot(),
  fn: async () => {
    const inherit = [...KEYWORDS].map((k) => `host 10.0.0.1 or ${k}`);
    const results = await compileIsolated([...NAMED.map(([f]) => f), ...PLAIN, ...inherit]);
    // No keyword of the list is a name to libpcap (where a name would inherit `host`).
    for (const f of inherit) assert(!/unknown host/.test(results[f]), `${f}: ${results[f]}`);
    for (const [filter, name] of NAMED) {
      // libpcap's "unknown host/network/ether host 'NAME'": it tried to resolve it.
      assertMatch(results[filter], new RegExp(`unknown .*'${name.replace(/\./g, "\\.")}'`), filter);
    }
    for (const filter of PLAIN) assertEquals(results[filter], "ok", filter);
  },
});
