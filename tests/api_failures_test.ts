/**
 * Failure paths end to end: api SIGTERM drains a running capture; agents with a certificate
 * from another CA or the wrong name; Director down or slow; an agent down before the start,
 * killed mid-capture, all agents down.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import {
  connect,
  countTokens,
  ROUTERS,
  sourceOf,
  startApi,
  statusesOf,
  withApiLab,
} from "./support/api_harness.ts";
import { rawUpgrade } from "./support/raw_upgrade.ts";
import { API_SOURCE } from "../server/merge.ts";

Deno.test("api failure handling", async (t) => {
  await withApiLab({ groups: { router: 2 } }, async (lab, api) => {
    const token = await lab.mintToken();
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];

    await t.step("SIGTERM: the api process drains a running capture and exits", async () => {
      const url = (await lab.startApi({ drain_timeout: "8s" })).replace(/^http/, "ws");
      const c = connect(lab, url, token);
      c.start({ bosh: ROUTERS, filter: "udp port 5600" });
      await c.waitFor("sources", (r) => r.sources.length === 2);
      const sent = await lab.traffic.udp({ from: r0, to: r1, port: 5600, count: 20, rate: 400 });
      const t0 = Date.now();
      await lab.stopApi(); // SIGTERM, waits for the exit
      assert(Date.now() - t0 < 10_000, "drained within drain_timeout");
      const closed = await c.closed;
      assertEquals(closed.code, 1000, `${closed.reason} ${c.got.kinds.join(",")}`);
      assertEquals(c.got.kinds.at(-1), "END");
      assertEquals(
        statusesOf(c.got, "CAPTURE_STOPPED").filter((s) => s.source !== API_SOURCE).length,
        2,
      );
      for (const vm of [r0, r1]) {
        const counts = countTokens(c.got.tokens.get(sourceOf(c.got, vm)) ?? []);
        for (const tok of sent) assertEquals(counts.get(tok), 1, tok);
      }
      assertStringIncludes(lab.logs("api"), "api draining");
      assertStringIncludes(lab.logs("api"), "api stopped");
    });

    await t.step("draining in-process api: /health 503, new captures refused", async () => {
      const d = await startApi(lab, { drain_timeout: "8s" });
      const c = connect(lab, d.url, token);
      c.start({ bosh: ROUTERS });
      await c.waitFor("sources", (r) => r.sources.length === 2);
      const drained = d.server.drain();
      const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
      try {
        const h = await fetch(`${d.url.replace(/^ws/, "http")}/health`, { client });
        assertEquals(h.status, 503);
        assertEquals((await h.json()).draining, true);
      } finally {
        client.close();
      }
      const late = connect(lab, d.url, token);
      late.start({ bosh: ROUTERS });
      await drained;
      assertEquals((await c.closed).code, 1000);
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 3); // 2 sources + capture-wide
      const lateClose = await late.closed;
      // refused as a start that failed, never END/1000 (an empty capture) nor a bare cut
      assertEquals(lateClose.code, 1008, JSON.stringify(late.got.statuses));
      assertEquals(lateClose.reason, "START_CAPTURE_FAILED");
      const refusal = statusesOf(late.got, "START_CAPTURE_FAILED");
      assertEquals(refusal.length, 1, JSON.stringify(late.got.statuses));
      assertMatch(refusal[0].text as string, /shutting down.*retry/);
      assertEquals(late.got.sources.length, 0);
    });

    await t.step("agent certificate from another CA: INSTANCE_UNAVAILABLE naming TLS", async () => {
      const rogue = await lab.certs.rogue();
      const a = await api({ agents_mtls: { ca: rogue.caPath } });
      const c = connect(lab, a.url, token);
      c.start({ bosh: ROUTERS });
      assertEquals((await c.closed).code, 1008);
      const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
      assertEquals(un.length, 2, JSON.stringify(c.got.statuses));
      for (const s of un) assertMatch(s.text as string, /TLS/);
      assertEquals(statusesOf(c.got, "START_CAPTURE_FAILED").length, 1);
      assertEquals(a.server.metrics.agentErrors.get({ kind: "tls" }), 2);
    });

    await t.step("agents_mtls.server_name: dial by IP, verify the name", async () => {
      const good = await api({ agents_mtls: { server_name: r0.agentDnsName } });
      const c = connect(lab, good.url, token);
      c.start({ bosh: { ...ROUTERS, instances: ["router/0"] } });
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
      const bad = await api({ agents_mtls: { server_name: "other.pcap-agent.internal" } });
      const d = connect(lab, bad.url, token);
      d.start({ bosh: { ...ROUTERS, instances: ["router/0"] } });
      assertEquals((await d.closed).code, 1008);
      assertMatch(statusesOf(d.got, "INSTANCE_UNAVAILABLE")[0].text as string, /TLS/);
    });

    await t.step("Director down, then slow: CONNECTION_ERROR within the timeout", async () => {
      const a = await api({ timeouts: { director: "1s" } });
      await lab.director.setDown(true);
      try {
        // The token is checked at the upgrade, against the UAA the Director names: 502, no socket.
        const answer = await rawUpgrade(`${a.url}/v1/capture/bosh`, {
          authorization: `Bearer ${token}`,
        }, lab.pki.caCert);
        assertEquals(answer.status, 502, answer.body);
        const body = JSON.parse(answer.body);
        assertEquals(body.type, "CONNECTION_ERROR");
        assertMatch(body.text, /Director/);
      } finally {
        await lab.director.setDown(false);
      }
      // /info is cached now; the instance list is what is slow.
      const warm = connect(lab, a.url, token);
      warm.start({ bosh: ROUTERS });
      await warm.waitFor("sources", (r) => r.sources.length === 2);
      warm.send({ type: "stop" });
      await warm.closed;
      lab.director.faults.delayMs = 4000;
      try {
        const t0 = Date.now();
        const c = connect(lab, a.url, token);
        c.start({ bosh: ROUTERS });
        assertEquals((await c.closed).code, 1008);
        const took = Date.now() - t0;
        assert(took < 3000, `CONNECTION_ERROR after ${took} ms, timeout is 1 s`);
        assertMatch(
          statusesOf(c.got, "CONNECTION_ERROR")[0].text as string,
          /did not answer within/,
        );
      } finally {
        lab.director.faults.delayMs = 0;
      }
    });

    const a = await api();

    await t.step("one agent down before the start: the others stream", async () => {
      await lab.killAgent(r1);
      try {
        const c = connect(lab, a.url, token);
        c.start({ bosh: ROUTERS, filter: "udp port 5601" });
        await c.waitFor(
          "r1 unavailable",
          (r) => statusesOf(r, "INSTANCE_UNAVAILABLE").length === 1,
        );
        const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE")[0];
        assertEquals(un.origin, `router/1 (${r1.id})`);
        await c.waitFor("r0 source", (r) => r.sources.length === 1);
        const sent = await lab.traffic.udp({ from: r0, to: r1, port: 5601, count: 10, rate: 200 });
        c.send({ type: "stop" });
        assertEquals((await c.closed).code, 1000);
        const counts = countTokens(c.got.tokens.get(sourceOf(c.got, r0)) ?? []);
        for (const tok of sent) assertEquals(counts.get(tok), 1, tok);
        // The start's timings: logged once every source streamed or failed, the failed one
        // not counted in them.
        const starts = a.logs.map((l) => JSON.parse(l)).filter((j) => j.msg === "agents streaming");
        const started = starts.at(-1)!;
        assertEquals([started.targets, started.streaming, started.failed], [2, 1, 1]);
        for (const k of ["tls_ms", "response_ms", "source_ms"]) {
          const [med, max] = started[k];
          assert(med >= 0 && max === med, `${k}: ${started[k]} (one agent streams)`);
        }
        assert(started.tls_ms[0] <= started.response_ms[0], JSON.stringify(started));
        const starting = a.logs.map((l) => JSON.parse(l)).findLast((j) =>
          j.msg === "capture starting"
        );
        for (const k of ["filter_ms", "resolve_ms", "plan_ms"]) {
          assert(starting[k] >= 0, `${k} in ${JSON.stringify(starting)}`);
        }
      } finally {
        await lab.restartAgent(r1);
      }
    });

    await t.step("agent killed mid-capture: its source ends, the other goes on", async () => {
      const c = connect(lab, a.url, token);
      c.start({ bosh: ROUTERS, filter: "udp port 5602" });
      await c.waitFor("sources", (r) => r.sources.length === 2);
      const src1 = sourceOf(c.got, r1);
      await lab.killAgent(r1);
      await c.waitFor("r1 unavailable", (r) => statusesOf(r, "INSTANCE_UNAVAILABLE").length === 1);
      const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE")[0];
      assertEquals(un.source, src1);
      assertEquals(c.got.stats.filter((s) => s.source === src1 && s.final).length, 1);
      const sent = await lab.traffic.udp({ from: r0, to: r1, port: 5602, count: 10, rate: 200 });
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
      const counts = countTokens(c.got.tokens.get(sourceOf(c.got, r0)) ?? []);
      for (const tok of sent) assertEquals(counts.get(tok), 1, tok);
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 1);
      assertEquals(a.audit.at(-1)!.outcome, "CAPTURE_STOPPED");
    });

    await t.step("all agents down: START_CAPTURE_FAILED", async () => {
      await lab.killAgent(r0);
      const c = connect(lab, a.url, token);
      c.start({ bosh: ROUTERS });
      const closed = await c.closed;
      assertEquals(closed.code, 1008);
      assertEquals(closed.reason, "START_CAPTURE_FAILED");
      assertEquals(statusesOf(c.got, "INSTANCE_UNAVAILABLE").length, 2);
      assertEquals(a.server.metrics.activeCaptures.get({ resolver: "bosh" }), 0);
    });
  });
});
