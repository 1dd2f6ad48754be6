/**
 * What a capture filter may contain before libpcap ever sees it (pure; used by the api for the
 * user's filter, by agents for the composed filter, and by the clients before they connect):
 * - few enough primitives: libpcap's optimizer is super-linear (about cubic) in the number of
 *   terms, so `port 1 or port 2 or … port 431` would compile for ~10 s; refused here instead;
 * - no names that need a lookup of hosts or networks (`host NAME`, `net NAME`, `src NAME`,
 *   `ether host NAME`, `gateway NAME`): pcap_compile resolves them synchronously through NSS
 *   (DNS), on every api and agent. Port and protocol names (`port http`, `proto \tcp`) come from
 *   local files and stay allowed.
 */

/** Most primitives (terms joined by `and`/`or`) a user filter may have. 64 `portrange` terms,
 * the costliest kind measured, compile in about 0.3 s; 431 `port` terms took 10 s. */
export const MAX_FILTER_PRIMITIVES = 64;
/** What the api's exclusion of its own connection adds: `not (host A and tcp port P) and (…)`. */
export const EXCLUSION_PRIMITIVES = 2;
/** Bound an agent applies to the composed filter it receives. */
export const MAX_AGENT_FILTER_PRIMITIVES = MAX_FILTER_PRIMITIVES + EXCLUSION_PRIMITIVES;

export class FilterRuleError extends Error {
  override name = "FilterRuleError";
}

interface Token {
  text: string;
  at: number;
}

// Words as libpcap's scanner sees them closely enough for these rules: names, numbers,
// addresses (with ':' '.' '/' '-'), escaped names (`\tcp`); everything else is one operator.
const TOKEN = /\s+|(&&|\|\||<<|>>|<=|>=|==|!=)|([\\A-Za-z0-9_.:/-]+)|([^\s])/g;

function tokens(text: string): Token[] {
  const out: Token[] = [];
  for (const m of text.matchAll(TOKEN)) {
    if (m[1] ?? m[2] ?? m[3]) out.push({ text: m[0], at: m.index });
  }
  return out;
}

/** Operators after which a word is an arithmetic operand (`tcp[tcpflags] & tcp-syn`). */
const ARITHMETIC = new Set(["[", ":", "&", "|", "+", "-", "*", "/", "%", "^", "<<", ">>"]);
ARITHMETIC.add("=").add("==").add("!=").add("<").add(">").add("<=").add(">=");
const BOOLEAN = new Set(["and", "or", "&&", "||"]);

/** Qualifiers whose (inherited) value is looked up as a host or network name. */
const HOST_QUALIFIERS = new Set(["host", "src", "dst", "net", "gateway"]);
/** Qualifiers whose values are names from local tables (services, protocols, 802.11 types…). */
const LOCAL_QUALIFIERS = new Set([
  "port",
  "portrange",
  "proto",
  "protochain",
  "llc",
  "type",
  "subtype",
  "dir",
  "on",
  "ifname",
  "reason",
  "action",
  "rset",
  "ruleset",
]);

// libpcap's keywords (case-sensitive, as its scanner): never a name. Checked against libpcap
// 1.10: each is refused or compiled as a keyword, none is looked up as a host.
export const KEYWORDS: ReadonlySet<string> = new Set(
  `dst src host gateway net mask port portrange less greater proto protochain byte broadcast
  multicast and or not link ether ppp slip fddi tr wlan arp rarp ip ip6 icmp icmp6 igmp igrp pim
  vrrp carp tcp udp sctp ah esp atalk aarp decnet lat sca moprc mopdl iso esis es-is isis is-is
  l1 l2 iih lsp snp psnp csnp clnp stp ipx netbeui len inbound outbound ifindex vlan mpls pppoed
  pppoes geneve lane llc metac bcc oam oamf4 oamf4ec oamf4sc sc ilmic connectmsg metaconnect vpi
  vci fisu lssu msu hfisu hlssu hmsu sio opc dpc sls hsio hopc hdpc hsls on ifname rnr rulenum
  reason rset srnr subrulenum action type subtype dir addr1 addr2 addr3 addr4 ra ta radio
  tcpflags icmptype icmpcode icmp6type icmp6code`.split(/\s+/),
);
const NUMERIC_NAME = /^(tcp|icmp|icmp6)-[a-z0-9]+$/; // tcp-syn, icmp-echo, icmp6-echoreply…

const NAME = /^\\?[A-Za-z0-9][-_.A-Za-z0-9]*$/;
const LITERALS = [
  /^\d+$/, // number (and octal)
  /^0x[0-9a-f]+$/i,
  /^\d+(\.\d+){1,3}$/, // IPv4, possibly abbreviated (`net 10.1`)
  /^\d+-\d+$/, // port range
  /^[0-9a-f]{1,2}([:.-][0-9a-f]{1,2}){5}$/i, // MAC
  /^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/i,
  /^[0-9a-f]{12}$/i,
];

function isName(word: string): boolean {
  if (!NAME.test(word) || LITERALS.some((re) => re.test(word))) return false;
  return !KEYWORDS.has(word) && !NUMERIC_NAME.test(word);
}

/**
 * Throws FilterRuleError when `text` (a filter already normalised and free of control
 * characters) has more than `maxPrimitives` primitives or names a host or network.
 */
export function checkFilterRules(text: string, maxPrimitives = MAX_FILTER_PRIMITIVES): void {
  const toks = tokens(text);
  // Terms joined by `and`/`or`; inherited ones count too (`port 1 or 2`).
  const primitives = 1 + toks.filter((t) => BOOLEAN.has(t.text)).length;
  if (primitives > maxPrimitives) {
    throw new FilterRuleError(
      `the filter is too complex: it has ${primitives} primitives (terms joined by and/or), ` +
        `at most ${maxPrimitives} are allowed, as compiling it would take too long; simplify ` +
        `it, e.g. "portrange 1-431" instead of "port 1 or port 2 or …", a net instead of many hosts`,
    );
  }
  // The qualifier a bare value inherits: the last one seen; a protocol keyword resets it.
  let context: "host" | "local" | "none" = "none";
  for (let i = 0; i < toks.length; i++) {
    const word = toks[i].text;
    if (HOST_QUALIFIERS.has(word)) context = "host";
    else if (LOCAL_QUALIFIERS.has(word)) context = "local";
    else if (KEYWORDS.has(word) && !BOOLEAN.has(word) && word !== "not") context = "none";
    if (!isName(word) || context === "local") continue;
    if (i > 0 && ARITHMETIC.has(toks[i - 1].text)) continue;
    const name = word.replace(/^\\/, "");
    throw new FilterRuleError(
      `the filter names "${name}" at offset ${toks[i].at} where libpcap would look up a host ` +
        `or network name (a DNS query on the api and on every agent); use an IP address or ` +
        `network instead (e.g. "host 10.0.0.5", "net 10.0.0.0/24")`,
    );
  }
}
