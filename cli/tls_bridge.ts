/**
 * A WebSocket to the api that trusts the configured CA (`--ca-cert`) and nothing else.
 *
 * Deno's WebSocket takes its TLS settings from a Deno.HttpClient, whose `caCerts` are trusted in
 * addition to the default roots (Mozilla's or the system's): a certificate for the api's name
 * from any public CA would be accepted. node:tls trusts exactly its `ca`. So the WebSocket
 * speaks plain HTTP over an HttpClient whose proxy is a Unix socket in a private directory
 * (0700), and each connection on that socket is carried to the api over node:tls, verified
 * against the CA alone and the api's host name. The socket lives as long as the session.
 *
 * @example
 * ```ts
 * import { TlsBridge } from "./tls_bridge.ts";
 *
 * declare const caPem: string;
 * const bridge = TlsBridge.open(new URL("wss://pcap-api.example:443/v1/capture/bosh"), caPem);
 * const ws = new WebSocket(bridge.url, { client: bridge.client });
 * ws.onclose = () => bridge.close();
 * ```
 *
 * @module
 */
import tls from "node:tls";
import { isIP } from "node:net";
import { Buffer } from "node:buffer";

export class TlsBridge {
  /** the URL to open: the original with ws: instead of wss: (the bridge adds the TLS) */
  readonly url: string;
  /** routes every connection of the WebSocket to the bridge's socket */
  readonly client: Deno.HttpClient;
  #listener: Deno.Listener;
  #dir: string;
  #conns = new Set<{ close(): void }>();
  #closed = false;
  /** why the last TLS connection to the api failed, for the user */
  error: string | undefined;

  private constructor(readonly target: URL, private readonly ca: string) {
    this.#dir = Deno.makeTempDirSync({ prefix: "pcap-tls-" });
    Deno.chmodSync(this.#dir, 0o700);
    const path = `${this.#dir}/api.sock`;
    // Bound before the constructor returns: the WebSocket may connect at once.
    this.#listener = Deno.listen({ transport: "unix", path });
    this.client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
    const plain = new URL(target);
    plain.protocol = "ws:";
    if (!target.port) plain.port = "443";
    this.url = plain.toString();
    this.#accept();
  }

  /** Starts a bridge to `target` (a wss: URL) trusting only `ca` (PEM). */
  static open(target: URL, ca: string): TlsBridge {
    if (target.protocol !== "wss:") throw new Error(`TlsBridge: ${target} is not a wss: URL`);
    return new TlsBridge(target, ca);
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) this.#carry(conn);
    } catch {
      // the listener was closed
    }
  }

  #carry(conn: Deno.Conn): void {
    const host = this.target.hostname.replace(/^\[|\]$/g, "");
    const socket = tls.connect({
      host,
      port: Number(this.target.port || 443),
      // SNI and the name checked: the api's host name; an address is checked as an IP SAN
      ...(isIP(host) ? {} : { servername: host }),
      ca: this.ca,
      rejectUnauthorized: true,
      ALPNProtocols: ["http/1.1"],
      minVersion: "TLSv1.2",
    });
    const entry = {
      close: () => {
        socket.destroy();
        try {
          conn.close();
        } catch { /* already closed */ }
      },
    };
    this.#conns.add(entry);
    const done = () => {
      this.#conns.delete(entry);
      entry.close();
    };
    socket.on("error", (e: Error & { code?: string }) => {
      this.error = tlsErrorText(e, this.target.host);
      done();
    });
    socket.on("close", done);
    // in order and whole (conn.write may write part of a chunk), pausing the api while the
    // local side is behind
    const writer = conn.writable.getWriter();
    socket.on("data", (chunk: Buffer) => {
      writer.write(new Uint8Array(chunk)).catch(done);
      if ((writer.desiredSize ?? 1) <= 0) {
        socket.pause();
        writer.ready.then(() => socket.resume(), done);
      }
    });
    socket.once("secureConnect", async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          if (!socket.write(Buffer.from(buf.subarray(0, n)))) {
            await new Promise((r) => socket.once("drain", r));
          }
        }
      } catch { /* the local side went away */ }
      socket.end();
    });
  }

  /** Closes the socket, every carried connection and the HttpClient. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [...this.#conns]) c.close();
    try {
      this.#listener.close();
    } catch { /* closed */ }
    try {
      this.client.close();
    } catch { /* closed */ }
    try {
      Deno.removeSync(this.#dir, { recursive: true });
    } catch { /* removed already */ }
  }
}

/** A node:tls failure as a sentence naming the api and what to check. */
export function tlsErrorText(e: Error & { code?: string }, host: string): string {
  const code = e.code ? ` (${e.code})` : "";
  if (/certificate|self.signed|issuer|verify|altname|CERT/i.test(`${e.message} ${e.code ?? ""}`)) {
    return `TLS: the certificate of ${host} is not trusted: ${e.message}${code}; ` +
      "only the CA given with --ca-cert is trusted";
  }
  return `${e.message}${code}`;
}
