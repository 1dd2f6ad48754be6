/**
 * A compromised VM cannot run the api out of memory through control frames (issue 12, defect 6),
 * end to end: a fake agent (next to a real one in the same capture) sends 8 MiB STATUS frames, or
 * floods STATUS and STATS. The api refuses the oversized frame from its header (the fake's source
 * ends with a clear INSTANCE_UNAVAILABLE), forwards a flood truncated and rate-limited with a
 * note of what it left out, and keeps serving the real source and the next capture. A client
 * that stops reading meets the hard cap on what the api holds for it: one LIMIT_REACHED, close.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { connect, countTokens, sourceOf, statusesOf, withApiLab } from "./support/api_harness.ts";
import type { Landscape } from "../lab/landscape.ts";
import { DEFAULT_AGENT_PORT } from "../lab/lab_agents.ts";
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { emptySourceStats } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { MAX_STATUS_TEXT } from "../server/agent_status.ts";
import type { ClientSession } from "../server/client_session.ts";
import { decodeMessageEvent } from "../protocol/events.ts";
import { rawWebSocket } from "./support/raw_upgrade.ts";

const FLOOD = 2000;

interface ScriptedAgent {
  /** the deployment that holds router/0 and this agent */
  deployment: string;
  stop(): Promise<void>;
}

/**
 * An HTTPS agent on a loopback address of its own (the api dials every agent on the same
 * port): HELLO, SOURCE, then `script` frames; after those the stream stays open until the
 * api asks it to stop, then it ends like a real agent (final STATS, CAPTURE_STOPPED, END).
 */
async function scriptedAgent(
  lab: Landscape,
  script: () => Iterable<Uint8Array>,
): Promise<ScriptedAgent> {
  const rnd = crypto.getRandomValues(new Uint8Array(3));
  const addr = `127.${1 + rnd[0] % 250}.${rnd[1]}.${2 + rnd[2] % 250}`;
  const cert = await lab.pki.issue("scripted-agent", { server: true, ips: [addr] });
  const streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const hello = {
    healthy: true,
    draining: false,
    id: "scripted-agent",
    version: "0.0.0",
    protocol_version: PROTOCOL_VERSION,
    min_protocol_version: 1,
    active_captures: 0,
  };
  const { promise: listening, resolve } = Promise.withResolvers<void>();
  const server = Deno.serve({
    hostname: addr,
    port: DEFAULT_AGENT_PORT,
    cert: cert.cert,
    key: cert.key,
    onListen: () => resolve(),
  }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/health") return Response.json(hello);
    if (req.method === "POST" && path === "/captures") {
      const start = await req.json();
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(encodeJsonFrame(FrameKind.HELLO, 0, { ...hello, component: "agent" }));
          c.enqueue(encodeJsonFrame(FrameKind.SOURCE, 0, {
            origin: "scripted-agent",
            interface: start.interface,
            link_type: 1,
            snaplen: start.snaplen,
          }));
          streams.add(c);
        },
        // Frames are produced as the api reads, so the flood is real back-pressure, not a
        // test-side buffer of gigabytes.
        pull: (() => {
          let it: Iterator<Uint8Array> | null = null;
          return (c) => {
            it ??= script()[Symbol.iterator]();
            const next = it.next();
            if (!next.done) c.enqueue(next.value);
            else return new Promise<void>(() => {}); // stays open until stopped
          };
        })(),
        cancel() {
          streams.clear();
        },
      });
      return new Response(body, {
        headers: { "content-type": "application/octet-stream", "x-pcap-capture-id": "scripted" },
      });
    }
    if (req.method === "POST" && path.endsWith("/stop")) {
      for (const c of streams) {
        try {
          c.enqueue(encodeJsonFrame(FrameKind.STATS, 0, { ...emptySourceStats(), final: true }));
          c.enqueue(encodeJsonFrame(FrameKind.STATUS, 0, {
            type: "CAPTURE_STOPPED",
            origin: "scripted-agent",
            text: "capture stopped",
          }));
          c.enqueue(encodeFrame(FrameKind.END, 0, new Uint8Array()));
          c.close();
        } catch { /* the api went away */ }
      }
      streams.clear();
      return new Response(null, { status: 202 });
    }
    return Response.json({ type: "INVALID_REQUEST", text: "gone" }, { status: 404 });
  });
  await listening;
  const r0 = lab.vm("router", 0);
  const deployment = `flood-${rnd[0]}-${rnd[1]}`;
  lab.director.deployments.push({
    name: deployment,
    instances: [
      { job: "router", index: 0, id: r0.id, ips: [r0.ip] },
      { job: "scripted", index: 0, id: crypto.randomUUID(), ips: [addr] },
    ],
  });
  return {
    deployment,
    stop: async () => {
      for (const c of streams) {
        try {
          c.close();
        } catch { /* cancelled */ }
      }
      lab.director.deployments = lab.director.deployments.filter((d) => d.name !== deployment);
      await server.shutdown();
    },
  };
}

