/**
 * Dials one agent over mutual TLS (DESIGN §5): POST /captures and hands back the decoded frame
 * stream, whose HELLO is the compatibility check; stop() asks the agent to drain.
 * The agent is dialled by IP; the TLS client (server/agent_stream_tls.ts for the capture stream,
 * server/tls_fetch.ts for the rest) verifies either that IP (a SAN of the agent's
 * certificate) or agents_mtls.server_name, or nothing with agents_mtls.skip_verify.
 */
import {
  type AssembledFrame,
  decodeJson,
  type Frame,
  FrameAssembler,
  FrameKind,
  MAX_CONTROL_PAYLOAD_BYTES,
} from "../protocol/frame_codec.ts";
import type { AgentStartRequest } from "../protocol/messages.ts";
import { readHello } from "../protocol/hello.ts";
import { readLimited } from "../lib/read_limited.ts";
import { withHeaderRoom } from "../lib/ws_framing.ts";
import { IdleWatch } from "../lib/idle_watch.ts";
import { createTlsFetch, type TlsFetch } from "./tls_fetch.ts";
import { type BodyChunks, requestOverSocket, usable as socketUsable } from "./agent_stream_tls.ts";

export interface AgentTlsOptions {
  /** PEM of the CA that signs agent certificates */
  ca: string;
  /** the api's client certificate and key (PEM) */
  cert: string;
  key: string;
  serverName?: string;
  skipVerify: boolean;
}

export interface AgentEndpoint {
  /** "group/index (id)", for messages */
  origin: string;
  host: string;
  port: number;
}

export type AgentErrorKind = "unreachable" | "tls" | "timeout" | "refused" | "protocol";

/** A failure talking to one agent; `message` is user-facing and names the agent. */
export class AgentError extends Error {
  constructor(readonly kind: AgentErrorKind, message: string) {
    super(message);
    this.name = "AgentError";
  }
}

interface RawResponse {
  status: number;
  header(name: string): string | null;
  body: ReadableStream<Uint8Array> | null;
  /** the body read straight from its socket (agent_stream_tls.ts): then `body` is unused */
  chunks?: BodyChunks | null;
}

interface Transport {
  /** whether stream() reads its socket only on demand (holding the stream back reaches TCP) */
  readonly stopsWhenUnread: boolean;
  /** the capture stream's request */
  stream(
    path: string,
    body: string,
    signal: AbortSignal,
    onSecureConnect?: () => void,
  ): Promise<RawResponse>;
  request(
    method: "GET" | "POST",
    path: string,
    body: string | undefined,
    signal: AbortSignal,
    onSecureConnect?: () => void,
  ): Promise<RawResponse>;
  close(): void;
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * The agent's base URL over the shared TLS client (one per capture: its connection); the capture
 * stream over its own socket where agent_stream_tls.ts can keep the TLS settings.
 */
class AgentTransport implements Transport {
  #tls: TlsFetch;
  readonly stopsWhenUnread: boolean;
  constructor(private readonly ep: AgentEndpoint, private readonly opts: AgentTlsOptions) {
    this.#tls = createTlsFetch(opts);
    this.stopsWhenUnread = socketUsable(opts);
  }
  stream(
    path: string,
    body: string,
    signal: AbortSignal,
    onSecureConnect?: () => void,
  ): Promise<RawResponse> {
    if (!this.stopsWhenUnread) return this.request("POST", path, body, signal, onSecureConnect);
    return requestOverSocket(
      this.ep.host,
      this.ep.port,
      this.opts,
      {
        method: "POST",
        path,
        body,
        headers: { "content-type": "application/json" },
      },
      signal,
      onSecureConnect,
    );
  }
  async request(
    method: "GET" | "POST",
    path: string,
    body: string | undefined,
    signal: AbortSignal,
    onSecureConnect?: () => void,
  ): Promise<RawResponse> {
    const res = await this.#tls.fetch(
      `https://${hostForUrl(this.ep.host)}:${this.ep.port}${path}`,
      {
        method,
        body,
        headers: body ? { "content-type": "application/json" } : {},
        signal,
        onSecureConnect,
      },
    );
    return { status: res.status, header: (n: string) => res.headers.get(n), body: res.body };
  }
  close() {
    this.#tls.close();
  }
}

/** Classifies a transport failure into a sentence naming the agent and what to check. */
export function describeDialError(ep: AgentEndpoint, e: unknown, timeoutMs: number): AgentError {
  const where = `agent ${ep.origin} at ${ep.host}:${ep.port}`;
  const err = e as Error & { code?: string; cause?: Error };
  if (err?.name === "TimeoutError") {
    return new AgentError(
      "timeout",
      `${where} did not answer within ${timeoutMs} ms (timeouts.agent_connect)`,
    );
  }
  const text = [err?.message, err?.cause?.message].filter(Boolean).join(": ");
  if (/certificate|tls|handshake|altname|UnknownIssuer|self.signed|peer/i.test(text)) {
    return new AgentError(
      "tls",
      `${where}: TLS handshake failed (${short(text)}); check that its certificate is signed ` +
        "by agents_mtls.ca and names the address or agents_mtls.server_name",
    );
  }
  return new AgentError("unreachable", `${where} is unreachable: ${short(text)}`);
}

