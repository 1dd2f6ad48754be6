/**
 * One request to an agent over Deno.connectTls, for the capture stream: its socket is read only
 * when the body's consumer asks, so a stream the api holds back leaves the agent's bytes in TCP
 * and the agent's own back-pressure drops (and counts) the excess before TLS.
 *
 * Why not node:https, which the rest of the api uses: Deno 2.9.6's node:tls (a native TLSWrap)
 * reads its socket whether or not the stream is paused, even after an explicit readStop(), so a
 * held-back response piles up in the api's memory (docs/benchmarks.md, "Back-pressure to the
 * agent"). Deno.connectTls's TlsConn reads only on conn.read().
 *
 * The TLS settings stay those of agents_mtls:
 * - the api's client certificate (connectTls's cert/key);
 * - the server name: the dialled address, or agents_mtls.server_name, through connectTls's
 *   `Symbol.for("unstableServerName")` option (dial the address, verify that name);
 * - only agents_mtls.ca is trusted: connectTls adds `caCerts` to the default roots, so after the
 *   handshake the leaf must also be issued by one of the configured CA certificates
 *   (lib/ca_only_tls.ts, shared with the CLI's WebSocket); an intermediate CA must therefore be
 *   part of agents_mtls.ca;
 * - skip_verify cannot be expressed here: those streams keep node:https (usable() is false).
 * Both hooks are looked up once; without them usable() is false and the api falls back to
 * node:https, reading held-back streams on (server/fanout.ts).
 */
import { caCertificates, caOnlyTlsAvailable, peerIssuedByOneOf } from "../lib/ca_only_tls.ts";
import { BodyDecoder, formatRequest, HttpWireError, parseResponseHead } from "../lib/http1_wire.ts";

export interface SocketTlsOptions {
  /** PEM of the CA certificate(s) agents' certificates must be issued by */
  ca: string;
  cert: string;
  key: string;
  serverName?: string;
  skipVerify: boolean;
}

export interface SocketResponse {
  status: number;
  header(name: string): string | null;
  body: ReadableStream<Uint8Array> | null;
  /**
   * The same body without the stream layer (its pulls, BYOB copies and promises cost the api
   * about a sixth of its CPU at 1500 B): use either this or `body`, not both.
   */
  chunks: BodyChunks | null;
}

/** A response body read straight from the socket, on demand. */
export interface BodyChunks {
  /**
   * The next piece of the decoded body, or null at its end; a view into a reused buffer, valid
   * until the next read. Throws when the connection breaks before the body ends.
   */
  read(): Promise<Uint8Array | null>;
  /** Closes the connection (the body is not read to its end). */
  cancel(): void;
}

const SERVER_NAME = Symbol.for("unstableServerName");

/** Whether streams with these settings can be read through a socket that stops when unread. */
export function usable(tls: SocketTlsOptions): boolean {
  return !tls.skipVerify && caOnlyTlsAvailable() && tls.ca.trim() !== "";
}

const READ_BYTES = 64 * 1024;

/**
 * Sends one request and resolves with the response head; the body is read on demand. `signal`
 * aborts the request and, later, the body (the connection is closed; reads fail, and callers
 * tell a timeout from the signal's reason).
 */
export async function requestOverSocket(
  host: string,
  port: number,
  tls: SocketTlsOptions,
  req: { method: "GET" | "POST"; path: string; body?: string; headers?: Record<string, string> },
  signal: AbortSignal,
  /** called once the handshake and the issuer check are done (the fan-out's timings) */
  onSecureConnect?: () => void,
): Promise<SocketResponse> {
  if (signal.aborted) throw signal.reason;
  const cas = caCertificates(tls.ca);
  const options:
    & Deno.ConnectTlsOptions
    & Partial<Deno.TlsCertifiedKeyPem>
    & Record<symbol, string> = { hostname: host, port, caCerts: [tls.ca] };
  // (no client certificate only in tests/support/tls_trust_probe.ts; the api always has one)
  if (tls.cert || tls.key) Object.assign(options, { cert: tls.cert, key: tls.key });
  if (tls.serverName) options[SERVER_NAME] = tls.serverName;
  const conn = await untilAborted(
    Deno.connectTls(options as Deno.ConnectTlsOptions),
    signal,
    (c) => c.close(),
  );
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    signal.removeEventListener("abort", close);
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  signal.addEventListener("abort", close, { once: true });
  try {
    await conn.handshake();
    if (!peerIssuedByOneOf(conn, cas)) {
      throw new Error(
        "the peer certificate is not issued by a certificate of agents_mtls.ca " +
          "(only that CA is trusted, not the default roots; an intermediate CA must be in that file)",
      );
    }
    onSecureConnect?.();
    const hostHeader = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    await writeAll(
      conn,
      formatRequest(req.method, hostHeader, req.path, req.headers ?? {}, req.body),
    );
    const { head, rest } = await readHead(conn, req.method);
    const header = (n: string) => head.headers.get(n);
    if (head.framing.kind === "none") {
      close();
      return { status: head.status, header, body: null, chunks: null };
    }
    const chunks = new SocketBodyChunks(conn, new BodyDecoder(head.framing), rest, close);
    return { status: head.status, header, body: bodyStream(chunks), chunks };
  } catch (e) {
    close();
    throw signal.aborted ? signal.reason : e;
  }
}

