/**
 * Hostile tokens on the api's capture socket, against the real api process. Beyond
 * tests/api_auth_e2e_test.ts (missing, garbage, query token, Basic, expired, wrong key, unknown
 * kid, alg none, HS256 with the public key, wrong iss): forged headers (kid path traversal, jku and
 * x5u pointing at a recorder that must never be asked, crit, JWE-shaped, ES/PS algorithms),
 * wrong segment counts, non-base64 segments, a 100 KB token, one-character mutations of a real
 * token, control and non-ASCII characters in the header value, and tokens in the query string
 * under every usual parameter name. Each gets a clear refusal (UNAUTHENTICATED on the socket, or
 * a 4xx from the HTTP layer for a header it cannot parse); the token never reaches the log.
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { Recorder } from "../../lab/fault_proxy.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { drain, RawWebSocket, UpgradeRefused } from "./support/raw_ws.ts";
import { alive, cases, pidByArg, Prng, record } from "./support/chaos.ts";

const root = isRoot();
const RANDOM = cases(100, 3_000);
const START = {
  type: "start",
  protocol_version: PROTOCOL_VERSION,
  bosh: { deployment: "cf", groups: ["router"] },
  interface: "eth0",
};

const b64 = (v: unknown) =>
  btoa(typeof v === "string" ? v : JSON.stringify(v)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");

Deno.test({
  name: `hostile: forged and malformed tokens (${RANDOM} random + fixed cases)` +
    (root ? "" : " (ignored)"),
  ignore: !root,
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    const tls = await lab.pki.issue("recorder", { server: true, ips: ["127.0.0.1"] });
    const recorder = await Recorder.start(tls);
    try {
      const url = await lab.startApi();
      const pid = await pidByArg(`${lab.dir}/api.yml`);
      const real = await lab.mintToken();
      const [h, p, s] = real.split(".");
      const header = JSON.parse(atob(h.replace(/-/g, "+").replace(/_/g, "/")));
      const forge = (extra: Record<string, unknown>, sig = s) =>
        `${b64({ ...header, ...extra })}.${p}.${sig}`;
      const fixed: Array<[string, string]> = [
        ["kid traversal", forge({ kid: "../../../../etc/passwd" })],
        ["kid huge", forge({ kid: "k".repeat(10_000) })],
        ["kid number", forge({ kid: 7 })],
        ["jku elsewhere", forge({ jku: `${recorder.url}/jwks.json` })],
        ["x5u elsewhere", forge({ x5u: `${recorder.url}/cert.pem` })],
        ["jwk embedded", forge({ jwk: { kty: "RSA", n: "AQAB", e: "AQAB" } })],
        ["crit", forge({ crit: ["exp"] })],
        ["JWE shaped", `${b64({ alg: "RSA-OAEP", enc: "A256GCM" })}.a.b.c.d`],
        ["ES256", forge({ alg: "ES256" })],
        ["PS256", forge({ alg: "PS256" })],
        ["RS512", forge({ alg: "RS512" })],
        ["alg None", forge({ alg: "None" }, "")],
        ["no signature", `${h}.${p}.`],
        ["random signature", forge({}, b64(crypto.getRandomValues(new Uint8Array(256)).join()))],
        ["two segments", `${h}.${p}`],
        ["four segments", `${h}.${p}.${s}.${s}`],
        ["dots only", ".."],
        ["not base64", "%%%.$$$.&&&"],
        ["header not JSON", `${b64("not json")}.${p}.${s}`],
        ["payload not JSON", `${h}.${b64("{claims")}.${s}`],
        ["payload array", `${h}.${b64([1, 2])}.${s}`],
        ["100 KB", `${h}.${b64({ pad: "x".repeat(100_000) })}.${s}`],
        ["spaces", `${h} .${p}.${s}`],
      ];
      const prng = new Prng();
      const random: Array<[string, string]> = Array.from({ length: RANDOM }, (_, i) => {
        const t = real.split("");
        // not the last character: its low 4 bits are padding of the 256-byte signature, so
        // flipping them decodes to the same signature (base64 malleability, not a forgery)
        const at = prng.int(t.length - 1);
        t[at] = String.fromCharCode(
          prng.pick([
            t[at].charCodeAt(0) ^ (1 << prng.int(6)),
            33 + prng.int(94),
            45, // "-"
            46, // "."
          ]),
        );
        return [`mutation ${i} at ${at}`, t.join("")] as [string, string];
      }).filter(([, t]) => t !== real);
      const headerCases: Array<[string, string]> = [
        ["NUL in header", `Bearer ${real}\u0000`],
        ["DEL in header", `Bearer \u007f${real}`],
        ["latin-1 in header", `Bearer ${real}\u00ff`],
        ["two tokens", `Bearer ${real} ${real}`],
        ["lower-case scheme", `bearer ${real}x`],
        ["scheme only", "Bearer"],
      ];
      const outcomes = new Map<string, number>();
      const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
      const attempt = async (what: string, headers: Record<string, string>, path = "") => {
        let ws: RawWebSocket;
        try {
          ws = await RawWebSocket.connect({
            url,
            path: `/v1/capture/bosh${path}`,
            headers,
            caCert: lab.pki.caCert,
          });
        } catch (e) {
          const size = Object.values(headers).join("").length;
          if (!(e instanceof UpgradeRefused) && size > 16 * 1024) {
            count("oversized header: connection cut by the HTTP layer");
            return;
          }
          if (!(e instanceof UpgradeRefused)) throw new Error(`${what}: ${e}`);
          assertMatch(e.statusLine, /^HTTP\/1\.1 4\d\d/, what);
          count(`HTTP ${e.statusLine.split(" ")[1]}`);
          return;
        }
        await ws.sendText(JSON.stringify(START)).catch(() => {});
        const statuses: Array<{ type: string; text: string }> = [];
        const d = await drain(ws, 30_000, (m) => {
          const e = decodeApiMessage(m);
          if (e.kind === "status") statuses.push(e.status);
          assert(e.kind !== "source", `${what}: a capture started`);
        });
        assert(!d.timedOut, `${what}: no close`);
        // 1008, or no close frame at all: our start may reach a socket the api already closed,
        // and the RST that answers it discards the close frame in flight
        assert(d.close === 1008 || d.close === null, `${what}: close ${d.close}`);
        const un = statuses.find((x) => x.type === "UNAUTHENTICATED");
        assert(un && un.text.length > 10, `${what}: ${JSON.stringify(statuses)}`);
        count("UNAUTHENTICATED");
      };
      for (const [what, tok] of [...fixed, ...random]) {
        await attempt(what, { authorization: `Bearer ${tok}` });
      }
      for (const [what, value] of headerCases) await attempt(what, { authorization: value });
      for (const name of ["access_token", "token", "bearer", "authorization", "ACCESS_TOKEN"]) {
        await attempt(`query ${name}`, {}, `?${name}=${encodeURIComponent(real)}`);
      }
      assert(alive(pid), "the api died");
      assertEquals(recorder.seen.length, 0, `the api fetched ${JSON.stringify(recorder.seen)}`);
      const log = lab.logs("api");
      for (const [what, tok] of [...fixed, ...random]) {
        if (tok.length > 40) assert(!log.includes(tok), `${what}: the token reached the log`);
      }
      assert(!log.includes(real), "the real token reached the log");
      const ok = await RawWebSocket.connect({
        url,
        path: "/v1/capture/bosh",
        headers: { authorization: `Bearer ${real}` },
        caCert: lab.pki.caCert,
      });
      await ok.sendText(JSON.stringify(START));
      let started = false;
      await drain(ok, 30_000, async (m) => {
        if (decodeApiMessage(m).kind === "source" && !started) {
          started = true;
          await ok.sendText(JSON.stringify({ type: "stop" }));
        }
      });
      assert(started, "the real token no longer captures");
      record("tokens", {
        inputs: fixed.length + random.length + headerCases.length + 5,
        crashes: 0,
        recorderRequests: recorder.seen.length,
        outcomes: Object.fromEntries(outcomes),
      });
    } catch (e) {
      lab.dumpLogs(30);
      throw e;
    } finally {
      await recorder.stop();
      await lab.stopApi();
      await lab.stop();
    }
  },
});
