// Small shared server for the lab's simulated external systems (UAA, Director, Cloud Controller):
// Deno.serve on loopback (or a given address), optional TLS, and fault switches that tests flip
// at run time to model a slow, unreachable or flaky dependency.

export interface SimTls {
  cert: string;
  key: string;
}

export interface SimServeOptions {
  /** address to bind; default 127.0.0.1 */
  hostname?: string;
  /** 0 (default) picks a free port */
  port?: number;
  tls?: SimTls;
  /** host name used in the reported URL (e.g. a SAN of the TLS cert); default hostname */
  urlHost?: string;
}

export interface Faults {
  /** delay every response by this many ms (aborted on stop) */
  delayMs: number;
  /** every Nth request answers 500 (0 = off) */
  flakyEvery: number;
}

export type Handler = (req: Request) => Response | Promise<Response>;

/** Builds the body of a flaky 500 in the style of the simulated service. */
export type FlakyBody = () => Response;

export class SimServer {
  readonly faults: Faults = { delayMs: 0, flakyEvery: 0 };
  /** requests seen (including faulted ones), for tests */
  requestCount = 0;
  private server: Deno.HttpServer<Deno.NetAddr> | null = null;
  private boundPort = 0;
  private stopping = new AbortController();

  private constructor(
    private readonly handler: Handler,
    private readonly opts: SimServeOptions,
    private readonly flakyBody: FlakyBody,
  ) {}

  static async start(
    handler: Handler,
    opts: SimServeOptions = {},
    flakyBody: FlakyBody = () => new Response("simulated failure", { status: 500 }),
  ): Promise<SimServer> {
    const s = new SimServer(handler, opts, flakyBody);
    await s.listen(opts.port ?? 0);
    return s;
  }

  get port(): number {
    return this.boundPort;
  }

  get hostname(): string {
    return this.opts.hostname ?? "127.0.0.1";
  }

  get url(): string {
    const scheme = this.opts.tls ? "https" : "http";
    const host = this.opts.urlHost ?? this.hostname;
    const h = host.includes(":") ? `[${host}]` : host;
    return `${scheme}://${h}:${this.boundPort}`;
  }

  /** True while the listener is closed by setDown(true). */
  get down(): boolean {
    return this.server === null;
  }

  /**
   * down=true closes the listener (clients get "connection refused", like a dead host port);
   * down=false listens again on the same port.
   */
  async setDown(down: boolean): Promise<void> {
    if (down && this.server) {
      const s = this.server;
      this.server = null;
      // Release delayed requests so that shutdown() does not wait for them.
      this.stopping.abort();
      await s.shutdown();
      this.stopping = new AbortController();
    } else if (!down && !this.server) {
      await this.listen(this.boundPort);
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    const s = this.server;
    this.server = null;
    if (s) await s.shutdown();
  }

  private listen(port: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const base = {
      hostname: this.hostname,
      port,
      onListen: (addr: Deno.NetAddr) => {
        this.boundPort = addr.port;
        resolve();
      },
    };
    const handler = (req: Request) => this.handle(req);
    this.server = this.opts.tls
      ? Deno.serve({ ...base, cert: this.opts.tls.cert, key: this.opts.tls.key }, handler)
      : Deno.serve(base, handler);
    return promise;
  }

  private async handle(req: Request): Promise<Response> {
    const n = ++this.requestCount;
    if (this.faults.delayMs > 0) await this.sleep(this.faults.delayMs);
    if (this.faults.flakyEvery > 0 && n % this.faults.flakyEvery === 0) return this.flakyBody();
    try {
      return await this.handler(req);
    } catch (e) {
      // A simulator bug must show up as a 500 with a reason, not a hung connection.
      return new Response(`simulator error: ${e instanceof Error ? e.message : e}`, {
        status: 500,
      });
    }
  }

  private sleep(ms: number): Promise<void> {
    const signal = this.stopping.signal;
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const t = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        resolve();
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * Base of the simulators: exposes their SimServer's address, fault switches and up/down
 * control, so that each simulator only adds its own API.
 */
export abstract class SimService {
  #server: SimServer | null = null;

  /** Starts listening; called once from the simulator's static start(). */
  protected async serve(handler: Handler, opts: SimServeOptions, flakyBody: FlakyBody) {
    this.#server = await SimServer.start(handler, opts, flakyBody);
  }

  get #s(): SimServer {
    if (!this.#server) throw new Error("simulator is not started; use its static start()");
    return this.#server;
  }

  get url(): string {
    return this.#s.url;
  }
  get port(): number {
    return this.#s.port;
  }
  /** delayMs / flakyEvery switches */
  get faults(): Faults {
    return this.#s.faults;
  }
  /** requests seen (including faulted ones), for tests */
  get requestCount(): number {
    return this.#s.requestCount;
  }
  /** See SimServer.setDown. */
  setDown(down: boolean): Promise<void> {
    return this.#s.setDown(down);
  }
  stop(): Promise<void> {
    return this.#s.stop();
  }
}
