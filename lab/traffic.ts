// Traffic generators and sinks that run inside the lab's namespaces (small python3 programs run
// with `ip netns exec`), plus a tcpdump helper and a marker reader for checking captures.
// Every payload starts with `<marker>:<seq>;` so a test knows exactly which packets must appear.
import { type Netns, run } from "./netns.ts";

/** A place traffic comes from or goes to: a VM, or the host (netns null). */
export interface Endpoint {
  ip: string;
  netns: string | null;
}

export interface SendOptions {
  from: Endpoint;
  to: Endpoint;
  port: number;
  /** packets (UDP) or segments (TCP) */
  count: number;
  /** per second; 0 = as fast as possible (default 1000) */
  rate?: number;
  /** [A-Za-z0-9_-]{1,32}; default a fresh random one */
  marker?: string;
  /** payload bytes, padded with '.' (default: just the marker) */
  size?: number;
  /** first sequence number (default 1) */
  first?: number;
}

export interface SteadyOptions extends Omit<SendOptions, "count"> {
  /** run a sink on `to` that receives (default true) */
  sink?: boolean;
  proto?: "udp" | "tcp";
}

export interface SteadyTraffic {
  marker: string;
  /** stops sender and sink; sent = packets sent, received = packets the sink got (or null) */
  stop(): Promise<{ sent: number; received: number | null }>;
}

export interface CaptureOptions {
  on: Endpoint;
  /** default eth0 (lo when the endpoint is in the host namespace) */
  device?: string;
  filter?: string;
  /** exit after this many packets */
  count?: number;
  file: string;
}

export interface RunningCapture {
  file: string;
  /** waits until tcpdump exits by itself (count reached); kills it after timeoutMs */
  done(timeoutMs: number): Promise<void>;
  /** stops tcpdump (SIGINT: it flushes the file) */
  stop(): Promise<void>;
}

const MARKER_RE = /^[A-Za-z0-9_-]{1,32}$/;
const TOKEN_RE = /([A-Za-z0-9_-]{1,32}):(\d{6,});/g;
const MAX_PAYLOAD = 1400; // below the veth MTU, so one marker is one packet

// SIGTERM only sets a flag checked between packets, so the reported counts are exact.
const SENDER = `
import socket, sys, time, signal
mode, host, port, count, rate, marker, size, first = sys.argv[1:9]
port, count, rate, size, first = int(port), int(count), float(rate), int(size), int(first)
stop = [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
if mode == "tcp":
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
i = 0
while (count < 0 or i < count) and not stop[0]:
    if rate > 0:
        d = t0 + i / rate - time.monotonic()
        if d > 0: time.sleep(d)
        if stop[0]: break
    p = ("%s:%06d;" % (marker, first + i)).encode()
    p += b"." * (size - len(p))
    if mode == "tcp": s.sendall(p)
    else: s.sendto(p, (host, port))
    i += 1
if mode == "tcp":
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096): pass
s.close()
print(i, flush=True)
`;

const SINK = `
import socket, sys, signal, threading
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = [0]
stop = [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if mode == "udp" else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
if mode == "tcp": s.listen(64)
s.settimeout(0.1)
print("ready", flush=True)
def serve(c):
    c.settimeout(None)
    while True:
        d = c.recv(65536)
        if not d: break
        n[0] += d.count(b";")
    c.close()
while not stop[0]:
    try:
        if mode == "udp":
            s.recv(65535); n[0] += 1
        else:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    except socket.timeout:
        pass
if mode == "udp":
    # Count what already sits in the socket buffer: it was delivered before the stop.
    s.setblocking(False)
    try:
        while True:
            s.recv(65535); n[0] += 1
    except OSError:
        pass
print(n[0], flush=True)
`;

/** The marker tokens a send produces, in order. Pure. */
export function markerTokens(marker: string, count: number, first = 1): string[] {
  return Array.from({ length: count }, (_, i) => `${marker}:${String(first + i).padStart(6, "0")}`);
}

/** Marker tokens (`m1:000001`) found in payload bytes, in order. Pure. */
export function tokensIn(payload: Uint8Array | string): string[] {
  const text = typeof payload === "string" ? payload : new TextDecoder("latin1").decode(payload);
  return [...text.matchAll(TOKEN_RE)].map((m) => `${m[1]}:${m[2]}`);
}