function short(text: string): string {
  // fetch errors repeat the URL; keep the cause, bounded.
  const m = /\): (.*)$/.exec(text);
  return (m ? m[1] : text).slice(0, 300);
}

export interface DialOptions {
  endpoint: AgentEndpoint;
  tls: AgentTlsOptions;
  request: AgentStartRequest;
  /** bound of the start request until the response headers arrive */
  timeoutMs: number;
  /** aborts everything (client gone) */
  signal: AbortSignal;
  /** called once the TLS handshake with the agent is done (for the fan-out's timings) */
  onSecureConnect?: () => void;
}

/** A running capture on one agent. */
export class AgentCapture {
  readonly #transport: Transport;
  readonly #abort: AbortController;
  readonly #body: BodyReader;
  #closed = false;
  /** holding this stream back (not reading it) leaves the agent's bytes in TCP */
  readonly stopsWhenUnread: boolean;
  /** the agent's id, from its HELLO ("" until that arrived) */
  agentId = "";

  private constructor(
    readonly endpoint: AgentEndpoint,
    readonly captureId: string,
    transport: Transport,
    abort: AbortController,
    body: BodyReader,
  ) {
    this.#transport = transport;
    this.#abort = abort;
    this.#body = body;
    this.stopsWhenUnread = transport.stopsWhenUnread;
  }

  /** POST /captures; resolves once the stream has begun (the HELLO is checked in frames()). */
  static async dial(opts: DialOptions): Promise<AgentCapture> {
    const { endpoint: ep, timeoutMs } = opts;
    const transport: Transport = new AgentTransport(ep, opts.tls);
    const abort = new AbortController();
    const onOuterAbort = () => abort.abort(opts.signal.reason);
    opts.signal.addEventListener("abort", onOuterAbort, { once: true });
    const timer = setTimeout(
      () => abort.abort(new DOMException("agent connect timeout", "TimeoutError")),
      timeoutMs,
    );
    try {
      // No separate GET /health round trip (it cost every agent a request and the fan-out a
      // round trip): a draining agent refuses the POST with 503, an agent that cannot serve
      // this api's protocol refuses it with 400 (the request carries protocol_version), and
      // the agent's own version is checked on its HELLO, the stream's first frame.
      const res = await transport.stream(
        "/captures",
        JSON.stringify(opts.request),
        abort.signal,
        opts.onSecureConnect,
      ).catch((e) => {
        throw describeDialError(ep, abort.signal.reason ?? e, timeoutMs);
      });
      if (res.status !== 200 || !res.body) {
        const body = await readJson(res, ep);
        throw new AgentError(
          res.status === 429 || res.status === 503 ? "refused" : "protocol",
          `agent ${ep.origin} refused the capture (${res.status})${agentText(body)}`,
        );
      }
      const id = res.header("x-pcap-capture-id") ?? "";
      return new AgentCapture(ep, id, transport, abort, bodyReader(res.body, res.chunks));
    } catch (e) {
      abort.abort();
      transport.close();
      opts.signal.removeEventListener("abort", onOuterAbort);
      if (e instanceof AgentError) throw e;
      throw describeDialError(ep, abort.signal.reason ?? e, timeoutMs);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The agent's frames, decoded. Ends normally only after END; a stream that breaks or ends
   * without END throws AgentError("unreachable"). The HELLO is version-checked here.
   * `idleMs` bounds silence (agents send STATS every second), so a vanished VM is noticed.
   * PACKETS frames for which `discardHint()` is true (the client is congested) are assembled
   * in reused memory: such a frame is `borrowed`, valid only until the next one is taken.
   * Others own their buffer (`bytes`, the whole frame), which may be forwarded as is.
   * While the consumer holds a frame the stream is not read: that is the back-pressure.
   */
  async *frames(idleMs: number, discardHint?: () => boolean): AsyncGenerator<AssembledFrame> {
    // Control frames are bounded from their header: an agent cannot make the api buffer 8 MiB
    // of STATUS text.
    const assembler = new FrameAssembler(
      discardHint && ((kind) => kind === FrameKind.PACKETS && discardHint()),
      // owned frames keep room for the client's WebSocket header (forwarded in one write)
      { maxControlPayload: MAX_CONTROL_PAYLOAD_BYTES, allocate: withHeaderRoom },
    );
    const reader = this.#body;
    // While the consumer holds a frame (it pauses reading while the client is congested), the
    // agent's silence is ours, not the agent's.
    let holding = false;
    const idle = new IdleWatch(
      idleMs,
      () => this.#abort.abort(new DOMException("agent idle", "TimeoutError")),
      () => holding,
    );
    try {
      while (true) {
        let chunk: Uint8Array | null;
        try {
          chunk = await reader.read();
        } catch (e) {
          const reason = this.#abort.signal.reason;
          if (reason?.name === "TimeoutError") {
            throw new AgentError(
              "timeout",
              `agent ${this.endpoint.origin} sent nothing for ${idleMs} ms; giving up on it`,
            );
          }
          throw new AgentError(
            "unreachable",
            `lost the connection to agent ${this.endpoint.origin}: ${short(String(e))}`,
          );
        }
        if (chunk === null) {
          throw new AgentError(
            "unreachable",
            `agent ${this.endpoint.origin} closed its stream before the end of the capture`,
          );
        }
        idle.touch();
        const frames = assembler.frames(chunk);
        for (;;) {
          let next: IteratorResult<AssembledFrame>;
          try {
            next = frames.next();
          } catch (e) {
            throw new AgentError(
              "protocol",
              `agent ${this.endpoint.origin} sent a malformed stream: ${(e as Error).message}`,
            );
          }
          if (next.done) break;
          const f = next.value;
          if (f.kind === FrameKind.HELLO) this.#checkHello(f);
          holding = true;
          yield f;
          holding = false;
          if (f.kind === FrameKind.END) return;
        }
      }
    } finally {
      idle.stop();
    }
  }

  #checkHello(f: Frame): void {
    const ep = this.endpoint;
    let json: unknown;
    try {
      json = decodeJson(f);
    } catch { /* reported as invalid below */ }
    const read = readHello(json, { peer: `agent ${ep.origin}`, self: "api" });
    if ("problem" in read) throw new AgentError("protocol", read.problem);
    this.agentId = read.hello.id;
  }

  /** Asks the agent to stop and drain (POST /captures/:id/stop); failures are returned. */
  async stop(timeoutMs: number): Promise<AgentError | null> {
    if (this.#closed) return null;
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), this.#abort.signal]);
    try {
      const res = await this.#transport.request(
        "POST",
        `/captures/${encodeURIComponent(this.captureId)}/stop`,
        undefined,
        signal,
      );
      await res.body?.cancel();
      // 404: the capture already ended on its own (duration); its stream says so.
      return res.status === 202 || res.status === 404 ? null : new AgentError(
        "protocol",
        `agent ${this.endpoint.origin} answered the stop request with ${res.status}`,
      );
    } catch (e) {
      return describeDialError(this.endpoint, e, timeoutMs);
    }
  }

