/// <reference lib="deno.worker" />
// One capture on its own thread. The thread enters the requested network
// namespace with setns() (affecting only this thread), activates libpcap and
// then loops on pcap_next_ex synchronously, copying every packet into the
// shared ring in wire record format. All FFI here is synchronous on purpose:
// nonblocking calls would run on pool threads in the host namespace.
import { enterNetns, libc } from "../ffi/libc.ts";
import {
  compileFilter,
  cString,
  geterr,
  pcap,
  PCAP_ERRBUF_SIZE,
  PCAP_STAT_SIZE,
  PCAP_TSTAMP_PRECISION_NANO,
  readCString,
  statusToStr,
} from "../ffi/libpcap.ts";
import { C, RECORD_HEADER, type RingShared, S } from "./capture_ring.ts";

export interface WorkerStart {
  device: string;
  netns?: string;
  snaplen: number;
  promiscuous: boolean;
  filter?: string;
  bufferSize: number;
  timeoutMs: number;
  immediate: boolean;
  ring: RingShared;
  notifyBytes: number;
}

export type WorkerReply =
  | { type: "ready"; linkType: number; snaplen: number; handle: bigint; netnsId: string }
  | { type: "error"; operation: string; message: string }
  | { type: "done"; error?: { operation: string; message: string } };

class StepError extends Error {
  constructor(readonly operation: string, message: string) {
    super(message);
  }
}

function where(o: WorkerStart): string {
  return `on "${o.device}"${o.netns ? ` in ${o.netns}` : ""}`;
}

/** Creates, configures and activates the handle; closes it again on failure. */
function open(o: WorkerStart): Deno.PointerObject {
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
    const rc = lib.pcap_activate(p);
    if (rc < 0) {
      const detail = geterr(p);
      const status = statusToStr(rc);
      throw new StepError(
        `activating capture ${where(o)}`,
        detail && detail !== status ? `${status} (${detail})` : status,
      );
    }
    if (o.filter !== undefined && o.filter !== "") {
      const r = compileFilter(p, o.filter);
      if ("error" in r) throw new StepError(`compiling filter "${o.filter}"`, r.error);
      try {
        if (lib.pcap_setfilter(p, r.program.buf) !== 0) {
          throw new StepError(`setting filter "${o.filter}" ${where(o)}`, geterr(p));
        }
      } finally {
        r.program.free();
      }
    }
    return p;
  } catch (e) {
    lib.pcap_close(p);
    throw e;
  }
}

