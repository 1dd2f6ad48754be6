/**
 * Shared set-up for the agent tests: a per-run PKI, agent YAML configs, an in-process agent,
 * mTLS fetch clients, a "VM" namespace wired to a peer namespace, a UDP traffic generator and a
 * reader that decodes the agent's frame stream.
 */
import { Pki } from "../../lab/pki.ts";
import type { CertPair } from "../../lab/pki.ts";
import { Netns, newRunId } from "../../lab/netns.ts";
import {
  decodeJson,
  forEachPacket,
  type Frame,
  FrameDecoder,
  FrameKind,
  validatePackets,
} from "../../protocol/frame_codec.ts";
import { createLogger, type LogLevel } from "../../lib/log.ts";
import { loadAgentConfig } from "../../agent/config.ts";
import { AgentServer } from "../../agent/server.ts";
import { CaptureEngine } from "../../agent/engine/capture_engine.ts";
import type { OpenEngine } from "../../agent/capture_session.ts";

export interface TestPki {
  dir: string;
  pki: Pki;
  server: CertPair;
  client: CertPair;
}

export async function makePki(dir: string): Promise<TestPki> {
  const pki = await Pki.create(`${dir}/pki`, "agent-test-ca");
  const server = await pki.issue("agent", {
    server: true,
    dns: ["localhost"],
    ips: ["127.0.0.1", "198.18.0.1", "198.19.0.1"],
  });
  const client = await pki.issue("pcap-api", { client: true, dns: ["pcap-api.internal"] });
  return { dir, pki, server, client };
}

/** YAML for an agent using the test PKI; `extra` is appended verbatim (top-level keys). */
export function agentYaml(
  t: TestPki,
  opts: { port?: number; address?: string; allowed?: string[]; extra?: string } = {},
): string {
  const allowed = opts.allowed ? `\n    allowed_names: ${JSON.stringify(opts.allowed)}` : "";
  return `id: test-vm/0
log_level: debug
listen:
  address: ${opts.address ?? "127.0.0.1"}
  port: ${opts.port ?? 0}
  tls:
    certificate: ${t.server.certPath}
    private_key: ${t.server.keyPath}
    client_cas: ${t.pki.caPath}${allowed}
${opts.extra ?? ""}`;
}

export interface RunningAgent {
  server: AgentServer;
  port: number;
  logs: Record<string, unknown>[];
  url(path: string): string;
  close(): Promise<void>;
}

export async function startAgent(
  t: TestPki,
  opts: {
    yaml?: string;
    allowed?: string[];
    extra?: string;
    netns?: string;
    openEngine?: OpenEngine;
    statsIntervalMs?: number;
    level?: LogLevel;
  } = {},
): Promise<RunningAgent> {
  const file = `${t.dir}/agent-${crypto.randomUUID().slice(0, 8)}.yml`;
  await Deno.writeTextFile(
    file,
    opts.yaml ?? agentYaml(t, { allowed: opts.allowed, extra: opts.extra }),
  );
  const { config, tls } = await loadAgentConfig(file);
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({
    component: "agent",
    level: opts.level ?? "debug",
    sink: (line) => logs.push(JSON.parse(line)),
  });
  const server = await AgentServer.start({
    config,
    tls,
    log,
    netns: opts.netns,
    openEngine: opts.openEngine ?? ((o) => CaptureEngine.open(o)),
    statsIntervalMs: opts.statsIntervalMs,
  });
  let closed = false;
  return {
    server,
    port: server.port,
    logs,
    url: (path) => `https://localhost:${server.port}${path}`,
    close: async () => {
      if (closed) return;
      closed = true;
      await server.shutdown(5000);
    },
  };
}

export function clientWith(t: TestPki, cert?: CertPair): Deno.HttpClient {
  return Deno.createHttpClient({
    caCerts: [t.pki.caCert],
    ...(cert ? { cert: cert.cert, key: cert.key } : {}),
  });
}