export function randomMarker(): string {
  return "m" + crypto.randomUUID().replaceAll("-", "").slice(0, 10);
}

function hexToBytes(hex: string): Uint8Array {
  const clean = hex.replace(/[^0-9a-f]/gi, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Marker tokens in the UDP/TCP payloads of a pcap/pcapng file, read with tshark. */
export async function readMarkers(file: string): Promise<string[]> {
  const r = await run("tshark", [
    "-r",
    file,
    "-n",
    "-T",
    "fields",
    "-E",
    "separator=,",
    "-e",
    "udp.payload",
    "-e",
    "tcp.payload",
  ]);
  return r.stdout.split("\n").flatMap((line) => tokensIn(hexToBytes(line)));
}

function validate(o: { port: number; marker?: string; size?: number; rate?: number }): void {
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) {
    throw new Error(`traffic: port ${o.port} out of range 1..65535`);
  }
  if (o.marker !== undefined && !MARKER_RE.test(o.marker)) {
    throw new Error(`traffic: marker "${o.marker}" must match ${MARKER_RE}`);
  }
  if (o.size !== undefined && (o.size < 0 || o.size > MAX_PAYLOAD)) {
    throw new Error(`traffic: size ${o.size} out of range 0..${MAX_PAYLOAD}`);
  }
  if (o.rate !== undefined && !(o.rate >= 0)) throw new Error(`traffic: rate ${o.rate} < 0`);
}

/** Reads a child's stdout in the background; lets callers wait for a line. */
class Output {
  text = "";
  readonly closed: Promise<void>;
  #waiters: Array<() => void> = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    this.closed = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of stream) {
        this.text += dec.decode(chunk, { stream: true });
        this.#waiters.splice(0).forEach((w) => w());
      }
      this.#waiters.splice(0).forEach((w) => w());
    })().catch(() => {});
  }

  async waitFor(re: RegExp, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    this.closed.then(() => ended = true);
    while (!re.test(this.text)) {
      if (ended) throw new Error(`${what} ended before it was ready: ${this.text.trim()}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${what} not ready within ${timeoutMs} ms: ${this.text.trim()}`);
      }
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((r) => this.#waiters.push(r)),
        new Promise<void>((r) => t = setTimeout(r, left)),
      ]);
      clearTimeout(t);
    }
  }
}

/** Runs traffic programs in the namespaces of one lab; every process is tracked by netns. */
export class Traffic {
  #netns: Netns;

  constructor(netns: Netns) {
    this.#netns = netns;
  }

  /** Sends `count` UDP datagrams; resolves with the marker tokens sent once all are out. */
  udp(o: SendOptions): Promise<string[]> {
    return this.#send("udp", o);
  }

  /** Starts a TCP sink on `to`, sends `count` marked segments over one connection, stops the sink. */
  async tcp(o: SendOptions): Promise<string[]> {
    const sink = await this.sink("tcp", o.to, o.port);
    try {
      return await this.#send("tcp", o);
    } finally {
      await sink.stop();
    }
  }