/** `p`, or the signal's reason if it aborts first (a late result is disposed of). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal, dispose: (v: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const onAbort = () => {
      if (done) return;
      done = true;
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      if (done) return dispose(v);
      done = true;
      resolve(v);
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      if (done) return;
      done = true;
      reject(e);
    });
  });
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.byteLength;) off += await conn.write(bytes.subarray(off));
}

async function readHead(conn: Deno.Conn, method: string) {
  let acc = new Uint8Array(0);
  const buf = new Uint8Array(READ_BYTES);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) throw new HttpWireError("the connection closed before the response head");
    const next = new Uint8Array(acc.byteLength + n);
    next.set(acc);
    next.set(buf.subarray(0, n), acc.byteLength);
    acc = next;
    const head = parseResponseHead(acc, method);
    if (head) return { head, rest: acc.subarray(head.consumed) };
  }
}

/** The decoded body in views of one reused read buffer (views of the head's rest first). */
class SocketBodyChunks implements BodyChunks {
  readonly #raw = new Uint8Array(READ_BYTES);
  #pending: Uint8Array[];

  constructor(
    private readonly conn: Deno.Conn,
    private readonly decoder: BodyDecoder,
    rest: Uint8Array,
    private readonly close: () => void,
  ) {
    this.#pending = nonEmpty(decoder.push(rest));
  }

  async read(): Promise<Uint8Array | null> {
    try {
      // `raw` is refilled only once every view into it was handed out
      while (this.#pending.length === 0) {
        if (this.decoder.done) return this.#end();
        const n = await this.conn.read(this.#raw);
        if (n === null) {
          if (this.decoder.atClose()) return this.#end();
          throw new Error("the connection closed before the body ended");
        }
        this.#pending = nonEmpty(this.decoder.push(this.#raw.subarray(0, n)));
      }
    } catch (e) {
      this.close();
      throw e;
    }
    return this.#pending.shift()!;
  }

  cancel(): void {
    this.close();
  }

  #end(): null {
    this.close();
    return null;
  }
}

function nonEmpty(views: Uint8Array[]): Uint8Array[] {
  return views.some((v) => v.byteLength === 0) ? views.filter((v) => v.byteLength > 0) : views;
}

/**
 * The body as a byte stream that reads the socket only on a read request (highWaterMark 0):
 * nothing read is the back-pressure. Readers may bring their own buffer ("byob").
 */
function bodyStream(chunks: SocketBodyChunks): ReadableStream<Uint8Array> {
  let pending: Uint8Array | null = null;
  const source: UnderlyingByteSource = {
    type: "bytes",
    autoAllocateChunkSize: READ_BYTES,
    async pull(c: ReadableByteStreamController) {
      if (!pending) pending = await chunks.read();
      if (!pending) {
        c.close();
        c.byobRequest?.respond(0);
        return;
      }
      const req = c.byobRequest!;
      const view = new Uint8Array(req.view!.buffer, req.view!.byteOffset, req.view!.byteLength);
      const n = Math.min(pending.byteLength, view.byteLength);
      view.set(pending.subarray(0, n));
      pending = n === pending.byteLength ? null : pending.subarray(n);
      req.respond(n);
    },
    cancel() {
      chunks.cancel();
    },
  };
  return new ReadableStream(source);
}
