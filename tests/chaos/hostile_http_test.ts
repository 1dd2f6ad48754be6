/**
 * HTTP abuse of the api and agent processes of a lab: hundreds of TCP connections that never start
 * their TLS handshake (thousands in the long form), slowloris requests that trickle their headers
 * over finished handshakes, a 256 KiB header, a 16 MiB body, and a flood of WebSocket pings on a
 * running capture that never reads its pongs. Meanwhile both keep serving: /health answers and a
 * capture through the api starts and stops cleanly; RSS stays bounded and neither process dies.
 */
import { isRoot } from "../../lab/netns.ts";
import { DEFAULT_MAX_CONNECTIONS } from "../../agent/config.ts";
import { Landscape } from "../../lab/landscape.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { drain, RawWebSocket } from "./support/raw_ws.ts";
import { alive, cases, delay, pidByArg, procSample, record } from "./support/chaos.ts";

const root = isRoot();
const IDLE = cases(200, 2_000);
const SLOW = cases(50, 500);
const PINGS = cases(20_000, 200_000);
const enc = new TextEncoder();
const RSS_GROWTH_BOUND_MB = 200;
/** a write that has not gone out after this long means the api stopped reading (back-pressure) */
const STALL_MS = 5_000;

const START = {
  type: "start",
  protocol_version: PROTOCOL_VERSION,
  bosh: { deployment: "cf", groups: ["router"] },
  interface: "eth0",
  filter: "udp port 5960",
};

function closeAll(conns: Deno.Conn[]) {
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed by the server */ }
  }
}

