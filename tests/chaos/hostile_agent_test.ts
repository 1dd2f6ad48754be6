/**
 * Hostile input on the agent.
 * - ~300 seeded start requests (≥ 10,000 in the long form) against the real agent process in a lab
 *   VM: random, truncated, oversized, wrong version, mutated field by field (interface names with
 *   path tricks and pseudo-devices, filters with control characters and breakouts), unknown
 *   fields, wrong shapes, and routes out of order (stop of an unknown or finished capture, wrong
 *   methods, path tricks). Each gets a 4xx (or a START_CAPTURE_FAILED) with a JSON {type, text},
 *   or starts a capture that is then cut; the agent keeps serving and ends holding no capture.
 * - Client certificates of the wrong kinds tests/agent_tls_test.ts does not try: not yet valid,
 *   serverAuth-only, and (allowed_names) an email or URI SAN spelling an allowed DNS name. (The
 *   CA's own certificate is admitted as a client: whoever holds the CA key can mint any client
 *   certificate anyway, so that is no escalation.)
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { clientWith, startAgent, withPki } from "../support/agent_harness.ts";
import { hostileBody, TRICKY_NAMES } from "./support/fuzz_inputs.ts";
import { clientExtensions, issueWithExtensions } from "./support/odd_certs.ts";
import { alive, cases, pidByArg, Prng, record, until } from "./support/chaos.ts";

const root = isRoot();
const N = cases(300, 10_000);
const BASE = {
  protocol_version: 1,
  interface: "eth0",
  snaplen: 65535,
  duration_ms: 2000,
  filter: "udp port 5950",
};

function hostileRequest(r: Prng): { kind: string; method: string; path: string; body?: string } {
  if (r.int(5) === 0) {
    const id = r.pick([crypto.randomUUID(), "..", "%2e%2e", r.pick(TRICKY_NAMES), ""]);
    const [method, path] = r.pick([
      ["POST", `/captures/${encodeURIComponent(id)}/stop`],
      ["POST", `/captures/${id}/stop`],
      ["GET", "/captures"],
      ["DELETE", "/captures"],
      ["PUT", "/health"],
      ["POST", "/captures/../health"],
      ["GET", `/${"a/".repeat(200)}`],
      ["POST", "/captures?x=" + "y".repeat(4000)],
    ]);
    return { kind: `route ${method}`, method, path };
  }
  const h = hostileBody(BASE, r);
  return { kind: h.kind, method: "POST", path: "/captures", body: h.body };
}

Deno.test({
  name: `hostile: start requests and routes on the agent process (${N} cases)` +
    (root ? "" : " (ignored)"),
  ignore: !root,
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    try {
      const vm = lab.vm("router");
      const pid = await pidByArg(`/${lab.agentLogName(vm)}.yml`, vm.netns);
      const prng = new Prng();
      const outcomes = new Map<string, number>();
      const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
      for (let i = 0; i < N; i++) {
        const c = hostileRequest(prng);
        let res: Response;
        try {
          res = await lab.fetchAgent(vm, c.path, {
            method: c.method,
            body: c.body,
            headers: { "content-type": "application/json" },
          });
        } catch (e) {
          throw new Error(`case ${i} (${c.kind}): the agent did not answer: ${e}`);
        }
        const what = `case ${i} (${c.kind} ${c.method} ${c.path.slice(0, 60)})`;
        if (res.status === 200 && c.path === "/captures") {
          await res.body?.cancel(); // a valid capture: the client goes away
          count("capture started");
          continue;
        }
        const text = await res.text();
        if (res.status === 202) {
          count("202");
          continue;
        }
        assert(res.status >= 400 && res.status < 600, `${what}: HTTP ${res.status} ${text}`);
        let body: { type?: string; text?: string };
        try {
          body = JSON.parse(text);
        } catch {
          throw new Error(
            `${what}: HTTP ${res.status} without a JSON error: ${text.slice(0, 200)}`,
          );
        }
        assert(body.type && body.text && body.text.length > 5, `${what}: ${text}`);
        if (res.status >= 500) assertEquals(body.type, "START_CAPTURE_FAILED", `${what}: ${text}`);
        assert(!/internal error|\[object|TypeError|at file:/.test(body.text), `${what}: ${text}`);
        count(`${res.status} ${body.type}`);
        if (i % 25 === 24) assert(alive(pid), `the agent died at case ${i}`);
      }
      assert(alive(pid), "the agent died");
      await until(
        "the agent holds no capture",
        async () => {
          const h = await (await lab.fetchAgent(vm, "/health")).json();
          return h.healthy && h.active_captures === 0;
        },
        30_000,
        200,
      );
      const log = lab.logs(lab.agentLogName(vm));
      assert(!/uncaught|panicked/i.test(log), "the agent log shows an uncaught error");
      record("agent request fuzz", {
        inputs: N,
        crashes: 0,
        outcomes: Object.fromEntries(outcomes),
      });
    } catch (e) {
      lab.dumpLogs(30);
      throw e;
    } finally {
      await lab.stop();
    }
  },
});

Deno.test("hostile: client certificates of the wrong kinds are refused at the handshake", () =>
  withPki("chaos-tls-", async (t) => {
    const agent = await startAgent(t);
    const clients: Deno.HttpClient[] = [];
    const mk = (c: Parameters<typeof clientWith>[1]) => {
      const client = clientWith(t, c);
      clients.push(client);
      return client;
    };
    try {
      const day = 86_400_000;
      const wrong = {
        "not yet valid": await t.pki.issue("pcap-api", {
          client: true,
          notBefore: new Date(Date.now() + day),
          notAfter: new Date(Date.now() + 2 * day),
        }),
        "serverAuth only": await t.pki.issue("pcap-api", { server: true }),
      };
      for (const [what, cert] of Object.entries(wrong)) {
        await assertRejects(() => fetch(agent.url("/health"), { client: mk(cert) }))
          .catch((e) => {
            throw new Error(`${what}: expected the handshake to fail: ${e.message}`);
          });
      }
      const ok = await fetch(agent.url("/health"), { client: mk(t.client) });
      assertEquals(ok.status, 200, "still serving a valid client");
      await ok.body?.cancel();
      record("agent client certificates", { inputs: Object.keys(wrong).length, crashes: 0 });
    } finally {
      for (const c of clients) c.close();
      await agent.close();
    }
  }));

Deno.test({
  // issue 12 defect 5: an email or URI SAN once passed an allow-list of DNS names.
  name: "hostile: an email or URI SAN spelling an allowed DNS name is refused (defect 5)",
  fn: () =>
    withPki("chaos-san-", async (t) => {
      const agent = await startAgent(t, { allowed: ["pcap-api.internal"] });
      const clients: Deno.HttpClient[] = [];
      try {
        for (const san of ["email:pcap-api.internal", "URI:pcap-api.internal"]) {
          const cert = await issueWithExtensions(t.pki, "intruder", clientExtensions(san));
          const client = clientWith(t, cert);
          clients.push(client);
          const res = await fetch(agent.url("/health"), { client });
          await res.body?.cancel();
          assertEquals(res.status, 403, `${san} was admitted`);
        }
      } finally {
        for (const c of clients) c.close();
        await agent.close();
      }
    }),
});

Deno.test({
  // issue 12 defect 7: interface names once accepted control characters and libpcap
  // pseudo-devices. `any` stays allowed on purpose: it captures the network interfaces of the
  // namespace and nothing else (docs/security.md).
  name: "hostile: libpcap pseudo-devices and control characters as interface names (defect 7)",
  fn: () =>
    withPki("chaos-if-", async (t) => {
      const agent = await startAgent(t);
      const client = clientWith(t, t.client);
      try {
        for (const name of ["nflog", "nfqueue", "dbus-system", "lo\u0001", "lo\u001b[2J"]) {
          const res = await fetch(agent.url("/captures"), {
            method: "POST",
            client,
            body: JSON.stringify({ ...BASE, interface: name, filter: "" }),
          });
          const text = await res.text();
          assertEquals(res.status, 400, `interface ${JSON.stringify(name)}: ${text}`);
        }
      } finally {
        client.close();
        await agent.close();
      }
    }),
});
