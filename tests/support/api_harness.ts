/**
 * Shared set-up for the api tests: a lab landscape (real agents in namespaces, UAA and Director
 * sims, PKI), an in-process api on it (so tests can read its audit lines, logs and metrics and
 * shorten its keepalive), and a WebSocket client that records the decoded frames.
 */
import { stringify } from "yaml";
import { type LabVm, Landscape, type LandscapeOptions } from "../../lab/landscape.ts";
import type { Json } from "../../lab/lab_agents.ts";
import { mergeConfig } from "../../lab/lab_agents.ts";
import { tokensIn } from "../../lab/traffic.ts";
import { loadApiConfig } from "../../server/config.ts";
import { ApiServer, type ApiServerOptions } from "../../server/app.ts";
import { createLogger } from "../../lib/log.ts";
import {
  decodeJson,
  decodeSingleFrame,
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  forEachPacket,
  type Frame,
  FrameKind,
  frameKindName,
  validatePackets,
} from "../../protocol/frame_codec.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";

export interface RunningApi {
  server: ApiServer;
  url: string;
  audit: Record<string, unknown>[];
  logs: string[];
  close(): Promise<void>;
}

/** Starts the api in-process on the landscape, with `extra` merged into the lab's api.yml. */
export async function startApi(
  lab: Landscape,
  extra: Json = {},
  opts: Partial<ApiServerOptions> = {},
): Promise<RunningApi> {
  const file = `${lab.dir}/api-${crypto.randomUUID().slice(0, 8)}.yml`;
  const cfg = lab.apiConfig(8080, mergeConfig({ audit: { file: null } }, extra));
  await Deno.writeTextFile(file, stringify(cfg));
  const config = await loadApiConfig(file);
  const audit: Record<string, unknown>[] = [];
  const logs: string[] = [];
  const server = await ApiServer.start({
    config,
    log: createLogger({ component: "api", level: "debug", sink: (l) => logs.push(l) }),
    auditSink: (l) => audit.push(JSON.parse(l)),
    pingIntervalMs: 500,
    startTimeoutMs: 5000,
    agentIdleTimeoutMs: 5000,
    stopTimeoutMs: 5000,
    port: 0,
    ...opts,
  });
  const url = server.url.replace(/^http/, "ws");
  return { server, url, audit, logs, close: () => server.close() };
}

export interface Received {
  frames: Frame[];
  kinds: string[];
  statuses: Array<Record<string, unknown> & { source: number }>;
  stats: Array<Record<string, unknown> & { source: number }>;
  sources: Array<Record<string, unknown> & { source: number }>;
  /** marker tokens per source */
  tokens: Map<number, string[]>;
  packets: number;
}

export interface WsClient {
  ws: WebSocket;
  got: Received;
  /** resolves with the close event's code and reason */
  closed: Promise<{ code: number; reason: string }>;
  send(msg: unknown): void;
  start(req: Partial<StartRequest> & { bosh: StartRequest["bosh"] }): void;
  waitFor(what: string, pred: (r: Received) => boolean, timeoutMs?: number): Promise<void>;
  close(): void;
}

export interface StartRequest {
  type: "start";
  protocol_version: number;
  bosh: { deployment: string; groups?: string[]; instances?: string[] };
  interface?: string;
  snaplen?: number;
  filter?: string;
  limits?: { duration_ms?: number; max_packets?: number; max_bytes?: number };
}

