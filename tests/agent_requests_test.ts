/**
 * Bad start requests get HTTP 400 with a clear INVALID_REQUEST (or START_CAPTURE_FAILED) text,
 * and the agent keeps serving. Also the pure interface/filter checks of parseStartRequest.
 */
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import {
  postJson,
  readStream,
  startBody,
  statuses,
  withAgent,
  withPki,
} from "./support/agent_harness.ts";
import { MAX_START_BODY_BYTES, parseStartRequest } from "../agent/start_request.ts";
import { MAX_AGENT_DURATION_MS } from "../protocol/messages.ts";
import { FrameKind } from "../protocol/frame_codec.ts";
import { isRoot } from "../lab/netns.ts";

Deno.test("parseStartRequest: interface names follow the kernel's dev_valid_name", () => {
  const ok = (name: string) => parseStartRequest(startBody({ interface: name })).ok;
  for (const good of ["eth0", "lo", "a", "x".repeat(15), "veth-1.2_x", "any"]) {
    assert(ok(good), `${good} should be accepted`);
  }
  for (const bad of ["", "a/b", "x".repeat(16), "x".repeat(17), ".", "..", "a b", "a\tb", "a:b"]) {
    assert(!ok(bad), `${JSON.stringify(bad)} should be refused`);
  }
  // 15 characters but more than 15 bytes in UTF-8.
  assert(!ok("é".repeat(8)));
});

Deno.test("parseStartRequest: never compiles the filter; its text rules refuse names and complexity", () => {
  // Compiling is the capture worker's job (off the main thread): a filter libpcap refuses passes
  // validation and is refused from there (see the HTTP cases below).
  assert(parseStartRequest(startBody({ filter: "tcp port 80 and" })).ok);
  assert(parseStartRequest(startBody({ filter: "tcp port 80 or udp" })).ok);
  assert(parseStartRequest(startBody({ filter: "" })).ok);
  const named = parseStartRequest(startBody({ filter: "udp and host example.com" }));
  assert(!named.ok);
  assertEquals(named.type, "INVALID_REQUEST");
  assertStringIncludes(named.text, "use an IP address");
  // The api's exclusion adds two primitives to the user's 64.
  const terms = (n: number) => Array.from({ length: n }, (_, i) => `port ${i + 1}`).join(" or ");
  assert(parseStartRequest(startBody({ filter: terms(66) })).ok);
  const complex = parseStartRequest(startBody({ filter: terms(67) }));
  assert(!complex.ok);
  assertStringIncludes(complex.text, "too complex: it has 67 primitives");
});

/** A valid start request (lo, udp port 9, 300 ms) padded with JSON whitespace to `bytes`. */
function paddedTo(bytes: number): string {
  const body = startBody({ filter: "udp port 9", duration_ms: 300 });
  return body.slice(0, -1) + " ".repeat(bytes - body.length) + "}";
}

/** Edges that must be accepted: parsed fine by the agent's validation. */
Deno.test("parseStartRequest: edge values inside the limits are accepted", () => {
  for (
    const extra of [
      { snaplen: 1 },
      { snaplen: 262144 },
      { duration_ms: 1 },
      { duration_ms: MAX_AGENT_DURATION_MS },
      { requester: "r".repeat(256) },
      { promiscuous: true },
    ]
  ) {
    const r = parseStartRequest(startBody(extra));
    assert(r.ok, `${JSON.stringify(extra)} should be accepted: ${r.ok ? "" : r.text}`);
  }
  assert(parseStartRequest(paddedTo(MAX_START_BODY_BYTES)).ok, "64 KiB body");
});

interface Case {
  name: string;
  body: string;
  type?: string;
  includes: string;
}

