/**
 * PEM checks shared by agent and api configs: a certificate must parse as X.509, a private key
 * must parse, and the key must belong to the certificate (Deno's TLS does not check that, and
 * would fail only at the first handshake). Errors name the file, the key and the fix; never
 * key material.
 */
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from "node:crypto";
import { ConfigError } from "./config_load.ts";

const PEM = {
  certificate: /-----BEGIN CERTIFICATE-----/,
  private_key: /-----BEGIN [A-Z ]*PRIVATE KEY-----/,
};

/** Throws unless `text` (read from `path`, configured at `key` in `file`) is a certificate. */
export function checkCertificatePem(file: string, key: string, path: string, text: string): void {
  if (!PEM.certificate.test(text)) {
    throw new ConfigError(
      file,
      key,
      `file ${path} holds no PEM block of a certificate; point it at a PEM file`,
    );
  }
  try {
    new X509Certificate(text);
  } catch (e) {
    throw new ConfigError(
      file,
      key,
      `file ${path} is not a valid certificate (${(e as Error).message}); check its content`,
    );
  }
}

/** Throws unless `key` is a private key that belongs to the certificate `cert`. */
export function checkKeyPair(
  file: string,
  cert: { key: string; path: string; pem: string },
  key: { key: string; path: string; pem: string },
): void {
  if (!PEM.private_key.test(key.pem)) {
    throw new ConfigError(
      file,
      key.key,
      `file ${key.path} holds no PEM block of a private key; point it at a PEM file`,
    );
  }
  let matches = false;
  try {
    const der = (k: KeyObject) => k.export({ type: "spki", format: "der" }).toString("hex");
    matches = der(createPublicKey(createPrivateKey(key.pem))) ===
      der(new X509Certificate(cert.pem).publicKey);
  } catch (e) {
    // The message of a parse failure does not contain key material.
    throw new ConfigError(
      file,
      key.key,
      `file ${key.path} is not a usable private key (${(e as Error).message}); check its content`,
    );
  }
  if (!matches) {
    throw new ConfigError(
      file,
      key.key,
      `file ${key.path} does not belong to the certificate ${cert.path}; ` +
        "configure the key that belongs to the certificate",
    );
  }
}
