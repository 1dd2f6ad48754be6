/**
 * Oversized client messages on the api's capture WebSocket (issue 12, defect 2), against the real
 * api process: a single frame whose header announces 200 MiB, and a message of 128 MiB split into
 * many small continuation frames. The message-size limit must hold in the framing layer: the
 * connection is closed with 1009 as soon as a header or the fragments so far pass 64 KiB, the
 * api's peak RSS does not grow by more than a few MiB, and another user's capture works after.
 * Also a client that sends a large message right behind its upgrade request, before the 101.
 */
import { isRoot } from "../../lab/netns.ts";
import { Landscape } from "../../lab/landscape.ts";
import { decodeApiMessage } from "../../cli/api_session.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { drain, encodeRawFrame, RawWebSocket } from "./support/raw_ws.ts";
import { alive, pidByArg, procSample, record } from "./support/chaos.ts";

const root = isRoot();
const MiB = 1024 * 1024;
/**
 * What the api's peak RSS may grow by while refusing: what its TLS socket read before the cut
 * (socket buffers, a few MiB), not the message (200 and 128 MiB offered).
 */
const MAX_GROWTH_KB = 16 * 1024;
/** the api cut the connection long before the message was through */
const MAX_WRITTEN = 32 * MiB;
const CHUNK = 64 * 1024;

/** Writes `frames` (repeated `times`) until done or the api cuts; returns the bytes written. */
async function push(ws: RawWebSocket, first: Uint8Array, next: Uint8Array, times: number) {
  let written = 0;
  try {
    await ws.write(first);
    written += first.byteLength;
    for (let i = 0; i < times; i++) {
      await ws.write(next);
      written += next.byteLength;
    }
  } catch { /* the api closed: what we wanted */ }
  return written;
}

interface Outcome {
  close: number | null;
  reason: string;
  written: number;
  growthKb: number;
}

/** Sends one oversized message while reading what the api answers; the api's HWM growth. */
async function oversized(
  url: string,
  token: string,
  caCert: string,
  pid: number,
  first: Uint8Array,
  next: Uint8Array,
  times: number,
): Promise<Outcome> {
  const before = procSample(pid).hwmKb;
  const ws = await RawWebSocket.connect({
    url,
    path: "/v1/capture/bosh",
    headers: { authorization: `Bearer ${token}` },
    caCert,
  });
  let reason = "";
  const reading = (async () => {
    for (;;) {
      const m = await ws.next();
      if (m === null) return null;
      if (typeof m === "object" && "close" in m) {
        reason = m.reason;
        return m.close;
      }
    }
  })();
  const written = await push(ws, first, next, times);
  const close = await reading;
  ws.close();
  return { close, reason, written, growthKb: procSample(pid).hwmKb - before };
}

