/**
 * The byte transport under cli/tls_websocket.ts: a TLS connection to the api that trusts only the
 * CA given with `--ca-cert`, delivering what it reads to handlers.
 *
 * - `connectTls` (the default): `Deno.connectTls` with the CA as `caCerts`, then the CA-only
 *   issuer check of lib/ca_only_tls.ts (connectTls adds `caCerts` to the default roots). A leaf
 *   that check refuses (another CA's, or one issued by an intermediate CA missing from the
 *   `--ca-cert` file) is handed to node:tls on a new connection, which checks the whole chain
 *   against that CA alone: refused there, or accepted on the slower path. The
 *   socket is read into one reused buffer, the next read only after the previous bytes were
 *   handled: no allocation or copy per TLS chunk (node:tls copies every chunk into a fresh Buffer,
 *   docs/benchmarks.md "Where a 1500 B packet's CPU goes"). connectTls verifies the URL's host
 *   name, or an address as an IP SAN.
 * - `node:tls` (the fallback, when Deno lacks the peer-certificate hook the check needs): its `ca`
 *   replaces the default roots.
 *
 * Handlers run in order: onSecure once trusted, onData for every read (the view is valid only
 * during the call: the buffer is reused), onError at most once per failure, onClose exactly once.
 *
 * @module
 */
import tls from "node:tls";
import { isIP } from "node:net";
import type { Buffer } from "node:buffer";
import { caCertificates, caOnlyTlsAvailable, peerIssuedByOneOf } from "../lib/ca_only_tls.ts";

export type TransportKind = "connectTls" | "node:tls";

export interface TransportHandlers {
  onSecure(): void;
  onData(bytes: Uint8Array): void;
  onError(e: Error & { code?: string }): void;
  onClose(): void;
}

export interface ByteTransport {
  readonly kind: TransportKind;
  /** Queues bytes; written in order. Ignored once closed. */
  write(bytes: Uint8Array | string): void;
  /** Half-closes once queued bytes are written (the closing handshake's end). */
  end(): void;
  /** Closes at once; onClose follows. */
  destroy(): void;
}

/** The reused read buffer's size: a few TLS records per read, one allocation per connection. */
export const READ_BUFFER_BYTES = 256 * 1024;

let warned = false;

/** The transport this Deno supports: connectTls when the CA-only check can be made. */
export function defaultTransport(): TransportKind {
  if (caOnlyTlsAvailable()) return "connectTls";
  if (!warned) {
    warned = true;
    console.error(
      "pcap: warning: this Deno does not expose TLS peer certificates, so the connection to the " +
        "api uses node:tls (slower: more CPU per packet); --ca-cert is still the only CA trusted",
    );
  }
  return "node:tls";
}

/** Opens a TLS connection to `target`'s host and port, trusting only `ca`. */
export function openTlsTransport(
  target: URL,
  ca: string,
  h: TransportHandlers,
  kind: TransportKind = defaultTransport(),
): ByteTransport {
  const host = target.hostname.replace(/^\[|\]$/g, "");
  const port = Number(target.port || 443);
  return kind === "connectTls"
    ? new DenoTlsTransport(host, port, ca, h)
    : new NodeTlsTransport(host, port, ca, h);
}

class DenoTlsTransport implements ByteTransport {
  #conn: Deno.TlsConn | null = null;
  /** node:tls, when the leaf was not issued by a --ca-cert certificate itself (see #run) */
  #fallback: NodeTlsTransport | null = null;
  #writes: Promise<void> = Promise.resolve();
  #closed = false;
  #failed = false;
  #closeReported = false;

  constructor(host: string, port: number, ca: string, readonly h: TransportHandlers) {
    this.#run(host, port, ca);
  }

  get kind(): TransportKind {
    return this.#fallback ? "node:tls" : "connectTls";
  }

