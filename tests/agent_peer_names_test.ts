/**
 * allowed_names (issue 12 defect 5): only DNS subjectAltNames count, case-insensitively, and the
 * CN only when the certificate has no subjectAltName; an email, URI or IP entry equal to an
 * allowed name admits nobody. Every request needs an authorized socket with a certificate, even
 * with an empty list. At start the agent warns when its own server certificate would pass as a
 * client certificate while the list is empty. Lab certificates of each SAN type, real mTLS.
 */
import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "./support/assert.ts";
import { Pki } from "../lab/pki.ts";
import { clientWith, startAgent, waitFor, withPki } from "./support/agent_harness.ts";
import {
  identityFromDer,
  matchableNames,
  peerIdentity,
  peerRefusal,
} from "../agent/peer_identity.ts";
import { CertificateParseError, readCertificateFields } from "../lib/x509_fields.ts";
import { selfAcceptedAsClient } from "../agent/self_trust.ts";

const der = (pem: string) => new Uint8Array(new X509Certificate(pem).raw);

async function status(client: Deno.HttpClient, url: string): Promise<number> {
  const res = await fetch(url, { client });
  await res.body?.cancel();
  return res.status;
}

Deno.test("allowed_names over mTLS: DNS SANs (any case) admitted; email, URI, IP SANs and a CN beside a SAN refused", () =>
  withPki("peer-names-", async (t) => {
    const allowed = ["pcap-api", "127.0.0.1", "ops.example"];
    const agent = await startAgent(t, { allowed });
    const cases: [string, Parameters<Pki["issue"]>[1] & { cn: string }, number][] = [
      ["DNS SAN", { cn: "x1", dns: ["pcap-api"] }, 200],
      ["DNS SAN in other case", { cn: "x2", dns: ["PCAP-Api"] }, 200],
      ["second DNS SAN", { cn: "x3", dns: ["other", "OPS.example"] }, 200],
      ["CN without any SAN", { cn: "Pcap-API" }, 200],
      ["email SAN equal to a name", { cn: "x4", emails: ["pcap-api"] }, 403],
      ["URI SAN equal to a name", { cn: "x5", uris: ["pcap-api"] }, 403],
      ["IP SAN equal to a name", { cn: "x6", ips: ["127.0.0.1"] }, 403],
      ["CN allowed, but a SAN present", { cn: "pcap-api", dns: ["intruder"] }, 403],
      ["CN allowed, only an email SAN", { cn: "pcap-api", emails: ["a@b.example"] }, 403],
    ];
    const clients: Deno.HttpClient[] = [];
    try {
      for (const [what, { cn, ...opts }, want] of cases) {
        const cert = await t.pki.issue(cn, { client: true, ...opts });
        const client = clientWith(t, cert);
        clients.push(client);
        const before = agent.logs.filter((l) => l.msg === "client refused").length;
        assertEquals(await status(client, agent.url("/health")), want, what);
        const refusals = agent.logs.filter((l) => l.msg === "client refused");
        assertEquals(refusals.length, before + (want === 403 ? 1 : 0), `${what}: log lines`);
        if (want === 403) {
          assertStringIncludes(String(refusals.at(-1)!.reason), "allowed_names", what);
        }
      }
      // The SAN types appear in the refusal's log line.
      const sans = agent.logs.filter((l) => l.msg === "client refused").map((l) => l.peer_sans);
      assert(sans.some((s) => JSON.stringify(s) === '["email:pcap-api"]'), JSON.stringify(sans));
      assert(sans.some((s) => JSON.stringify(s) === '["uri:pcap-api"]'), JSON.stringify(sans));
      assert(sans.some((s) => JSON.stringify(s) === '["ip:127.0.0.1"]'), JSON.stringify(sans));
    } finally {
      for (const c of clients) c.close();
      await agent.close();
    }
  }));

Deno.test("peer identity from DER: typed SANs, CN only without SAN, no type prefix confusion", () =>
  withPki("peer-der-", async (t) => {
    const mixed = await t.pki.issue("Api-CN", {
      client: true,
      dns: ["Pcap-Api.internal"],
      emails: ["pcap-api"],
      uris: ["spiffe://lab/pcap-api"],
      ips: ["198.18.0.9", "::1"],
    });
    const f = readCertificateFields(der(mixed.cert));
    assertEquals(f.commonNames, ["Api-CN"]);
    assertEquals(f.hasSan, true);
    assertEquals(f.sans, [
      { type: "dns", value: "Pcap-Api.internal" },
      { type: "ip", value: "198.18.0.9" },
      { type: "ip", value: "0:0:0:0:0:0:0:1" },
      { type: "email", value: "pcap-api" },
      { type: "uri", value: "spiffe://lab/pcap-api" },
    ]);
    assertEquals(f.extendedKeyUsage, ["1.3.6.1.5.5.7.3.2"]);
    const peer = identityFromDer(der(mixed.cert), "127.0.0.1");
    assertEquals(matchableNames(peer), ["Pcap-Api.internal"]);
    assertEquals(peerRefusal(peer, ["pcap-api.INTERNAL"]), null);
    assert(peerRefusal(peer, ["pcap-api", "Api-CN", "198.18.0.9"]) !== null);
    const bare = await t.pki.issue("only-cn");
    const f2 = readCertificateFields(der(bare.cert));
    assertEquals([f2.hasSan, f2.extendedKeyUsage], [false, undefined]);
    assertEquals(matchableNames(identityFromDer(der(bare.cert), "")), ["only-cn"]);
    // Malformed DER is a clear error, never a crash or a match.
    const good = der(mixed.cert);
    for (const bad of [new Uint8Array(0), good.subarray(0, 40), new Uint8Array([0x30, 0x84, 1])]) {
      assertThrows(() => readCertificateFields(bad), CertificateParseError, "certificate DER");
    }
  }));

