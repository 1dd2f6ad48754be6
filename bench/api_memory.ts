// Memory: the api process's RSS while N agents stream at full rate into one client that reads
// slowly (one WebSocket message per 50 ms). The client is a minimal WebSocket over TLS written
// here on purpose: the WebSocket API reads the socket eagerly and buffers in the client, so only
// a client that really leaves bytes in the TCP socket makes the api hold (or discard) them.
// RSS is sampled from /proc/<pid>/status every 100 ms; VmHWM gives the peak. After the slow
// phase the client stops the capture and reads the rest fast to get the final STATS
// (api_dropped) and the CONGESTED statuses.
//   deno run -A bench/api_memory.ts [--quick]
import type { Landscape } from "../lab/landscape.ts";
import { decodeApiMessage } from "../cli/api_session.ts";
import type { SourceStats } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { genTargets, startBenchApi, startBenchLab } from "./fan_in.ts";
import {
  compileGenerator,
  FILTER,
  generateAll,
  HEADERS,
  sleep,
  statusKb,
  table,
} from "./bench_support.ts";

/** A WebSocket client (RFC 6455, client side only) that reads a message only when asked. */
class SlowWebSocket {
  #conn: Deno.TlsConn;
  #buf = new Uint8Array(0);

  private constructor(conn: Deno.TlsConn) {
    this.#conn = conn;
  }