/** A STATUS frame whose JSON payload is about `bytes` long. */
function statusFrame(bytes: number, type = "CONGESTED"): Uint8Array {
  return encodeJsonFrame(FrameKind.STATUS, 0, {
    type,
    origin: "scripted-agent",
    text: "A".repeat(bytes - 80),
  });
}

Deno.test("api: an agent's oversized or flooding control frames stay bounded", async (t) => {
  await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
    const token = await lab.mintToken();
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
    const a = await startApi();
    const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });

    /** The real source streams every packet sent to it; the api answers /health. */
    const realSourceServes = async (c: ReturnType<typeof connect>, port: number) => {
      const realSrc = sourceOf(c.got, r0);
      const sent = await lab.traffic.udp({ from: r1, to: r0, port, count: 10, rate: 200 });
      await c.waitFor("real packets", (r) => {
        const got = countTokens(r.tokens.get(realSrc) ?? []);
        return sent.every((tk) => got.get(tk) === 1);
      });
      const h = await fetch(`${a.url.replace(/^ws/, "http")}/health`, { client });
      assertEquals(h.status, 200);
      await h.body?.cancel();
      return realSrc;
    };

    try {
      await t.step("8 MiB STATUS frames: refused from the header, the source ends", async () => {
        const agent = await scriptedAgent(lab, function* () {
          for (let i = 0; i < 3; i++) yield statusFrame(8 * 1024 * 1024 - 16);
        });
        const c = connect(lab, a.url, token);
        try {
          c.start({
            bosh: { deployment: agent.deployment, groups: ["router", "scripted"] },
            filter: "udp port 5701",
          });
          await c.waitFor(
            "the scripted agent's source fails, the real one streams",
            (r) =>
              statusesOf(r, "INSTANCE_UNAVAILABLE").length > 0 &&
              r.sources.some((x) => (x.instance as { id: string })?.id === r0.id),
          );
          const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
          assertEquals(un.length, 1, JSON.stringify(un));
          assertMatch(
            un[0].text as string,
            /STATUS frame of \d+ bytes exceeds the 65536-byte limit for control frames/,
          );
          // No STATUS text of the agent's ever reached the client.
          assert(c.got.statuses.every((s) => (s.text as string).length < 2 * MAX_STATUS_TEXT));
          const realSrc = await realSourceServes(c, 5701);
          c.send({ type: "stop" });
          assertEquals((await c.closed).code, 1000);
          assertEquals(c.got.stats.filter((s) => s.source === realSrc && s.final).length, 1);
        } finally {
          c.close();
          await agent.stop();
        }
      });

      await t.step("a STATUS and STATS flood: truncated, rate-limited, counted", async () => {
        let produced = 0;
        const agent = await scriptedAgent(lab, function* () {
          yield encodePacketsFrame(
            0,
            1,
            encodeRecords([{ tsNs: 1n, data: new Uint8Array(60) }]),
          );
          for (let i = 0; i < FLOOD; i++) {
            produced++;
            yield statusFrame(32 * 1024);
            yield encodeJsonFrame(FrameKind.STATS, 0, { ...emptySourceStats(), received: i });
          }
        });
        const c = connect(lab, a.url, token);
        try {
          c.start({
            bosh: { deployment: agent.deployment, groups: ["router", "scripted"] },
            filter: "udp port 5702",
          });
          await c.waitFor("the scripted source", (r) => r.sources.length === 2);
          const fakeSrc = c.got.sources.find((s) => s.origin !== sourceOriginOf(c, r0.id))!
            .source;
          await c.waitFor("the whole flood read by the api", () => produced === FLOOD, 60_000);
          const realSrc = await realSourceServes(c, 5702);
          c.send({ type: "stop" });
          assertEquals((await c.closed).code, 1000, JSON.stringify(c.got.statuses.slice(-3)));
          const fromFake = c.got.statuses.filter((s) => s.source === fakeSrc);
          // Far fewer than the agent sent, each truncated to about 1 KiB ...
          assert(fromFake.length < FLOOD / 10, `${fromFake.length} of ${FLOOD} forwarded`);
          for (const s of fromFake) {
            assert((s.text as string).length < MAX_STATUS_TEXT + 200, "status text truncated");
          }
          assertMatch(fromFake[0].text as string, /truncated: the agent sent \d+ characters/);
          // ... forwarded ones say how many were left out, and how the source ended gets through.
          assert(
            fromFake.some((s) =>
              /\d+ earlier status message\(s\) .* left out/.test(s.text as string)
            ),
            "a note of the suppressed messages",
          );
          assertEquals(fromFake.filter((s) => s.type === "CAPTURE_STOPPED").length, 1);
          assertEquals(c.got.stats.filter((s) => s.source === realSrc && s.final).length, 1);
          assertEquals(c.got.stats.filter((s) => s.source === fakeSrc && s.final).length, 1);
          assert(
            a.logs.some((l) => l.includes("agent floods status messages")),
            "the flood is logged",
          );
        } finally {
          c.close();
          await agent.stop();
        }
      });

      await t.step(
        "a client that stops reading: the hard cap ends the capture clearly",
        async () => {
          const held = { maxBufferedBytes: 256 * 1024, maxHeldBytes: 264 * 1024 };
          const sessions: ClientSession[] = [];
          const b = await startApi({}, { clientBuffer: held, onSession: (s) => sessions.push(s) });
          const agent = await scriptedAgent(lab, function* () {
            const batch = encodeRecords(
              Array.from(
                { length: 4 },
                (_, i) => ({ tsNs: BigInt(i), data: new Uint8Array(1000) }),
              ),
            );
            for (;;) {
              for (let i = 0; i < 20; i++) yield encodePacketsFrame(0, 4, batch);
              yield statusFrame(2048);
              yield encodeJsonFrame(FrameKind.STATS, 0, emptySourceStats());
            }
          });
          const ws = await rawWebSocket(`${b.url}/v1/capture/bosh`, {
            authorization: `Bearer ${token}`,
          }, lab.pki.caCert);
          try {
            await ws.sendText(JSON.stringify({
              type: "start",
              protocol_version: PROTOCOL_VERSION,
              interface: "eth0",
              snaplen: 65535,
              bosh: { deployment: agent.deployment, groups: ["scripted"] },
            }));
            // The test reads nothing until the api has given up on it.
            await until(
              "LIMIT_REACHED audited",
              () => b.audit.some((l) => l.outcome === "LIMIT_REACHED"),
              90_000,
            );
            const line = b.audit.find((l) => l.outcome === "LIMIT_REACHED")!;
            assertEquals(line.user, "admin");
            assertMatch(line.detail as string, /reads too slowly.*hard cap of 270336/);
            // What the api held for this client stayed at the hard cap (plus its last STATUS).
            assertEquals(sessions.length, 1);
            const high = sessions[0].bufferedHighWater;
            assert(high <= held.maxHeldBytes + 2048, `held up to ${high} bytes`);
            // Reading now, the client finds the clear message last, then the close.
            const frames = await ws.readAll();
            const close = frames.at(-1)!;
            assertEquals(close.opcode, 8);
            assertEquals(new DataView(close.payload.buffer).getUint16(0), 1008);
            assertEquals(new TextDecoder().decode(close.payload.subarray(2)), "LIMIT_REACHED");
            const last = decodeMessageEvent(frames.filter((f) => f.opcode === 2).at(-1)!.payload);
            assert(last.kind === "status", last.kind);
            assertEquals(last.status.type, "LIMIT_REACHED");
            assertEquals(last.status.limit, { name: "client_buffer_bytes", value: 270336 });
            // The api keeps serving.
            const h = await fetch(`${b.url.replace(/^ws/, "http")}/health`, { client });
            assertEquals(h.status, 200);
            await h.body?.cancel();
          } finally {
            ws.close();
            await agent.stop();
          }
        },
      );
    } finally {
      client.close();
    }
  });
});

async function until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function sourceOriginOf(c: ReturnType<typeof connect>, id: string): unknown {
  return c.got.sources.find((s) => (s.instance as { id: string })?.id === id)?.origin;
}