  async #run(host: string, port: number, ca: string): Promise<void> {
    // one exit for every path but the hand-over to node:tls: a late connection is closed and
    // onClose is reported once (destroy() during the connect reports it at once)
    let handedOver = false;
    const handOver = () => {
      this.#shutConn();
      if (this.#closed) return;
      this.#fallback = new NodeTlsTransport(host, port, ca, this.h);
      handedOver = true;
    };
    try {
      const cas = caCertificates(ca);
      let conn: Deno.TlsConn;
      try {
        conn = await Deno.connectTls({
          hostname: host,
          port,
          caCerts: [ca],
          alpnProtocols: ["http/1.1"],
        });
      } catch (e) {
        throw certificateError(e) ? e : connectError(e as Error, host, port);
      }
      this.#conn = conn;
      if (this.#closed) return;
      try {
        await conn.handshake();
      } catch (e) {
        // rustls refuses some certificates OpenSSL takes (a self-signed CA:TRUE leaf, no SAN,
        // SHA-1): node:tls, which trusts the --ca-cert CA alone, makes the decision it always made
        if (certificateError(e)) return handOver();
        throw connectError(e as Error, host, port);
      }
      if (!peerIssuedByOneOf(conn, cas)) {
        // Either another CA (one of the default roots) or a chain through an intermediate CA
        // that is not in the --ca-cert file: only the leaf can be checked here, so node:tls,
        // which verifies the whole chain against the --ca-cert CA alone, decides.
        return handOver();
      }
      if (this.#closed) return;
      this.h.onSecure();
      const buf = new Uint8Array(READ_BUFFER_BYTES);
      while (!this.#closed) {
        const n = await conn.read(buf);
        if (n === null) break;
        this.h.onData(buf.subarray(0, n));
      }
    } catch (e) {
      this.#fail(e as Error);
    } finally {
      if (!handedOver) {
        this.#closed = true;
        this.#shutConn();
        this.#reportClose();
      }
    }
  }

  #reportClose(): void {
    if (this.#closeReported) return;
    this.#closeReported = true;
    this.h.onClose();
  }

  #shutConn(): void {
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
  }

  #fail(e: Error): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    this.h.onError(e);
  }

  write(bytes: Uint8Array | string): void {
    if (this.#fallback) return this.#fallback.write(bytes);
    const conn = this.#conn;
    if (this.#closed || !conn) return;
    const b = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
    this.#writes = this.#writes.then(async () => {
      for (let off = 0; off < b.byteLength && !this.#closed;) {
        off += await conn.write(b.subarray(off));
      }
    }).catch((e) => {
      this.#fail(e);
      this.destroy();
    });
  }

  end(): void {
    if (this.#fallback) return this.#fallback.end();
    const conn = this.#conn;
    if (this.#closed || !conn) return;
    this.#writes = this.#writes.then(() => conn.closeWrite()).catch(() => this.destroy());
  }

  destroy(): void {
    if (this.#fallback) return this.#fallback.destroy();
    if (this.#closed) return;
    this.#closed = true;
    this.#shutConn();
    // still connecting: closed now, as node:tls reports it (the pending connect is closed later)
    if (!this.#conn) this.#reportClose();
  }
}

/** Whether a connectTls failure is rustls refusing the api's certificate. */
function certificateError(e: unknown): boolean {
  return /certificate|UnknownIssuer|NotValidForName|CaUsedAsEndEntity|BadSignature/i.test(
    String((e as Error)?.message ?? e),
  );
}

/** A connect failure naming where (Deno's errors say only what, e.g. "Connection refused"). */
function connectError(e: Error, host: string, port: number): Error {
  const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  if (e?.message?.includes(where)) return e;
  const wrapped = new Error(`cannot connect to ${where}: ${e?.message ?? e}`, { cause: e });
  return Object.assign(wrapped, { code: (e as Error & { code?: string })?.code });
}

class NodeTlsTransport implements ByteTransport {
  readonly kind: TransportKind = "node:tls";
  readonly #socket: tls.TLSSocket;

  constructor(host: string, port: number, ca: string, h: TransportHandlers) {
    this.#socket = tls.connect({
      host,
      port,
      // SNI and the name checked: the api's host name; an address is checked as an IP SAN
      ...(isIP(host) ? {} : { servername: host }),
      ca,
      rejectUnauthorized: true,
      ALPNProtocols: ["http/1.1"],
      minVersion: "TLSv1.2",
    });
    this.#socket.setNoDelay(true);
    this.#socket.once("secureConnect", () => h.onSecure());
    this.#socket.on("data", (chunk: Buffer) => {
      h.onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
    this.#socket.on("error", (e: Error) => h.onError(e));
    this.#socket.on("close", () => h.onClose());
  }

  write(bytes: Uint8Array | string): void {
    if (!this.#socket.destroyed) this.#socket.write(bytes);
  }

  end(): void {
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/** A TLS failure as a sentence naming the api and what to check. */
export function tlsErrorText(e: Error & { code?: string }, host: string): string {
  const code = e.code ? ` (${e.code})` : "";
  if (/certificate|self.signed|issuer|verify|altname|CERT/i.test(`${e.message} ${e.code ?? ""}`)) {
    return `TLS: the certificate of ${host} is not trusted: ${e.message}${code}; ` +
      "only the CA given with --ca-cert is trusted";
  }
  return `${e.message}${code}`;
}
