/**
 * Client certificates of kinds lab/pki.ts does not mint: any v3 extension section, signed by a
 * lab CA (e.g. an email or URI SAN that spells an allowed name). openssl x509 -req, one call each.
 */
import type { CertPair, Pki } from "../../../lab/pki.ts";
import { run } from "../../../lab/netns.ts";

export async function issueWithExtensions(
  pki: Pki,
  cn: string,
  extensions: string[],
): Promise<CertPair> {
  const work = await Deno.makeTempDir({ dir: pki.dir, prefix: "odd-" });
  const keyPath = `${work}/key.pem`, certPath = `${work}/cert.pem`, csr = `${work}/req.csr`;
  await run("openssl", [
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyPath,
    "-subj",
    `/CN=${cn}`,
    "-out",
    csr,
  ]);
  await Deno.writeTextFile(`${work}/ext.cnf`, extensions.join("\n") + "\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    pki.caPath,
    "-CAkey",
    pki.caKeyPath,
    "-CAcreateserial",
    "-days",
    "2",
    "-sha256",
    "-extfile",
    `${work}/ext.cnf`,
    "-out",
    certPath,
  ]);
  return {
    cert: await Deno.readTextFile(certPath),
    key: await Deno.readTextFile(keyPath),
    certPath,
    keyPath,
  };
}

/** The usual leaf extensions of the lab, with `san` as the subjectAltName. */
export function clientExtensions(san: string, eku = "clientAuth"): string[] {
  return [
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature",
    `extendedKeyUsage = ${eku}`,
    `subjectAltName = ${san}`,
  ];
}
