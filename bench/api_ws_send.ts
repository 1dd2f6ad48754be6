/**
 * Relative benchmark of the api → client WebSocket send path over TLS on loopback: Deno's own
 * WebSocket (Deno.serve + Deno.upgradeWebSocket, what the api used before) against the api's
 * framing (node:https upgrade + server/ws_connection.ts). The same client (cli/tls_websocket.ts)
 * reads; the sender keeps at most 16 MiB unsent, as the merger does. Each server runs in its own
 * process; prints MB/s and the server's CPU per MB, alternating runs. Compare the two, not the
 * absolute figures (on a loaded machine both vary).
 *
 *   deno run -A bench/api_ws_send.ts [--mb 256] [--frame 262144] [--runs 3]
 *
 * @module
 */
import { createServer } from "node:https";
import { TlsWebSocket } from "../cli/tls_websocket.ts";
import { WsConnection } from "../server/ws_connection.ts";
import { switchingProtocols } from "../server/http_listener.ts";
import { Pki } from "../lab/pki.ts";

const arg = (name: string, dflt: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
};
const TOTAL = arg("mb", 256) * 1024 * 1024;
const FRAME = arg("frame", 256 * 1024);
const RUNS = arg("runs", 3);
const MAX_UNSENT = 16 * 1024 * 1024;

interface Sock {
  send(d: Uint8Array): void;
  readonly bufferedAmount: number;
}

/** Sends TOTAL bytes in FRAME-byte messages, holding at most MAX_UNSENT. */
async function pump(ws: Sock): Promise<void> {
  const frame = new Uint8Array(FRAME).fill(1);
  for (let sent = 0; sent < TOTAL;) {
    while (ws.bufferedAmount > MAX_UNSENT) await new Promise((r) => setTimeout(r, 1));
    ws.send(frame);
    sent += FRAME;
  }
}

/** Connects the reader; resolves with the seconds from open to the last byte. */
function read(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new TlsWebSocket(new URL(url), ca, {});
    let got = 0, t0 = 0;
    ws.onopen = () => (t0 = performance.now());
    ws.onmessage = (e) => {
      got += (e.data as Uint8Array).byteLength;
      if (got >= TOTAL) {
        resolve((performance.now() - t0) / 1000);
        ws.close();
      }
    };
    ws.onerror = (e) => reject(new Error(e.message));
  });
}

/** utime + stime of a process, in ms (from /proc; clock ticks are 10 ms here). */
function cpuMsOf(pid: number): number {
  const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

const serveMode = Deno.args[Deno.args.indexOf("--serve") + 1];
if (Deno.args.includes("--serve")) {
  // child: serve one implementation until killed; the parent reads
  const [cert, key] = [Deno.env.get("BENCH_CERT")!, Deno.env.get("BENCH_KEY")!];
  const port = serveMode === "deno" ? await serveDeno(cert, key) : await serveOwn(cert, key);
  console.log(port);
  await new Promise(() => {});
}

function serveDeno(cert: string, key: string): number {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", cert, key, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => pump(socket);
    return response;
  });
  return server.addr.port;
}

async function serveOwn(cert: string, key: string): Promise<number> {
  const server = createServer({ cert, key });
  server.on("upgrade", (req, socket, head) => {
    socket.write(switchingProtocols(String(req.headers["sec-websocket-key"])));
    pump(
      new WsConnection(socket, head, {
        maxMessageBytes: 64 * 1024,
        idleTimeoutMs: 0,
        onMessage() {},
        onClose() {},
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as { port: number }).port;
}

const dir = await Deno.makeTempDir({ prefix: "pcap-bench-ws-" });
const children: Deno.ChildProcess[] = [];
try {
  const pki = await Pki.create(dir);
  const tls = await pki.issue("api", { server: true, ips: ["127.0.0.1"] });
  const servers: Record<string, { pid: number; port: number }> = {};
  for (const mode of ["deno", "own"]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", import.meta.filename!, "--serve", mode, ...Deno.args],
      env: { BENCH_CERT: tls.cert, BENCH_KEY: tls.key },
      stdout: "piped",
    }).spawn();
    children.push(child);
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    servers[mode] = { pid: child.pid, port: Number(new TextDecoder().decode(value).trim()) };
  }
  const mb = TOTAL / 1e6;
  for (let i = 0; i < RUNS; i++) {
    for (const [name, mode] of [["Deno WebSocket", "deno"], ["api framing", "own"]] as const) {
      const { pid, port } = servers[mode];
      const cpu0 = cpuMsOf(pid);
      const secs = await read(`wss://127.0.0.1:${port}/`, pki.caCert);
      const cpuMs = cpuMsOf(pid) - cpu0;
      console.log(
        `${name.padEnd(15)} ${(mb / secs).toFixed(0).padStart(5)} MB/s  ` +
          `server ${(cpuMs / mb).toFixed(2)} ms CPU/MB`,
      );
    }
  }
} finally {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
    await c.status;
  }
  await Deno.remove(dir, { recursive: true });
}
