/**
 * "Only the configured CA is trusted" on top of `Deno.connectTls`, shared by the api's agent
 * capture streams (server/agent_stream_tls.ts) and the CLI's WebSocket to the api
 * (cli/tls_websocket.ts).
 *
 * Why a check after the handshake: connectTls adds its `caCerts` to the default roots, so a
 * server whose certificate a publicly trusted CA issued would pass the handshake. After it, the
 * leaf must also be issued (and signed) by one of the configured CA certificates; the leaf is read
 * through the peer-certificate hook Deno's internals expose (the symbol its node:tls itself uses).
 * Only the leaf is exposed, so an intermediate CA must be part of the configured bundle. The hook
 * is looked up once; without it `caOnlyTlsAvailable()` is false and callers keep node:tls, whose
 * `ca` replaces the default roots.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";

/** Deno's internal hook returning a TlsConn's peer certificate (`{ raw: DER }`), if present. */
const PEER_CERTIFICATE: symbol | undefined = (() => {
  const d = Deno as unknown as Record<symbol, { getPeerCertificate?: unknown } | undefined>;
  const key = (Deno as unknown as { internal?: symbol }).internal;
  const sym = key === undefined ? undefined : d[key]?.getPeerCertificate;
  return typeof sym === "symbol" ? sym : undefined;
})();

/** Whether a TlsConn's peer certificate can be read, i.e. the CA-only check can be made. */
export function caOnlyTlsAvailable(): boolean {
  return PEER_CERTIFICATE !== undefined;
}

/** PEM blocks of a bundle, each a certificate. */
export function caCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/** Whether the DER certificate was issued (and signed) by one of `cas`. Pure. */
export function issuedByOneOf(der: Uint8Array, cas: X509Certificate[]): boolean {
  const leaf = new X509Certificate(der);
  return cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
}

/**
 * Whether the handshaken connection's leaf certificate was issued by one of `cas`. False when
 * the hook is missing or the peer sent no certificate (callers check caOnlyTlsAvailable first).
 */
export function peerIssuedByOneOf(conn: Deno.TlsConn, cas: X509Certificate[]): boolean {
  if (PEER_CERTIFICATE === undefined) return false;
  const get = (conn as unknown as Record<symbol, (d: boolean) => { raw?: Uint8Array } | null>)[
    PEER_CERTIFICATE
  ];
  const peer = typeof get === "function" ? get.call(conn, false) : null;
  return !!peer?.raw && issuedByOneOf(peer.raw, cas);
}
