/**
 * Capture engine: one libpcap capture per Worker thread (see capture_worker.ts),
 * delivering batches of wire packet records through a bounded shared ring.
 * The main thread never changes namespace; only the worker's thread does.
 *
 * Contract (consumers):
 * - Borrowed records: a PacketBatch's `records` is a view into the engine's
 * queue, valid only until the next call of next() (or close()). Use or copy
 * it before calling next() again; never keep it (or a subarray of it) longer,
 * unless hold() was called for it: then until the function hold() returned is
 * called. With `batchRoom`, the bytes just around `records` are the caller's
 * too (the agent writes its frame headers there and sends the batch as is).
 * - stop() drains: every packet the kernel captured before stop() was called is
 * delivered by next() before it returns null, whichever reader runs. stop() is
 * prompt: on an idle interface within ~100 ms, otherwise within about
 * 2 × timeoutMs + 150 ms (the kernel hands over a partly filled block only
 * when its timer retires it).
 * - Stats after a stop add up: the kernel counters are frozen when the worker
 * notices the stop, and exactly the packets they count are delivered (or, with
 * the direct reader, counted in engineDropped if the kernel did not hand them
 * over in time); packets arriving during the drain are neither.
 * - close() aborts at once and discards what was not delivered.
 * - Latency: the worker wakes next() per 4 MiB published or once published
 * records have waited NOTIFY_DELAY_MS (10 ms, at most timeoutMs; immediate
 * mode: every record), not per kernel block: a wake-up costs the main thread
 * tens of µs. So delivery may lag the kernel's hand-over by up to 10 ms; at
 * high rates (full blocks < 8 ms apart) the worker also naps up to 8 ms before
 * it reads the next blocks (capture_tpacket_reader.ts, napMs).
 *
 * @example
 * ```ts
 * import { CaptureEngine } from "./capture_engine.ts";
 *
 * const engine = await CaptureEngine.open({ device: "eth0", snaplen: 65535, filter: "udp" });
 * setTimeout(() => engine.stop(), 1000);
 * for (let b = await engine.next(); b; b = await engine.next()) {
 *   console.log(b.count, "packets"); // b.records is borrowed until the next next()
 * }
 * console.log(engine.stats());
 * ```
 *
 * @module
 */
import { pcap } from "../../ffi/libpcap.ts";
import { MAX_RECORD_BYTES, MAX_SNAPLEN } from "../../protocol/records.ts";
import { type BatchRoom, C, createRing, S } from "./capture_ring.ts";
import { RingReader } from "./capture_ring_reader.ts";
import { COMPILE_FILTER_STEP, type ReaderChoice, type ReaderKind } from "./capture_reading.ts";
import type { WorkerReply, WorkerStart, WorkerWarm } from "./capture_worker.ts";
import { epochMs, type OpenSteps } from "./open_steps.ts";

export interface CaptureOptions {
  device: string;
  /** Network namespace path, e.g. /run/netns/X or /proc/PID/ns/net. */
  netns?: string;
  /** 1..262144 */
  snaplen: number;
  /** Default false. */
  promiscuous?: boolean;
  filter?: string;
  /** Kernel buffer bytes; default 4 MiB (see DEFAULT_BUFFER). */
  bufferSize?: number;
  /** libpcap buffer timeout, the latency knob; default 100 ms. */
  timeoutMs?: number;
  /** Deliver every packet at once (costs much more CPU); default false. */
  immediate?: boolean;
  /** Bound of the engine->consumer queue; default 16 MiB. */
  queueBytes?: number;
  /** Free bytes kept around every batch's records for the consumer (each 0..64); default none. */
  batchRoom?: BatchRoom;
  /**
   * "auto" (default): read libpcap's TPACKET_V3 ring directly where that
   * reproduces libpcap exactly, else pcap_next_ex. "pcap_next_ex" forces the
   * fallback (tests, diagnostics).
   */
  reader?: ReaderChoice;
}

export interface CaptureStats {
  received: number;
  dropped: number;
  ifDropped: number;
  engineDropped: number;
  packets: number;
  /** Captured bytes (caplen sum) delivered to the consumer. */
  bytes: number;
}

/** A batch of wire packet records (`u64 ts_ns | u32 caplen | u32 origlen | data`). */
export interface PacketBatch {
  count: number;
  /**
   * Borrowed: a view into the engine's queue, valid only until the next call of
   * next() (or close()); the engine then reuses the memory. Copy what you keep,
   * or hold() it.
   */
  records: Uint8Array;
}

