/**
 * Direct TPACKET_V3 reading. libpcap's per-packet path costs an FFI call per
 * packet (plus BigInt pointer arithmetic to copy); instead we alias libpcap's
 * mmapped kernel ring once and walk its blocks in JS, copying each packet with
 * one copyWithin (a memmove) over a view spanning the ring and the engine queue,
 * so a packet costs no FFI and allocates nothing. We only do this
 * where we reproduce libpcap 1.10's reader exactly (Ethernet, kernel filter,
 * no immediate mode): lo outgoing duplicates dropped, VLAN tags put back,
 * caplen clamped, pre-filter blocks filtered in userland. Otherwise fallback.
 *
 * @example
 * ```ts ignore
 * // On the worker thread: the direct reader where it reproduces libpcap, else the fallback.
 * const ring = findPacketRing(handle, start, filtered);
 * const failed = ring
 *   ? readRing(start, handle, ring, program, writer)
 *   : readWithNextEx(start, handle, writer);
 * ```
 *
 * @module
 */
import {
  attachedFilterLength,
  getsockoptInt,
  PACKET_VERSION,
  SOL_PACKET,
  TPACKET_V3,
} from "../../ffi/libc.ts";
import { type BpfProgram, libVersion, pcap, PKTHDR_SIZE } from "../../ffi/libpcap.ts";
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

const TP_BLOCK = 262144; // libpcap 1.10: V3 block = MAXIMUM_SNAPLEN rounded up to a page power of 2
const TP_STATUS_KERNEL = 0;
const TP_STATUS_USER = 1;
const TP_STATUS_BLK_TMO = 1 << 5; // the kernel retired the block on its timeout, not full
const TP_STATUS_VLAN_VALID = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID = 1 << 6;
const PACKET_OUTGOING = 4;
const LO_IFINDEX = 1; // loopback is ifindex 1 in every namespace
const DLT_EN10MB = 1;
// Block descriptor (tpacket_block_desc / tpacket_hdr_v1) field offsets.
const BD_STATUS = 8;
const BD_NUM_PKTS = 12;
const BD_FIRST = 16;

/**
 * One view over two byte ranges anywhere in this process (the kernel ring and the engine queue),
 * with where each starts in it, so that a packet is copied from one to the other by a single
 * `copyWithin` (a memmove). `dst.set(src.subarray())` costs a view object per packet and the
 * garbage behind it. In a hot-cache loop on this machine, per copy: 18 against 27 ns at 64 B (as
 * the 4-byte word loop this replaced), 45–49 against 55–62 ns at 1514 B. The view aliases memory
 * it does not own (and the gap between the two, never touched): valid only while both ranges are.
 */
export function spanning(a: Uint8Array, b: Uint8Array): { u8: Uint8Array; a: number; b: number } {
  const pa = Deno.UnsafePointer.value(Deno.UnsafePointer.of(a));
  const pb = Deno.UnsafePointer.value(Deno.UnsafePointer.of(b));
  const lo = pa < pb ? pa : pb;
  const ea = pa + BigInt(a.byteLength), eb = pb + BigInt(b.byteLength);
  const len = Number((ea > eb ? ea : eb) - lo);
  const u8 = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(lo)!, len),
  );
  return { u8, a: Number(pa - lo), b: Number(pb - lo) };
}

/**
 * At high rates the worker sleeps a little before it looks for the next block, so that one
 * wake-up takes several blocks instead of one poll() wake-up per block (at 1514 B a block holds
 * ~160 packets, at 64 B ~1500). Only when full blocks come faster than NAP_BELOW_MS apart, for
 * NAP_BLOCKS block intervals (at most NAP_MAX_MS, and never past the consumer's notify delay), so
 * that a nap never ends before the next block is there; and only with a ring of at least
 * NAP_MIN_BLOCKS blocks, which then holds far more than what piles up meanwhile. A stop (drain)
 * never naps. At 64 B (blocks 2.5-5 ms apart at 300-600 kpps) a 4 ms cap took ~1 block per nap:
 * no fewer wake-ups than poll; 8 ms takes 2-3.
 */