/** Opens the capture WebSocket; `token` goes in the Authorization header when given. */
export function connect(
  lab: Landscape,
  url: string,
  token: string | null,
  path = "/v1/capture/bosh",
  extraHeaders: Record<string, string> = {},
): WsClient {
  const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
  const headers: Record<string, string> = {
    ...extraHeaders,
    ...(token ? { authorization: `Bearer ${token}` } : {}),
  };
  // deno-lint-ignore no-explicit-any
  const ws = new WebSocket(url + path, { headers, client } as any);
  ws.binaryType = "arraybuffer";
  const got: Received = {
    frames: [],
    kinds: [],
    statuses: [],
    stats: [],
    sources: [],
    tokens: new Map(),
    packets: 0,
  };
  const waiters = new Set<() => void>();
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.onclose = (e) => {
      client.close();
      resolve({ code: e.code, reason: e.reason });
      waiters.forEach((w) => w());
    };
  });
  ws.onmessage = (e) => {
    const f = decodeSingleFrame(new Uint8Array(e.data as ArrayBuffer));
    got.frames.push(f);
    got.kinds.push(frameKindName(f.kind));
    if (f.kind === FrameKind.PACKETS) {
      const { records, count } = validatePackets(f.payload);
      got.packets += count;
      const list = got.tokens.get(f.source) ?? [];
      forEachPacket(records, (p, buf) => {
        list.push(...tokensIn(l4Payload(buf.subarray(p.offset, p.offset + p.caplen))));
      });
      got.tokens.set(f.source, list);
    } else if (f.kind === FrameKind.STATUS) {
      got.statuses.push({ ...(decodeJson(f) as Record<string, unknown>), source: f.source });
    } else if (f.kind === FrameKind.STATS) {
      got.stats.push({ ...(decodeJson(f) as Record<string, unknown>), source: f.source });
    } else if (f.kind === FrameKind.SOURCE) {
      got.sources.push({ ...(decodeJson(f) as Record<string, unknown>), source: f.source });
    }
    waiters.forEach((w) => w());
  };
  let isClosed = false;
  closed.then(() => isClosed = true);
  const opened = new Promise<void>((r) => ws.addEventListener("open", () => r(), { once: true }));
  const send = (msg: unknown) => {
    const text = typeof msg === "string" ? msg : JSON.stringify(msg);
    opened.then(() => ws.readyState === WebSocket.OPEN && ws.send(text));
  };
  return {
    ws,
    got,
    closed,
    send,
    start: (req) =>
      send({
        type: "start",
        protocol_version: PROTOCOL_VERSION,
        interface: "eth0",
        snaplen: 65535,
        ...req,
      }),
    async waitFor(what, pred, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (!pred(got)) {
        if (isClosed && !pred(got)) {
          throw new Error(`${what}: socket closed first; statuses ${JSON.stringify(got.statuses)}`);
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(
            `${what}: not within ${timeoutMs} ms; kinds ${got.kinds.slice(-20).join(",")}; ` +
              `statuses ${JSON.stringify(got.statuses)}`,
          );
        }
        let t: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => {
          waiters.add(r);
          t = setTimeout(r, left);
        }).finally(() => clearTimeout(t));
      }
    },
    close: () => {
      try {
        ws.close();
      } catch { /* closed */ }
    },
  };
}

/** UDP/TCP payload of an Ethernet/IPv4 frame (the marker must not merge with header bytes). */
export function l4Payload(pkt: Uint8Array): Uint8Array {
  if (pkt.length < 34 || pkt[12] !== 0x08 || pkt[13] !== 0x00) return new Uint8Array();
  const ihl = (pkt[14] & 0x0f) * 4;
  const proto = pkt[23];
  const l4 = 14 + ihl;
  if (proto === 17) return pkt.subarray(l4 + 8);
  if (proto === 6) return pkt.subarray(l4 + ((pkt[l4 + 12] >> 4) * 4));
  return new Uint8Array();
}

/** Statuses of a type. */
export function statusesOf(r: Received, type: string) {
  return r.statuses.filter((s) => s.type === type);
}

/** Starts a landscape; the api tests need the host link (default). */
export function startLab(opts: LandscapeOptions): Promise<Landscape> {
  return Landscape.start({ log: () => {}, ...opts });
}

export function sourceOf(r: Received, vm: LabVm): number {
  const s = r.sources.find((x) => (x.instance as { id: string })?.id === vm.id);
  if (!s) throw new Error(`no SOURCE for ${vm.group}/${vm.index}`);
  return s.source;
}

/** Counts of each token in a list. */
export function countTokens(list: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of list) m.set(t, (m.get(t) ?? 0) + 1);
  return m;
}

export interface FakeAgent {
  port: number;
  /** start requests it received */
  starts: number;
  stop(): Promise<void>;
}