export class CaptureError extends Error {
  override name = "CaptureError";
  constructor(readonly operation: string, readonly detail: string) {
    super(`${operation}: ${detail}`);
  }

  /** libpcap refused the filter (detail says why): the request is at fault, not the capture. */
  get filterRejected(): boolean {
    return this.operation.startsWith(COMPILE_FILTER_STEP);
  }
}

// The kernel ring is allocated, zeroed and mapped at every start (pcap_activate) and is most of
// a start's CPU when it is big: with 10 agents starting at once on 2 shared cores, 32 MiB rings
// cost each agent 70-100 ms of CPU instead of 13-24 ms with 4 MiB and doubled the fan-out's time
// (docs/benchmarks.md, fan-out). It only has to absorb the capture thread being descheduled,
// which copies it into the engine queue (16 MiB) at once: 4 MiB holds ~30 ms at 1 Gbit/s, twice
// tcpdump's (libpcap's) 2 MiB. Operators raise it with capture.buffer_size for bursty links on
// busy VMs.
const DEFAULT_BUFFER = 4 << 20;
const DEFAULT_QUEUE = 16 << 20;
const MAX_BATCH = 256 << 10; // per next(); also bounds the agent's frame size
// 4 MiB, not 1: at 1514 B and 600 kpps 1 MiB filled every 1.1 ms, and the wake-ups cost the
// main thread 23-33 ns a packet (8-15 with 4 MiB). Below ~100 MB/s the 10 ms delay comes first
// either way, so latency is bounded as before; the 16 MiB queue keeps 12 MiB for the wake-up.
const NOTIFY_BYTES = 16 * MAX_BATCH;
const NOTIFY_DELAY_MS = 10;

// Ring memory the workers write into by address: held here until the worker has
// ended, so it cannot be collected under a running worker even if the engine is.
const liveRings = new Set<ArrayBuffer>();

// Pre-warmed worker: a new Worker costs ~30-45 ms of CPU (isolate, module graph,
// dlopen) before it can activate a capture; when many agents start at once on
// shared cores that is most of a fan-out's time. With prewarm() on, one idle
// worker waits; open() takes it and a replacement is started a little later
// (not at once, so it does not compete with the capture that is starting).
// An idle worker holds no pcap handle and has not entered any namespace.
const REWARM_DELAY_MS = 2000;
interface IdleWorker {
  worker: Worker;
  failed: boolean;
}
const warm = {
  enabled: false,
  idle: null as IdleWorker | null,
  timer: undefined as ReturnType<typeof setTimeout> | undefined,
};

function newWorker(): Worker {
  return new Worker(new URL("./capture_worker.ts", import.meta.url), { type: "module" });
}

function startIdleWorker(): void {
  warm.timer = undefined;
  if (!warm.enabled || warm.idle) return;
  const idle: IdleWorker = { worker: newWorker(), failed: false };
  // A worker that failed to load must not take the process down, nor be used.
  idle.worker.onerror = (ev) => {
    ev.preventDefault();
    idle.failed = true;
  };
  idle.worker.postMessage({ warm: true } satisfies WorkerWarm);
  warm.idle = idle;
}

/** The idle worker if there is a usable one (a replacement is scheduled), else a new one. */
function takeWorker(): Worker {
  const idle = warm.idle;
  warm.idle = null;
  if (warm.enabled && warm.timer === undefined) {
    warm.timer = setTimeout(startIdleWorker, REWARM_DELAY_MS);
  }
  if (idle && !idle.failed) {
    idle.worker.onerror = null;
    return idle.worker;
  }
  idle?.worker.terminate();
  return newWorker();
}

