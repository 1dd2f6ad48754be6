/**
 * Offline BPF filter validation: compiles against a dead handle, so no
 * interface, namespace or privilege is needed.
 *
 * @example
 * ```ts
 * import { checkFilter } from "./filter_check.ts";
 *
 * console.log(checkFilter("tcp port 443")); // { ok: true }
 * console.log(checkFilter("tcp port")); // { ok: false, error: "syntax error" }
 * ```
 *
 * @module
 */
import { compileFilter, libpcapAvailable, pcap } from "./libpcap.ts";

export { libpcapAvailable };

export function checkFilter(
  filter: string,
  linkType = 1,
  snaplen = 65535,
): { ok: true } | { ok: false; error: string } {
  const p = pcap().pcap_open_dead(linkType, snaplen);
  if (p === null) return { ok: false, error: `pcap_open_dead(${linkType}, ${snaplen}) failed` };
  try {
    const r = compileFilter(p, filter);
    if ("error" in r) return { ok: false, error: r.error };
    r.program.free();
    return { ok: true };
  } finally {
    pcap().pcap_close(p);
  }
}
