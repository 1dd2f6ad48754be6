/**
 * Who is on the other end of an mTLS connection, and whether `listen.tls.allowed_names` admits
 * them. The TLS layer verifies the chain; this checks, on every request, that it did (the socket
 * is authorized and carries a certificate) and narrows *which* of the CA's certificates may use
 * the agent: only DNS subjectAltNames count, compared case-insensitively, and the subject CN
 * only when the certificate has no subjectAltName at all (as RFC 6125 has it for servers). An
 * email, URI or IP entry equal to an allowed name admits nobody.
 */
import type { TLSSocket } from "node:tls";
import { readCertificateFields, type SanEntry } from "../lib/x509_fields.ts";

export interface PeerIdentity {
  /** subject common name when there is exactly one ("" otherwise) */
  cn: string;
  /** the DNS subjectAltNames */
  dnsNames: string[];
  /** every subjectAltName as "type:value", for logs */
  sans: string[];
  /** whether the certificate has a subjectAltName extension (then the CN does not count) */
  hasSan: boolean;
  /** remote address, for logs */
  address: string;
  /** why this peer cannot be served whatever allowed_names says; undefined when it can */
  problem?: string;
}

/** Identity from a certificate's DER (pure; exported for tests). */
export function identityFromDer(der: Uint8Array, address: string): PeerIdentity {
  const fields = readCertificateFields(der);
  return {
    cn: fields.commonNames.length === 1 ? fields.commonNames[0] : "",
    dnsNames: fields.sans.filter((s) => s.type === "dns").map((s) => s.value),
    sans: fields.sans.map(sanLabel),
    hasSan: fields.hasSan,
    address,
  };
}

function sanLabel(s: SanEntry): string {
  return s.value ? `${s.type}:${s.value}` : s.type;
}

function unusable(address: string, problem: string): PeerIdentity {
  return { cn: "", dnsNames: [], sans: [], hasSan: false, address, problem };
}

/** Reads the peer of a request's socket; a socket TLS did not authorize gets a `problem`. */
export function peerIdentity(socket: TLSSocket): PeerIdentity {
  const address = socket.remoteAddress ?? "";
  if (socket.authorized !== true) {
    const why = socket.authorizationError ? ` (${socket.authorizationError})` : "";
    return unusable(address, `the TLS connection is not authorized${why}`);
  }
  const raw = socket.getPeerCertificate?.()?.raw;
  if (!raw || raw.length === 0) return unusable(address, "the client sent no certificate");
  try {
    return identityFromDer(raw, address);
  } catch (e) {
    return unusable(address, `the client certificate cannot be read: ${(e as Error).message}`);
  }
}

/** The names allowed_names is compared with: DNS SANs, or the CN when there is no SAN. */
export function matchableNames(peer: PeerIdentity): string[] {
  if (peer.hasSan) return peer.dnsNames;
  return peer.cn ? [peer.cn] : [];
}

/**
 * Why `peer` is refused, or null when it is admitted. An empty allow-list admits every
 * authorized certificate from client_cas.
 */
export function peerRefusal(peer: PeerIdentity, allowed: readonly string[]): string | null {
  if (peer.problem) return peer.problem;
  if (allowed.length === 0) return null;
  const wanted = new Set(allowed.map((n) => n.toLowerCase()));
  if (matchableNames(peer).some((n) => wanted.has(n.toLowerCase()))) return null;
  return peer.hasSan
    ? "no DNS subjectAltName of the certificate is in listen.tls.allowed_names"
    : "the certificate's common name is not in listen.tls.allowed_names";
}

/** Label for log lines. */
export function peerLabel(peer: PeerIdentity): string {
  return peer.cn || peer.dnsNames[0] || peer.sans[0] || "(no name)";
}
