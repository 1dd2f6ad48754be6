// A hostile stand-in for an upstream the api talks to (Director, UAA, Cloud Controller): an HTTPS
// reverse proxy in front of the real simulator that, for the requests a test picks, answers slowly,
// with a 500, with malformed JSON, with a huge body or with a redirect to a recorder server that
// notes which headers arrived (a bearer token must never follow a redirect). Used by the chaos
// campaign; it changes nothing in the simulators themselves.

export type FaultKind = "pass" | "slow" | "status500" | "malformed" | "huge" | "redirect";

export interface FaultProxyOptions {
  /** base URL of the real upstream */
  target: string;
  /** trusted CA of the upstream (PEM) */
  targetCa: string;
  /** the proxy's own server certificate */
  tls: { cert: string; key: string };
  /** rewrites a passed-through JSON/text body (e.g. the UAA URL in the Director's /info) */
  rewrite?: (path: string, body: string) => string;
}

export interface SeenRequest {
  method: string;
  path: string;
  authorization: boolean;
}

/** Records every request it gets; answers 200 "{}" so a followed redirect would succeed. */
export class Recorder {
  readonly seen: SeenRequest[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;
  readonly url: string;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, url: string, seen: SeenRequest[]) {
    this.#server = server;
    this.url = url;
    this.seen = seen;
  }

  static async start(tls: { cert: string; key: string }): Promise<Recorder> {
    const seen: SeenRequest[] = [];
    const { promise, resolve } = Promise.withResolvers<number>();
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      ...tls,
      onListen: (a) => resolve(a.port),
    }, (req) => {
      seen.push({
        method: req.method,
        path: new URL(req.url).pathname,
        authorization: req.headers.has("authorization"),
      });
      return Response.json({});
    });
    return new Recorder(server, `https://127.0.0.1:${await promise}`, seen);
  }

  stop(): Promise<void> {
    return this.#server.shutdown();
  }
}

export class FaultProxy {
  /** the fault for requests whose path matches `match` (others pass) */
  fault: FaultKind = "pass";
  match: RegExp = /./;
  /** how long "slow" waits before answering */
  slowMs = 5_000;
  /** where "redirect" sends the client */
  redirectTo = "";
  /** bytes of the "huge" body */
  hugeBytes = 24 * 1024 * 1024;
  readonly seen: SeenRequest[] = [];
  readonly url: string;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #client: Deno.HttpClient;
  #stopping = new AbortController();

  private constructor(url: string, server: Deno.HttpServer<Deno.NetAddr>, client: Deno.HttpClient) {
    this.url = url;
    this.#server = server;
    this.#client = client;
  }

  static async start(o: FaultProxyOptions): Promise<FaultProxy> {
    const client = Deno.createHttpClient({ caCerts: [o.targetCa] });
    const { promise, resolve } = Promise.withResolvers<number>();
    let self: FaultProxy | null = null;
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      ...o.tls,
      onListen: (a) => resolve(a.port),
    }, (req) => self!.#handle(req, o));
    self = new FaultProxy(`https://127.0.0.1:${await promise}`, server, client);
    return self;
  }

  async #handle(req: Request, o: FaultProxyOptions): Promise<Response> {
    const url = new URL(req.url);
    this.seen.push({
      method: req.method,
      path: url.pathname,
      authorization: req.headers.has("authorization"),
    });
    const fault = this.match.test(url.pathname) ? this.fault : "pass";
    switch (fault) {
      case "slow":
        await this.#sleep(this.slowMs);
        return Response.json({ slow: true });
      case "status500":
        return new Response("internal error (fault proxy)", { status: 500 });
      case "malformed":
        return new Response('{"truncated": [1, 2', {
          headers: { "content-type": "application/json" },
        });
      case "huge":
        return new Response(hugeJson(this.hugeBytes, this.#stopping.signal), {
          headers: { "content-type": "application/json" },
        });
      case "redirect":
        return new Response(null, {
          status: 302,
          headers: { location: this.redirectTo + url.pathname + url.search },
        });
    }
    const headers = new Headers(req.headers);
    headers.delete("host");
    const res = await fetch(o.target + url.pathname + url.search, {
      method: req.method,
      headers,
      body: req.body,
      client: this.#client,
      redirect: "manual",
    });
    const text = await res.text();
    const out = new Headers(res.headers);
    out.delete("content-length");
    out.delete("content-encoding");
    return new Response(o.rewrite ? o.rewrite(url.pathname, text) : text, {
      status: res.status,
      headers: out,
    });
  }

  #sleep(ms: number): Promise<void> {
    const signal = this.#stopping.signal;
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#server.shutdown();
    this.#client.close();
  }
}

/** A JSON array streamed in 64 KiB chunks up to `bytes` (never built in memory at once). */
function hugeJson(bytes: number, signal: AbortSignal): ReadableStream<Uint8Array> {
  const chunk = new TextEncoder().encode(`${'"x",'.repeat(16 * 1024)}`);
  let sent = 0;
  return new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode("["));
    },
    pull(c) {
      if (signal.aborted || sent >= bytes) {
        c.enqueue(new TextEncoder().encode('"end"]'));
        c.close();
        return;
      }
      c.enqueue(chunk);
      sent += chunk.length;
    },
  });
}
