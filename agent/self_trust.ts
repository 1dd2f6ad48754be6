/**
 * Would the agent accept its own server certificate as a client certificate? It would when the
 * certificate may be used for client authentication (extendedKeyUsage clientAuth, any usage, or
 * no extendedKeyUsage at all) and a CA of `client_cas` issued it. With an empty
 * `listen.tls.allowed_names` that means one compromised VM's key can start captures on every
 * agent of the deployment; the agent warns about it at start.
 */
import { X509Certificate } from "node:crypto";
import {
  OID_ANY_EXTENDED_KEY_USAGE,
  OID_CLIENT_AUTH,
  readCertificateFields,
} from "../lib/x509_fields.ts";

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle, in order; unparsable blocks are skipped. */
export function pemCertificates(pem: string): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const block of pem.match(PEM_BLOCK) ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch { /* the config loader has already refused a bundle with no valid certificate */ }
  }
  return out;
}

/** Why the leaf may authenticate a client ("" when its EKU forbids it). */
export function clientUsage(leaf: X509Certificate): string {
  const eku = readCertificateFields(leaf.raw).extendedKeyUsage;
  if (eku === undefined) return "it has no extendedKeyUsage (any usage)";
  if (eku.includes(OID_CLIENT_AUTH)) return "its extendedKeyUsage includes clientAuth";
  if (eku.includes(OID_ANY_EXTENDED_KEY_USAGE)) return "its extendedKeyUsage allows any usage";
  return "";
}

function issuedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  try {
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/**
 * Whether `certPem` (leaf first, then any chain) would pass as a client certificate against
 * `caPem`; the reason when it would, null when it would not.
 */
export function selfAcceptedAsClient(certPem: string, caPem: string): string | null {
  const chain = pemCertificates(certPem);
  const cas = pemCertificates(caPem);
  const leaf = chain[0];
  if (!leaf || cas.length === 0) return null;
  const usage = clientUsage(leaf);
  if (!usage) return null;
  const fp = (c: X509Certificate) => c.fingerprint256;
  const caPrints = new Set(cas.map(fp));
  // The leaf, or a certificate of the chain it is sent with, is in or issued by client_cas.
  const anchored = chain.some((c) => caPrints.has(fp(c)) || cas.some((ca) => issuedBy(c, ca)));
  return anchored ? `${usage} and a CA of client_cas issued it` : null;
}