/** The upgrade request followed at once by 64 MiB of frames; whether the api ends it. */
async function beforeTheAnswer(url: string, token: string, caCert: string, pid: number) {
  const before = procSample(pid).hwmKb;
  const u = new URL(url);
  const conn = await Deno.connectTls({
    hostname: u.hostname,
    port: Number(u.port),
    caCerts: [caCert],
  });
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const request = new TextEncoder().encode(
    `GET /v1/capture/bosh HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      `Authorization: Bearer ${token}\r\n\r\n`,
  );
  const frame = encodeRawFrame({ opcode: 0x1, payload: new Uint8Array(CHUNK), fin: false });
  const reading = (async () => {
    const buf = new Uint8Array(64 * 1024);
    while ((await conn.read(buf).catch(() => null)) !== null) { /* until the api ends it */ }
    return true;
  })();
  let written = 0;
  try {
    for (let off = 0; off < request.length;) off += await conn.write(request.subarray(off));
    for (let i = 0; i < (64 * MiB) / CHUNK; i++) {
      for (let off = 0; off < frame.length;) off += await conn.write(frame.subarray(off));
      written += frame.length;
    }
  } catch { /* cut by the api */ }
  const ended = await reading;
  try {
    conn.close();
  } catch { /* closed */ }
  return { ended, written, growthKb: procSample(pid).hwmKb - before };
}

Deno.test({
  name: "hostile: oversized client messages are refused in the framing layer" +
    (root ? "" : " (ignored)"),
  ignore: !root,
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 }, log: () => {} });
    try {
      const url = await lab.startApi({ log_level: "info" });
      const pid = await pidByArg(`${lab.dir}/api.yml`);
      const token = await lab.mintToken({ userName: "mallory" });
      const payload = new Uint8Array(CHUNK).fill(0x20);

      // (a) one frame announcing 200 MiB, then its payload
      const single = await oversized(
        url,
        token,
        lab.pki.caCert,
        pid,
        encodeRawFrame({ opcode: 0x1, payload: new Uint8Array(), claimedLength: 200 * MiB }),
        payload,
        (200 * MiB) / CHUNK,
      );
      // (b) 128 MiB as 2048 continuation frames of 64 KiB
      const fragmented = await oversized(
        url,
        token,
        lab.pki.caCert,
        pid,
        encodeRawFrame({ opcode: 0x1, payload, fin: false }),
        encodeRawFrame({ opcode: 0x0, payload, fin: false }),
        (128 * MiB) / CHUNK,
      );
      // (c) a message sent with the upgrade request, before the 101 (while the token is verified)
      const early = await beforeTheAnswer(url, token, lab.pki.caCert, pid);
      assert(early.ended, "the connection that sent before the 101 was not closed");
      assert(early.growthKb < MAX_GROWTH_KB, `early bytes: api peak RSS grew ${early.growthKb} kB`);
      record("api websocket oversized messages", {
        early: { ...early, writtenMiB: +(early.written / MiB).toFixed(1) },
        single: { ...single, writtenMiB: +(single.written / MiB).toFixed(1) },
        fragmented: { ...fragmented, writtenMiB: +(fragmented.written / MiB).toFixed(1) },
      });
      for (const [what, o] of [["single frame", single], ["fragmented", fragmented]] as const) {
        assertEquals(o.close, 1009, `${what}: close code (${JSON.stringify(o)})`);
        assert(/too big|exceeds/i.test(o.reason), `${what}: close reason ${o.reason}`);
        assert(o.growthKb < MAX_GROWTH_KB, `${what}: api peak RSS grew ${o.growthKb} kB`);
        assert(o.written < MAX_WRITTEN, `${what}: the api took ${o.written} bytes before the cut`);
      }
      assert(alive(pid), "the api died");
      const log = lab.logs("api");
      assert(/message too big/.test(log), "no log line for the oversized message");
      assert(!log.includes(token), "a token reached the api log");

      // the api keeps serving: another user's capture starts and ends cleanly
      const ws = await RawWebSocket.connect({
        url,
        path: "/v1/capture/bosh",
        headers: { authorization: `Bearer ${await lab.mintToken({ userName: "alice" })}` },
        caCert: lab.pki.caCert,
      });
      await ws.sendText(JSON.stringify({
        type: "start",
        protocol_version: PROTOCOL_VERSION,
        bosh: { deployment: "cf", groups: ["router"] },
        interface: "eth0",
        snaplen: 65535,
        filter: "",
        limits: { duration_ms: 1500 },
      }));
      const kinds: string[] = [];
      const d = await drain(ws, 30_000, (m) => {
        kinds.push(decodeApiMessage(m).kind);
      });
      assertEquals(d.close, 1000, `alice's capture: ${JSON.stringify(kinds.slice(0, 20))}`);
      assert(kinds.includes("source"), `alice's capture had no source: ${kinds.slice(0, 20)}`);
    } catch (e) {
      lab.dumpLogs(30);
      throw e;
    } finally {
      await lab.stopApi();
      await lab.stop();
    }
  },
});
