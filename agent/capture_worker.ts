/// <reference lib="deno.worker" />
// One capture on its own thread. The thread enters the requested network
// namespace with setns() (affecting only this thread), activates libpcap and
// then reads packets synchronously (libpcap's mmapped ring directly, or
// pcap_next_ex as a fallback), copying every packet into the engine ring in
// wire record format. All FFI here is synchronous on purpose:
// nonblocking calls would run on pool threads in the host namespace.
import {
  attachedFilterLength,
  enterNetns,
  errno,
  getsockoptInt,
  libc,
  PACKET_VERSION,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  SO_ERROR,
  SOL_PACKET,
  SOL_SOCKET,
  strerror,
  TPACKET_V3,
} from "../ffi/libc.ts";
import {
  type BpfProgram,
  compileFilter,
  cString,
  geterr,
  libVersion,
  pcap,
  PCAP_ERRBUF_SIZE,
  PCAP_STAT_SIZE,
  PCAP_TSTAMP_PRECISION_NANO,
  PKTHDR_SIZE,
  readCString,
  statusToStr,
} from "../ffi/libpcap.ts";
import { C, RECORD_HEADER, type RingShared, RingWriter, S } from "./capture_ring.ts";

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

/**
 * Creates, configures and activates the handle; closes it again on failure.
 * The compiled filter is returned too (the ring reader may need it); free it after use.
 */
function open(o: WorkerStart): { p: Deno.PointerObject; program: BpfProgram | null } {
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
    let program: BpfProgram | null = null;
    if (o.filter !== undefined && o.filter !== "") {
      const r = compileFilter(p, o.filter);
      if ("error" in r) throw new StepError(`compiling filter "${o.filter}"`, r.error);
      if (lib.pcap_setfilter(p, r.program.buf) !== 0) {
        r.program.free();
        throw new StepError(`setting filter "${o.filter}" ${where(o)}`, geterr(p));
      }
      program = r.program;
    }
    return { p, program };
  } catch (e) {
    lib.pcap_close(p);
    throw e;
  }
}

/** Kernel stats into the control block (pcap_stats works whichever way we read). */
function statsUpdater(p: Deno.PointerObject, ctrl: Int32Array): () => void {
  const statBuf = new Uint8Array(PCAP_STAT_SIZE);
  const stat32 = new Uint32Array(statBuf.buffer);
  return () => {
    if (pcap().pcap_stats(p, statBuf) === 0) {
      Atomics.store(ctrl, C.K_RECV, stat32[0] | 0);
      Atomics.store(ctrl, C.K_DROP, stat32[1] | 0);
      Atomics.store(ctrl, C.K_IFDROP, stat32[2] | 0);
    }
  };
}

/** Fallback reader: pcap_next_ex per packet, copied with libc memcpy by address. */
function captureNextEx(o: WorkerStart, p: Deno.PointerObject): StepError | undefined {
  const lib = pcap();
  const nextEx = lib.pcap_next_ex;
  const memcpy = libc().memcpy;
  const wr = new RingWriter(o.ring, o.notifyBytes);
  const ringBase = o.ring.dataPtr;
  // Out-params of pcap_next_ex, read as two u32 halves to avoid BigInt churn.
  const hdrOut = new Uint8Array(8);
  const hdrOut32 = new Uint32Array(hdrOut.buffer);
  const dataOut = new Uint8Array(8);
  const dataOut64 = new BigUint64Array(dataOut.buffer);
  // libpcap hands out the same header struct every time; alias it once.
  let hdrLo = -1, hdrHi = -1;
  let hdr = new Uint32Array(6);
  const updateStats = statsUpdater(p, wr.ctrl);
  let sinceStats = 0;
  let lastStats = performance.now();
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
      const at = wr.reserve(need);
      if (at >= 0) {
        wr.header(at, hdr[0], hdr[2], caplen, hdr[5]);
        memcpy(ringBase + BigInt(at + RECORD_HEADER), dataOut64[0], BigInt(caplen));
        wr.commit(at + need, need);
      }
      if (++sinceStats >= 4096) {
        sinceStats = 0;
        if (performance.now() - lastStats >= 100) {
          updateStats();
          lastStats = performance.now();
        }
      }
      continue;
    }
    if (rc === 0) { // buffer timeout with nothing new
      wr.flush();
      updateStats();
      lastStats = performance.now();
      continue;
    }
    updateStats();
    wr.publish();
    wr.notify();
    if (rc === -2) return undefined; // pcap_breakloop from stop()/close()
    return new StepError(`capturing ${where(o)}`, geterr(p) || statusToStr(rc));
  }
}