  static async connect(url: URL, path: string, token: string, ca: string) {
    const conn = await Deno.connectTls({
      hostname: url.hostname,
      port: Number(url.port),
      caCerts: [ca],
    });
    const ws = new SlowWebSocket(conn);
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await ws.#write(new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        `Authorization: Bearer ${token}\r\n\r\n`,
    ));
    let end = -1;
    while ((end = findHeaderEnd(ws.#buf)) < 0) await ws.#fill();
    const head = new TextDecoder().decode(ws.#buf.subarray(0, end));
    if (!/^HTTP\/1\.1 101/.test(head)) {
      conn.close();
      throw new Error(`slow client: upgrade refused: ${head.split("\r\n")[0]}`);
    }
    ws.#buf = ws.#buf.slice(end + 4);
    return ws;
  }

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("slow client: connection closed");
    const b = new Uint8Array(this.#buf.length + n);
    b.set(this.#buf);
    b.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = b;
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) await this.#fill();
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  async #write(b: Uint8Array): Promise<void> {
    for (let off = 0; off < b.length;) off += await this.#conn.write(b.subarray(off));
  }

  /** Sends one masked frame (client frames must be masked). */
  async send(opcode: number, payload: Uint8Array): Promise<void> {
    const len = payload.length;
    const head = len < 126
      ? [0x80 | opcode, 0x80 | len]
      : [0x80 | opcode, 0x80 | 126, len >> 8, len & 255];
    const mask = crypto.getRandomValues(new Uint8Array(4));
    const out = new Uint8Array(head.length + 4 + len);
    out.set(head);
    out.set(mask, head.length);
    for (let i = 0; i < len; i++) out[head.length + 4 + i] = payload[i] ^ mask[i & 3];
    await this.#write(out);
  }

  sendText(text: string): Promise<void> {
    return this.send(0x1, new TextEncoder().encode(text));
  }

  /** Next data message (answers pings); null once the server closed. */
  async next(): Promise<Uint8Array | string | null> {
    const parts: Uint8Array[] = [];
    let kind = 0;
    for (;;) {
      const [b0, b1] = await this.#take(2);
      let len = b1 & 0x7f;
      if (len === 126) len = new DataView((await this.#take(2)).buffer).getUint16(0);
      else if (len === 127) {
        len = Number(new DataView((await this.#take(8)).buffer).getBigUint64(0));
      }
      const payload = await this.#take(len); // server frames are not masked
      const op = b0 & 0x0f;
      if (op === 0x8) return null;
      if (op === 0x9) {
        await this.send(0xa, payload);
        continue;
      }
      if (op === 0xa) continue;
      if (op !== 0) kind = op;
      parts.push(payload);
      if (b0 & 0x80) {
        const all = parts.length === 1 ? parts[0] : concat(parts);
        return kind === 0x1 ? new TextDecoder().decode(all) : all;
      }
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

function findHeaderEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export interface MemoryOptions {
  quick?: boolean;
  lab?: Landscape;
  agents?: number;
}

export async function runApiMemoryBench(o: MemoryOptions = {}): Promise<string> {
  const n = o.agents ?? 10;
  const secs = o.quick ? 10 : 25;
  const payload = 1458; // 1500-byte frames
  const perVm = 10_000; // pps per VM: 10 × 15 MB/s offered into the api
  const readEveryMs = 50;
  const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-mem-" });
  const lab = o.lab ?? await startBenchLab(n);
  let ws: SlowWebSocket | null = null;
  try {
    const vms = lab.vms.slice(0, n);
    const gen = await compileGenerator(tmp);
    const apiPid = await startBenchApi(lab);
    const startKb = statusKb(apiPid, "VmRSS");
    ws = await SlowWebSocket.connect(
      new URL(lab.apiUrl!),
      "/v1/capture/bosh",
      await lab.mintToken(),
      lab.pki.caCert,
    );
    await ws.sendText(JSON.stringify({
      type: "start",
      protocol_version: PROTOCOL_VERSION,
      bosh: { deployment: vms[0].deployment, instances: vms.map((v) => `${v.group}/${v.index}`) },
      interface: "eth0",
      snaplen: 65535,
      filter: FILTER,
    }));
    const finals = new Map<number, SourceStats>();
    let messages = 0, packets = 0, sources = 0;
    const api = { begun: 0, cleared: 0 }, agents = { begun: 0, cleared: 0 };
    const handle = (m: Uint8Array | string) => {
      messages++;
      const e = decodeApiMessage(m);
      if (e.kind === "packets") packets += e.count;
      else if (e.kind === "source") sources++;
      else if (e.kind === "stats" && e.stats.final) finals.set(e.source, e.stats);
      else if (e.kind === "status" && e.status.type === "CONGESTED") {
        const who = e.status.origin === "api" ? api : agents;
        if (e.status.counts?.cleared) who.cleared++;
        else who.begun++;
      }
    };
    // Fast until every agent streams, then slow.
    while (sources < n) {
      const m = await ws.next();
      if (m === null) throw new Error("slow client: the api closed before all sources started");
      handle(m);
    }
    const gens = generateAll(gen, genTargets(lab, vms), payload, perVm, perVm * secs);
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(statusKb(apiPid, "VmRSS")), 100);
    let slowDone = false;
    gens.finally(() => slowDone = true);
    try {
      while (!slowDone) {
        const m = await ws.next();
        if (m === null) break;
        handle(m);
        await sleep(readEveryMs);
      }
    } finally {
      clearInterval(sampler);
    }
    const g = await gens;
    const hwmKb = statusKb(apiPid, "VmHWM");
    await ws.sendText(JSON.stringify({ type: "stop" }));
    for (let m; (m = await ws.next()) !== null;) handle(m);
    const sum = (k: keyof SourceStats) =>
      [...finals.values()].reduce((s, x) => s + Number(x[k]), 0);
    const h = Math.floor(samples.length / 2);
    const half = (i: number) =>
      Math.round(Math.max(0, ...(i ? samples.slice(h) : samples.slice(0, h))) / 1024);
    const mbs = (perVm * n * (payload + HEADERS) / 1e6).toFixed(0);
    const text = [
      `Memory: ${n} agents × ${perVm} pps of ${payload + HEADERS}-byte frames (${mbs} MB/s ` +
      `offered) for ${g.secs.toFixed(1)} s; the client reads one message per ${readEveryMs} ms`,
      "",
      table(["api", "value"], [
        ["RSS before the capture, MB", Math.round(startKb / 1024)],
        ["peak RSS (sampled every 100 ms), first half of the run, MB", half(0)],
        ["peak RSS, second half, MB", half(1)],
        ["RSS at the end of the slow phase, MB", Math.round((samples.at(-1) ?? 0) / 1024)],
        ["VmHWM (peak resident since start), MB", Math.round(hwmKb / 1024)],
        ["packets sent by the generators", g.sent],
        ["packets the client received", packets],
        ["messages the client read", messages],
        ["api_dropped (final STATS, all sources)", sum("api_dropped")],
        ["agent_dropped", sum("agent_dropped")],
        ["kernel + engine drops", sum("dropped") + sum("if_dropped") + sum("engine_dropped")],
        ["api CONGESTED statuses (begun / cleared)", `${api.begun} / ${api.cleared}`],
        ["agents' CONGESTED statuses (begun / cleared)", `${agents.begun} / ${agents.cleared}`],
      ]),
    ].join("\n");
    console.log(text + "\n");
    return text;
  } catch (e) {
    lab.dumpLogs(20);
    throw e;
  } finally {
    ws?.close();
    await lab.stopApi();
    if (!o.lab) await lab.stop();
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  console.log("## Memory\n");
  await runApiMemoryBench({ quick: Deno.args.includes("--quick") });
}
