/**
 * Compiles capture filters off the api's event loop: each compile runs in a Worker
 * (filter_compile_worker.ts, libpcap through the ffi module) under a deadline. A compile that
 * passes it is answered as too complex and its worker is terminated (a thread stuck in
 * pcap_compile cannot be interrupted otherwise) and replaced. Up to `maxWorkers` compiles run at
 * once, more wait their turn; `keepIdle` workers stay loaded between requests so a compile does
 * not pay for starting a thread.
 *
 * @example
 * ```ts ignore
 * const compiler = new FilterCompiler({ timeoutMs: 1000 });
 * const r = await compiler.check("tcp port 443"); // { ok: true }
 * compiler.close();
 * ```
 *
 * @module
 */
import type { CompileJob, CompileReply } from "./filter_compile_worker.ts";

export type CompileResult =
  | { ok: true }
  | { ok: false; error: string; tooComplex?: boolean; unavailable?: boolean };

/** Compiles `filter` for link type and snaplen (defaults 1, Ethernet, and 65535). */
export type FilterChecker = (
  filter: string,
  linkType?: number,
  snaplen?: number,
) => Promise<CompileResult>;

export interface FilterCompilerOptions {
  /** deadline of one compile once its worker is ready; default 1000 ms */
  timeoutMs?: number;
  /** compiles at once (one thread each); default 2 */
  maxWorkers?: number;
  /** loaded workers kept between compiles (pre-warmed at construction); default 1 */
  keepIdle?: number;
  /** how long a new worker may take to load libpcap; default 10 s */
  loadTimeoutMs?: number;
}

export const DEFAULT_COMPILE_TIMEOUT_MS = 1000;

/** One worker thread; runs one compile at a time. */
class CompileThread {
  readonly worker: Worker;
  dead = false;
  readonly #ready = Promise.withResolvers<void>();
  #pending: { id: number; resolve: (r: CompileResult) => void } | null = null;
  #failure = "";

  constructor() {
    this.worker = new Worker(new URL("./filter_compile_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#ready.promise.catch(() => {}); // observed by run(); never an unhandled rejection
    this.worker.onmessage = (ev: MessageEvent<CompileReply>) => {
      const m = ev.data;
      if (m.type === "ready") this.#ready.resolve();
      else if (this.#pending?.id === m.id) {
        const { resolve } = this.#pending;
        this.#pending = null;
        const extra = !m.ok && m.unavailable ? { unavailable: true } : {};
        resolve(m.ok ? { ok: true } : { ok: false, error: m.error, ...extra });
      }
    };
    // A worker that fails must not take the api down: it is reported and never reused.
    this.worker.onerror = (ev) => {
      ev.preventDefault();
      this.terminate(`the filter compiler failed: ${ev.message}`);
    };
  }

  async run(job: CompileJob, timeoutMs: number, loadTimeoutMs: number): Promise<CompileResult> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const loaded = await Promise.race([
      this.#ready.promise.then(() => true, () => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), loadTimeoutMs)),
    ]);
    clearTimeout(timer);
    if (!loaded) this.terminate(`the filter compiler did not start within ${loadTimeoutMs} ms`);
    if (this.dead) return { ok: false, error: this.#failure, unavailable: true };
    const { promise, resolve } = Promise.withResolvers<CompileResult>();
    this.#pending = { id: job.id, resolve };
    timer = setTimeout(() => {
      if (this.#pending?.id !== job.id) return;
      this.#pending = null;
      this.terminate("a compile passed its deadline");
      resolve({
        ok: false,
        tooComplex: true,
        error: `libpcap did not finish compiling it within ${timeoutMs} ms`,
      });
    }, timeoutMs);
    this.worker.postMessage(job);
    try {
      return await promise;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the thread; a compile still waiting on it is answered as unavailable. */
  terminate(why = "the api is shutting down"): void {
    if (this.dead) return;
    this.dead = true;
    this.worker.terminate();
    this.#failure = why;
    this.#ready.reject(new Error(why));
    const p = this.#pending;
    this.#pending = null;
    p?.resolve({ ok: false, error: why, unavailable: true });
  }
}

export class FilterCompiler {
  readonly #timeoutMs: number;
  readonly #maxWorkers: number;
  readonly #keepIdle: number;
  readonly #loadTimeoutMs: number;
  readonly #threads = new Set<CompileThread>();
  #idle: CompileThread[] = [];
  #waiting: ((t: CompileThread | null) => void)[] = [];
  #nextId = 1;
  #closed = false;
  /** compiles run (for tests and metrics) */
  compiles = 0;
  /** compiles that passed the deadline (their workers were terminated) */
  timeouts = 0;
  /** workers started so far */
  workersStarted = 0;

  constructor(opts: FilterCompilerOptions = {}) {
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_COMPILE_TIMEOUT_MS;
    this.#maxWorkers = Math.max(1, opts.maxWorkers ?? 2);
    this.#keepIdle = Math.min(this.#maxWorkers, Math.max(0, opts.keepIdle ?? 1));
    this.#loadTimeoutMs = opts.loadTimeoutMs ?? 10_000;
    this.#rewarm();
  }

  /** Live worker threads (idle and busy). */
  get workers(): number {
    return this.#threads.size;
  }

  readonly check: FilterChecker = async (filter, linkType = 1, snaplen = 65535) => {
    const thread = this.#closed ? null : await this.#acquire();
    if (!thread) return { ok: false, error: "the api is shutting down", unavailable: true };
    this.compiles++;
    const job: CompileJob = { id: this.#nextId++, filter, linkType, snaplen };
    const result = await thread.run(job, this.#timeoutMs, this.#loadTimeoutMs);
    if (!result.ok && result.tooComplex) this.timeouts++;
    this.#release(thread);
    return result;
  };

  /** Terminates every worker; pending and later compiles are answered with an error. */
  close(): void {
    this.#closed = true;
    for (const t of this.#threads) t.terminate();
    this.#threads.clear();
    this.#idle = [];
    for (const w of this.#waiting.splice(0)) w(null);
  }

  #spawn(): CompileThread {
    const t = new CompileThread();
    this.workersStarted++;
    this.#threads.add(t);
    return t;
  }

  #acquire(): Promise<CompileThread | null> {
    const idle = this.#idle.pop();
    if (idle) return Promise.resolve(idle);
    if (this.#threads.size < this.#maxWorkers) return Promise.resolve(this.#spawn());
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #release(t: CompileThread): void {
    if (this.#closed) return t.terminate();
    if (t.dead) this.#threads.delete(t);
    else if (this.#waiting.length > 0) return this.#waiting.shift()!(t);
    else if (this.#idle.length < this.#keepIdle) this.#idle.push(t);
    else {
      t.terminate();
      this.#threads.delete(t);
    }
    // A terminated (timed-out or failed) worker is replaced; a waiter gets the new one.
    if (this.#waiting.length > 0 && this.#threads.size < this.#maxWorkers) {
      return this.#waiting.shift()!(this.#spawn());
    }
    this.#rewarm();
  }

  #rewarm(): void {
    while (
      !this.#closed && this.#idle.length < this.#keepIdle && this.#threads.size < this.#maxWorkers
    ) {
      this.#idle.push(this.#spawn());
    }
  }
}