// Direct TPACKET_V3 reading. libpcap's per-packet path costs an FFI call per
// packet (plus BigInt pointer arithmetic to copy); instead we alias libpcap's
// mmapped kernel ring once and walk its blocks in JS, copying each packet with
// TypedArray.set (memcpy), so a packet costs no FFI at all. We only do this
// where we reproduce libpcap 1.10's reader exactly (Ethernet, kernel filter,
// no immediate mode): lo outgoing duplicates dropped, VLAN tags put back,
// caplen clamped, pre-filter blocks filtered in userland. Otherwise fallback.
const TP_BLOCK = 262144; // libpcap 1.10: V3 block = MAXIMUM_SNAPLEN rounded up to a page power of 2
const TP_STATUS_KERNEL = 0;
const TP_STATUS_USER = 1;
const TP_STATUS_VLAN_VALID = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID = 1 << 6;
const PACKET_OUTGOING = 4;
const LO_IFINDEX = 1; // loopback is ifindex 1 in every namespace
const DLT_EN10MB = 1;
const POLL_MS = 100; // also bounds how long stop() waits on an idle interface
const EINTR = 4;

interface PacketRing {
  fd: number;
  base: number;
  bytes: ArrayBuffer;
  blocks: number;
  /** Leading blocks that may hold packets from before the filter was set. */
  prefilterBlocks: number;
}

function findPacketRing(
  p: Deno.PointerObject,
  o: WorkerStart,
  filtered: boolean,
): PacketRing | null {
  const lib = pcap();
  if (o.immediate || o.device === "any" || lib.pcap_datalink(p) !== DLT_EN10MB) return null;
  if (!/^libpcap version 1\.10\./.test(libVersion())) return null;
  const fd = lib.pcap_fileno(p);
  if (fd < 0 || getsockoptInt(fd, SOL_PACKET, PACKET_VERSION) !== TPACKET_V3) return null;
  // No kernel filter although one was set: libpcap would filter every packet itself.
  if (filtered && !((attachedFilterLength(fd) ?? 0) > 0)) return null;
  const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  const line = Deno.readTextFileSync("/proc/self/maps").split("\n")
    .find((l) => l.endsWith(` ${link}`));
  if (!line) return null;
  const [a, b] = line.slice(0, line.indexOf(" ")).split("-").map((x) => parseInt(x, 16));
  const len = b - a;
  if (!(len > 0) || len % TP_BLOCK !== 0) return null;
  const bytes = Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(a))!, len);
  const blocks = len / TP_BLOCK;
  const status = new Int32Array(bytes);
  let filled = 0;
  for (let i = 0; i < blocks; i++) {
    if (Atomics.load(status, (i * TP_BLOCK + 8) >> 2) & TP_STATUS_USER) filled++;
  }
  // Like libpcap: the filled blocks plus the one being filled predate the filter.
  return { fd, base: a, bytes, blocks, prefilterBlocks: filtered ? filled + 1 : 0 };
}