function validate(o: CaptureOptions): void {
  const bad = (what: string) => {
    throw new CaptureError("validating capture options", what);
  };
  if (typeof o.device !== "string" || o.device === "" || o.device.length > 15) {
    bad(`device "${o.device}" must be an interface name of 1..15 characters`);
  }
  if (!Number.isInteger(o.snaplen) || o.snaplen < 1 || o.snaplen > MAX_SNAPLEN) {
    bad(`snaplen ${o.snaplen} is out of range: use an integer from 1 to ${MAX_SNAPLEN}`);
  }
  if (o.netns !== undefined && !o.netns.startsWith("/")) {
    bad(`netns "${o.netns}" must be a path such as /run/netns/NAME or /proc/PID/ns/net`);
  }
  const buf = o.bufferSize ?? DEFAULT_BUFFER;
  if (!Number.isInteger(buf) || buf < 65536 || buf > 2 ** 31 - 1) {
    bad(`bufferSize ${buf} must be an integer from 65536 to 2147483647 bytes`);
  }
  const t = o.timeoutMs ?? 100;
  if (!Number.isInteger(t) || t < 1 || t > 60000) bad(`timeoutMs ${t} must be 1..60000`);
  const q = o.queueBytes ?? DEFAULT_QUEUE;
  if (!Number.isInteger(q) || q < 2 * MAX_RECORD_BYTES || q > 2 ** 31 - 1) {
    bad(`queueBytes ${q} must be an integer from ${2 * MAX_RECORD_BYTES} to 2147483647`);
  }
  const room = o.batchRoom ?? { before: 0, after: 0 };
  for (const [k, v] of Object.entries({ before: room.before, after: room.after })) {
    if (!Number.isInteger(v) || v < 0 || v > 64) bad(`batchRoom.${k} ${v} must be 0..64`);
  }
  if (o.reader !== undefined && o.reader !== "auto" && o.reader !== "pcap_next_ex") {
    bad(`reader "${o.reader}" must be "auto" or "pcap_next_ex"`);
  }
}

export class CaptureEngine {
  readonly linkType: number;
  readonly snaplen: number;
  /** Namespace id the capture thread ran in (readlink of its /proc/thread-self/ns/net). */
  readonly netnsId: string;
  /** How packets are read: libpcap's ring directly, or the pcap_next_ex fallback. */
  readonly reader: ReaderKind;
  /** Where the start went on the capture thread: step → [wall ms, thread CPU ms] (logged). */
  readonly openSteps: OpenSteps;
  readonly #worker: Worker;
  readonly #reader: RingReader;
  readonly #ctrl: Int32Array;
  readonly #done: Promise<void>;
  #finished = false;
  #closed = false;
  #error: CaptureError | null = null;
  #errorReported = false;
  #packets = 0;
  #bytes = 0;

  private constructor(
    worker: Worker,
    reader: RingReader,
    ready: Extract<WorkerReply, { type: "ready" }>,
    done: Promise<void>,
  ) {
    this.#worker = worker;
    this.#reader = reader;
    this.#ctrl = reader.ctrl;
    this.linkType = ready.linkType;
    this.snaplen = ready.snaplen;
    this.netnsId = ready.netnsId;
    this.reader = ready.reader;
    this.openSteps = ready.steps;
    this.#done = done;
  }

  /** Starts a capture; resolves once libpcap is activated, rejects with CaptureError. */
  static open(opts: CaptureOptions): Promise<CaptureEngine> {
    try {
      validate(opts);
      pcap(); // fail here, clearly, when libpcap is missing
    } catch (e) {
      return Promise.reject(
        e instanceof CaptureError ? e : new CaptureError("loading libpcap", (e as Error).message),
      );
    }
    const timeoutMs = opts.timeoutMs ?? 100;
    const immediate = opts.immediate ?? false;
    const ring = createRing(opts.queueBytes ?? DEFAULT_QUEUE, opts.batchRoom, MAX_BATCH);
    const start: WorkerStart = {
      device: opts.device,
      netns: opts.netns,
      snaplen: opts.snaplen,
      promiscuous: opts.promiscuous ?? false,
      filter: opts.filter,
      bufferSize: opts.bufferSize ?? DEFAULT_BUFFER,
      timeoutMs,
      immediate,
      reader: opts.reader ?? "auto",
      ring: ring.shared,
      // Each wake-up is a waitAsync round trip that costs the main thread tens of
      // µs, so wake it per few batches (next() hands them out one by one without
      // waiting) or once records have waited NOTIFY_DELAY_MS, not per kernel block.
      notifyBytes: immediate ? 1 : NOTIFY_BYTES,
      notifyDelayMs: immediate ? 0 : Math.min(NOTIFY_DELAY_MS, timeoutMs),
      postedAtMs: 0, // set when posted
    };
    const worker = takeWorker();
    return new Promise((resolve, reject) => {
      let engine: CaptureEngine | null = null;
      let doneResolve!: () => void;
      const done = new Promise<void>((r) => doneResolve = r);
      liveRings.add(ring.data);
      done.then(() => liveRings.delete(ring.data));
      worker.onmessage = (ev: MessageEvent<WorkerReply>) => {
        const m = ev.data;
        if (m.type === "ready") {
          engine = new CaptureEngine(
            worker,
            new RingReader(ring),
            m,
            done,
          );
          resolve(engine);
        } else if (m.type === "error") {
          worker.terminate();
          doneResolve();
          reject(new CaptureError(m.operation, m.message));
        } else {
          if (engine && m.error) {
            engine.#error = new CaptureError(m.error.operation, m.error.message);
          }
          if (engine) engine.#finished = true;
          worker.terminate();
          doneResolve();
        }
      };
      start.postedAtMs = epochMs();
      worker.postMessage(start);
      worker.onerror = (ev) => {
        ev.preventDefault();
        worker.terminate();
        const err = new CaptureError("running capture worker", ev.message);
        if (!engine) {
          doneResolve();
          reject(err);
        } else {
          engine.#error ??= err;
          engine.#finished = true;
          doneResolve();
        }
      };
    });
  }

