/**
 * The agent's listener bounds (issue 12 defect 7): a TCP connection that never finishes its TLS
 * handshake is closed after listen.tls.handshake_timeout, and beyond listen.max_connections new
 * connections are closed at accept while an established capture keeps streaming. Real mTLS, a
 * real capture on lo, raw TCP sockets as the idle clients.
 */
import dgram from "node:dgram";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./support/assert.ts";
import {
  agentYaml,
  clientWith,
  postJson,
  readStream,
  startAgent,
  startBody,
  type TestPki,
  waitFor,
  withPki,
} from "./support/agent_harness.ts";
import { isRoot } from "../lab/netns.ts";
import { loadAgentConfig } from "../agent/config.ts";
import { ConfigError } from "../lib/config_load.ts";

/** agentYaml with listener bounds set. */
function boundedYaml(
  t: TestPki,
  o: { handshakeTimeout?: string; maxConnections?: number; extra?: string },
) {
  let yaml = agentYaml(t, { extra: o.extra });
  if (o.maxConnections !== undefined) {
    yaml = yaml.replace("  port: 0\n", `  port: 0\n  max_connections: ${o.maxConnections}\n`);
  }
  if (o.handshakeTimeout) {
    yaml = yaml.replace(
      `    client_cas: ${t.pki.caPath}`,
      `    client_cas: ${t.pki.caPath}\n    handshake_timeout: ${o.handshakeTimeout}`,
    );
  }
  return yaml;
}

/** Resolves once the peer closed `conn` (EOF or reset), or rejects after `ms`. */
async function closedByPeer(conn: Deno.Conn, ms: number, what: string): Promise<void> {
  const buf = new Uint8Array(1024);
  await waitForPromise(
    (async () => {
      try {
        while ((await conn.read(buf)) !== null) { /* a TLS alert, then EOF */ }
      } catch { /* reset */ }
    })(),
    ms,
    what,
  );
}

async function waitForPromise<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("handshake timeout: TCP connections that never finish a TLS handshake are closed", () =>
  withPki("agent-hs-", async (t) => {
    const agent = await startAgent(t, { yaml: boundedYaml(t, { handshakeTimeout: "300ms" }) });
    const conns: Deno.Conn[] = [];
    try {
      // Silent sockets, and one that sent half a ClientHello (a TLS record header only).
      for (let i = 0; i < 3; i++) {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port: agent.port }));
      }
      await conns[2].write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]));
      await waitFor(() => agent.server.openConnections === 3, 10_000, "3 open connections");
      // Far beyond the configured 300 ms, far below node's 120 s default.
      for (const [i, c] of conns.entries()) {
        await closedByPeer(c, 30_000, `idle connection ${i} to be closed by the agent`);
      }
      await waitFor(() => agent.server.openConnections === 0, 10_000, "connections counted down");
      const line = agent.logs.find((l) => l.msg === "TLS handshake timed out; connection closed");
      assert(line, "the timeout is logged");
      assertEquals(line.level, "warn");
      assertEquals(line.timeout_ms, 300);
      // A real client still gets served.
      const client = clientWith(t, t.client);
      try {
        const res = await fetch(agent.url("/health"), { client });
        assertEquals(res.status, 200);
        await res.body?.cancel();
      } finally {
        client.close();
      }
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the agent */ }
      }
      await agent.close();
    }
  }));

/** Sends `n` UDP datagrams "CAPMARK i" to 127.0.0.1:port. */
async function sendUdp(port: number, n: number): Promise<void> {
  const s = dgram.createSocket("udp4");
  try {
    for (let i = 0; i < n; i++) {
      await new Promise<void>((resolve, reject) =>
        s.send(`CAPMARK ${i}`, port, "127.0.0.1", (e) => e ? reject(e) : resolve())
      );
    }
  } finally {
    s.close();
  }
}

