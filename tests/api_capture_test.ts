/**
 * End to end through the api: real agents in lab namespaces over mTLS, real RS256 tokens, the
 * client WebSocket. Capture and clean stop, selection, bad requests, limits, keepalive,
 * /health and /metrics.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import {
  connect,
  countTokens,
  ROUTERS,
  type RunningApi,
  sourceOf,
  statusesOf,
  withApiLab,
} from "./support/api_harness.ts";
import type { Landscape } from "../lab/landscape.ts";

Deno.test("api capture end to end", async (t) => {
  await withApiLab({ groups: { router: 2, "diego-cell": 1 } }, async (lab, startApi) => {
    const api = await startApi();
    const url = api.url;
    const token = await lab.mintToken();
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];

    await t.step("health and metrics", async () => {
      const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
      try {
        const httpUrl = url.replace(/^ws/, "http");
        const h = await (await fetch(`${httpUrl}/health`, { client })).json();
        assertEquals(h.healthy, true);
        assertEquals(h.draining, false);
        assertEquals(h.resolvers, ["bosh"]);
        assertEquals(h.protocol_version, 1);
        const m = await fetch(`${httpUrl}/metrics`, { client });
        assertMatch(m.headers.get("content-type") ?? "", /text\/plain/);
        assertStringIncludes(await m.text(), "# TYPE pcap_api_active_captures gauge");
        const plain = await fetch(`${httpUrl}/v1/capture/bosh`, { client });
        assertEquals(plain.status, 426);
        await plain.body?.cancel();
      } finally {
        client.close();
      }
    });

    await t.step("two agents: every marked packet once per source, clean stop", async () => {
      const c = connect(lab, url, token);
      c.start({ bosh: ROUTERS, filter: "udp port 5555" });
      await c.waitFor("two sources", (r) => r.sources.length === 2);
      assertEquals(c.got.kinds[0], "HELLO");
      const s0 = c.got.sources.find((s) => s.source === sourceOf(c.got, r0))!;
      assertEquals(s0.origin, `router/0 (${r0.id})`);
      assertEquals(s0.instance, { deployment: "cf", group: "router", index: 0, id: r0.id });
      assertEquals(s0.link_type, 1);
      const sent = await lab.traffic.udp({ from: r0, to: r1, port: 5555, count: 30, rate: 300 });
      c.send({ type: "stop" }); // at once: what was captured before must still arrive
      const closed = await c.closed;
      assertEquals(closed.code, 1000);
      assertEquals(c.got.kinds.at(-1), "END");
      for (const vm of [r0, r1]) {
        const src = sourceOf(c.got, vm);
        const counts = countTokens(c.got.tokens.get(src) ?? []);
        for (const tok of sent) {
          assertEquals(counts.get(tok), 1, `${tok} on ${vm.group}/${vm.index}`);
        }
        const stopped = statusesOf(c.got, "CAPTURE_STOPPED").filter((s) => s.source === src);
        assertEquals(stopped.length, 1);
        const finals = c.got.stats.filter((s) => s.source === src && s.final);
        assertEquals(finals.length, 1);
        assertEquals(finals[0].api_dropped, 0);
        // final STATS comes before the source's CAPTURE_STOPPED
        const iStats = c.got.frames.findIndex((f) =>
          f.kind === 5 && f.source === src &&
          new TextDecoder().decode(f.payload).includes('"final":true')
        );
        const iStop = c.got.frames.findIndex((f) =>
          f.kind === 4 && f.source === src &&
          new TextDecoder().decode(f.payload).includes("CAPTURE_STOPPED")
        );
        assert(iStats >= 0 && iStats < iStop, "final STATS before CAPTURE_STOPPED");
      }
      const audit = api!.audit.at(-1)!;
      assertEquals(audit.user, "admin");
      assertEquals(audit.outcome, "CAPTURE_STOPPED");
      assertEquals(audit.deployment, "cf");
      assertEquals((audit.targets as string[]).length, 2);
      assertEquals(audit.filter, "udp port 5555");
      assert((audit.packets as number) >= 60);
      assert(!JSON.stringify(api!.audit).includes(token), "no token in audit");
      assert(!api!.logs.join("\n").includes(token), "no token in logs");
      const metrics = api!.server.metrics;
      assert(metrics.packets.get({ resolver: "bosh" }) >= 60);
      assertEquals(metrics.activeCaptures.get({ resolver: "bosh" }), 0);
    });

    await t.step("selection by group/index, bare id and bare index", async () => {
      const cell = lab.vm("diego-cell", 0);
      const cases: Array<[{ groups?: string[]; instances?: string[] }, string[]]> = [
        [{ instances: ["router/1"] }, [r1.id]],
        [{ groups: ["diego-cell", "router"], instances: [cell.id] }, [cell.id]],
        [{ groups: ["router"], instances: ["0"] }, [r0.id]],
        [{ instances: [`router/${r1.id}`] }, [r1.id]],
      ];
      for (const [sel, ids] of cases) {
        const c = connect(lab, url, token);
        c.start({ bosh: { deployment: "cf", groups: [], ...sel } });
        await c.waitFor("sources", (r) => r.sources.length === ids.length);
        c.send({ type: "stop" });
        assertEquals((await c.closed).code, 1000);
        assertEquals(
          c.got.sources.map((s) => (s.instance as { id: string }).id).sort(),
          [...ids].sort(),
          JSON.stringify(sel),
        );
      }
    });

    await t.step("unknown deployment, group, instance: INVALID_REQUEST naming it", async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ deployment: "nope", groups: ["router"] }, "nope"],
        [{ deployment: "cf", groups: ["no-such-group"] }, "no-such-group"],
        [{ deployment: "cf", groups: ["router"], instances: ["router/7"] }, "router/7"],
        [{ deployment: "cf", groups: ["router"], instances: ["0f0f0f0f-dead"] }, "0f0f0f0f-dead"],
      ];
      for (const [bosh, name] of cases) {
        const c = connect(lab, url, token);
        c.start({ bosh: bosh as { deployment: string } });
        const closed = await c.closed;
        assertEquals(closed.code, 1008);
        const st = statusesOf(c.got, "INVALID_REQUEST");
        assertEquals(st.length, 1, JSON.stringify(c.got.statuses));
        assertStringIncludes(st[0].text as string, name);
      }
    });

    await t.step("filter breakout and bad filters are refused before fan-out", async () => {
      for (const filter of ["port 80) or (port 443", "udp port", "(tcp"]) {
        const c = connect(lab, url, token);
        c.start({ bosh: ROUTERS, filter });
        assertEquals((await c.closed).code, 1008);
        const st = statusesOf(c.got, "INVALID_REQUEST");
        assertEquals(st.length, 1, filter);
        assertEquals(c.got.sources.length, 0);
      }
    });

    await t.step("client packet limit stops cleanly with exactly that many packets", async () => {
      const c = connect(lab, url, token);
      c.start({
        bosh: { deployment: "cf", groups: [], instances: ["router/0"] },
        filter: "udp port 5556",
        limits: { max_packets: 5 },
      });
      await c.waitFor("source", (r) => r.sources.length === 1);
      await lab.traffic.udp({ from: r0, to: r1, port: 5556, count: 20, rate: 500 });
      assertEquals((await c.closed).code, 1000);
      assertEquals(c.got.packets, 5);
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 1);
    });

    await t.step("client vanishes: agents release their captures within a second", async () => {
      const c = connect(lab, url, token);
      c.start({ bosh: ROUTERS });
      await c.waitFor("sources", (r) => r.sources.length === 2);
      const t0 = Date.now();
      c.close();
      await c.closed;
      // DESIGN: agents stop within 1 s of the client vanishing. Polling margin: a poll is judged
      // by the time it was *sent* (its answer reflects a later state), so any poll sent after
      // RELEASE_BOUND_MS that still sees a capture fails; polls every 50 ms only delay the
      // observation, never the verdict. t0 is taken before close(), so the bound is strict.
      const RELEASE_BOUND_MS = 1000;
      for (const vm of [r0, r1]) {
        while (true) {
          const sent = Date.now();
          const h = await (await lab.fetchAgent(vm, "/health")).json();
          if (h.active_captures === 0) break;
          assert(
            sent - t0 < RELEASE_BOUND_MS,
            `agent ${vm.index} still captures ${sent - t0} ms after the client left`,
          );
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const audit = await waitAudit(api!, "CLIENT_GONE");
      assertEquals(audit.user, "admin");
    });

    await t.step("keepalive PINGs on a quiet capture", async () => {
      const c = connect(lab, url, token);
      c.start({
        bosh: { deployment: "cf", groups: [], instances: ["router/0"] },
        filter: "udp port 1",
      });
      await c.waitFor("pings", (r) => r.kinds.filter((k) => k === "PING").length >= 2, 10_000);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
    });
  });
});

Deno.test("api limits: concurrency (global, per user), max_duration, max_targets", async (t) => {
  await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
    const api = await startApi({
      concurrent_captures: 2,
      limits: { per_user_concurrent_captures: 1, max_duration: "2s", max_targets: 1 },
    });
    await runLimitSteps(t, lab, api);
  });
});

async function waitAudit(api: RunningApi, outcome: string) {
  for (let i = 0; i < 100; i++) {
    const line = api.audit.find((a) => a.outcome === outcome);
    if (line) return line;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no audit line with outcome ${outcome}: ${JSON.stringify(api.audit)}`);
}

async function runLimitSteps(t: Deno.TestContext, lab: Landscape, api: RunningApi) {
  const one = { deployment: "cf", groups: [], instances: ["router/0"] };
  await t.step("max_targets", async () => {
    const c = connect(lab, api.url, await lab.mintToken());
    c.start({ bosh: ROUTERS });
    assertEquals((await c.closed).code, 1008);
    const st = statusesOf(c.got, "LIMIT_REACHED");
    assertEquals(st[0].limit, { name: "max_targets", value: 1 });
  });

  await t.step("per user and global concurrency", async () => {
    const alice = connect(lab, api.url, await lab.mintToken({ userName: "alice" }));
    alice.start({ bosh: one });
    await alice.waitFor("alice runs", (r) => r.sources.length === 1);
    const alice2 = connect(lab, api.url, await lab.mintToken({ userName: "alice" }));
    alice2.start({ bosh: one });
    assertEquals((await alice2.closed).code, 1008);
    assertEquals(statusesOf(alice2.got, "LIMIT_REACHED")[0].limit, {
      name: "per_user_concurrent_captures",
      value: 1,
    });
    const bob = connect(lab, api.url, await lab.mintToken({ userName: "bob" }));
    bob.start({ bosh: { ...one, instances: ["router/1"] } });
    await bob.waitFor("bob runs", (r) => r.sources.length === 1);
    const carol = connect(lab, api.url, await lab.mintToken({ userName: "carol" }));
    carol.start({ bosh: one });
    assertEquals((await carol.closed).code, 1008);
    assertEquals(statusesOf(carol.got, "LIMIT_REACHED")[0].limit, {
      name: "concurrent_captures",
      value: 2,
    });
    alice.send({ type: "stop" });
    bob.send({ type: "stop" });
    assertEquals((await alice.closed).code, 1000);
    assertEquals((await bob.closed).code, 1000);
  });

  await t.step(
    "api max_duration ends the capture with LIMIT_REACHED and a clean stop",
    async () => {
      const c = connect(lab, api.url, await lab.mintToken());
      c.start({ bosh: one, limits: { duration_ms: 60_000 } });
      const closed = await c.closed;
      assertEquals(closed.code, 1000);
      const st = statusesOf(c.got, "LIMIT_REACHED");
      assertEquals(st.length, 1);
      assertEquals(st[0].limit, { name: "max_duration", value: 2000 });
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 1);
      assertEquals(api.audit.at(-1)!.outcome, "LIMIT_REACHED");
    },
  );
}