  /**
   * Keeps one idle capture worker ready from now on (the agent calls this at start), so that
   * open() does not pay for a new Worker; each open() takes it and a replacement follows.
   * Idempotent. The idle worker is a thread that has loaded the engine and libpcap, nothing more.
   */
  static prewarm(): void {
    warm.enabled = true;
    startIdleWorker();
  }

  /** Idle workers ready for the next open() (0 or 1): a replacement starts a little after one is taken. */
  static warmWorkers(): number {
    return warm.idle && !warm.idle.failed ? 1 : 0;
  }

  /** Ends pre-warming and terminates the idle worker (shutdown); running captures are not touched. */
  static releasePrewarmed(): void {
    warm.enabled = false;
    clearTimeout(warm.timer);
    warm.timer = undefined;
    warm.idle?.worker.terminate();
    warm.idle = null;
  }

  /**
   * Next batch of records; the previous batch's `records` becomes invalid now.
   * After stop() it drains what was captured, then returns null.
   * If the capture failed on its own (e.g. the interface vanished) it drains, then throws once.
   * One call at a time: do not call again before the previous promise settled.
   */
  async next(): Promise<PacketBatch | null> {
    for (;;) {
      if (this.#closed) {
        this.#reader.release();
        return null;
      }
      const seq = Atomics.load(this.#ctrl, C.SEQ);
      const b = this.#reader.take();
      if (b) {
        this.#packets += b.count;
        this.#bytes += b.bytes;
        return { count: b.count, records: b.records };
      }
      if (this.#finished) {
        if (this.#error && !this.#errorReported) {
          this.#errorReported = true;
          throw this.#error;
        }
        return null;
      }
      // No timeout: the worker wakes us for everything it publishes (idle() before it waits,
      // within the notify delay; finish() at its end) and #done settles when it is gone. The
      // 100 ms timeout cost the main thread 64 vs 44 ns/packet at 64 B, 300 kpps (205 vs 116
      // wake-ups); a 1 s one measured no better than 100 ms (docs/benchmarks.md).
      const w = Atomics.waitAsync(this.#ctrl, C.SEQ, seq);
      if (w.async) await Promise.race([w.value, this.#done]);
    }
  }

  /**
   * Keeps the batch the last next() returned (its records, and its batchRoom) past the next
   * next() and close(), until the returned function is called. Batches go back to the queue in
   * the order they came, so one held long holds back the queue behind it: the worker drops what
   * no longer fits (engineDropped). See heldBytes.
   */
  hold(): () => void {
    return this.#reader.hold();
  }

  /** Bytes of records in held batches not yet given back. */
  get heldBytes(): number {
    return this.#reader.heldBytes;
  }

  stats(): CaptureStats {
    const c = this.#ctrl;
    return {
      received: Atomics.load(c, C.K_RECV) >>> 0,
      dropped: Atomics.load(c, C.K_DROP) >>> 0,
      ifDropped: Atomics.load(c, C.K_IFDROP) >>> 0,
      engineDropped: Atomics.load(c, C.ENGINE_DROPPED) >>> 0,
      packets: this.#packets,
      bytes: this.#bytes,
    };
  }

  /**
   * Stops capturing; resolves once the worker has delivered (into the queue) every
   * packet the kernel captured before this call, closed the handle and ended.
   * The worker notices within its poll interval (100 ms); see the header for bounds.
   */
  async stop(): Promise<void> {
    Atomics.compareExchange(this.#ctrl, C.STATE, S.RUNNING, S.DRAIN);
    await this.#done;
  }

  /** Immediate abort: discards undelivered packets; the worker closes the handle and exits. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.release();
    const c = this.#ctrl;
    for (let st = Atomics.load(c, C.STATE); st === S.RUNNING || st === S.DRAIN;) {
      const was = Atomics.compareExchange(c, C.STATE, st, S.ABORT);
      if (was === st) break;
      st = was;
    }
  }

  /** Resolves once the worker has closed the handle and ended. */
  get finished(): Promise<void> {
    return this.#done;
  }
}