const cases: Case[] = [
  { name: "empty interface", body: startBody({ interface: "" }), includes: "interface" },
  { name: "slash", body: startBody({ interface: "a/b" }), includes: "interface" },
  { name: "17 chars", body: startBody({ interface: "x".repeat(17) }), includes: "15 bytes" },
  { name: "dotdot", body: startBody({ interface: ".." }), includes: "interface" },
  { name: "whitespace", body: startBody({ interface: "eth 0" }), includes: "whitespace" },
  { name: "snaplen 0", body: startBody({ snaplen: 0 }), includes: "snaplen" },
  { name: "snaplen 300000", body: startBody({ snaplen: 300000 }), includes: "snaplen" },
  { name: "snaplen text", body: startBody({ snaplen: "big" }), includes: "snaplen" },
  {
    name: "snaplen 1.5",
    body: startBody({ snaplen: 1.5 }),
    includes: "snaplen: Invalid input: expected int",
  },
  { name: "duration 0", body: startBody({ duration_ms: 0 }), includes: "duration_ms: Too small" },
  {
    name: "duration negative",
    body: startBody({ duration_ms: -5 }),
    includes: "duration_ms: Too small",
  },
  {
    name: "duration fractional",
    body: startBody({ duration_ms: 1.5 }),
    includes: "duration_ms: Invalid input: expected int",
  },
  {
    name: "duration above the maximum",
    body: startBody({ duration_ms: MAX_AGENT_DURATION_MS + 1 }),
    includes: `duration_ms must be at most ${MAX_AGENT_DURATION_MS}`,
  },
  {
    name: "promiscuous not boolean",
    body: startBody({ promiscuous: "yes" }),
    includes: "promiscuous: Invalid input: expected boolean",
  },
  {
    name: "requester of 257 chars",
    body: startBody({ requester: "r".repeat(257) }),
    includes: "requester: Too big",
  },
  {
    name: "protocol_version as text",
    body: startBody({ protocol_version: "1" }),
    includes: "did not announce a valid protocol version",
  },
  {
    name: "protocol_version -1",
    body: startBody({ protocol_version: -1 }),
    includes: "did not announce a valid protocol version",
  },
  { name: "empty body", body: "", includes: "request body is empty" },
  { name: "bad filter", body: startBody({ filter: "port eighty" }), includes: "invalid filter" },
  {
    name: "filter refused by libpcap in the capture worker",
    body: startBody({ filter: "tcp port 80 and" }),
    includes: 'invalid filter "tcp port 80 and": can\'t parse filter expression: syntax error',
  },
  {
    name: "host name in the filter",
    body: startBody({ filter: "host db.example" }),
    includes: "use an IP address",
  },
  {
    name: "filter too complex",
    body: startBody({ filter: Array.from({ length: 200 }, (_, i) => `port ${i}`).join(" or ") }),
    includes: "too complex",
  },
  {
    name: "long filter",
    body: startBody({ filter: "port 1 or ".repeat(500) + "port 2" }),
    includes: "filter is longer",
  },
  { name: "unknown field", body: startBody({ colour: "red" }), includes: "unknown field colour" },
  { name: "not JSON", body: "{protocol_version: 1", includes: "not JSON" },
  { name: "JSON array", body: "[1,2]", includes: "JSON object" },
  { name: "missing fields", body: JSON.stringify({ protocol_version: 1 }), includes: "interface" },
  {
    name: "old peer",
    body: startBody({ protocol_version: 0 }),
    includes: "needs at least v1; upgrade",
  },
  { name: "no version", body: JSON.stringify({ interface: "lo" }), includes: "protocol version" },
  {
    name: "container target on an agent without cf",
    body: startBody({
      target: { app_guid: crypto.randomUUID(), instance_guid: "6907c81e-99c4-4322-4594-ac1d" },
    }),
    type: "START_CAPTURE_FAILED",
    includes: "cf.enabled is false",
  },
  {
    name: "container target with a path-trick instance guid",
    body: startBody({
      target: { app_guid: crypto.randomUUID(), instance_guid: "../../../../proc/1/ns" },
    }),
    includes: "not of the Diego form",
  },
  {
    name: "container target with a bad app guid",
    body: startBody({ target: { app_guid: "..", ip: "198.19.0.2" } }),
    includes: "app guid",
  },
  {
    name: "body of 64 KiB + 1",
    body: paddedTo(MAX_START_BODY_BYTES + 1),
    includes: "exceeds 64 KiB",
  },
  {
    name: "huge body",
    body: JSON.stringify({ protocol_version: 1, pad: "x".repeat(1 << 20) }),
    includes: "exceeds 64 KiB",
  },
  {
    name: "no such interface",
    body: startBody({ interface: "pcnoexist0" }),
    type: "START_CAPTURE_FAILED",
    includes: "pcnoexist0",
  },
];

