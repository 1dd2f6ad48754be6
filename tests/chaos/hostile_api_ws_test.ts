/**
 * Hostile input on the api's capture WebSocket, against the real api process (a crash is a dead
 * pid, not a failed promise). ~300 seeded messages (≥ 10,000 in the long form): random, truncated,
 * oversized, wrong version, mutated field by field (names with path and URL tricks, filters with
 * control characters and breakouts), unknown fields, valid but out of order (stop first, a second
 * start), and WebSocket frames of the wrong kind (reserved opcodes, RSV bits, unmasked, lying
 * lengths, fragmented control frames). Each message gets a clear STATUS before the close, or
 * starts a capture that then stops cleanly; protocol violations are closed. The Director (behind a
 * pass-through proxy that records paths) only ever sees its two routes, whatever the names.
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { FaultProxy } from "../../lab/fault_proxy.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { drain, RawWebSocket } from "./support/raw_ws.ts";
import { hostileBody, TRICKY_FILTERS, TRICKY_NAMES } from "./support/fuzz_inputs.ts";
import { alive, cases, pidByArg, Prng, procSample, record } from "./support/chaos.ts";

const root = isRoot();
const N = cases(300, 10_000);
const ERRORS = new Set([
  "INVALID_REQUEST",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "START_CAPTURE_FAILED",
  "LIMIT_REACHED",
  "CONNECTION_ERROR",
  "INSTANCE_UNAVAILABLE",
]);
const CASE_DEADLINE_MS = 30_000;

const START = {
  type: "start",
  protocol_version: PROTOCOL_VERSION,
  bosh: { deployment: "cf", groups: ["router"] },
  interface: "eth0",
  snaplen: 65535,
  filter: "udp port 5900",
  limits: { duration_ms: 5000 },
};

/** One hostile message sequence for the capture socket. */
function hostileMessages(r: Prng): { kind: string; send: (ws: RawWebSocket) => Promise<void> } {
  const text = (s: string) => (ws: RawWebSocket) => ws.sendText(s);
  switch (r.int(6)) {
    case 0: {
      const at = r.pick(["deployment", "groups", "instances"]);
      const name = r.pick(TRICKY_NAMES);
      const bosh = { ...START.bosh, [at]: at === "deployment" ? name : [name] };
      return { kind: `bosh.${at}`, send: text(JSON.stringify({ ...START, bosh })) };
    }
    case 1:
      return {
        kind: "filter",
        send: text(JSON.stringify({ ...START, filter: r.pick(TRICKY_FILTERS) })),
      };
    case 2: {
      const order = r.pick([
        [{ type: "stop" }, START],
        [START, START],
        [{ type: "ping" }],
        [{ type: "start" }],
        [{ type: r.text(8) }],
      ]);
      return {
        kind: "out of order",
        send: async (ws) => {
          for (const m of order) await ws.sendText(JSON.stringify(m));
        },
      };
    }
    case 3: {
      const frame = r.pick([
        { opcode: 0x3, payload: r.bytes(10) },
        { opcode: 0xb, payload: r.bytes(10) },
        { opcode: 0x1, payload: new TextEncoder().encode(JSON.stringify(START)), rsv: 4 },
        { opcode: 0x1, payload: new TextEncoder().encode("{}"), mask: false },
        { opcode: 0x0, payload: r.bytes(20) },
        { opcode: 0x9, payload: r.bytes(126 + r.int(100)) },
        { opcode: 0x9, payload: r.bytes(10), fin: false },
        { opcode: 0x1, payload: r.bytes(30), claimedLength: 2 ** 40 },
        { opcode: 0x1, payload: new Uint8Array([0xff, 0xfe, 0xc0]) },
        { opcode: 0x8, payload: new Uint8Array([0x03, 0xe7]) },
      ]);
      return { kind: "ws frame", send: (ws) => ws.sendFrame(frame) };
    }
    case 4:
      return { kind: "binary", send: (ws) => ws.sendFrame({ opcode: 0x2, payload: r.bytes(100) }) };
    default: {
      const h = hostileBody(START, r);
      return { kind: h.kind, send: text(h.body) };
    }
  }
}