  /** A receiver on `to` that counts datagrams (UDP) or markers (TCP); ready when resolved. */
  async sink(proto: "udp" | "tcp", to: Endpoint, port: number) {
    validate({ port });
    const child = this.#netns.spawn(to.netns, ["python3", "-c", SINK, proto, to.ip, String(port)], {
      stdout: "piped",
      stderr: "piped",
    });
    const out = new Output(child.stdout);
    const err = new Output(child.stderr);
    try {
      await out.waitFor(/ready/, 10_000, `${proto} sink on ${to.ip}:${port}`);
    } catch (e) {
      await this.#netns.kill(child);
      await Promise.all([out.closed, err.closed]);
      throw new Error(`${(e as Error).message} ${err.text.trim()}`);
    }
    return {
      stop: async (): Promise<number> => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await child.status;
        await Promise.all([out.closed, err.closed]);
        return Number(out.text.trim().split("\n").pop()) || 0;
      },
    };
  }

  async #send(mode: "udp" | "tcp", o: SendOptions): Promise<string[]> {
    validate(o);
    if (!Number.isInteger(o.count) || o.count < 1 || o.count > 1_000_000) {
      throw new Error(`traffic: count ${o.count} out of range 1..1000000`);
    }
    const marker = o.marker ?? randomMarker();
    const rate = o.rate ?? 1000;
    const first = o.first ?? 1;
    const child = this.#spawnSender(mode, o, marker, o.count, rate, first);
    // Generous bound: the paced duration plus start-up.
    const limitMs = (rate > 0 ? (o.count / rate) * 1000 * 2 : 0) + 15_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), limitMs));
    const out = await Promise.race([child.output(), timeout]);
    clearTimeout(timer);
    if (!out) {
      await this.#netns.kill(child);
      throw new Error(
        `traffic: ${mode} sender ${o.from.ip}→${o.to.ip}:${o.port} ran over ${limitMs} ms`,
      );
    }
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop();
      throw new Error(`traffic: ${mode} sender ${o.from.ip}→${o.to.ip}:${o.port} failed: ${err}`);
    }
    return markerTokens(marker, o.count, first);
  }

  #spawnSender(
    mode: "udp" | "tcp",
    o: Omit<SendOptions, "count">,
    marker: string,
    count: number,
    rate: number,
    first: number,
  ): Deno.ChildProcess {
    const args = [mode, o.to.ip, o.port, count, rate, marker, o.size ?? 0, first].map(String);
    return this.#netns.spawn(o.from.netns, ["python3", "-c", SENDER, ...args], {
      stdout: "piped",
      stderr: "piped",
    });
  }

  /** Background traffic at `rate` until stop(), e.g. for the demo; with a sink on `to`. */
  async steady(o: SteadyOptions): Promise<SteadyTraffic> {
    validate(o);
    const proto = o.proto ?? "udp";
    const marker = o.marker ?? randomMarker();
    const sink = o.sink === false && proto === "udp" ? null : await this.sink(proto, o.to, o.port);
    let child: Deno.ChildProcess;
    try {
      child = this.#spawnSender(proto, o, marker, -1, o.rate ?? 100, o.first ?? 1);
    } catch (e) {
      await sink?.stop();
      throw e;
    }
    const out = new Output(child.stdout);
    const err = new Output(child.stderr);
    return {
      marker,
      stop: async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await child.status;
        await Promise.all([out.closed, err.closed]);
        const received = sink ? await sink.stop() : null;
        return { sent: Number(out.text.trim().split("\n").pop()) || 0, received };
      },
    };
  }

  /** Starts `tcpdump -w file` on an endpoint's device; resolves once it is listening. */
  async tcpdump(o: CaptureOptions): Promise<RunningCapture> {
    const device = o.device ?? (o.on.netns ? "eth0" : "lo");
    // Immediate mode: without it packets wait in the kernel ring and a SIGINT loses them.
    const args = [
      "tcpdump",
      "-i",
      device,
      "-n",
      "-U",
      "--immediate-mode",
      "-Z",
      "root",
      "-w",
      o.file,
    ];
    if (o.count !== undefined) args.push("-c", String(o.count));
    if (o.filter) args.push(o.filter);
    const child = this.#netns.spawn(o.on.netns, args, { stdout: "null", stderr: "piped" });
    const err = new Output(child.stderr);
    const what = `tcpdump on ${device}${o.on.netns ? ` in ${o.on.netns}` : ""}`;
    try {
      await err.waitFor(/listening on/, 10_000, what);
    } catch (e) {
      await this.#netns.kill(child);
      await err.closed;
      throw e;
    }
    const finish = async () => {
      await child.status;
      await err.closed;
    };
    return {
      file: o.file,
      done: async (timeoutMs: number) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const t = new Promise<boolean>((r) => timer = setTimeout(() => r(true), timeoutMs));
        const timedOut = await Promise.race([child.status.then(() => false), t]);
        clearTimeout(timer);
        if (timedOut) {
          child.kill("SIGINT");
          await finish();
          throw new Error(`${what}: count not reached within ${timeoutMs} ms; ${err.text.trim()}`);
        }
        await finish();
      },
      stop: async () => {
        try {
          child.kill("SIGINT");
        } catch { /* gone */ }
        await finish();
      },
    };
  }
}