Deno.test({
  name: "agent answers bad start requests with 400 and a clear text, and keeps serving",
  ignore: !isRoot(),
  fn: () =>
    withPki("agent-req-", (t) =>
      withAgent(t, {}, async (agent, client) => {
        for (const c of cases) {
          const before = agent.logs.filter((l) => l.msg === "capture refused").length;
          const oversized = c.body.length > MAX_START_BODY_BYTES;
          let res: Response;
          let body: { type?: string; text: string };
          try {
            res = await postJson(client, agent.url("/captures"), c.body);
            body = await res.json();
          } catch (e) {
            // An oversized body is refused from its Content-Length without being read, and the
            // agent may close the connection before the upload ends: the client then sees a
            // broken connection instead of the 400. Its log line must say why either way.
            if (!oversized) throw e;
            const line = agent.logs.filter((l) => l.msg === "capture refused")[before];
            assertStringIncludes(String(line?.reason), c.includes, `${c.name}: ${e}`);
            continue;
          }
          assertEquals(res.status, 400, `${c.name}: ${JSON.stringify(body)}`);
          assertEquals(body.type, c.type ?? "INVALID_REQUEST", c.name);
          assertStringIncludes(body.text, c.includes, `${c.name}: ${body.text}`);
        }
        assertEquals(agent.server.activeCaptures, 0);
        const refusals = agent.logs.filter((l) => l.msg === "capture refused");
        assertEquals(refusals.length, cases.length);

        // A chunked body (no Content-Length) past the bound: refused while it streams, without
        // reading the rest. The client may see the 400 or, as the agent closes the connection
        // mid-upload, a broken body; the agent's log says which limit refused it either way.
        let sent = 0;
        const chunk = new TextEncoder().encode(" ".repeat(16 * 1024));
        const streamed = await fetch(agent.url("/captures"), {
          method: "POST",
          client,
          headers: { "content-type": "application/json" },
          body: new ReadableStream<Uint8Array>({
            pull(ctl) {
              if (sent >= 1 << 20) return ctl.close();
              sent += chunk.byteLength;
              ctl.enqueue(chunk);
            },
          }),
        }).then(async (r) => ({ status: r.status, text: String((await r.json()).text) }))
          .catch((e: Error) => ({ status: 0, text: e.message }));
        if (streamed.status !== 0) {
          assertEquals(streamed.status, 400, streamed.text);
          assertStringIncludes(streamed.text, "exceeds 64 KiB");
        }
        const refusedStream = agent.logs.filter((l) => l.msg === "capture refused").at(-1);
        assertStringIncludes(String(refusedStream?.reason), "exceeds 64 KiB");
        assertEquals(agent.server.activeCaptures, 0);
        const health = await fetch(agent.url("/health"), { client });
        assertEquals(health.status, 200, "the agent keeps serving");
        await health.body?.cancel();

        const stop = await postJson(client, agent.url("/captures/nope/stop"), "");
        assertEquals(stop.status, 404);
        assertStringIncludes((await stop.json()).text, "no running capture");
        const wrong = await fetch(agent.url("/nowhere"), { client });
        assertEquals(wrong.status, 404);
        await wrong.body?.cancel();
        // GET on the POST-only route: 404 naming the method and path, not a capture.
        const get = await fetch(agent.url("/captures"), { client });
        assertEquals(get.status, 404);
        const getBody = await get.json();
        assertEquals(getBody.type, "INVALID_REQUEST");
        assertStringIncludes(getBody.text, "no route GET /captures");

        // Accepted edges, each a real capture on lo that ends by its own duration_ms: snaplen 1
        // and 262144, and a body of exactly 64 KiB.
        const edges: [string, string, number][] = [
          ["snaplen 1", startBody({ snaplen: 1, filter: "udp port 9", duration_ms: 300 }), 1],
          [
            "snaplen 262144",
            startBody({ snaplen: 262144, filter: "udp port 9", duration_ms: 300 }),
            262144,
          ],
          ["body of exactly 64 KiB", paddedTo(MAX_START_BODY_BYTES), 65535],
        ];
        for (const [what, body, snaplen] of edges) {
          assertEquals(new TextEncoder().encode(body).length <= MAX_START_BODY_BYTES, true, what);
          const edge = await postJson(client, agent.url("/captures"), body);
          assertEquals(edge.status, 200, what);
          const got = await readStream(edge.body!);
          assertEquals(got.json[1].snaplen, snaplen, what);
          assertStringIncludes(
            String(statuses(got, "CAPTURE_STOPPED")[0]?.text),
            "duration of 0.3 s elapsed",
            what,
          );
          assertEquals(got.kinds.at(-1), "END", what);
        }
        assertEquals(new TextEncoder().encode(paddedTo(MAX_START_BODY_BYTES)).length, 65536);

        // Still serving: a valid capture on lo starts, stops and ends cleanly.
        const res = await postJson(
          client,
          agent.url("/captures"),
          startBody({ filter: "udp port 9" }),
        );
        assertEquals(res.status, 200);
        const id = res.headers.get("x-pcap-capture-id")!;
        const result = await readStream(res.body!, async (f) => {
          if (f.kind === FrameKind.SOURCE) {
            const r = await postJson(client, agent.url(`/captures/${id}/stop`), "");
            assertEquals(r.status, 202);
            await r.body?.cancel();
          }
        });
        assertEquals(result.kinds.at(-1), "END");
        assertEquals(statuses(result, "CAPTURE_STOPPED").length, 1);
      })),
});