/**
 * Agent failures a real agent cannot produce on demand (a real one's mid-capture failure, e.g.
 * its interface going down, is tested with a real agent):
 * - `malformed`: a frame with non-zero flags after HELLO, SOURCE and one packet;
 * - `bad-hello`: a HELLO that is not a valid Hello message;
 * - `old-hello`: a HELLO with protocol_version 0 (below the api's MIN_PEER_VERSION);
 * - `silent`: HELLO, SOURCE, one packet, then nothing while the connection stays open;
 * - `cut`: HELLO, SOURCE, one packet, then the body ends without END.
 */
export type FakeAgentMode = "malformed" | "bad-hello" | "old-hello" | "silent" | "cut";

/** An HTTPS server speaking the agent protocol (docs/protocol.md) that fails as `mode` says. */
export function startFakeAgent(
  cert: { cert: string; key: string },
  o: { mode: FakeAgentMode; hostname?: string; port?: number },
): Promise<FakeAgent> {
  const { promise, resolve } = Promise.withResolvers<number>();
  const health = {
    healthy: true,
    draining: false,
    id: "fake-agent",
    version: "0.0.0",
    protocol_version: PROTOCOL_VERSION,
    min_protocol_version: 1,
    active_captures: 0,
  };
  const open = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const fake = { port: 0, starts: 0, stop: async () => {} };
  const server = Deno.serve({
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    cert: cert.cert,
    key: cert.key,
    onListen: (a) => resolve(a.port),
  }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/health") return Response.json(health);
    if (req.method === "POST" && path === "/captures") {
      const start = await req.json();
      fake.starts++;
      const hello = { ...health, component: "agent" };
      const head = [
        o.mode === "bad-hello"
          ? encodeJsonFrame(FrameKind.HELLO, 0, { component: "agent", hello: "there" })
          : encodeJsonFrame(FrameKind.HELLO, 0, {
            ...hello,
            ...(o.mode === "old-hello" ? { protocol_version: 0, min_protocol_version: 0 } : {}),
          }),
        encodeJsonFrame(FrameKind.SOURCE, 0, {
          origin: "fake-agent",
          interface: start.interface,
          link_type: 1,
          snaplen: start.snaplen,
        }),
        encodePacketsFrame(0, 1, encodeRecords([{ tsNs: 1n, data: new Uint8Array(60) }])),
      ];
      if (o.mode === "malformed") {
        const bad = encodeFrame(FrameKind.PING, 0, new Uint8Array());
        bad[1] = 0x80; // flags must be 0 in v1
        head.push(bad);
      }
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          for (const f of head) c.enqueue(f);
          if (o.mode === "silent") open.add(c);
          else c.close();
        },
        cancel() {
          open.forEach((c) => open.delete(c));
        },
      });
      return new Response(body, {
        headers: { "content-type": "application/octet-stream", "x-pcap-capture-id": "fake-1" },
      });
    }
    if (req.method === "POST" && path.endsWith("/stop")) return new Response(null, { status: 202 });
    return Response.json({ type: "INVALID_REQUEST", text: "gone" }, { status: 404 });
  });
  return promise.then((port) => {
    fake.port = port;
    fake.stop = async () => {
      for (const c of open) {
        try {
          c.close();
        } catch { /* cancelled */ }
      }
      await server.shutdown();
    };
    return fake;
  });
}

/** Starts an in-process api on the test's landscape (see startApi). */
export type ApiStarter = (extra?: Json, opts?: Partial<ApiServerOptions>) => Promise<RunningApi>;

/**
 * Runs `fn` on a fresh landscape; every api it starts through `startApi` is closed afterwards.
 * When `fn` fails the process logs are printed first; the landscape is always torn down.
 */
export async function withApiLab(
  opts: LandscapeOptions,
  fn: (lab: Landscape, startApi: ApiStarter) => Promise<void>,
): Promise<void> {
  const lab = await startLab(opts);
  const apis: RunningApi[] = [];
  try {
    await fn(lab, async (extra, o) => {
      const api = await startApi(lab, extra, o);
      apis.push(api);
      return api;
    });
  } catch (e) {
    lab.dumpLogs(40);
    throw e;
  } finally {
    for (const a of apis) await a.close();
    await lab.stop();
  }
}

/** The router group of the lab's "cf" deployment. */
export const ROUTERS = { deployment: "cf", groups: ["router"] };