export interface DecodedPacket {
  caplen: number;
  origlen: number;
  data: Uint8Array;
}

export interface StreamResult {
  frames: Frame[];
  kinds: string[];
  json: Record<string, unknown>[];
  packets: DecodedPacket[];
}

const KIND = Object.fromEntries(Object.entries(FrameKind).map(([k, v]) => [v, k]));

/** Decodes one frame into the accumulating result. */
export function addFrame(r: StreamResult, f: Frame): void {
  r.frames.push(f);
  r.kinds.push(KIND[f.kind]);
  if (f.kind === FrameKind.PACKETS) {
    const { records } = validatePackets(f.payload);
    forEachPacket(records, (p, buf) => {
      r.packets.push({
        caplen: p.caplen,
        origlen: p.origlen,
        data: buf.slice(p.offset, p.offset + p.caplen),
      });
    });
  } else if (f.kind !== FrameKind.END && f.kind !== FrameKind.PING) {
    r.json.push({ kind: KIND[f.kind], ...(decodeJson(f) as Record<string, unknown>) });
  }
}

export function emptyResult(): StreamResult {
  return { frames: [], kinds: [], json: [], packets: [] };
}

/**
 * Safety limit put on every test capture (`duration_ms` in startBody): a capture whose stop is
 * broken still ends on its own, so the test fails on its assertions instead of hanging.
 */
export const TEST_CAPTURE_DURATION_MS = 10_000;

/**
 * Deadline of readStream: longer than TEST_CAPTURE_DURATION_MS (so that a capture ended by its
 * duration limit is still read to END) and short enough that a hung agent fails a test fast.
 */
export const STREAM_DEADLINE_MS = 20_000;

/**
 * Reads a capture stream; `onFrame` may return true to stop reading (the reader is then
 * cancelled). Resolves with everything decoded. Reading and `onFrame` together must finish
 * within `deadlineMs`, otherwise the stream is cancelled and readStream rejects saying so.
 */
export async function readStream(
  body: ReadableStream<Uint8Array>,
  onFrame?: (f: Frame, r: StreamResult) => boolean | void | Promise<boolean | void>,
  deadlineMs = STREAM_DEADLINE_MS,
): Promise<StreamResult> {
  const r = emptyResult();
  const dec = new FrameDecoder();
  const reader = body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() =>
      reject(
        new Error(
          `capture stream did not end within ${deadlineMs} ms (frames so far: ` +
            `${r.kinds.join(", ") || "none"}): the agent hangs or ignores stop/duration_ms`,
        ),
      ), deadlineMs);
  });
  const within = <T>(p: Promise<T>): Promise<T> => Promise.race([p, expired]);
  try {
    for (;;) {
      const { done, value } = await within(reader.read());
      if (done) break;
      for (const f of dec.push(value)) {
        addFrame(r, f);
        if (await within(Promise.resolve(onFrame?.(f, r)))) {
          await reader.cancel();
          return r;
        }
      }
    }
    dec.finish();
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
    try {
      reader.releaseLock();
    } catch {
      // a read still pending after a cancel: the stream is done with anyway
    }
  }
  return r;
}

export function statuses(r: StreamResult, type?: string): Record<string, unknown>[] {
  return r.json.filter((j) => j.kind === "STATUS" && (!type || j.type === type));
}

/** A "VM" namespace with a veth to a peer namespace, 198.18.0.1/24 <-> 198.18.0.2/24. */
export interface Lab {
  netns: Netns;
  runId: string;
  vm: string;
  peer: string;
  vmDev: string;
  cleanup(): Promise<void>;
}

export async function makeLab(): Promise<Lab> {
  const runId = newRunId();
  const netns = new Netns(runId);
  try {
    const vm = await netns.addNamespace("vm");
    const peer = await netns.addNamespace("pe");
    const vmDev = `${runId}v`;
    const peerDev = `${runId}p`;
    await netns.addVethPair(vmDev, vm, peerDev, peer);
    await netns.addAddress(vm, vmDev, "198.18.0.1/24");
    await netns.addAddress(peer, peerDev, "198.18.0.2/24");
    await netns.setUp(vm, vmDev);
    await netns.setUp(peer, peerDev);
    return { netns, runId, vm, peer, vmDev, cleanup: () => netns.cleanup() };
  } catch (e) {
    await netns.cleanup();
    throw e;
  }
}

