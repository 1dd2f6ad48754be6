/**
 * Hand-written pcapng writer (draft-ietf-opsawg-pcapng), little-endian, one section.
 *
 * Layout: one Section Header Block (comment, shb_userappl, shb_os), then Interface Description
 * Blocks as sources appear (allowed anywhere before their first use), Enhanced Packet Blocks with
 * nanosecond timestamps (if_tsresol = 9), and Interface Statistics Blocks at the end.
 * Every call encodes whole blocks into a reusable buffer and hands them to the sink, so the file
 * is valid at every block boundary.
 *
 * @example A file with one source and one packet
 * ```ts
 * import { PcapngWriter } from "./pcapng_writer.ts";
 * import { encodeRecords } from "../protocol/records.ts";
 *
 * const chunks: Uint8Array[] = [];
 * const w = new PcapngWriter({ write: (c) => chunks.push(c.slice()) }, { comment: "example" });
 * const id = w.addSource({ name: "router/0 (uuid) eth0", linkType: 1, snaplen: 65535 });
 * w.writeRecords(id, encodeRecords([{ tsNs: 1_700_000_000_000_000_000n, data: new Uint8Array(60) }]));
 * w.writeStats(id, { received: 1 });
 * ```
 *
 * @module
 */
import { VERSION } from "../version.ts";
import {
  ByteBuilder,
  type ByteSink,
  type CaptureWriter,
  encodeRecordsInto,
  type IndexedRecords,
  type SourceInfo,
  type SourceStatistics,
} from "./capture_writer.ts";
import {
  recordDataOffset,
  recordOriglen,
  recordTimestampHigh,
  recordTimestampLow,
} from "../protocol/records.ts";

const SHB = 0x0a0d0d0a;
const IDB = 0x00000001;
const ISB = 0x00000005;
const EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

// Option codes (pcapng spec §3.5, §4.2, §4.6).
const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const SHB_HARDWARE = 2;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const IF_FILTER = 11;
const ISB_STARTTIME = 2;
const ISB_ENDTIME = 3;
const ISB_IFRECV = 4;
const ISB_IFDROP = 5;
const ISB_OSDROP = 7;
const ISB_USRDELIV = 8;

const MAX_OPTION_BYTES = 0xfffc;
const encoder = new TextEncoder();

/** What the Section Header Block says about the capture. */
export interface SectionInfo {
  /** opt_comment: what was captured, by whom, when, with which filter */
  comment?: string;
  /** shb_userappl; defaults to `pcap <VERSION>` */
  userAppl?: string;
  /** shb_os; defaults to the OS and architecture of this process */
  os?: string;
  /** shb_hardware; omitted when not given */
  hardware?: string;
}

/** Facts for the section comment; see describeCapture. */
export interface CaptureDescription {
  /** the tool and version; defaults to `pcap <VERSION>` */
  tool?: string;
  /** e.g. `deployment cf, instance groups diego-cell, router` */
  target: string;
  /** who captured (the token's user) */
  user?: string;
  /** when the capture started */
  start: Date;
  /** the interface captured on */
  interface?: string;
  /** the requested snap length */
  snaplen?: number;
  /** the capture filter */
  filter?: string;
}

/** One line saying what was captured, by whom, when and with which filter. */
export function describeCapture(d: CaptureDescription): string {
  const parts = [
    `Captured with ${d.tool ?? `pcap ${VERSION}`}${d.user ? ` by ${d.user}` : ""} ` +
    `starting ${d.start.toISOString()}`,
    `target: ${d.target}`,
  ];
  if (d.interface) parts.push(`interface: ${d.interface}`);
  if (d.snaplen !== undefined) parts.push(`snaplen: ${d.snaplen}`);
  parts.push(d.filter ? `filter: ${d.filter}` : "filter: none");
  return parts.join("; ");
}