Deno.test({
  name: `hostile: the api's capture WebSocket (${N} cases)` + (root ? "" : " (ignored)"),
  ignore: !root,
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    const tls = await lab.pki.issue("director-proxy", { server: true, ips: ["127.0.0.1"] });
    const director = await FaultProxy.start({
      target: lab.director.url,
      targetCa: lab.pki.caCert,
      tls,
    });
    try {
      const url = await lab.startApi({
        bosh: { director_url: director.url },
        limits: { per_user_concurrent_captures: 5 },
      });
      const pid = await pidByArg(`${lab.dir}/api.yml`);
      let token = await lab.mintToken();
      const prng = new Prng();
      const outcomes = new Map<string, number>();
      const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
      let peakKb = 0;
      const tokens = [token];
      for (let i = 0; i < N; i++) {
        // a fresh token now and then: the long form outlasts a token's lifetime
        if (i % 200 === 199) tokens.push(token = await lab.mintToken());
        const c = hostileMessages(prng);
        const ws = await RawWebSocket.connect({
          url,
          path: "/v1/capture/bosh",
          headers: { authorization: `Bearer ${token}` },
          caCert: lab.pki.caCert,
        });
        await c.send(ws).catch(() => {}); // the api may close before all is written
        const statuses: Array<{ type: string; text: string }> = [];
        let started = false;
        const d = await drain(ws, CASE_DEADLINE_MS, async (m) => {
          const e = decodeApiMessage(m);
          if (e.kind === "status") statuses.push(e.status);
          if (e.kind === "source" && !started) {
            started = true;
            await ws.sendText(JSON.stringify({ type: "stop" })).catch(() => {});
          }
        });
        const what = `case ${i} (${c.kind}): ${JSON.stringify({ ...d, messages: undefined })} ` +
          JSON.stringify(statuses);
        assert(!d.timedOut, `no close within ${CASE_DEADLINE_MS} ms: ${what}`);
        const errors = statuses.filter((s) => ERRORS.has(s.type));
        if (c.kind === "ws frame") {
          count(`ws frame: close ${d.close ?? "cut"}`);
        } else if (started) {
          count("capture started and stopped");
        } else {
          assert(errors.length > 0, `no clear error: ${what}`);
          for (const s of errors) {
            assert(
              s.text.length > 10 &&
                !/api error:|internal error|\[object|TypeError|at file:/i.test(s.text),
              `unclear error text: ${what}`,
            );
          }
          count(errors[0].type);
        }
        if (i % 25 === 24) {
          assert(alive(pid), `the api died at case ${i}`);
          peakKb = Math.max(peakKb, procSample(pid).rssKb);
          const h = await lab.fetchLab(`${url}/health`);
          assertEquals(h.status, 200, `health after case ${i}: ${await h.text()}`);
        }
      }
      assert(alive(pid), "the api died");
      // whatever the names, the Director saw only its own routes with one path segment each
      const paths = new Set(director.seen.map((s) => s.path));
      for (const p of paths) {
        assert(/^\/(info|deployments\/[^/]+\/instances)$/.test(p), `Director asked for ${p}`);
        const dep = /^\/deployments\/([^/]+)\//.exec(p)?.[1];
        if (dep) assert(!decodeURIComponent(dep).includes("/"), `deployment ${dep} broke out`);
      }
      const log = lab.logs("api");
      assert(tokens.every((tk) => !log.includes(tk)), "a token reached the api log");
      assert(!outcomes.has("UNAUTHENTICATED"), "a case ran with an expired token");
      assert(!/uncaught|panicked/i.test(log), "the api log shows an uncaught error");
      record("api websocket fuzz", {
        inputs: N,
        crashes: 0,
        apiPeakRssMb: Math.round(peakKb / 1024),
        directorPaths: paths.size,
        outcomes: Object.fromEntries(outcomes),
      });
    } catch (e) {
      lab.dumpLogs(30);
      throw e;
    } finally {
      await lab.stopApi();
      await director.stop();
      await lab.stop();
    }
  },
});
