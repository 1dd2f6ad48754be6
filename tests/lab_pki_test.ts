import assert from "node:assert/strict";
import { leafExtensions, Pki, validity } from "../lab/pki.ts";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";

async function opensslVerify(
  caPath: string,
  certPath: string,
): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command("openssl", {
    args: ["verify", "-CAfile", caPath, certPath],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { ok: out.success, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

async function x509Text(certPath: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["x509", "-in", certPath, "-noout", "-text"],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("pki: pure helpers", () => {
  const ext = leafExtensions({ server: true, client: true, dns: ["a.lab"], ips: ["127.0.0.1"] });
  assert(ext.includes("extendedKeyUsage = serverAuth, clientAuth"));
  assert(ext.includes("subjectAltName = DNS:a.lab, IP:127.0.0.1"));
  assert(ext.includes("CA:FALSE"));
  const now = new Date("2030-01-01T00:00:00Z");
  const exp = validity({ expired: true }, now);
  assert(exp.notAfter < now && exp.notBefore < exp.notAfter);
  const ok = validity({ days: 3 }, now);
  assert(ok.notBefore < now && ok.notAfter > now);
  assert.throws(() => validity({ days: 0 }, now), /days must be positive/);
  assert.throws(
    () => validity({ notBefore: now, notAfter: now }),
    /notAfter must be later/,
  );
});

Deno.test("pki: certificates are v3, verify with openssl, expired ones do not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-pki-" });
  try {
    const pki = await Pki.create(dir);
    const rogue = await Pki.create(`${dir}/rogue`, "rogue-ca");
    const server = await pki.issue("agent-0", {
      server: true,
      dns: ["agent-0.lab"],
      ips: ["127.0.0.1", "198.18.0.10"],
    });
    const expired = await pki.issue("old", { server: true, expired: true, ips: ["127.0.0.1"] });
    const foreign = await rogue.issue("mallory", { client: true });

    assert((await opensslVerify(pki.caPath, server.certPath)).ok);
    const ex = await opensslVerify(pki.caPath, expired.certPath);
    assert(!ex.ok && ex.out.includes("expired"), ex.out);
    const fo = await opensslVerify(pki.caPath, foreign.certPath);
    assert(!fo.ok, fo.out);
    assert((await opensslVerify(rogue.caPath, foreign.certPath)).ok);

    const text = await x509Text(server.certPath);
    assert(text.includes("Version: 3"), "v3 certificate");
    assert(text.includes("TLS Web Server Authentication"));
    assert(text.includes("DNS:agent-0.lab") && text.includes("IP Address:198.18.0.10"));
    assert((await x509Text(pki.caPath)).includes("CA:TRUE"));
    assert(server.cert.startsWith("-----BEGIN CERTIFICATE-----"));
    assert(server.key.includes("PRIVATE KEY"));
    assert.equal((await Deno.stat(server.keyPath)).mode! & 0o077, 0, "key not world-readable");
    await assert.rejects(() => pki.issue("bad", { days: -1 }), /days must be positive/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** node:https server that requires client certs (DESIGN §10), answering with the peer CN. */
async function mtlsServer(
  pki: Pki,
  cert: { cert: string; key: string },
): Promise<{ port: number; close(): Promise<void> }> {
  const server = https.createServer(
    { ca: pki.caCert, cert: cert.cert, key: cert.key, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`hello ${peer.subject?.CN}`);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

async function tryFetch(client: Deno.HttpClient, url: string): Promise<string> {
  try {
    const res = await fetch(url, { client });
    return `ok:${await res.text()}`;
  } catch (e) {
    // fetch() says only "fetch failed"; the TLS reason is in the cause chain.
    const cause = e instanceof Error && e.cause instanceof Error ? ` (${e.cause.message})` : "";
    return `error:${e instanceof Error ? e.message : e}${cause}`;
  } finally {
    client.close();
  }
}

Deno.test("pki: mTLS handshake between Deno fetch and node:https; rogue and expired refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-pki-" });
  try {
    const pki = await Pki.create(dir);
    const rogue = await Pki.create(`${dir}/rogue`, "rogue-ca");
    const [serverCert, clientCert, rogueClient, expiredClient, expiredServer] = await Promise.all([
      pki.issue("agent-0", { server: true, ips: ["127.0.0.1"], dns: ["agent-0.lab"] }),
      pki.issue("pcap-api", { client: true }),
      rogue.issue("pcap-api", { client: true }),
      pki.issue("pcap-api", { client: true, expired: true }),
      pki.issue("agent-0", { server: true, ips: ["127.0.0.1"], expired: true }),
    ]);
    const srv = await mtlsServer(pki, serverCert);
    const url = `https://127.0.0.1:${srv.port}/`;
    try {
      const good = await tryFetch(
        Deno.createHttpClient({
          caCerts: [pki.caCert],
          cert: clientCert.cert,
          key: clientCert.key,
        }),
        url,
      );
      assert.equal(good, "ok:hello pcap-api");

      const noCert = await tryFetch(Deno.createHttpClient({ caCerts: [pki.caCert] }), url);
      assert(noCert.startsWith("error:"), `no client cert must be refused: ${noCert}`);

      const rogueRes = await tryFetch(
        Deno.createHttpClient({
          caCerts: [pki.caCert],
          cert: rogueClient.cert,
          key: rogueClient.key,
        }),
        url,
      );
      assert(rogueRes.startsWith("error:"), `rogue client cert must be refused: ${rogueRes}`);

      const expiredRes = await tryFetch(
        Deno.createHttpClient({
          caCerts: [pki.caCert],
          cert: expiredClient.cert,
          key: expiredClient.key,
        }),
        url,
      );
      assert(expiredRes.startsWith("error:"), `expired client cert must be refused: ${expiredRes}`);

      // The client side refuses a server whose CA it does not trust.
      const wrongCa = await tryFetch(
        Deno.createHttpClient({
          caCerts: [rogue.caCert],
          cert: clientCert.cert,
          key: clientCert.key,
        }),
        url,
      );
      assert(wrongCa.startsWith("error:"), `untrusted server must be refused: ${wrongCa}`);
    } finally {
      await srv.close();
    }

    const old = await mtlsServer(pki, expiredServer);
    try {
      const res = await tryFetch(
        Deno.createHttpClient({
          caCerts: [pki.caCert],
          cert: clientCert.cert,
          key: clientCert.key,
        }),
        `https://127.0.0.1:${old.port}/`,
      );
      assert(res.startsWith("error:"), `expired server cert must be refused: ${res}`);
    } finally {
      await old.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
