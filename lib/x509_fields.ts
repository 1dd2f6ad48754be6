/**
 * The few X.509 fields the agent decides on — subject common names, typed subjectAltName
 * entries and extended key usages — read from the certificate's DER.
 *
 * Why not node's `subjectaltname` string: Deno joins the entries with ", " and quotes nothing,
 * so a URI or directory-name SAN holding ", DNS:pcap-api" would read as a DNS name, and the
 * type prefix is the only thing that tells an email SAN from a DNS one. Reading the DER keeps
 * every entry's type. Pure.
 *
 * @example
 * ```ts
 * import { X509Certificate } from "node:crypto";
 * import { readCertificateFields } from "./x509_fields.ts";
 *
 * declare const pem: string;
 * const fields = readCertificateFields(new X509Certificate(pem).raw);
 * fields.sans.filter((s) => s.type === "dns").map((s) => s.value);
 * ```
 *
 * @module
 */

/** One subjectAltName entry; `other` covers otherName, x400, ediParty and registeredID. */
export interface SanEntry {
  type: "dns" | "email" | "uri" | "ip" | "dirname" | "other";
  /** text of dns/email/uri, dotted or hex address of ip, "" otherwise */
  value: string;
}

export interface CertificateFields {
  /** every commonName attribute of the subject, in order */
  commonNames: string[];
  /** the subjectAltName extension's entries; [] when it is absent */
  sans: SanEntry[];
  /** whether the certificate has a subjectAltName extension at all */
  hasSan: boolean;
  /** extendedKeyUsage OIDs (dotted); undefined when the extension is absent (any usage) */
  extendedKeyUsage: string[] | undefined;
}

export const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
export const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
export const OID_ANY_EXTENDED_KEY_USAGE = "2.5.29.37.0";

const OID_COMMON_NAME = "2.5.4.3";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_EXTENDED_KEY_USAGE = "2.5.29.37";

/** A malformed certificate; the message says where. */
export class CertificateParseError extends Error {
  constructor(message: string) {
    super(`certificate DER: ${message}`);
    this.name = "CertificateParseError";
  }
}

interface Tlv {
  tag: number;
  /** content start and end in the buffer */
  start: number;
  end: number;
}

function readTlv(b: Uint8Array, off: number, limit: number): Tlv {
  if (off + 2 > limit) throw new CertificateParseError(`truncated at byte ${off}`);
  const tag = b[off];
  if ((tag & 0x1f) === 0x1f) throw new CertificateParseError(`multi-byte tag at byte ${off}`);
  let len = b[off + 1];
  let p = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new CertificateParseError(`bad length at byte ${off}`);
    if (p + n > limit) throw new CertificateParseError(`truncated length at byte ${off}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p + i];
    p += n;
  }
  if (p + len > limit) throw new CertificateParseError(`value at byte ${off} overruns its parent`);
  return { tag, start: p, end: p + len };
}

function children(b: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = parent.start; off < parent.end;) {
    const t = readTlv(b, off, parent.end);
    out.push(t);
    off = t.end;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) {
    throw new CertificateParseError(`expected ${what} (tag 0x${tag.toString(16)})`);
  }
  return t;
}

function oidText(b: Uint8Array, t: Tlv): string {
  const parts: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    v = v * 128 + (b[i] & 0x7f);
    if (!(b[i] & 0x80)) {
      if (parts.length === 0) {
        const first = v < 80 ? Math.floor(v / 40) : 2;
        parts.push(first, v - first * 40);
      } else parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

const utf8 = new TextDecoder("utf-8", { fatal: false });
const latin1 = new TextDecoder("latin1");

function stringValue(b: Uint8Array, t: Tlv): string {
  const bytes = b.subarray(t.start, t.end);
  switch (t.tag) {
    case 0x1e: { // BMPString: UTF-16BE
      let s = "";
      for (let i = 0; i + 1 < bytes.length; i += 2) {
        s += String.fromCharCode((bytes[i] << 8) | bytes[i + 1]);
      }
      return s;
    }
    case 0x14: // TeletexString
      return latin1.decode(bytes);
    default: // UTF8String, PrintableString, IA5String, …
      return utf8.decode(bytes);
  }
}

function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
    return groups.join(":");
  }
  return Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
}

function generalNames(b: Uint8Array, seq: Tlv): SanEntry[] {
  return children(b, expect(seq, 0x30, "GeneralNames SEQUENCE")).map((t): SanEntry => {
    const text = () => latin1.decode(b.subarray(t.start, t.end));
    switch (t.tag) {
      case 0x82:
        return { type: "dns", value: text() };
      case 0x81:
        return { type: "email", value: text() };
      case 0x86:
        return { type: "uri", value: text() };
      case 0x87:
        return { type: "ip", value: ipText(b.subarray(t.start, t.end)) };
      case 0xa4:
        return { type: "dirname", value: "" };
      default:
        return { type: "other", value: "" };
    }
  });
}

/** Reads the subject's CNs, the SAN entries and the EKUs; throws CertificateParseError. */
export function readCertificateFields(der: Uint8Array): CertificateFields {
  const cert = expect(readTlv(der, 0, der.length), 0x30, "Certificate SEQUENCE");
  const tbs = children(der, cert)[0];
  const f = children(der, expect(tbs, 0x30, "TBSCertificate SEQUENCE"));
  let i = f[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  i += 4; // serialNumber, signature, issuer, validity
  const subject = expect(f[i], 0x30, "subject Name");
  const commonNames: string[] = [];
  for (const rdn of children(der, subject)) {
    for (const atv of children(der, expect(rdn, 0x31, "RelativeDistinguishedName SET"))) {
      const [type, value] = children(der, expect(atv, 0x30, "AttributeTypeAndValue"));
      if (oidText(der, expect(type, 0x06, "attribute type OID")) === OID_COMMON_NAME && value) {
        commonNames.push(stringValue(der, value));
      }
    }
  }
  const result: CertificateFields = {
    commonNames,
    sans: [],
    hasSan: false,
    extendedKeyUsage: undefined,
  };
  const extsWrapper = f.slice(i + 2).find((t) => t.tag === 0xa3); // [3] extensions
  if (!extsWrapper) return result;
  const exts = expect(children(der, extsWrapper)[0], 0x30, "Extensions SEQUENCE");
  for (const ext of children(der, exts)) {
    const parts = children(der, expect(ext, 0x30, "Extension SEQUENCE"));
    const oid = oidText(der, expect(parts[0], 0x06, "extension OID"));
    const value = expect(parts.at(-1), 0x04, "extension value OCTET STRING");
    const inner = () => readTlv(der, value.start, value.end);
    if (oid === OID_SUBJECT_ALT_NAME) {
      result.hasSan = true;
      result.sans = generalNames(der, inner());
    } else if (oid === OID_EXTENDED_KEY_USAGE) {
      result.extendedKeyUsage = children(der, expect(inner(), 0x30, "ExtKeyUsage SEQUENCE"))
        .map((t) => oidText(der, expect(t, 0x06, "key purpose OID")));
    }
  }
  return result;
}
