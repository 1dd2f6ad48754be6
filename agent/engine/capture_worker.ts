/// <reference lib="deno.worker" />
/**
 * One capture on its own thread. The thread enters the requested network
 * namespace with setns() (affecting only this thread), activates libpcap and
 * then reads packets synchronously (libpcap's mmapped ring directly, or
 * pcap_next_ex as a fallback), copying every packet into the engine ring in
 * wire record format. All FFI here is synchronous on purpose:
 * nonblocking calls would run on pool threads in the host namespace.
 *
 * @example
 * ```ts ignore
 * // Started by CaptureEngine, never directly:
 * const worker = new Worker(new URL("./capture_worker.ts", import.meta.url), { type: "module" });
 * worker.postMessage(start); // a WorkerStart; replies are WorkerReply messages
 * ```
 *
 * @module
 */
import { enterNetns, libc, threadCpuMs } from "../../ffi/libc.ts";
import {
  type BpfProgram,
  compileFilter,
  cString,
  geterr,
  pcap,
  PCAP_ERRBUF_SIZE,
  PCAP_TSTAMP_PRECISION_NANO,
  readCString,
  statusToStr,
} from "../../ffi/libpcap.ts";
import { C, RingWriter, S } from "./capture_ring.ts";
import {
  COMPILE_FILTER_STEP,
  type ReaderKind,
  StepError,
  where,
  type WorkerStart,
} from "./capture_reading.ts";
import { readWithNextEx } from "./capture_pcap_reader.ts";
import { epochMs, type OpenSteps, StepClock } from "./open_steps.ts";
import { findPacketRing, readRing } from "./capture_tpacket_reader.ts";

export type { WorkerStart } from "./capture_reading.ts";

export type WorkerReply =
  | {
    type: "ready";
    linkType: number;
    snaplen: number;
    netnsId: string;
    reader: ReaderKind;
    steps: OpenSteps;
  }
  | { type: "error"; operation: string; message: string }
  | { type: "done"; error?: { operation: string; message: string } };

/**
 * Creates, configures and activates the handle; closes it again on failure.
 * The compiled filter is returned too (the ring reader may need it); free it after use.
 */
function open(
  o: WorkerStart,
  clock: StepClock,
): { p: Deno.PointerObject; program: BpfProgram | null } {
  const lib = pcap();
  const errbuf = new Uint8Array(PCAP_ERRBUF_SIZE);
  const p = lib.pcap_create(cString(o.device), errbuf);
  if (p === null) {
    throw new StepError(`creating capture ${where(o)}`, readCString(errbuf));
  }
  try {
    const set = (what: string, rc: number) => {
      if (rc !== 0) throw new StepError(`setting ${what} ${where(o)}`, statusToStr(rc));
    };
    set("snaplen", lib.pcap_set_snaplen(p, o.snaplen));
    set("promiscuous mode", lib.pcap_set_promisc(p, o.promiscuous ? 1 : 0));
    set("buffer timeout", lib.pcap_set_timeout(p, o.timeoutMs));
    set("kernel buffer size", lib.pcap_set_buffer_size(p, o.bufferSize));
    set("immediate mode", lib.pcap_set_immediate_mode(p, o.immediate ? 1 : 0));
    set("timestamp precision", lib.pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO));
    clock.mark("create");
    const rc = lib.pcap_activate(p);
    if (rc < 0) {
      const detail = geterr(p);
      const status = statusToStr(rc);
      throw new StepError(
        `activating capture ${where(o)}`,
        detail && detail !== status ? `${status} (${detail})` : status,
      );
    }
    clock.mark("activate");
    let program: BpfProgram | null = null;
    if (o.filter !== undefined && o.filter !== "") {
      // The agent's only compile of the filter: here, on this thread, never on the main one.
      const r = compileFilter(p, o.filter);
      if ("error" in r) throw new StepError(`${COMPILE_FILTER_STEP} "${o.filter}"`, r.error);
      if (lib.pcap_setfilter(p, r.program.buf) !== 0) {
        r.program.free();
        throw new StepError(`setting filter "${o.filter}" ${where(o)}`, geterr(p));
      }
      program = r.program;
      clock.mark("filter");
    }
    return { p, program };
  } catch (e) {
    lib.pcap_close(p);
    throw e;
  }
}

/** Picks the reader: the direct ring reader where it reproduces libpcap, else pcap_next_ex. */
function reader(o: WorkerStart, p: Deno.PointerObject, program: BpfProgram | null) {
  const ring = o.reader === "auto" ? findPacketRing(p, o, program !== null) : null;
  const kind: ReaderKind = ring ? "tpacket_v3" : "pcap_next_ex";
  const run = () => {
    const wr = new RingWriter(o.ring, o.notifyBytes, o.notifyDelayMs);
    return ring ? readRing(o, p, ring, program, wr) : readWithNextEx(o, p, wr);
  };
  return { kind, run };
}

/** Sent to a pre-warmed worker while it idles: load the libraries now, off a start's path. */
export interface WorkerWarm {
  warm: true;
}

self.onmessage = (ev: MessageEvent<WorkerStart | WorkerWarm>) => {
  if ("warm" in ev.data) {
    // dlopen only: no handle, no namespace (the thread stays in the agent's own).
    try {
      pcap();
      libc();
    } catch { /* reported by the start that needs them */ }
    return;
  }
  const o = ev.data;
  const ctrl = new Int32Array(o.ring.ctrl);
  let p: Deno.PointerObject;
  let program: BpfProgram | null;
  let read: ReturnType<typeof reader>;
  try {
    const queued = epochMs() - o.postedAtMs;
    const clock = new StepClock(threadCpuMs);
    if (o.netns) enterNetns(o.netns);
    const netnsId = Deno.readLinkSync("/proc/thread-self/ns/net");
    clock.mark("netns");
    ({ p, program } = open(o, clock));
    try {
      read = reader(o, p, program);
      clock.mark("reader");
    } catch (e) {
      program?.free();
      pcap().pcap_close(p);
      throw e;
    }
    Atomics.store(ctrl, C.STATE, S.RUNNING);
    self.postMessage(
      {
        type: "ready",
        linkType: pcap().pcap_datalink(p),
        snaplen: pcap().pcap_snapshot(p),
        netnsId,
        reader: read.kind,
        steps: { queue: [Math.max(0, Math.round(queued * 10) / 10), 0], ...clock.steps },
      } satisfies WorkerReply,
    );
  } catch (e) {
    const op = e instanceof StepError ? e.operation : `starting capture ${where(o)}`;
    self.postMessage({ type: "error", operation: op, message: (e as Error).message });
    self.close();
    return;
  }
  let err: StepError | undefined;
  try {
    err = read.run();
  } catch (e) {
    err = new StepError(`capturing ${where(o)}`, (e as Error).message);
  }
  program?.free();
  // Only this thread ever touches the handle (main asks via STATE), so close it now.
  pcap().pcap_close(p);
  Atomics.store(ctrl, C.STATE, S.ENDED);
  const reply: WorkerReply = err
    ? { type: "done", error: { operation: err.operation, message: err.message } }
    : { type: "done" };
  self.postMessage(reply);
  self.close();
};