/** UTF-8 bytes of `s`, cut at a character boundary so that it fits one option. */
function optionText(s: string): Uint8Array {
  const b = encoder.encode(s);
  if (b.length <= MAX_OPTION_BYTES) return b;
  let end = MAX_OPTION_BYTES;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

function osdropOf(s: SourceStatistics): number {
  const d = s.discards ?? {};
  return (s.kernelDropped ?? 0) + (d.engine ?? 0) + (d.agent ?? 0) + (d.api ?? 0) +
    (d.client ?? 0);
}

/** Human-readable breakdown of where packets were lost, for the ISB comment. */
function describeStats(s: SourceStatistics, written: number): string {
  const d = s.discards ?? {};
  const parts = [
    `written ${written}` + (s.received !== undefined ? ` of ${s.received} received` : ""),
    `dropped by kernel ${s.kernelDropped ?? 0}, interface ${s.ifDropped ?? 0}`,
    `discarded by engine ${d.engine ?? 0}, agent ${d.agent ?? 0}, api ${d.api ?? 0}, ` +
    `client ${d.client ?? 0}`,
  ];
  if (s.comment) parts.push(s.comment);
  return parts.join("; ");
}

interface IfaceState {
  source: SourceInfo;
  packets: number;
  /** first and last packet's timestamp halves (u32), hi < 0 until the first packet */
  firstHi: number;
  firstLo: number;
  lastHi: number;
  lastLo: number;
}

/** ns from u32 halves; undefined for "no packet yet" (hi < 0). */
function halvesNs(hi: number, lo: number): bigint | undefined {
  return hi < 0 ? undefined : (BigInt(hi) << 32n) | BigInt(lo);
}

/** pcapng {@link CaptureWriter}: one section, an IDB per source, EPBs, ISBs at the end. */
export class PcapngWriter implements CaptureWriter {
  /** always `pcapng` */
  readonly format = "pcapng" as const;
  #sink: ByteSink;
  #b = new ByteBuilder();
  #ifaces: IfaceState[] = [];

  /** Writes the Section Header Block right away. */
  constructor(sink: ByteSink, section: SectionInfo = {}) {
    this.#sink = sink;
    this.#writeShb(section);
  }

  addSource(source: SourceInfo): number {
    if (!Number.isInteger(source.linkType) || source.linkType < 0 || source.linkType > 0xffff) {
      throw new RangeError(`source ${source.name}: invalid link type ${source.linkType}`);
    }
    const b = this.#b;
    const start = this.#open(IDB);
    b.u16(source.linkType);
    b.u16(0);
    b.u32(source.snaplen);
    this.#textOption(IF_NAME, source.name);
    if (source.description) this.#textOption(IF_DESCRIPTION, source.description);
    b.u16(IF_TSRESOL);
    b.u16(1);
    b.u8(9); // 10^-9 s
    b.pad4();
    if (source.filter) {
      const text = optionText(source.filter).subarray(0, MAX_OPTION_BYTES - 1);
      b.u16(IF_FILTER);
      b.u16(text.length + 1);
      b.u8(0); // 0 = libpcap filter string
      b.bytes(text);
      b.pad4();
    }
    this.#close(start);
    b.drainTo(this.#sink);
    this.#ifaces.push({ source, packets: 0, firstHi: -1, firstLo: 0, lastHi: -1, lastLo: 0 });
    return this.#ifaces.length - 1;
  }

  /**
   * Fast path: wire records straight to EPBs,
   * one sink write for the whole batch, no per-packet allocation.
   */
  writeRecords(ifId: number, records: Uint8Array): number {
    const st = this.#iface(ifId);
    let lo = 0, hi = -1;
    // The timestamp stays two u32 halves: no BigInt per packet on the hot path.
    const n = encodeRecordsInto(this.#b, records, (view, off, caplen, origlen) => {
      lo = recordTimestampLow(view, off);
      hi = recordTimestampHigh(view, off);
      this.#epb(ifId, hi, lo, caplen, origlen, records, view, recordDataOffset(off));
      if (st.firstHi < 0) {
        st.firstHi = hi;
        st.firstLo = lo;
      }
    });
    if (n > 0) {
      st.packets += n;
      st.lastHi = hi;
      st.lastLo = lo;
    }
    this.#b.drainTo(this.#sink);
    return n;
  }

  writeIndexed(ifId: number, batch: IndexedRecords, from: number, to: number): number {
    const st = this.#iface(ifId);
    const { records, view, start, hi, lo, caplen } = batch;
    for (let i = from; i < to; i++) {
      const off = start[i];
      this.#epb(
        ifId,
        hi[i],
        lo[i],
        caplen[i],
        recordOriglen(view, off),
        records,
        view,
        recordDataOffset(off),
      );
    }
    const n = to - from;
    if (n > 0) {
      st.packets += n;
      if (st.firstHi < 0) {
        st.firstHi = hi[from];
        st.firstLo = lo[from];
      }
      st.lastHi = hi[to - 1];
      st.lastLo = lo[to - 1];
    }
    this.#b.drainTo(this.#sink);
    return n;
  }

  /** Writes an Interface Statistics Block for `ifId`. */
  writeStats(ifId: number, stats: SourceStatistics): void {
    const st = this.#iface(ifId);
    const b = this.#b;
    const ts = stats.endNs ?? halvesNs(st.lastHi, st.lastLo) ?? BigInt(Date.now()) * 1_000_000n;
    const start = this.#open(ISB);
    b.u32(ifId);
    b.u32(Number(ts >> 32n));
    b.u32(Number(ts & 0xffffffffn));
    this.#textOption(OPT_COMMENT, describeStats(stats, st.packets));
    const startNs = stats.startNs ?? halvesNs(st.firstHi, st.firstLo);
    if (startNs !== undefined) this.#tsOption(ISB_STARTTIME, startNs);
    if (stats.endNs !== undefined) this.#tsOption(ISB_ENDTIME, stats.endNs);
    if (stats.received !== undefined) this.#u64Option(ISB_IFRECV, stats.received);
    this.#u64Option(ISB_IFDROP, stats.ifDropped ?? 0);
    this.#u64Option(ISB_OSDROP, osdropOf(stats));
    this.#u64Option(ISB_USRDELIV, st.packets);
    this.#close(start);
    b.drainTo(this.#sink);
  }

  packetsWritten(ifId: number): number {
    return this.#iface(ifId).packets;
  }

  /** Nothing is pending between calls; kept for the CaptureWriter interface. */
  end(): void {}

  #iface(ifId: number): IfaceState {
    const st = this.#ifaces[ifId];
    if (!st) throw new RangeError(`unknown interface id ${ifId} (call addSource first)`);
    return st;
  }

  #epb(
    ifId: number,
    hi: number,
    lo: number,
    caplen: number,
    origlen: number,
    src: Uint8Array,
    sv: DataView,
    at: number,
  ): void {
    const b = this.#b;
    const padded = (caplen + 3) & ~3;
    const len = 32 + padded;
    // one ensure for the block, then unchecked writes: this runs once per packet
    b.ensure(len);
    const p = b.pos;
    b.patchU32(p, EPB);
    b.patchU32(p + 4, len);
    b.patchU32(p + 8, ifId);
    b.patchU32(p + 12, hi);
    b.patchU32(p + 16, lo);
    b.patchU32(p + 20, caplen);
    b.patchU32(p + 24, origlen);
    b.pos = p + 28;
    b.copyFrom(src, sv, at, at + caplen);
    b.pad4();
    b.patchU32(b.pos, len);
    b.pos += 4;
  }

  #writeShb(section: SectionInfo): void {
    const b = this.#b;
    const start = this.#open(SHB);
    b.u32(BYTE_ORDER_MAGIC);
    b.u16(1);
    b.u16(0);
    b.u64(-1n); // section length not specified
    if (section.comment) this.#textOption(OPT_COMMENT, section.comment);
    if (section.hardware) this.#textOption(SHB_HARDWARE, section.hardware);
    this.#textOption(SHB_OS, section.os ?? `${Deno.build.os} ${Deno.build.arch}`);
    this.#textOption(SHB_USERAPPL, section.userAppl ?? `pcap ${VERSION}`);
    this.#close(start);
    b.drainTo(this.#sink);
  }

  /** Starts a block; returns its offset for #close. */
  #open(type: number): number {
    const start = this.#b.pos;
    this.#b.u32(type);
    this.#b.u32(0); // total length, patched in #close
    return start;
  }

  /** Ends the option list and the block, and patches both length fields. */
  #close(start: number): void {
    const b = this.#b;
    b.u16(OPT_ENDOFOPT);
    b.u16(0);
    const len = b.pos - start + 4;
    b.u32(len);
    b.patchU32(start + 4, len);
  }

  #textOption(code: number, text: string): void {
    const bytes = optionText(text);
    this.#b.u16(code);
    this.#b.u16(bytes.length);
    this.#b.bytes(bytes);
    this.#b.pad4();
  }

  #u64Option(code: number, v: number): void {
    this.#b.u16(code);
    this.#b.u16(8);
    this.#b.u64(BigInt(Math.max(0, Math.trunc(v))));
  }

  /** Timestamps in options are two u32: high then low (same as in the EPB). */
  #tsOption(code: number, ns: bigint): void {
    this.#b.u16(code);
    this.#b.u16(8);
    this.#b.u32(Number((ns >> 32n) & 0xffffffffn));
    this.#b.u32(Number(ns & 0xffffffffn));
  }
}
