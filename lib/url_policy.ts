/**
 * Which URLs may carry credentials or the root of trust (DESIGN §5): https everywhere, with one
 * development exception, loopback hosts (127.0.0.0/8, ::1, localhost), where cleartext never
 * leaves the machine. Pure.
 */

/** True for 127.0.0.0/8, ::1 (with or without brackets) and localhost (any case, trailing dot). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").replace(/\.$/, "").toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && Number(m[1]) === 127 && m.slice(2).every((p) => Number(p) <= 255);
}

/**
 * Null when `url` is https, or http to a loopback host; otherwise why not (for error texts that
 * name the setting). Unparsable URLs and other schemes are refused too.
 */
export function cleartextProblem(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `"${url}" is not a valid URL`;
  }
  if (u.protocol === "https:") return null;
  if (u.protocol === "http:") {
    if (isLoopbackHost(u.hostname)) return null;
    return `"${url}" uses http, which would send tokens and trust anchors in clear text; ` +
      "use https (http is accepted only for loopback hosts, for development)";
  }
  return `"${url}" must be an https URL`;
}
