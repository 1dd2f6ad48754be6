/**
 * Pieces shared by the capture worker's two packet readers
 * (capture_tpacket_reader.ts, capture_pcap_reader.ts): the start message,
 * step errors, kernel stats, waiting on the capture socket, and the drain
 * deadline of a stop. Runs on the worker thread; all calls are synchronous.
 *
 * @example
 * ```ts ignore
 * // A reader's wait: up to POLL_MS for the capture socket, an error if it failed.
 * const waiter = new SocketWaiter(fd, start);
 * const failed = waiter.wait(POLL_MS);
 * if (failed) return failed; // a StepError naming the capture (where(start))
 * ```
 *
 * @module
 */
import {
  errno,
  getsockoptInt,
  libc,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  SO_ERROR,
  SOL_SOCKET,
  strerror,
} from "../../ffi/libc.ts";
import { pcap, PCAP_STAT_SIZE } from "../../ffi/libpcap.ts";
import { C, type RingShared } from "./capture_ring.ts";

/** Which reader the worker uses; "pcap_next_ex" forces the fallback (tests, diagnostics). */
export type ReaderChoice = "auto" | "pcap_next_ex";
export type ReaderKind = "tpacket_v3" | "pcap_next_ex";

export interface WorkerStart {
  device: string;
  netns?: string;
  snaplen: number;
  promiscuous: boolean;
  filter?: string;
  bufferSize: number;
  timeoutMs: number;
  immediate: boolean;
  reader: ReaderChoice;
  ring: RingShared;
  notifyBytes: number;
  notifyDelayMs: number;
  /** epochMs() when the start was posted: the worker reports how long it waited for it */
  postedAtMs: number;
}

/** Prefix of the step whose failure means the filter itself is unusable (not the capture). */
export const COMPILE_FILTER_STEP = "compiling filter";

export class StepError extends Error {
  constructor(readonly operation: string, message: string) {
    super(message);
  }
}

export function where(o: WorkerStart): string {
  return `on "${o.device}"${o.netns ? ` in ${o.netns}` : ""}`;
}

/** Longest single wait: bounds how late the worker notices stop()/close() when idle. */
export const POLL_MS = 100;
const EINTR = 4;

/**
 * How long a stop may wait for the kernel to hand over the block holding the
 * last packets from before the stop. The kernel retires a partly filled
 * TPACKET_V3 block on a timer of `timeoutMs` (libpcap passes its timeout), and
 * only when the block was already current at the previous tick, so at most two
 * ticks after the packet arrived; 50 ms covers timer slack.
 */
export function drainDeadline(timeoutMs: number): number {
  return performance.now() + 2 * timeoutMs + 50;
}

/** Kernel counters (pcap_stats) mirrored into the control block for stats(). */
export class KernelStats {
  recv = 0;
  drop = 0;
  readonly #p: Deno.PointerObject;
  readonly #ctrl: Int32Array;
  readonly #buf = new Uint8Array(PCAP_STAT_SIZE);
  readonly #u32 = new Uint32Array(this.#buf.buffer);
  #last = 0;
  #frozen = false;

  constructor(p: Deno.PointerObject, ctrl: Int32Array) {
    this.#p = p;
    this.#ctrl = ctrl;
  }

  update(): void {
    if (this.#frozen) return;
    this.#last = performance.now();
    if (pcap().pcap_stats(this.#p, this.#buf) !== 0) return;
    const s = this.#u32, c = this.#ctrl;
    this.recv = s[0];
    this.drop = s[1];
    Atomics.store(c, C.K_RECV, s[0] | 0);
    Atomics.store(c, C.K_DROP, s[1] | 0);
    Atomics.store(c, C.K_IFDROP, s[2] | 0);
  }

  /**
   * The final counters, taken when a stop is noticed: updates once, then never again. The
   * reader then delivers exactly the packets these count (see `placed`), so the last STATS
   * add up even while traffic keeps arriving during the drain.
   */
  freeze(): void {
    this.update();
    this.#frozen = true;
  }

  /** update() at most every 100 ms. */
  tick(): void {
    if (performance.now() - this.#last >= 100) this.update();
  }

  /** Packets the kernel put into its ring so far (received minus ring-full drops), mod 2^32. */
  get placed(): number {
    return (this.recv - this.drop) >>> 0;
  }
}

/** Waits for the capture socket to be readable (a kernel block or frame is ready). */
export class SocketWaiter {
  readonly #fd: number;
  readonly #o: WorkerStart;
  readonly #pfd = new Uint8Array(8);
  readonly #pfd16 = new Int16Array(this.#pfd.buffer);

  constructor(fd: number, o: WorkerStart) {
    this.#fd = fd;
    this.#o = o;
    new Int32Array(this.#pfd.buffer)[0] = fd;
    this.#pfd16[2] = POLLIN;
  }

  /** Sleeps ms without watching the socket (poll on no descriptors): lets kernel blocks pile up. */
  nap(ms: number): void {
    libc().poll(this.#pfd, 0n, ms);
  }

  /** Waits up to ms; a StepError when the socket failed (e.g. the interface vanished). */
  wait(ms: number): StepError | undefined {
    this.#pfd16[3] = 0;
    const rc = libc().poll(this.#pfd, 1n, Math.max(0, Math.ceil(ms)));
    if (rc < 0) {
      const e = errno();
      if (e === EINTR) return undefined;
      return new StepError(`waiting for packets ${where(this.#o)}`, strerror(e));
    }
    const rev = this.#pfd16[3];
    if (rc > 0 && (rev & (POLLERR | POLLHUP | POLLNVAL))) {
      const e = getsockoptInt(this.#fd, SOL_SOCKET, SO_ERROR) ?? 0;
      return new StepError(
        `capturing ${where(this.#o)}`,
        e ? `${strerror(e)} (the interface went down or disappeared)` : `poll events ${rev}`,
      );
    }
    return undefined;
  }
}