/** A TLSSocket as node:https hands it to a request; only what peerIdentity reads. */
function socketLike(authorized: boolean, cert: Record<string, unknown> | null, error?: string) {
  return {
    authorized,
    authorizationError: error,
    remoteAddress: "127.0.0.1",
    getPeerCertificate: () => cert,
  } as unknown as TLSSocket;
}

Deno.test("every request needs an authorized socket with a certificate, even with empty allowed_names", () =>
  withPki("peer-auth-", async (t) => {
    const raw = der(t.client.cert);
    const ok = peerIdentity(socketLike(true, { raw }));
    assertEquals(peerRefusal(ok, []), null);
    const cases: [string, TLSSocket, string][] = [
      [
        "not authorized",
        socketLike(false, { raw }, "UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
        "not authorized",
      ],
      ["no certificate", socketLike(true, {}), "no certificate"],
      ["null certificate", socketLike(true, null), "no certificate"],
      [
        "unreadable certificate",
        socketLike(true, { raw: new Uint8Array([1, 2, 3]) }),
        "cannot be read",
      ],
    ];
    for (const [what, socket, text] of cases) {
      const peer = peerIdentity(socket);
      for (const allowed of [[], ["pcap-api.internal"]]) {
        const refusal = peerRefusal(peer, allowed);
        assert(refusal !== null, `${what} with allowed_names ${JSON.stringify(allowed)}`);
        assertStringIncludes(refusal, text, what);
      }
    }
    // A real request over mTLS with an empty list: the socket is authorized and has the cert.
    const agent = await startAgent(t);
    const client = clientWith(t, t.client);
    try {
      assertEquals(await status(client, agent.url("/health")), 200);
    } finally {
      client.close();
      await agent.close();
    }
  }));

Deno.test("agent warns at start when its server certificate passes as a client certificate and allowed_names is empty", () =>
  withPki("peer-self-", async (t) => {
    const other = await Pki.create(`${t.dir}/other`, "other-ca");
    const both = await t.pki.issue("agent-both", {
      server: true,
      client: true,
      dns: ["localhost"],
      ips: ["127.0.0.1"],
    });
    const noEku = await t.pki.issue("agent-noeku", { dns: ["localhost"], ips: ["127.0.0.1"] });
    const fromOther = await other.issue("agent-other", {
      server: true,
      client: true,
      dns: ["localhost"],
    });
    assertStringIncludes(selfAcceptedAsClient(both.cert, t.pki.caCert)!, "clientAuth");
    assertStringIncludes(selfAcceptedAsClient(noEku.cert, t.pki.caCert)!, "no extendedKeyUsage");
    assertEquals(selfAcceptedAsClient(t.server.cert, t.pki.caCert), null, "serverAuth only");
    assertEquals(selfAcceptedAsClient(fromOther.cert, t.pki.caCert), null, "other CA");

    const yamlWith = (cert: { certPath: string; keyPath: string }, allowed = "") =>
      `id: test-vm/0
listen:
  address: 127.0.0.1
  port: 0
  tls:
    certificate: ${cert.certPath}
    private_key: ${cert.keyPath}
    client_cas: ${t.pki.caPath}${allowed}
`;
    const WARN = "SECURITY: this agent accepts its own server certificate as a client certificate";
    for (
      const [what, yaml, warned] of [
        ["clientAuth EKU, empty list", yamlWith(both), true],
        ["no EKU, empty list", yamlWith(noEku), true],
        ["serverAuth only", yamlWith(t.server), false],
        [
          "clientAuth EKU, allowed_names set",
          yamlWith(both, "\n    allowed_names: [pcap-api]"),
          false,
        ],
      ] as const
    ) {
      const agent = await startAgent(t, { yaml });
      try {
        await waitFor(() => agent.logs.some((l) => l.msg === "agent listening"), 5000, "start");
        const lines = agent.logs.filter((l) => l.msg === WARN);
        assertEquals(lines.length, warned ? 1 : 0, what);
        if (warned) {
          assertEquals(lines[0].level, "warn", what);
          assertStringIncludes(String(lines[0].reason), "allowed_names is empty", what);
          assertStringIncludes(String(lines[0].fix), "allowed_names", what);
        }
      } finally {
        await agent.close();
      }
    }
  }));
