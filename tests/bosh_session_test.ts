/**
 * The client's side of a connection that goes silent: a real WebSocket server on loopback that
 * speaks the api's protocol, sends a source and two packets and then nothing (no PINGs, no END),
 * like an api behind a path that died. The client must give up with a clear message, exit 1 and
 * still leave a valid capture file, read back with capinfos.
 */
import { CaptureRun } from "../cli/bosh_capture.ts";
import { startRequest } from "../cli/bosh_main.ts";
import { parseBoshCaptureArgs } from "../cli/bosh_flags.ts";
import { BufferedOutput } from "../cli/capture_output.ts";
import { ProgressDisplay } from "../cli/progress.ts";
import {
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { API_SOURCE } from "../server/merge.ts";
import { run } from "../lab/netns.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

Deno.test("client: a silent api is given up after the idle timeout; the file stays valid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_idle_" });
  const sockets: WebSocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    // idleTimeout 0: the server itself never pings, so nothing at all reaches the client.
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    sockets.push(socket);
    socket.onopen = () => {
      socket.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
        protocol_version: 1,
        min_protocol_version: 1,
        component: "api",
        version: "test",
        id: "silent-api",
      }));
      socket.send(encodeJsonFrame(FrameKind.SOURCE, 0, {
        origin: "router/0 (abc)",
        interface: "eth0",
        link_type: 1,
        snaplen: 65535,
        instance: { deployment: "cf", group: "router", index: 0, id: "abc" },
      }));
      const pkt = new Uint8Array(60).fill(0x42);
      socket.send(encodePacketsFrame(
        0,
        2,
        encodeRecords([{ tsNs: 1_000_000_000n, data: pkt }, { tsNs: 2_000_000_000n, data: pkt }]),
      ));
      // ... and then silence.
    };
    return response;
  });
  try {
    const file = `${dir}/silent.pcapng`;
    const o = parseBoshCaptureArgs(
      ["-d", "cf", "-g", "router", "-o", file, "-u", `http://127.0.0.1:${server.addr.port}`],
      { HOME: dir },
    );
    let stderr = "";
    const io = {
      env: {},
      writeErr: (s: string) => (stderr += s),
      stderrIsTty: false,
      stdoutIsTty: false,
      signals: [],
      apiIdleTimeoutMs: 1500,
    };
    const progress = new ProgressDisplay({ write: io.writeErr, tty: false, quiet: false });
    const output = await BufferedOutput.open(file, {});
    const runner = new CaptureRun(o, io, progress, output, { comment: "idle test" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([
      runner.run("Bearer not-a-real-token", undefined, startRequest(o)),
      new Promise<string>((r) => timer = setTimeout(() => r("hung"), 15_000)),
    ]);
    clearTimeout(timer);
    assertEquals(code, 1, stderr);
    assertMatch(stderr, /connection to the pcap api lost: nothing received for 2 s/);
    const info = await run("capinfos", ["-c", "-M", file]);
    assertMatch(info.stdout, /Number of packets:\s+2\b/);
    assert(!stderr.includes("not-a-real-token"));
  } finally {
    for (const s of sockets) {
      try {
        s.close();
      } catch { /* closed */ }
    }
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