function capture(o: WorkerStart, p: Deno.PointerObject): StepError | undefined {
  const lib = pcap();
  const nextEx = lib.pcap_next_ex;
  const memcpy = libc().memcpy;
  const ctrl = new Int32Array(o.ring.ctrl);
  const view = new DataView(o.ring.data);
  const size = o.ring.data.byteLength;
  const ringBase = Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(o.ring.data)));
  // Out-params of pcap_next_ex, read as two u32 halves to avoid BigInt churn.
  const hdrOut = new Uint8Array(8);
  const hdrOut32 = new Uint32Array(hdrOut.buffer);
  const dataOut = new Uint8Array(8);
  const dataOut64 = new BigUint64Array(dataOut.buffer);
  // libpcap hands out the same header struct every time; alias it once.
  let hdrLo = -1, hdrHi = -1;
  let hdr = new Uint32Array(6);
  const statBuf = new Uint8Array(PCAP_STAT_SIZE);
  const stat32 = new Uint32Array(statBuf.buffer);
  let w = Atomics.load(ctrl, C.WRITE_POS);
  let dropped = 0;
  let sinceNotify = 0;
  let sinceStats = 0;
  let lastStats = performance.now();

  const notify = () => {
    sinceNotify = 0;
    Atomics.add(ctrl, C.SEQ, 1);
    Atomics.notify(ctrl, C.SEQ);
  };
  const updateStats = () => {
    if (lib.pcap_stats(p, statBuf) === 0) {
      Atomics.store(ctrl, C.K_RECV, stat32[0] | 0);
      Atomics.store(ctrl, C.K_DROP, stat32[1] | 0);
      Atomics.store(ctrl, C.K_IFDROP, stat32[2] | 0);
    }
    lastStats = performance.now();
  };

  for (;;) {
    const rc = nextEx(p, hdrOut, dataOut);
    if (rc === 1) {
      if (hdrOut32[0] !== hdrLo || hdrOut32[1] !== hdrHi) {
        hdrLo = hdrOut32[0];
        hdrHi = hdrOut32[1];
        const ptr = Deno.UnsafePointer.create(BigInt(hdrLo) + (BigInt(hdrHi) << 32n))!;
        hdr = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(ptr, 24));
      }
      const caplen = hdr[4];
      const need = RECORD_HEADER + caplen;
      const r = Atomics.load(ctrl, C.READ_POS);
      let at = -1;
      if (w >= r) {
        if (size - w >= need) at = w;
        else if (r - 1 >= need) {
          Atomics.store(ctrl, C.WRAP_AT, w);
          at = 0;
        }
      } else if (r - w - 1 >= need) at = w;
      if (at < 0) {
        // Consumer too slow: count and drop, never grow.
        Atomics.store(ctrl, C.ENGINE_DROPPED, ++dropped | 0);
      } else {
        // ts_ns = sec * 1e9 + nsec, computed exactly in doubles as two u32 halves.
        const sec = hdr[0], nsec = hdr[2];
        const x = (sec & 0xffff) * 1e9 + nsec;
        const y = (sec >>> 16) * 1e9;
        let lo = (y % 65536) * 65536 + (x % 4294967296);
        const hi = Math.floor(y / 65536) + Math.floor(x / 4294967296) +
          Math.floor(lo / 4294967296);
        lo = lo % 4294967296;
        view.setUint32(at, lo, true);
        view.setUint32(at + 4, hi, true);
        view.setUint32(at + 8, caplen, true);
        view.setUint32(at + 12, hdr[5], true);
        memcpy(ringBase + BigInt(at + RECORD_HEADER), dataOut64[0], BigInt(caplen));
        w = at + need;
        Atomics.store(ctrl, C.WRITE_POS, w);
        sinceNotify += need;
        if (sinceNotify >= o.notifyBytes) notify();
      }
      if (++sinceStats >= 4096) {
        sinceStats = 0;
        if (performance.now() - lastStats >= 100) updateStats();
      }
      continue;
    }
    if (rc === 0) { // buffer timeout with nothing new
      if (sinceNotify > 0) notify();
      updateStats();
      continue;
    }
    updateStats();
    notify();
    if (rc === -2) return undefined; // pcap_breakloop from stop()/close()
    return new StepError(`capturing ${where(o)}`, geterr(p) || statusToStr(rc));
  }
}

self.onmessage = (ev: MessageEvent<WorkerStart>) => {
  const o = ev.data;
  const ctrl = new Int32Array(o.ring.ctrl);
  let p: Deno.PointerObject;
  try {
    if (o.netns) enterNetns(o.netns);
    const netnsId = Deno.readLinkSync("/proc/thread-self/ns/net");
    p = open(o);
    Atomics.store(ctrl, C.STATE, S.RUNNING);
    self.postMessage(
      {
        type: "ready",
        linkType: pcap().pcap_datalink(p),
        snaplen: pcap().pcap_snapshot(p),
        handle: Deno.UnsafePointer.value(p),
        netnsId,
      } satisfies WorkerReply,
    );
  } catch (e) {
    const op = e instanceof StepError ? e.operation : `starting capture ${where(o)}`;
    self.postMessage({ type: "error", operation: op, message: (e as Error).message });
    self.close();
    return;
  }
  const err = capture(o, p);
  // If main is inside pcap_breakloop, wait for it to finish before freeing the handle.
  if (Atomics.compareExchange(ctrl, C.STATE, S.RUNNING, S.ENDED) !== S.RUNNING) {
    while (Atomics.load(ctrl, C.STATE) === S.STOPPING) {
      Atomics.wait(ctrl, C.STATE, S.STOPPING, 1000);
    }
  }
  pcap().pcap_close(p);
  Atomics.store(ctrl, C.STATE, S.ENDED);
  const reply: WorkerReply = err
    ? { type: "done", error: { operation: err.operation, message: err.message } }
    : { type: "done" };
  self.postMessage(reply);
  self.close();
};
