/**
 * Fallback packet reader: pcap_next_ex per packet, copied into the engine ring
 * with libc memcpy by address. Used where the direct TPACKET_V3 reader does not
 * reproduce libpcap exactly (immediate mode, "any", non-Ethernet, userland
 * filtering, other libpcap versions) or when forced.
 *
 * The handle is switched to non-blocking mode and the worker waits with its own
 * bounded poll, so it notices stop()/close() without pcap_breakloop (which would
 * make pcap_next_ex drop the packet it was returning) and without any other
 * thread touching the handle.
 *
 * @example
 * ```ts ignore
 * // On the worker thread, once the handle is active and non-blocking:
 * const failed = readWithNextEx(start, handle, writer);
 * if (failed) postMessage({ type: "error", message: failed.message });
 * ```
 *
 * @module
 */
import { libc } from "../../ffi/libc.ts";
import { geterr, pcap, PCAP_ERRBUF_SIZE, readCString, statusToStr } from "../../ffi/libpcap.ts";
import { C, RingWriter, S } from "./capture_ring.ts";
import { recordDataOffset, recordSize } from "../../protocol/records.ts";
import {
  drainDeadline,
  KernelStats,
  POLL_MS,
  SocketWaiter,
  StepError,
  where,
  type WorkerStart,
} from "./capture_reading.ts";

export function readWithNextEx(
  o: WorkerStart,
  p: Deno.PointerObject,
  wr: RingWriter,
): StepError | undefined {
  const lib = pcap();
  const errbuf = new Uint8Array(PCAP_ERRBUF_SIZE);
  if (lib.pcap_setnonblock(p, 1, errbuf) !== 0) {
    return new StepError(`setting non-blocking mode ${where(o)}`, readCString(errbuf));
  }
  const nextEx = lib.pcap_next_ex;
  const memcpy = libc().memcpy;
  const ctrl = wr.ctrl;
  const ringBase = o.ring.dataPtr;
  const waiter = new SocketWaiter(lib.pcap_fileno(p), o);
  const stats = new KernelStats(p, ctrl);
  // Out-params of pcap_next_ex, read as two u32 halves to avoid BigInt churn.
  const hdrOut = new Uint8Array(8);
  const hdrOut32 = new Uint32Array(hdrOut.buffer);
  const dataOut = new Uint8Array(8);
  const dataOut64 = new BigUint64Array(dataOut.buffer);
  // libpcap hands out the same header struct every time; alias it once.
  let hdrLo = -1, hdrHi = -1;
  let hdr = new Uint32Array(6);
  // Drain after stop(): `seen` counts packets returned, `target` is the kernel's
  // count of packets put into its ring when the stop was noticed. Both mod 2^32.
  // That count is frozen as the final STATS and the drain ends on reaching it, so
  // packets arriving during the drain are neither counted nor delivered.
  let seen = 0;
  let target = 0;
  let draining = false;
  let deadline = 0;
  const reached = () => ((seen - target) | 0) >= 0;
  /** Looks at STATE: false = end now (close()); starts the drain on stop(). */
  const keepGoing = (): boolean => {
    const st = Atomics.load(ctrl, C.STATE);
    if (st === S.ABORT) return false;
    if (st === S.DRAIN && !draining) {
      draining = true;
      stats.freeze();
      target = stats.placed;
      deadline = drainDeadline(o.timeoutMs);
    }
    return true;
  };
  let err: StepError | undefined;
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
      const need = recordSize(caplen);
      const at = wr.reserve(need);
      if (at >= 0) {
        wr.header(at, hdr[0], hdr[2], caplen, hdr[5]);
        memcpy(ringBase + BigInt(recordDataOffset(at)), dataOut64[0], BigInt(caplen));
        wr.commit(at + need, need);
      }
      seen = (seen + 1) >>> 0;
      if (draining) {
        if (reached()) break;
      } else if ((seen & 1023) === 0) {
        wr.tick();
        stats.tick();
        if (!keepGoing()) break; // busy interface: rc 0 may never come
      }
      continue;
    }
    if (rc === 0) { // nothing ready
      const due = wr.idle();
      if (!keepGoing()) break;
      if (!draining) {
        stats.tick();
        err = waiter.wait(Math.min(POLL_MS, due));
      } else {
        // Everything from before the stop delivered, or its block never came in time.
        if (reached()) break;
        const left = deadline - performance.now();
        if (left <= 0) break;
        err = waiter.wait(Math.min(POLL_MS, left, due));
      }
      if (err) break;
      continue;
    }
    if (rc !== -2) err = new StepError(`capturing ${where(o)}`, geterr(p) || statusToStr(rc));
    break;
  }
  stats.update(); // no-op after a stop: the counters stay those frozen at it
  wr.finish();
  return err;
}