function captureRing(
  o: WorkerStart,
  p: Deno.PointerObject,
  ring: PacketRing,
  program: BpfProgram | null,
  wr: RingWriter,
): StepError | undefined {
  const lib = pcap();
  const poll = libc().poll;
  const ctrl = wr.ctrl, out = wr.bytes;
  const u8 = new Uint8Array(ring.bytes), u16 = new Uint16Array(ring.bytes);
  const u32 = new Uint32Array(ring.bytes), i32 = new Int32Array(ring.bytes);
  const snapshot = lib.pcap_snapshot(p);
  const pfd = new Uint8Array(8), pfd32 = new Int32Array(pfd.buffer);
  const pfd16 = new Int16Array(pfd.buffer);
  pfd32[0] = ring.fd;
  pfd16[2] = POLLIN;
  const fhdr = new Uint8Array(PKTHDR_SIZE), fhdr32 = new Uint32Array(fhdr.buffer);
  const updateStats = statsUpdater(p, ctrl);
  let lastStats = performance.now();
  let prefilter = ring.prefilterBlocks;
  let blk = 0;
  let drainLeft = -1; // after stop(): blocks still to deliver (at most one ring's worth)
  const corrupt = (what: string) =>
    new StepError(`reading the packet ring ${where(o)}`, `unexpected ring layout: ${what}`);
  for (;;) {
    if (drainLeft < 0 && Atomics.load(ctrl, C.STATE) !== S.RUNNING) drainLeft = ring.blocks;
    const bo = blk * TP_BLOCK;
    if ((Atomics.load(i32, (bo + 8) >> 2) & TP_STATUS_USER) === 0 || drainLeft === 0) {
      wr.flush();
      if (drainLeft >= 0) break;
      if (performance.now() - lastStats >= 100) {
        updateStats();
        lastStats = performance.now();
      }
      pfd16[3] = 0;
      const rc = poll(pfd, 1n, POLL_MS);
      if (rc < 0) {
        if (errno() === EINTR) continue;
        return new StepError(`waiting for packets ${where(o)}`, strerror(errno()));
      }
      const rev = pfd16[3];
      if (rc > 0 && (rev & (POLLERR | POLLHUP | POLLNVAL))) {
        const e = getsockoptInt(ring.fd, SOL_SOCKET, SO_ERROR) ?? 0;
        updateStats();
        return new StepError(
          `capturing ${where(o)}`,
          e ? `${strerror(e)} (the interface went down or disappeared)` : `poll events ${rev}`,
        );
      }
      continue;
    }
    const n = u32[(bo + 12) >> 2];
    let off = bo + u32[(bo + 16) >> 2];
    const limit = bo + TP_BLOCK;
    for (let i = 0; i < n; i++) {
      if ((off & 3) !== 0 || off + 68 > limit) return corrupt(`packet header at ${off}`);
      const q = off >> 2;
      let caplen = u32[q + 3], origlen = u32[q + 4];
      let data = off + u16[(off + 24) >> 1];
      if (data + caplen > limit) return corrupt(`packet of ${caplen} bytes at ${data}`);
      const next = u32[q];
      if (u8[off + 58] === PACKET_OUTGOING && i32[(off + 52) >> 2] === LO_IFINDEX) {
        off += next; // loopback: seen again as incoming
        continue;
      }
      const tci = u32[q + 8], st = u32[q + 5];
      if ((tci !== 0 || (st & TP_STATUS_VLAN_VALID)) && caplen >= 12) {
        // The kernel strips the 802.1Q tag; put it back after the MACs, as libpcap does.
        const tpid = (u16[(off + 36) >> 1] !== 0 || (st & TP_STATUS_VLAN_TPID_VALID))
          ? u16[(off + 36) >> 1]
          : 0x8100;
        u8.copyWithin(data - 4, data, data + 12);
        data -= 4;
        u8[data + 12] = tpid >> 8;
        u8[data + 13] = tpid & 255;
        u8[data + 14] = (tci >> 8) & 255;
        u8[data + 15] = tci & 255;
        caplen += 4;
        origlen += 4;
      }
      if (caplen > snapshot) caplen = snapshot;
      if (prefilter > 0 && program !== null) {
        fhdr32[4] = caplen;
        fhdr32[5] = origlen;
        const ptr = Deno.UnsafePointer.create(BigInt(ring.base + data));
        if (lib.pcap_offline_filter(program.buf, fhdr, ptr) === 0) {
          off += next;
          continue;
        }
      }
      const need = RECORD_HEADER + caplen;
      const at = wr.reserve(need);
      if (at >= 0) {
        wr.header(at, u32[q + 1], u32[q + 2], caplen, origlen);
        out.set(u8.subarray(data, data + caplen), at + RECORD_HEADER);
        wr.commit(at + need, need);
      }
      off += next;
    }
    Atomics.store(i32, (bo + 8) >> 2, TP_STATUS_KERNEL); // hand the block back
    if (prefilter > 0) prefilter--;
    if (drainLeft > 0) drainLeft--;
    blk = blk + 1 === ring.blocks ? 0 : blk + 1;
    wr.flush();
    if (performance.now() - lastStats >= 100) {
      updateStats();
      lastStats = performance.now();
    }
  }
  updateStats();
  wr.publish();
  wr.notify();
  return undefined;
}

function capture(
  o: WorkerStart,
  p: Deno.PointerObject,
  program: BpfProgram | null,
): StepError | undefined {
  const ring = findPacketRing(p, o, program !== null);
  if (ring === null) return captureNextEx(o, p);
  return captureRing(o, p, ring, program, new RingWriter(o.ring, o.notifyBytes));
}

self.onmessage = (ev: MessageEvent<WorkerStart>) => {
  const o = ev.data;
  const ctrl = new Int32Array(o.ring.ctrl);
  let p: Deno.PointerObject;
  let program: BpfProgram | null;
  try {
    if (o.netns) enterNetns(o.netns);
    const netnsId = Deno.readLinkSync("/proc/thread-self/ns/net");
    ({ p, program } = open(o));
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
  let err: StepError | undefined;
  try {
    err = capture(o, p, program);
  } catch (e) {
    err = new StepError(`capturing ${where(o)}`, (e as Error).message);
  }
  program?.free();
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
