/**
 * One `fetch`-shaped HTTPS client for outbound connections (api → agents, Director, UAA, Cloud
 * Controller; the CLI → its UAA) with the TLS settings operators configure: a private CA, an
 * optional client certificate, a server name to verify instead of the dialled host, and
 * skip_verify.
 *
 * Two transports, because Deno's fetch can neither trust a CA *exclusively* (Deno.createHttpClient
 * adds `caCerts` to the default roots, Mozilla's or the system's) nor override the server name or
 * skip verification per client:
 * - node:https whenever a CA is configured: its `ca` replaces the default roots (Deno's node:tls
 *   builds an empty root store for an explicit `ca`, as Node does), so only that CA is trusted;
 *   also for `serverName` (dial the address, verify that name) and `skipVerify`;
 * - fetch with the default roots when no CA is given (a publicly trusted endpoint).
 * Redirects are never followed by either (a redirect could carry a bearer token away).
 */
import https from "node:https";
import type { IncomingMessage } from "node:http";

export interface TlsClientOptions {
  /** PEM of the CA(s) to trust, and nothing else; the default roots apply when absent */
  ca?: string;
  /** client certificate and key (PEM), for mutual TLS */
  cert?: string;
  key?: string;
  /** verify the peer's certificate against this name instead of the dialled host */
  serverName?: string;
  /** accept any peer certificate (operator's explicit choice; logged loudly by the caller) */
  skipVerify?: boolean;
}

export interface TlsRequestInit {
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** called once the TLS handshake is done (node:https transport only; for timings) */
  onSecureConnect?: () => void;
}

export interface TlsFetch {
  fetch(url: string, init?: TlsRequestInit): Promise<Response>;
  close(): void;
  /** which transport serves https URLs (for tests and logs) */
  readonly transport: "fetch" | "node:https";
}

/** Statuses whose responses cannot carry a body in the Fetch API. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** Which transport serves https URLs for these options (pure). */
export function tlsTransport(opts: TlsClientOptions): "fetch" | "node:https" {
  return opts.ca || opts.serverName || opts.skipVerify ? "node:https" : "fetch";
}

export function createTlsFetch(opts: TlsClientOptions): TlsFetch {
  const useNode = tlsTransport(opts) === "node:https";
  // https without a CA (default roots) and plain http; never given the CA, which it would add
  // to the default roots instead of trusting alone.
  const client = opts.cert && opts.key
    ? Deno.createHttpClient({ cert: opts.cert, key: opts.key })
    : Deno.createHttpClient({});
  const agent = useNode ? new https.Agent({ keepAlive: false }) : null;
  let closed = false;
  const viaFetch = (url: string, init: TlsRequestInit = {}) =>
    fetch(url, {
      method: init.method ?? "GET",
      headers: init.headers,
      body: init.body,
      signal: init.signal,
      client,
      redirect: "error",
    });
  return {
    transport: useNode ? "node:https" : "fetch",
    fetch(url, init = {}) {
      // Plain http (loopback development setups) has no TLS settings to honour.
      if (!agent || !url.startsWith("https:")) return viaFetch(url, init);
      return nodeRequest(agent, opts, new URL(url), init);
    },
    close() {
      if (closed) return;
      closed = true;
      client.close();
      agent?.destroy();
    },
  };
}

function nodeRequest(
  agent: https.Agent,
  opts: TlsClientOptions,
  url: URL,
  init: TlsRequestInit,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const body = init.body;
    const signal = init.signal;
    if (signal?.aborted) return reject(signal.reason);
    let response: IncomingMessage | undefined;
    // As fetch does: an abort fails the request, or the body, with the signal's reason (a
    // TimeoutError for AbortSignal.timeout), which callers tell apart from other failures.
    const onAbort = () => {
      req.destroy(signal!.reason);
      response?.destroy(signal!.reason);
    };
    const req = https.request({
      agent,
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: url.port ? Number(url.port) : 443,
      path: url.pathname + url.search,
      method: init.method ?? "GET",
      servername: opts.serverName,
      ca: opts.skipVerify ? undefined : opts.ca,
      cert: opts.cert,
      key: opts.key,
      rejectUnauthorized: !opts.skipVerify,
      headers: {
        ...(init.headers ?? {}),
        ...(body !== undefined ? { "content-length": String(Buffer.byteLength(body)) } : {}),
      },
    }, (res: IncomingMessage) => {
      response = res;
      res.once("close", () => signal?.removeEventListener("abort", onAbort));
      const status = res.statusCode ?? 0;
      const headers = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        if (v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) headers.append(k, one);
      }
      if (NULL_BODY.has(status)) {
        res.resume();
        resolve(new Response(null, { status, headers }));
        return;
      }
      resolve(new Response(webBody(res), { status, headers }));
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    const onSecure = init.onSecureConnect;
    if (onSecure) req.once("socket", (socket) => socket.once("secureConnect", onSecure));
    req.on("error", (e) => {
      if (!response) signal?.removeEventListener("abort", onAbort);
      reject(signal?.aborted ? signal.reason : e);
    });
    req.end(body);
  });
}

/**
 * The response as a web stream. Not Readable.toWeb: its data handler enqueues after the stream
 * was cancelled or errored, which throws an uncaught TypeError out of the event loop.
 */
function webBody(res: IncomingMessage): ReadableStream<Uint8Array> {
  let done = false;
  return new ReadableStream<Uint8Array>({
    start(c) {
      const finish = (e?: unknown) => {
        if (done) return;
        done = true;
        if (e === undefined) c.close();
        else c.error(e);
      };
      res.on("data", (chunk: Uint8Array) => {
        if (done) return;
        c.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((c.desiredSize ?? 1) <= 0) res.pause();
      });
      res.once("end", () => finish());
      res.once("error", (e) => finish(e));
      res.once("close", () => finish(new Error("the connection closed before the body ended")));
    },
    pull() {
      res.resume();
    },
    cancel() {
      done = true;
      res.destroy();
    },
  });
}