export const MARK_PORT = 9999;

/** Payload of marked datagram i: "PCAPMARK nnnnnn " + i%50 'x'. */
export function markPayloadLength(i: number): number {
  return 16 + (i % 50);
}

/**
 * Sends `count` marked UDP datagrams from the peer namespace to the VM (port 9999), after one
 * warm-up datagram to port 9998 so that ARP is resolved and nothing is queued or lost.
 */
export async function sendMarked(lab: Lab, count: number, first = 0, delayMs = 0): Promise<void> {
  const script = `require "socket"
s = UDPSocket.new
s.send("warmup", 0, "198.18.0.1", 9998)
sleep 0.3
first = ARGV[0].to_i; n = ARGV[1].to_i; d = ARGV[2].to_f / 1000
n.times { |k| i = first + k; s.send(format("PCAPMARK %06d ", i) + "x" * (i % 50), 0, "198.18.0.1", ${MARK_PORT}); sleep d if d > 0 }`;
  await lab.netns.exec(lab.peer, [
    "ruby",
    "-e",
    script,
    String(first),
    String(count),
    String(delayMs),
  ]);
}

const ETH_IP_UDP = 14 + 20 + 8;

/** Sequence numbers of marked datagrams in captured Ethernet frames, checking their lengths. */
export function markedSequence(packets: DecodedPacket[]): number[] {
  const dec = new TextDecoder();
  const seq: number[] = [];
  for (const p of packets) {
    const text = dec.decode(p.data.subarray(ETH_IP_UDP));
    const m = /^PCAPMARK (\d{6}) (x*)$/.exec(text);
    if (!m) continue;
    const i = Number(m[1]);
    if (p.caplen !== p.origlen || p.origlen !== ETH_IP_UDP + markPayloadLength(i)) {
      throw new Error(`packet ${i}: caplen ${p.caplen} origlen ${p.origlen} are wrong`);
    }
    seq.push(i);
  }
  return seq;
}

/** A valid start request on lo, limited to TEST_CAPTURE_DURATION_MS; `extra` overrides fields. */
export function startBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    protocol_version: 1,
    interface: "lo",
    snaplen: 65535,
    duration_ms: TEST_CAPTURE_DURATION_MS,
    ...extra,
  });
}

export async function postJson(
  client: Deno.HttpClient,
  url: string,
  body: string,
): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    client,
    headers: { "content-type": "application/json" },
    body,
  });
}

/** Waits until `cond` holds, polling; throws with `what` after `ms`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `fn` with a fresh test PKI in a temp dir (`prefix`), removed afterwards. */
export async function withPki(prefix: string, fn: (t: TestPki) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await fn(await makePki(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `fn` with a test PKI and a "VM" namespace lab; both are removed afterwards. */
export function withVmLab(
  prefix: string,
  fn: (lab: Lab, t: TestPki) => Promise<void>,
): Promise<void> {
  return withPki(prefix, async (t) => {
    const lab = await makeLab();
    try {
      await fn(lab, t);
    } finally {
      await lab.cleanup();
    }
  });
}

/**
 * Runs `fn` with an in-process agent (`opts` as for startAgent) and an mTLS client holding the
 * test's client certificate; closes both afterwards.
 */
export async function withAgent(
  t: TestPki,
  opts: Parameters<typeof startAgent>[1],
  fn: (agent: RunningAgent, client: Deno.HttpClient) => Promise<void>,
): Promise<void> {
  const agent = await startAgent(t, opts);
  const client = clientWith(t, t.client);
  try {
    await fn(agent, client);
  } finally {
    client.close();
    await agent.close();
  }
}
