/**
 * The agent's mutual TLS: a valid client certificate is served; no certificate, one from another
 * CA or an expired one fail the handshake; a name outside allowed_names gets 403. Each refusal is
 * logged with a reason, and the agent keeps serving.
 */
import { assert, assertEquals, assertRejects } from "./support/assert.ts";
import { Pki } from "../lab/pki.ts";
import { clientWith, makePki, startAgent, type TestPki } from "./support/agent_harness.ts";

async function withPki(fn: (t: TestPki) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "agent-tls-" });
  try {
    await fn(await makePki(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function health(client: Deno.HttpClient, url: string) {
  const res = await fetch(url, { client });
  return { status: res.status, body: await res.json() };
}

Deno.test("agent certificate matrix: valid ok; none, other CA, expired refused at handshake", () =>
  withPki(async (t) => {
    const agent = await startAgent(t);
    const other = await Pki.create(`${t.dir}/other`, "other-ca");
    const fromOther = await other.issue("pcap-api", { client: true });
    const expired = await t.pki.issue("pcap-api", { client: true, expired: true });
    const clients: Deno.HttpClient[] = [];
    const mk = (c?: Parameters<typeof clientWith>[1]) => {
      const client = clientWith(t, c);
      clients.push(client);
      return client;
    };
    try {
      const ok = await health(mk(t.client), agent.url("/health"));
      assertEquals(ok.status, 200);
      assertEquals(ok.body, {
        healthy: true,
        draining: false,
        id: "test-vm/0",
        version: "0.1.0",
        protocol_version: 1,
        min_protocol_version: 1,
        active_captures: 0,
      });
      for (
        const [what, cert] of [["none", undefined], ["other CA", fromOther], [
          "expired",
          expired,
        ]] as const
      ) {
        const before = agent.logs.filter((l) => l.msg === "TLS client refused").length;
        await assertRejects(
          () => fetch(agent.url("/health"), { client: mk(cert) }),
          TypeError,
          undefined,
        ).catch((e) => {
          throw new Error(`${what}: expected the handshake to fail: ${e.message}`);
        });
        // The server logs the refusal (it may log it just after the client saw the failure).
        const end = Date.now() + 2000;
        while (agent.logs.filter((l) => l.msg === "TLS client refused").length === before) {
          if (Date.now() > end) throw new Error(`${what}: refusal was not logged`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      const refusals = agent.logs.filter((l) => l.msg === "TLS client refused");
      assert(
        String(refusals[0].reason).includes("no certificate") ||
          String(refusals[0].reason).includes("certificate"),
        JSON.stringify(refusals[0]),
      );
      for (const r of refusals) assert(r.remote_address, "refusal names the remote address");
      // Still serving after the refusals.
      assertEquals((await health(mk(t.client), agent.url("/health"))).status, 200);
    } finally {
      for (const c of clients) c.close();
      await agent.close();
    }
  }));

Deno.test("agent allowed_names: CN or SAN admitted, other names get 403 and a log line", () =>
  withPki(async (t) => {
    const agent = await startAgent(t, { allowed: ["pcap-api.internal", "ops-tool"] });
    const byCn = await t.pki.issue("ops-tool", { client: true });
    const stranger = await t.pki.issue("intruder", { client: true, dns: ["evil.example"] });
    const clients = [clientWith(t, t.client), clientWith(t, byCn), clientWith(t, stranger)];
    try {
      // t.client has CN pcap-api and SAN pcap-api.internal: admitted by its SAN.
      assertEquals((await health(clients[0], agent.url("/health"))).status, 200);
      assertEquals((await health(clients[1], agent.url("/health"))).status, 200);
      const denied = await health(clients[2], agent.url("/health"));
      assertEquals(denied.status, 403);
      assertEquals(denied.body.type, "PERMISSION_DENIED");
      assert(String(denied.body.text).includes("intruder"), denied.body.text);
      const res = await fetch(agent.url("/captures"), {
        method: "POST",
        client: clients[2],
        body: JSON.stringify({ protocol_version: 1, interface: "lo", snaplen: 100 }),
      });
      assertEquals(res.status, 403);
      await res.body?.cancel();
      assertEquals(agent.server.activeCaptures, 0);
      const line = agent.logs.find((l) => l.msg === "client refused")!;
      assertEquals(line.peer, "intruder");
      assertEquals(line.peer_sans, ["evil.example"]);
      assert(String(line.reason).includes("allowed_names"));
    } finally {
      for (const c of clients) c.close();
      await agent.close();
    }
  }));
