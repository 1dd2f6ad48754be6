/**
 * Token handling of the capture WebSocket with real RS256 tokens from the UAA sim, verified
 * against the keys of the UAA the Director names: a bad token is refused at the upgrade (401,
 * never a socket, aggregated audit); a valid token without the scope gets PERMISSION_DENIED on
 * its socket and one full audit line with its identity; tokens never reach logs or audit.
 * Also: first message not a start, unknown message types, oversized and binary messages.
 */
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { connect, ROUTERS, statusesOf, withApiLab } from "./support/api_harness.ts";
import { rawUpgrade } from "./support/raw_upgrade.ts";

const START = { bosh: ROUTERS };

Deno.test("api authentication and request validation", async (t) => {
  await withApiLab({ groups: { router: 1 } }, async (lab, startApi) => {
    const api = await startApi();
    const url = api.url;
    const uaa = lab.uaa;
    const refused = async (
      token: string | null,
      type: string,
      text: RegExp,
      path?: string,
      headers: Record<string, string> = {},
    ) => {
      const c = connect(lab, url, token, path, headers);
      c.start(START);
      const closed = await c.closed;
      assertEquals(closed.code, 1008, JSON.stringify(c.got.statuses));
      assertEquals(closed.reason, type);
      assertEquals(c.got.kinds[0], "HELLO");
      const st = statusesOf(c.got, type);
      assertEquals(st.length, 1, JSON.stringify(c.got.statuses));
      assert(text.test(st[0].text as string), `${st[0].text} !~ ${text}`);
      assertEquals(c.got.sources.length, 0);
      if (token) {
        assert(!api!.logs.join("\n").includes(token), "token in logs");
        assert(!JSON.stringify(api!.audit).includes(token), "token in audit");
      }
    };

    /** An upgrade that must be answered 401 with `text`, and never become a socket. */
    const unauthenticated = async (
      token: string | null,
      text: RegExp,
      path = "/v1/capture/bosh",
      headers: Record<string, string> = {},
    ) => {
      const answer = await rawUpgrade(url + path, {
        ...headers,
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      }, lab.pki.caCert);
      assertEquals(answer.status, 401, answer.body);
      assertStringIncludes(answer.headers.get("www-authenticate") ?? "", "Bearer");
      const body = JSON.parse(answer.body);
      assertEquals(body.type, "UNAUTHENTICATED");
      assert(text.test(body.text), `${body.text} !~ ${text}`);
      // A WebSocket client sees the refusal and never an open socket.
      const c = connect(lab, url, token, path, headers);
      await c.closed;
      assertEquals(c.got.kinds, []);
      if (token) {
        assert(!api!.logs.join("\n").includes(token), "token in logs");
        assert(!JSON.stringify(api!.audit).includes(token), "token in audit");
      }
    };

    await t.step("valid token streams", async () => {
      const c = connect(lab, url, await uaa.mintValid());
      c.start(START);
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
    });

    await t.step("director-scoped admin token is accepted", async () => {
      const c = connect(
        lab,
        url,
        await uaa.mintValid({ scopes: [`bosh.${lab.director.uuid}.admin`] }),
      );
      c.start(START);
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
    });

    await t.step("missing, malformed and misplaced tokens: 401 at the upgrade", async () => {
      await unauthenticated(null, /Authorization: Bearer/);
      const token = await uaa.mintValid();
      await unauthenticated(
        null,
        /token in the URL is refused/,
        `/v1/capture/bosh?access_token=${token}`,
      );
      assert(!api!.logs.join("\n").includes(token), "query token logged");
      await unauthenticated("garbage", /not a JWT/);
      // other schemes and an empty bearer token are refused, never taken for a token
      const basic = { authorization: `Basic ${btoa("admin:secret")}` };
      await unauthenticated(null, /Bearer/, undefined, basic);
      await unauthenticated(null, /Bearer|missing/, undefined, { authorization: "Bearer " });
    });

    await t.step("bad signatures and algorithms: 401 at the upgrade", async () => {
      await unauthenticated(await uaa.mintExpired(), /expired/);
      await unauthenticated(await uaa.mintWrongKey(), /signature|key/);
      await unauthenticated(await uaa.mintUnknownKid(), /does not publish|key/);
      await unauthenticated(uaa.mintAlgNone(), /algorithm/);
      await unauthenticated(uaa.mintHs256WithPublicKey(), /algorithm/);
      await unauthenticated(await uaa.mintWrongIssuer(), /iss/);
    });

    await t.step("valid token without the scope: PERMISSION_DENIED, audited in full", async () => {
      const before = api!.audit.length;
      await refused(await uaa.mintValid({ scopes: ["openid"] }), "PERMISSION_DENIED", /scope/);
      // Authorization refusals are not aggregated: each has its line with the identity.
      const lines = api!.audit.slice(before);
      assertEquals(lines.length, 1, JSON.stringify(lines));
      const line = lines[0];
      assertEquals(line.outcome, "PERMISSION_DENIED");
      assertEquals(line.user, "admin");
      assert(typeof line.user_id === "string" && line.user_id.length > 0, "user_id audited");
      assertEquals(line.origin, "uaa");
      assertEquals(line.client_id, "bosh_cli");
      assertEquals(line.deployment, "cf");
      assertEquals(line.suppressed, undefined);
      await refused(
        await uaa.mintValid({ scopes: ["bosh.00000000-other-director.admin"] }),
        "PERMISSION_DENIED",
        /scope/,
      );
      const m = api!.server.metrics.authFailures;
      assert(m.get({ type: "PERMISSION_DENIED" }) >= 2);
      assert(m.get({ type: "UNAUTHENTICATED" }) >= 5);
    });

    await t.step("first message not a start, unknown types, oversized, binary", async () => {
      const token = await uaa.mintValid();
      const bad = async (send: (ws: WebSocket) => void, text: RegExp, code = 1008) => {
        const c = connect(lab, url, token);
        await new Promise((r) => c.ws.addEventListener("open", r, { once: true }));
        send(c.ws);
        const closed = await c.closed;
        assertEquals(closed.code, code);
        const st = statusesOf(c.got, "INVALID_REQUEST");
        assertEquals(st.length, 1, JSON.stringify(c.got.statuses));
        assert(text.test(st[0].text as string), `${st[0].text} !~ ${text}`);
      };
      await bad((ws) => ws.send(JSON.stringify({ type: "stop" })), /expected a start request/);
      await bad((ws) => ws.send(JSON.stringify({ type: "hack" })), /expected a start request/);
      await bad((ws) => ws.send("{not json"), /not JSON/);
      // refused by the framing, before the message is buffered: 1009 (message too big)
      await bad((ws) => ws.send("x".repeat(70 * 1024)), /exceeds the size limit/, 1009);
      await bad((ws) => ws.send(new Uint8Array([1, 2, 3])), /binary/);
      await bad(
        (ws) => ws.send(JSON.stringify({ type: "start", protocol_version: 1, bosh: {} })),
        /bosh\.deployment/,
      );
      await bad(
        (ws) =>
          ws.send(JSON.stringify({ ...START, type: "start", protocol_version: 1, snaplen: 0 })),
        /snaplen/,
      );
      // During a capture an unknown message gets INVALID_REQUEST and a clean stop.
      const c = connect(lab, url, token);
      c.start(START);
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "pause" });
      assertEquals((await c.closed).code, 1000);
      assertStringIncludes(statusesOf(c.got, "INVALID_REQUEST")[0].text as string, "pause");
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 1);
    });

    await t.step("start request matrix over the wire: refused with the reason", async () => {
      const token = await uaa.mintValid();
      const req = { ...START, type: "start", protocol_version: 1, interface: "eth0" };
      const refusedStart = async (msg: unknown, text: RegExp) => {
        const c = connect(lab, url, token);
        c.send(msg);
        const closed = await c.closed;
        assertEquals([closed.code, closed.reason], [1008, "INVALID_REQUEST"], String(text));
        const st = statusesOf(c.got, "INVALID_REQUEST");
        assertEquals(st.length, 1, JSON.stringify(c.got.statuses));
        assert(text.test(st[0].text as string), `${st[0].text} !~ ${text}`);
        assertEquals(c.got.sources.length, 0);
      };
      await refusedStart(
        { ...req, protocol_version: 0 },
        /speaks protocol v0 but this api needs at least v1; upgrade/,
      );
      await refusedStart({ ...req, colour: "red" }, /colour/);
      await refusedStart({ ...req, bosh: { deployment: "cf", groups: "router" } }, /groups/);
      await refusedStart({ ...req, snaplen: "x" }, /snaplen/);
      await refusedStart({ ...req, limits: { duration_ms: 604_800_001 } }, /duration_ms/);
      await refusedStart({ ...req, limits: { max_packets: 0 } }, /max_packets/);
      await refusedStart({ ...req, limits: { max_packets: -5 } }, /max_packets/);
      await refusedStart({ ...req, bosh: { deployment: "..", groups: ["router"] } }, /deployment/);
      await refusedStart(
        { ...req, filter: "port 80\x1b[2J" },
        /filter contains control characters/,
      );
      await refusedStart({ ...req, filter: "port 1 ".repeat(600) }, /longer than 4096/);
      await refusedStart({ ...req, interface: "eth0; reboot" }, /interface/);
      // the api keeps serving after all of them
      const c = connect(lab, url, token);
      c.start(START);
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
    });

    await t.step("a second start during a capture, a message after the stop", async () => {
      const token = await uaa.mintValid();
      const c = connect(lab, url, token);
      c.start(START);
      await c.waitFor("source", (r) => r.sources.length === 1);
      c.start(START);
      assertEquals((await c.closed).code, 1000, JSON.stringify(c.got.statuses));
      const st = statusesOf(c.got, "INVALID_REQUEST");
      assertEquals(st.length, 1, JSON.stringify(c.got.statuses));
      assertStringIncludes(st[0].text as string, `unexpected message type "start"`);
      assertEquals(statusesOf(c.got, "CAPTURE_STOPPED").length, 1);
      assertEquals(c.got.kinds.at(-1), "END");

      // after a stop the capture is already ending: a further message does not disturb the drain
      const d = connect(lab, url, token);
      d.start(START);
      await d.waitFor("source", (r) => r.sources.length === 1);
      d.send({ type: "stop" });
      d.send({ type: "pause" });
      assertEquals((await d.closed).code, 1000, JSON.stringify(d.got.statuses));
      assertEquals(statusesOf(d.got, "CAPTURE_STOPPED").length, 1);
      assertEquals(statusesOf(d.got, "INVALID_REQUEST").length, 0);
      assertEquals(d.got.kinds.at(-1), "END");
    });
  });
});