Deno.test({
  name: `hostile: HTTP abuse of the api and the agent (${IDLE} idle, ${SLOW} slowloris, ` +
    `${PINGS} pings)` + (root ? "" : " (ignored)"),
  ignore: !root,
  async fn(t) {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    const conns: Deno.Conn[] = [];
    try {
      const url = await lab.startApi();
      const api = new URL(url);
      const apiPort = Number(api.port);
      const vm = lab.vm("router");
      const apiPid = await pidByArg(`${lab.dir}/api.yml`);
      const agentPid = await pidByArg(`/${lab.agentLogName(vm)}.yml`, vm.netns);
      const startKb = { api: procSample(apiPid).rssKb, agent: procSample(agentPid).rssKb };
      const capture = async () => {
        const ws = await RawWebSocket.connect({
          url,
          path: "/v1/capture/bosh",
          headers: { authorization: `Bearer ${await lab.mintToken()}` },
          caCert: lab.pki.caCert,
        });
        await ws.sendText(JSON.stringify(START));
        let started = false;
        const d = await drain(ws, 60_000, async (m) => {
          if (decodeApiMessage(m).kind === "source" && !started) {
            started = true;
            await ws.sendText(JSON.stringify({ type: "stop" }));
          }
        });
        assert(started && d.close === 1000, `capture: ${JSON.stringify({ ...d, messages: 0 })}`);
      };
      const serving = async (what: string) => {
        const h = await lab.fetchLab(`${url}/health`);
        assertEquals(h.status, 200, `${what}: api health ${await h.text()}`);
        const a = await lab.fetchAgent(vm, "/health");
        assertEquals(a.status, 200, `${what}: agent health`);
        await a.body?.cancel();
        await capture();
        assert(alive(apiPid) && alive(agentPid), `${what}: a process died`);
      };

      await t.step(`${IDLE} TCP connections each that never start TLS`, async () => {
        try {
          for (let i = 0; i < IDLE; i++) {
            conns.push(await Deno.connect({ hostname: "127.0.0.1", port: apiPort }));
            conns.push(await Deno.connect({ hostname: vm.ip, port: vm.agentPort }));
          }
          // The api keeps answering while they are open; the agent caps its connections
          // (listen.max_connections) and refuses new ones at accept until these go away.
          const h = await lab.fetchLab(`${url}/health`);
          assertEquals(h.status, 200, `idle connections open: api health ${await h.text()}`);
        } finally {
          closeAll(conns.splice(0));
        }
        await serving("after the idle connections closed");
      });

      await t.step(`${SLOW} slowloris requests each over finished handshakes`, async () => {
        const agentTls = {
          hostname: vm.ip,
          port: vm.agentPort,
          caCerts: [lab.pki.caCert],
          cert: lab.certs.apiClient.cert,
          key: lab.certs.apiClient.key,
        };
        // The agent takes at most listen.max_connections (64); slowloris over finished handshakes
        // needs the api's client certificate there, so it holds at most that many minus room
        // for the api's own connections (a capture must still reach it).
        const agentSlow = Math.min(SLOW, DEFAULT_MAX_CONNECTIONS - 8);
        for (let i = 0; i < SLOW; i++) {
          const dials = [
            Deno.connectTls({ hostname: "127.0.0.1", port: apiPort, caCerts: [lab.pki.caCert] }),
            ...(i < agentSlow ? [Deno.connectTls(agentTls)] : []),
          ];
          for (const c of await Promise.all(dials)) {
            conns.push(c);
            await c.write(enc.encode("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "));
          }
        }
        let trickling = true;
        const trickle = (async () => {
          while (trickling) {
            for (const c of conns) await c.write(enc.encode("a")).catch(() => {});
            await delay(500);
          }
        })();
        try {
          await serving("slowloris requests open");
        } finally {
          trickling = false;
          await trickle;
          closeAll(conns.splice(0));
        }
      });

      await t.step("a 256 KiB header and a 16 MiB body are refused", async () => {
        const big = "h".repeat(256 * 1024);
        for (
          const send of [
            () => lab.fetchLab(`${url}/health`, { headers: { "x-big": big } }),
            () => lab.fetchAgent(vm, "/health", { headers: { "x-big": big } }),
            () =>
              lab.fetchLab(`${url}/v1/capture/bosh`, {
                method: "POST",
                body: new Uint8Array(16 * 1024 * 1024),
              }),
          ]
        ) {
          try {
            const res = await send();
            await res.body?.cancel();
            assert(res.status >= 400 && res.status < 500, `answered ${res.status}`);
          } catch {
            // the connection cut by the HTTP layer is a refusal too
          }
        }
        await serving("after oversized header and body");
      });

      let pingPeakKb = 0;
      let backPressure = false;
      await t.step(`${PINGS} pings on a capture that never reads its pongs`, async () => {
        // what the earlier steps left (the slowloris' TLS sockets), to tell the flood's own part
        const beforeKb = procSample(apiPid).rssKb;
        const ws = await RawWebSocket.connect({
          url,
          path: "/v1/capture/bosh",
          headers: { authorization: `Bearer ${await lab.mintToken()}` },
          caCert: lab.pki.caCert,
        });
        await ws.sendText(JSON.stringify(START));
        const ping = enc.encode("p".repeat(125));
        let sent = 0;
        try {
          for (; sent < PINGS; sent++) {
            // Pongs we never read fill the socket; then the api stops reading our pings instead of
            // buffering its pongs, and our write stalls: that back-pressure ends the flood.
            let timer: ReturnType<typeof setTimeout> | undefined;
            const stalled = new Promise<"stalled">((r) =>
              timer = setTimeout(() => r("stalled"), STALL_MS)
            );
            const w = await Promise.race([ws.sendFrame({ opcode: 0x9, payload: ping }), stalled]);
            clearTimeout(timer);
            if (w === "stalled") {
              backPressure = true;
              break;
            }
            if (sent % 1000 === 0) pingPeakKb = Math.max(pingPeakKb, procSample(apiPid).rssKb);
          }
        } catch {
          // the api may cut a socket that floods it: also fine, it must just stay up
        }
        pingPeakKb = Math.max(pingPeakKb, procSample(apiPid).rssKb);
        ws.close();
        await serving("after the ping flood");
        const growth = Math.round((pingPeakKb - startKb.api) / 1024);
        assert(growth < RSS_GROWTH_BOUND_MB, `api RSS grew by ${growth} MB under the ping flood`);
        record("http abuse", {
          inputs: IDLE * 2 + SLOW * 2 + 3 + sent,
          crashes: 0,
          idleConnections: IDLE * 2,
          slowloris: SLOW * 2,
          pingsSent: sent,
          pingBackPressure: backPressure,
          apiRssStartMb: Math.round(startKb.api / 1024),
          apiRssBeforePingsMb: Math.round(beforeKb / 1024),
          apiPeakRssMb: Math.round(pingPeakKb / 1024),
          agentRssMb: Math.round(procSample(agentPid).rssKb / 1024),
        });
      });
    } catch (e) {
      lab.dumpLogs(30);
      throw e;
    } finally {
      closeAll(conns);
      await lab.stopApi();
      await lab.stop();
    }
  },
});