  /** Drops the connection at once; the agent stops within a second. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    this.#body.cancel();
    this.#transport.close();
  }
}

/** A capture stream's body, in chunks valid until the next read. */
interface BodyReader {
  /** the next chunk, or null at the body's end */
  read(): Promise<Uint8Array | null>;
  cancel(): void;
}

const READ_BYTES = 64 * 1024;

/**
 * The body's reader: straight from the socket where the transport offers it (agent_stream_tls),
 * else the stream's. Fetch bodies are byte streams: reading them "byob" into one reused buffer
 * spares a fresh chunk per read, i.e. ~150 MB/s of short-lived buffers at full rate from 10
 * agents, which the api's RSS would otherwise carry until V8 collects them. The chunk a read
 * returns is valid until the next read (the frame assembler copies what it keeps).
 */
function bodyReader(body: ReadableStream<Uint8Array>, chunks?: BodyChunks | null): BodyReader {
  if (chunks) return chunks;
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream (node:https transport)
    const reader = body.getReader();
    return {
      read: async () => {
        const r = await reader.read();
        return r.done ? null : r.value;
      },
      cancel: () => void reader.cancel().catch(() => {}),
    };
  }
  let buf: ArrayBuffer | null = new ArrayBuffer(READ_BYTES);
  return {
    async read() {
      // The buffer is transferred into the read and comes back with the result.
      const r = await byob.read(new Uint8Array(buf ?? new ArrayBuffer(READ_BYTES)));
      buf = r.value ? r.value.buffer as ArrayBuffer : null;
      return r.done ? null : r.value!;
    },
    cancel: () => void byob.cancel().catch(() => {}),
  };
}

async function readJson(res: RawResponse, ep: AgentEndpoint): Promise<Record<string, unknown>> {
  try {
    const v = JSON.parse(await readLimited(new Response(res.body), 64 * 1024));
    return v && typeof v === "object" ? v : {};
  } catch {
    if (res.status === 200) {
      throw new AgentError("protocol", `agent ${ep.origin} answered with a body that is not JSON`);
    }
    return {};
  }
}

function agentText(body: Record<string, unknown>): string {
  return typeof body.text === "string" ? `: ${body.text.slice(0, 500)}` : "";
}