Deno.test({
  name:
    "connection cap: beyond listen.max_connections new connections are refused, a running capture keeps streaming",
  ignore: !isRoot(),
  fn: () =>
    withPki("agent-cap-", async (t) => {
      const yaml = boundedYaml(t, {
        maxConnections: 5,
        handshakeTimeout: "10m",
        extra: "limits:\n  concurrent_captures: 2\n",
      });
      const agent = await startAgent(t, { yaml });
      const client = clientWith(t, t.client);
      const idle: Deno.Conn[] = [];
      const udpPort = 40000 + Math.floor(Math.random() * 20000);
      try {
        const res = await postJson(
          client,
          agent.url("/captures"),
          startBody({ filter: `udp dst port ${udpPort}`, duration_ms: 60_000 }),
        );
        assertEquals(res.status, 200);
        const id = res.headers.get("x-pcap-capture-id")!;
        let packets = 0;
        let packetsAtCap = -1;
        // The filter admits only our datagrams.
        const reading = readStream(res.body!, (_f, r) => {
          packets = r.packets.length;
        }, 60_000);
        await sendUdp(udpPort, 3);
        await waitFor(() => packets >= 3, 20_000, "packets before the cap");
        // Fill the cap with silent TCP sockets: 1 (the capture) + 4.
        for (let i = 0; i < 4; i++) {
          idle.push(await Deno.connect({ hostname: "127.0.0.1", port: agent.port }));
        }
        await waitFor(() => agent.server.openConnections === 5, 10_000, "5 open connections");
        // One more: the TCP connect succeeds in the kernel, the agent closes it at accept.
        const extra = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
        idle.push(extra);
        await closedByPeer(extra, 20_000, "the connection beyond the cap to be closed");
        const fresh = clientWith(t, t.client);
        try {
          await assertRejects(() => fetch(agent.url("/health"), { client: fresh }), TypeError);
        } finally {
          fresh.close();
        }
        const capLine = agent.logs.find((l) =>
          l.msg === "connection cap reached; new connections are refused"
        );
        assert(capLine, "reaching the cap is logged");
        assertEquals(capLine.max_connections, 5);
        // The established capture still streams.
        packetsAtCap = packets;
        await sendUdp(udpPort, 5);
        await waitFor(() => packets >= packetsAtCap + 5, 20_000, "packets while at the cap");
        // Room again once the idle sockets go: the stop request gets through.
        for (const c of idle) c.close();
        idle.length = 0;
        await waitFor(() => agent.server.openConnections === 1, 10_000, "idle sockets closed");
        const stop = await postJson(client, agent.url(`/captures/${id}/stop`), "");
        assertEquals(stop.status, 202);
        await stop.body?.cancel();
        const result = await reading;
        assertEquals(result.kinds.at(-1), "END");
        assertEquals(packets, 8);
      } finally {
        for (const c of idle) {
          try {
            c.close();
          } catch { /* closed by the agent */ }
        }
        client.close();
        await agent.close();
      }
    }),
});

Deno.test("listener bounds: defaults, and max_connections too small for the captures is a config error", () =>
  withPki("agent-bounds-", async (t) => {
    const file = `${t.dir}/a.yml`;
    await Deno.writeTextFile(file, agentYaml(t));
    const { config } = await loadAgentConfig(file);
    assertEquals(config.listen.handshakeTimeoutMs, 10_000);
    assertEquals(config.listen.maxConnections, 64);
    await Deno.writeTextFile(
      file,
      boundedYaml(t, { maxConnections: 4, extra: "limits:\n  concurrent_captures: 2\n" }),
    );
    const err = await assertRejects(() => loadAgentConfig(file), ConfigError);
    assertStringIncludes(err.message, "listen.max_connections");
    assertStringIncludes(err.message, "at least 5");
    for (const bad of ["0", "-1", '"soon"']) {
      await Deno.writeTextFile(file, boundedYaml(t, { handshakeTimeout: bad }));
      const e = await assertRejects(() => loadAgentConfig(file), ConfigError);
      assertStringIncludes(e.message, "listen.tls.handshake_timeout", bad);
    }
  }));
