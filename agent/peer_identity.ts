/**
 * Who is on the other end of an mTLS connection, and whether `listen.tls.allowed_names` admits
 * them. The TLS layer has already verified the chain; this only narrows *which* of the CA's
 * certificates may use the agent.
 */
import type { TLSSocket } from "node:tls";

export interface PeerIdentity {
  /** Subject common name ("" if none). */
  cn: string;
  /** subjectAltName entries without their type prefix (DNS names, IPs, URIs). */
  sans: string[];
  /** Remote address, for logs. */
  address: string;
}

/** Parses node's `subjectaltname` string ("DNS:a, IP Address:1.2.3.4, URI:x"). Pure. */
export function parseSubjectAltName(text: string | undefined): string[] {
  if (!text) return [];
  return text.split(/,\s*/).map((entry) => {
    const colon = entry.indexOf(":");
    return colon >= 0 ? entry.slice(colon + 1).trim() : entry.trim();
  }).filter((v) => v.length > 0);
}

export function peerIdentity(socket: TLSSocket): PeerIdentity {
  const cert = socket.getPeerCertificate?.();
  const rawCn = cert?.subject?.CN as string | string[] | undefined;
  const cn = Array.isArray(rawCn) ? rawCn[0] ?? "" : rawCn ?? "";
  return {
    cn,
    sans: parseSubjectAltName(cert?.subjectaltname),
    address: socket.remoteAddress ?? "",
  };
}

/** Empty allow-list admits any verified certificate; otherwise CN or any SAN must match exactly. */
export function isPeerAllowed(peer: PeerIdentity, allowed: readonly string[]): boolean {
  if (allowed.length === 0) return true;
  if (peer.cn && allowed.includes(peer.cn)) return true;
  return peer.sans.some((name) => allowed.includes(name));
}

/** Label for log lines. */
export function peerLabel(peer: PeerIdentity): string {
  return peer.cn || peer.sans[0] || "(no name)";
}
