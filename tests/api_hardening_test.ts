/**
 * Hardening of the api against the review findings, end to end on a lab landscape with real
 * agents, real RS256 tokens and real TLS: the caps on waiting sockets (a junk token never gets
 * one; one user cannot fill them), the WebSocket idle
 * timeout for a silently vanished client, SIGTERM-style drains while a session is mid-upgrade,
 * waiting for its start or still starting, audit sinks that fail, per-user limits keyed on the
 * stable user id, X-Forwarded-For in the audit, and a capture that fails on a real agent (its eth0 goes down).
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import {
  connect,
  countTokens,
  type RunningApi,
  sourceOf,
  startApi,
  startLab,
  statusesOf,
  type WsClient,
} from "./support/api_harness.ts";
import type { Landscape } from "../lab/landscape.ts";
import type { ApiServerOptions } from "../server/app.ts";
import type { Json } from "../lab/lab_agents.ts";
import { run } from "../lab/netns.ts";
import { rawUpgrade } from "./support/raw_upgrade.ts";

const ONE = { deployment: "cf", instances: ["router/0"] };
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await delay(25);
  }
}

Deno.test("api hardening", async (t) => {
  const lab = await startLab({ groups: { router: 2 } });
  const apis: RunningApi[] = [];
  const clients: WsClient[] = [];
  const api = async (extra: Json = {}, opts: Partial<ApiServerOptions> = {}) => {
    const a = await startApi(lab, extra, opts);
    apis.push(a);
    return a;
  };
  const open = (a: RunningApi, token: string | null, headers: Record<string, string> = {}) => {
    const c = connect(lab, a.url, token, undefined, headers);
    clients.push(c);
    return c;
  };
  try {
    const token = await lab.mintToken();

    await t.step(
      "waiting sockets: `Bearer x` never gets one, and one user cannot fill the cap",
      async () => {
        const a = await api({ limits: { max_waiting_sessions: 4, per_user_waiting_sessions: 2 } });
        // More junk upgrades than the cap: each is refused at the upgrade, none holds a place.
        const junk = Array.from({ length: 66 }, () => open(a, "x"));
        await Promise.all(junk.map((c) => c.closed));
        for (const c of junk) assertEquals(c.got.kinds, [], "a junk upgrade got a socket");
        assertEquals(a.server.sessions.size, 0);
        // Their refusals are aggregated in the audit, not written one by one.
        const junkLines = a.audit.filter((l) => l.outcome === "UNAUTHENTICATED");
        assert(junkLines.length >= 1 && junkLines.length < 10, `${junkLines.length} lines`);
        assertEquals(junkLines[0].user, "(unauthenticated)");
        // A user who opens sockets and never starts holds at most their own share...
        const aliceToken = await lab.mintToken({ userName: "alice" });
        const idle = [open(a, aliceToken), open(a, aliceToken)];
        for (const c of idle) await c.waitFor("hello", (r) => r.kinds.includes("HELLO"));
        const third = open(a, aliceToken);
        const closed = await third.closed;
        assertEquals([closed.code, closed.reason], [1008, "LIMIT_REACHED"]);
        assertEquals(statusesOf(third.got, "LIMIT_REACHED")[0].limit, {
          name: "per_user_waiting_sessions",
          value: 2,
        });
        // ... and a real user still captures.
        const carol = open(a, await lab.mintToken({ userName: "carol" }));
        carol.start({ bosh: ONE });
        await carol.waitFor("source", (r) => r.sources.length === 1);
        // Only several users together fill the global cap.
        const bobToken = await lab.mintToken({ userName: "bob" });
        const bob = [open(a, bobToken), open(a, bobToken)];
        for (const c of bob) await c.waitFor("hello", (r) => r.kinds.includes("HELLO"));
        const dave = open(a, await lab.mintToken({ userName: "dave" }));
        assertEquals((await dave.closed).reason, "LIMIT_REACHED");
        assertEquals(statusesOf(dave.got, "LIMIT_REACHED")[0].limit, {
          name: "max_waiting_sessions",
          value: 4,
        });
        // Refusals of verified users are audited with their identity, one line each.
        const refusals = a.audit.filter((l) => l.outcome === "LIMIT_REACHED");
        assertEquals(refusals.map((l) => l.user).sort(), ["alice", "dave"]);
        carol.send({ type: "stop" });
        assertEquals((await carol.closed).code, 1000);
        for (const c of [...idle, ...bob]) c.close();
      },
    );

    await t.step(
      "a client that vanishes silently is noticed by the ping/pong idle timeout",
      async () => {
        const a = await api({}, { wsIdleTimeoutSec: 2 });
        const conn = await silentClient(lab, a, token);
        try {
          await until(
            "capture running",
            () => a.server.metrics.activeCaptures.get({ resolver: "bosh" }) === 1,
          );
          const t0 = Date.now();
          // The client now neither reads nor answers pings (a laptop that lost its network).
          await until(
            "CLIENT_GONE audit line",
            () => a.audit.some((l) => l.outcome === "CLIENT_GONE"),
            15_000,
          );
          const took = Date.now() - t0;
          assert(took < 12_000, `noticed after ${took} ms; the idle timeout is 2 s`);
          assertEquals(a.server.metrics.activeCaptures.get({ resolver: "bosh" }), 0);
        } finally {
          conn.close();
        }
      },
    );

    await t.step("drain while a session is mid-upgrade: refused, no crash", async () => {
      let drained: Promise<void> | null = null;
      const a = await api({}, {
        onSession: () => {
          // SIGTERM lands after the upgrade request arrived but before the socket opened.
          drained ??= a.server.drain(5000);
        },
      });
      const c = open(a, token);
      const closed = await c.closed;
      await until("drain started", () => drained !== null);
      await drained;
      assertEquals(closed.code, 1008, JSON.stringify(c.got.statuses));
      assertMatch(statusesOf(c.got, "START_CAPTURE_FAILED")[0].text as string, /shutting down/);
    });

    await t.step(
      "drain while an upgrade's token is being checked: refused with retry",
      async () => {
        const a = await api();
        // A fresh api asks the Director for its UAA while it verifies the first token.
        lab.director.faults.delayMs = 1500;
        try {
          const before = lab.director.requestCount;
          const c = open(a, token);
          await until("the Director is asked", () => lab.director.requestCount > before);
          await a.server.drain(8000);
          const closed = await c.closed;
          assertEquals([closed.code, closed.reason], [1008, "START_CAPTURE_FAILED"]);
          assertMatch(statusesOf(c.got, "START_CAPTURE_FAILED")[0].text as string, /retry/);
        } finally {
          lab.director.faults.delayMs = 0;
        }
      },
    );

    await t.step("drain while a session waits for its start: START_CAPTURE_FAILED", async () => {
      const a = await api();
      const c = open(a, token);
      await c.waitFor("hello", (r) => r.kinds.includes("HELLO"));
      await a.server.drain(5000);
      const closed = await c.closed;
      assertEquals(closed.code, 1008);
      assertEquals(closed.reason, "START_CAPTURE_FAILED");
    });

    await t.step(
      "drain while a capture is starting: refused with retry, not an empty capture",
      async () => {
        const a = await api();
        // Authenticated at the upgrade (which asks the Director for its UAA) before it slows.
        const c = open(a, token);
        await c.waitFor("hello", (r) => r.kinds.includes("HELLO"));
        lab.director.faults.delayMs = 1500;
        try {
          c.start({ bosh: ONE });
          const before = lab.director.requestCount;
          await until("the Director is asked", () => lab.director.requestCount > before);
          await a.server.drain(8000);
          const closed = await c.closed;
          assertEquals(closed.code, 1008, `${closed.reason} ${c.got.kinds.join(",")}`);
          assertEquals(closed.reason, "START_CAPTURE_FAILED");
          assertMatch(statusesOf(c.got, "START_CAPTURE_FAILED")[0].text as string, /retry/);
          assert(!c.got.kinds.includes("END"), "no END: nothing was captured");
        } finally {
          lab.director.faults.delayMs = 0;
        }
      },
    );

    await t.step("audit file on a full disk: the capture ends, the api keeps serving", async () => {
      const a = await api({ audit: { file: "/dev/full" } }, { auditSink: undefined });
      const c = open(a, token);
      c.start({ bosh: ONE });
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
      await until("session released", () => a.server.sessions.size === 0);
      assertEquals(a.server.metrics.auditErrors.get(), 1);
      assert(a.logs.some((l) => l.includes("cannot write an audit line")));
      // Refusals do not crash it either: at the upgrade (aggregated audit) ...
      const answer = await rawUpgrade(`${a.url}/v1/capture/bosh`, {}, lab.pki.caCert);
      assertEquals(answer.status, 401, answer.body);
      // ... and on the socket (a full audit line).
      const refused = open(a, await lab.mintToken({ scopes: ["openid"] }));
      refused.start({ bosh: ONE });
      assertEquals((await refused.closed).reason, "PERMISSION_DENIED");
      await until("both refusals audited", () => a.server.metrics.auditErrors.get() === 3);
      const again = open(a, token);
      again.start({ bosh: ONE });
      await again.waitFor("source", (r) => r.sources.length === 1);
      again.send({ type: "stop" });
      assertEquals((await again.closed).code, 1000);
    });

    await t.step("per-user limit keyed on user id + origin; forwarded_for audited", async () => {
      const a = await api({ limits: { per_user_concurrent_captures: 1 } });
      const alice = open(a, await lab.mintToken({ userName: "alice" }), {
        "x-forwarded-for": "203.0.113.7, 10.0.0.1",
      });
      alice.start({ bosh: ONE });
      await alice.waitFor("alice runs", (r) => r.sources.length === 1);
      // Another "alice", from another identity provider: a different person.
      const ldapAlice = open(
        a,
        await lab.mintToken({
          userName: "alice",
          extra: { origin: "ldap", user_id: "ldap-alice", sub: "ldap-alice" },
        }),
      );
      ldapAlice.start({ bosh: { ...ONE, instances: ["router/1"] } });
      await ldapAlice.waitFor("ldap alice runs", (r) => r.sources.length === 1);
      // The same alice again is the same person: refused.
      const alice2 = open(a, await lab.mintToken({ userName: "alice" }));
      alice2.start({ bosh: ONE });
      assertEquals((await alice2.closed).code, 1008);
      assertEquals(statusesOf(alice2.got, "LIMIT_REACHED")[0].limit, {
        name: "per_user_concurrent_captures",
        value: 1,
      });
      for (const c of [alice, ldapAlice]) c.send({ type: "stop" });
      for (const c of [alice, ldapAlice]) assertEquals((await c.closed).code, 1000);
      await until(
        "audits",
        () => a.audit.filter((l) => l.outcome === "CAPTURE_STOPPED").length === 2,
      );
      const lines = a.audit.filter((l) => l.outcome === "CAPTURE_STOPPED");
      const ldap = lines.find((l) => l.origin === "ldap")!;
      assertEquals([ldap.user, ldap.user_id], ["alice", "ldap-alice"]);
      const uaa = lines.find((l) => l.origin === "uaa")!;
      assertEquals(uaa.user, "alice");
      assertEquals(uaa.forwarded_for, "203.0.113.7, 10.0.0.1");
      assertEquals(uaa.remote, "127.0.0.1");
    });

    await t.step("a capture that fails on the agent is recorded as unavailable", async () => {
      // A real agent whose interface goes down mid-capture: libpcap fails, the agent reports
      // INSTANCE_UNAVAILABLE. eth0 also carries the agent's stream to the api, so it comes back
      // up after a moment and TCP delivers the agent's report.
      const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
      const a = await api();
      const c = open(a, token);
      c.start({ bosh: { deployment: "cf", groups: ["router"] }, filter: "udp port 5620" });
      await c.waitFor("sources", (r) => r.sources.length === 2);
      const src1 = sourceOf(c.got, r1);
      let down = false;
      try {
        await run("ip", ["-n", r1.netns!, "link", "set", "eth0", "down"]);
        down = true;
        await delay(1000);
      } finally {
        if (down) await run("ip", ["-n", r1.netns!, "link", "set", "eth0", "up"]);
      }
      await c.waitFor("r1 unavailable", (r) => statusesOf(r, "INSTANCE_UNAVAILABLE").length > 0);
      const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
      assertEquals(un.length, 1, JSON.stringify(c.got.statuses));
      assertEquals(un[0].source, src1);
      assertMatch(un[0].text as string, /went down/, un[0].text as string);
      // the other source goes on
      const sent = await lab.traffic.udp({ from: r1, to: r0, port: 5620, count: 10, rate: 200 });
      const realSrc = sourceOf(c.got, r0);
      await c.waitFor("r0 packets", (r) => {
        const got = countTokens(r.tokens.get(realSrc) ?? []);
        return sent.every((tk) => got.get(tk) === 1);
      });
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000, JSON.stringify(c.got.statuses));
      const line = a.audit.at(-1)!;
      // one of two failed: the capture as a whole stopped cleanly, the detail names the failure
      assertEquals(line.outcome, "CAPTURE_STOPPED");
      assertMatch(line.detail as string, /^1 of 2 source\(s\) unavailable: .*router\/1/);
      assertStringIncludes(line.detail as string, un[0].text as string);
      assertEquals(a.server.metrics.sourcesFailed.get({ resolver: "bosh" }), 1);
      assertEquals(a.server.metrics.agentErrors.get({ kind: "capture" }), 1);
    });
  } catch (e) {
    lab.dumpLogs(40);
    throw e;
  } finally {
    for (const c of clients) c.close();
    await Promise.all(clients.map((c) => c.closed));
    for (const a of apis) await a.close();
    await lab.stop();
  }
});

/**
 * A WebSocket client written by hand over TLS: it upgrades, sends its start request, and then
 * neither reads nor answers pings, like a laptop whose network went away.
 */
async function silentClient(lab: Landscape, a: RunningApi, token: string): Promise<Deno.Conn> {
  const port = a.server.port;
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [lab.pki.caCert] });
  const enc = new TextEncoder();
  await conn.write(enc.encode(
    `GET /v1/capture/bosh HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${btoa(crypto.randomUUID().slice(0, 16))}\r\n` +
      `Sec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  ));
  const buf = new Uint8Array(4096);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`upgrade failed: ${head}`);
    head += new TextDecoder().decode(buf.subarray(0, n));
  }
  assertMatch(head, /^HTTP\/1\.1 101/);
  const payload = enc.encode(JSON.stringify({
    type: "start",
    protocol_version: 1,
    bosh: ONE,
  }));
  assert(payload.length < 126);
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const frame = new Uint8Array([0x81, 0x80 | payload.length, ...mask, ...payload]);
  for (let i = 0; i < payload.length; i++) frame[6 + i] ^= mask[i % 4];
  await conn.write(frame);
  return conn;
}
