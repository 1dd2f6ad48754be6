/**
 * Configured CAs are trusted alone, not in addition to the default roots (issue 12 defect 7).
 * A probe process trusts a second lab CA by default (DENO_TLS_CA_STORE=system with
 * SSL_CERT_FILE): there, Deno's own `caCerts` accept a server that CA signed — the behaviour
 * this fixes — while every client path given a CA refuses it: lib/tls_fetch.ts (api → agents,
 * Director, UAA, Cloud Controller), the api's agent capture streams (server/agent_stream_tls.ts,
 * which checks the issuer after Deno.connectTls's handshake), the CLI's UAA fetch and the CLI's
 * WebSocket to the api (the same check after connectTls, and its node:tls fallback).
 */
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { Pki } from "../lab/pki.ts";
import { tlsTransport } from "../lib/tls_fetch.ts";

/** A TLS server answering GET / with "ok" and closing WebSockets on /ws with 4000. */
function serve(cert: { cert: string; key: string }) {
  return Deno.serve({ port: 0, hostname: "127.0.0.1", ...cert, onListen() {} }, (req) => {
    if (new URL(req.url).pathname === "/ws") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => socket.close(4000, "probe done");
      return response;
    }
    return new Response("ok");
  });
}

Deno.test("a configured CA is the only CA trusted, even when another is trusted by default", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tls-trust-" });
  const configured = await Pki.create(`${dir}/configured`, "configured-ca");
  const system = await Pki.create(`${dir}/system`, "system-ca");
  const names = { server: true, dns: ["localhost"], ips: ["127.0.0.1"] };
  const other = serve(await system.issue("localhost", names));
  const good = serve(await configured.issue("localhost", names));
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./support/tls_trust_probe.ts", import.meta.url).pathname,
        JSON.stringify({
          ca: configured.caCert,
          other: other.addr.port,
          good: good.addr.port,
        }),
      ],
      env: { DENO_TLS_CA_STORE: "system", SSL_CERT_FILE: system.caPath, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, `probe failed:\n${stderr}`);
    // deno-lint-ignore no-explicit-any
    const r = JSON.parse(new TextDecoder().decode(out.stdout)) as Record<string, any>;
    // The premise: in the probe, the second CA is trusted by default, and caCerts add to it.
    assertEquals(r.control_default_fetch, { ok: true, detail: "200 ok" }, "control");
    assertEquals(r.control_caCerts_fetch, { ok: true, detail: "200 ok" }, "caCerts are additive");
    assertEquals(r.control_caCerts_websocket.ok, true, "caCerts are additive for WebSockets");
    assertEquals(r.control_connectTls_other, { ok: true, detail: "handshake done" }, "connectTls");
    // Every path given a CA refuses the other CA's server and accepts the configured one's.
    assertEquals(r.transport, "node:https");
    for (const path of ["tls_fetch", "cli_fetch"]) {
      assertEquals(r[`${path}_other`].ok, false, `${path}: ${JSON.stringify(r[`${path}_other`])}`);
      assertStringIncludes(r[`${path}_other`].error, "certificate", path);
      assertEquals(r[`${path}_good`], { ok: true, detail: "200 ok" }, path);
    }
    // The agent stream's socket (Deno.connectTls) refuses it after the handshake.
    assertEquals(r.agent_stream_other.ok, false, JSON.stringify(r.agent_stream_other));
    assertStringIncludes(
      r.agent_stream_other.error,
      "not issued by a certificate of agents_mtls.ca",
    );
    assertEquals(r.agent_stream_good, { ok: true, detail: "200 ok" });
    assertEquals(r.cli_session_other.ok, false, JSON.stringify(r.cli_session_other));
    assertStringIncludes(r.cli_session_other.error, "is not trusted");
    assertStringIncludes(r.cli_session_other.error, "--ca-cert");
    assertEquals(r.cli_session_good, { ok: true, detail: "closed 4000" });
    // (Deno.connectTls passed the handshake on the default roots; after the issuer check refused
    // the leaf, node:tls, which trusts the --ca-cert CA alone, refused the chain)
    // the node:tls fallback refuses it in the handshake
    assertEquals(r.cli_ws_node_other.ok, false, JSON.stringify(r.cli_ws_node_other));
    assertStringIncludes(r.cli_ws_node_other.error, "is not trusted");
    assertEquals(r.cli_ws_node_good, { ok: true, detail: "closed 4000" });
  } finally {
    await other.shutdown();
    await good.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tls transport: node:https whenever a CA, a server name or skip_verify is set", () => {
  assertEquals(tlsTransport({}), "fetch");
  assertEquals(tlsTransport({ cert: "c", key: "k" }), "fetch");
  for (const o of [{ ca: "pem" }, { serverName: "agent" }, { skipVerify: true }]) {
    assert(tlsTransport(o) === "node:https", JSON.stringify(o));
  }
});