const NAP_BELOW_MS = 8;
const NAP_BLOCKS = 3;
const NAP_MAX_MS = 8;
const NAP_MIN_BLOCKS = 16;

/** How long to nap before looking for the next block, from the last full-block interval. Pure. */
export function napMs(fullBlockIntervalMs: number): number {
  if (!(fullBlockIntervalMs < NAP_BELOW_MS)) return 0;
  return Math.max(1, Math.min(NAP_MAX_MS, Math.round(NAP_BLOCKS * fullBlockIntervalMs)));
}

export interface PacketRing {
  fd: number;
  base: number;
  bytes: ArrayBuffer;
  blocks: number;
  /** Leading blocks that may hold packets from before the filter was set. */
  prefilterBlocks: number;
}

/** libpcap's mmapped V3 ring, or null where the direct reader must not be used. */
export function findPacketRing(
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
    if (Atomics.load(status, (i * TP_BLOCK + BD_STATUS) >> 2) & TP_STATUS_USER) filled++;
  }
  // Like libpcap: the filled blocks plus the one being filled predate the filter.
  return { fd, base: a, bytes, blocks, prefilterBlocks: filtered ? filled + 1 : 0 };
}

export function readRing(
  o: WorkerStart,
  p: Deno.PointerObject,
  ring: PacketRing,
  program: BpfProgram | null,
  wr: RingWriter,
): StepError | undefined {
  const lib = pcap();
  const ctrl = wr.ctrl, out = wr.bytes;
  const u8 = new Uint8Array(ring.bytes), u16 = new Uint16Array(ring.bytes);
  const u32 = new Uint32Array(ring.bytes), i32 = new Int32Array(ring.bytes);
  const both = spanning(u8, out), all = both.u8, fromRing = both.a, toQueue = both.b;
  const snapshot = lib.pcap_snapshot(p);
  const fhdr = new Uint8Array(PKTHDR_SIZE), fhdr32 = new Uint32Array(fhdr.buffer);
  const waiter = new SocketWaiter(ring.fd, o);
  const stats = new KernelStats(p, ctrl);
  const userBlock = (b: number) =>
    (Atomics.load(i32, (b * TP_BLOCK + BD_STATUS) >> 2) & TP_STATUS_USER) !== 0;
  let prefilter = ring.prefilterBlocks;
  let blk = 0;
  // Packets taken from the ring (every slot, delivered or not), mod 2^32: the
  // kernel counts each one it places, so this runs level with stats.placed.
  let taken = 0;
  // After stop(): the kernel's count frozen first (the final STATS), then exactly
  // that many packets delivered: `target`. Packets arriving during the drain are
  // neither counted nor delivered. drainLeft bounds the blocks that can hold them:
  // the filled ones plus the one the kernel was filling, if it held packets; that
  // one is waited for (until the drain deadline) because the kernel hands it over
  // only once it retires it.
  let drainLeft = -1;
  let target = 0;
  let deadline = 0;
  // Arrival rate of full blocks, measured from one running-out-of-blocks to the next (sleep and
  // processing both included); a block retired on its timeout means a low rate: no nap.
  const mayNap = ring.blocks >= NAP_MIN_BLOCKS;
  let periodStart = performance.now();
  let fullBlocks = 0;
  let partialBlock = false;
  let napped = false; // napped, and no block since: wait (poll) now
  let aborted = false;
  let err: StepError | undefined;
  const corrupt = (what: string) =>
    new StepError(`reading the packet ring ${where(o)}`, `unexpected ring layout: ${what}`);
  blocks: for (;;) {
    if (drainLeft < 0) {
      const st = Atomics.load(ctrl, C.STATE);
      if (st === S.ABORT) {
        aborted = true;
        break;
      }
      if (st === S.DRAIN) {
        stats.freeze(); // before looking at the ring: every packet it counts is in there
        target = stats.placed;
        let n = 0;
        while (n < ring.blocks && userBlock((blk + n) % ring.blocks)) n++;
        const current = (blk + n) % ring.blocks;
        // A block we handed back has num_pkts 0 (see below) until the kernel fills it.
        const open = n < ring.blocks && u32[(current * TP_BLOCK + BD_NUM_PKTS) >> 2] !== 0;
        drainLeft = open ? n + 1 : n;
        deadline = drainDeadline(o.timeoutMs);
      }
    } else if (Atomics.load(ctrl, C.STATE) === S.ABORT) {
      aborted = true;
      break;
    }
    if (drainLeft === 0 || (drainLeft > 0 && ((target - taken) | 0) <= 0)) break;
    const bo = blk * TP_BLOCK;
    if (!userBlock(blk)) {
      if (mayNap && drainLeft < 0 && !napped) {
        const now = performance.now();
        const want = fullBlocks > 0 && !partialBlock ? napMs((now - periodStart) / fullBlocks) : 0;
        periodStart = now;
        fullBlocks = 0;
        partialBlock = false;
        // not past the consumer's notify delay (idle() publishes, and wakes it when due)
        const ms = want > 0 ? Math.floor(Math.min(want, wr.idle())) : 0;
        if (ms >= 1) {
          napped = true;
          waiter.nap(ms);
          continue;
        }
      }
      napped = false;
      let wait = Math.min(POLL_MS, wr.idle());
      if (drainLeft > 0) {
        wait = Math.min(wait, deadline - performance.now());
        if (wait <= 0) break; // the kernel did not retire it in time
      } else stats.tick();
      err = waiter.wait(wait);
      if (err) break;
      continue;
    }
    let n = u32[(bo + BD_NUM_PKTS) >> 2];
    let last = false; // the block that holds the last counted packet
    if (drainLeft > 0 && ((target - taken) | 0) <= n) {
      n = (target - taken) | 0; // the rest arrived after the stop's count
      last = true;
    }
    let off = bo + u32[(bo + BD_FIRST) >> 2];
    const limit = bo + TP_BLOCK;
    for (let i = 0; i < n; i++) {
      if ((off & 3) !== 0 || off + 68 > limit) {
        err = corrupt(`packet header at ${off}`);
        break blocks;
      }
      const q = off >> 2;
      let caplen = u32[q + 3], origlen = u32[q + 4];
      let data = off + u16[(off + 24) >> 1];
      if (data + caplen > limit) {
        err = corrupt(`packet of ${caplen} bytes at ${data}`);
        break blocks;
      }
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
      const need = recordSize(caplen);
      const at = wr.reserve(need);
      if (at >= 0) {
        wr.header(at, u32[q + 1], u32[q + 2], caplen, origlen);
        all.copyWithin(toQueue + recordDataOffset(at), fromRing + data, fromRing + data + caplen);
        wr.commit(at + need, need);
      }
      off += next;
    }
    taken = (taken + n) >>> 0;
    if (last) break;
    // Hand the block back. Zeroing num_pkts (the kernel resets it anyway when it
    // opens the block) lets a stop tell a block in filling from a stale one.
    if (u32[(bo + BD_STATUS) >> 2] & TP_STATUS_BLK_TMO) partialBlock = true;
    else fullBlocks++;
    napped = false;
    u32[(bo + BD_NUM_PKTS) >> 2] = 0;
    Atomics.store(i32, (bo + BD_STATUS) >> 2, TP_STATUS_KERNEL);
    if (prefilter > 0) prefilter--;
    if (drainLeft > 0) drainLeft--;
    blk = blk + 1 === ring.blocks ? 0 : blk + 1;
    wr.tick();
    stats.tick();
  }
  // Counted at the stop but not taken in time (or never placed where we read):
  // discarded, so the final STATS still add up.
  const left = drainLeft >= 0 && !aborted ? (target - taken) | 0 : 0;
  if (left > 0) wr.discard(left);
  stats.update(); // no-op after a stop: the counters stay those frozen at it
  wr.finish();
  return err;
}
