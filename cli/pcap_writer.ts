/**
 * Classic pcap writer (`--format pcap`) with nanosecond timestamps (magic 0xa1b23c4d).
 *
 * Classic pcap has one link type per file and no per-packet interface, so the header is written
 * when the first source appears and a later source with another link type is refused: silently
 * mixing link types would make every packet of one of them undecodable.
 *
 * @module
 */
import {
  ByteBuilder,
  type ByteSink,
  type CaptureWriter,
  encodeRecordsInto,
  type IndexedRecords,
  linkTypeName,
  type SourceInfo,
  type SourceStatistics,
} from "./capture_writer.ts";
import { recordDataOffset, recordOriglen, recordTimestamp } from "../protocol/records.ts";

const MAGIC_NS = 0xa1b23c4d;
const LINKTYPE_ETHERNET = 1;
const NS_PER_S = 1_000_000_000n;
/** classic pcap's per-packet header: ts_sec, ts_nsec, incl_len, orig_len */
const PACKET_HEADER_BYTES = 16;

/** A second source whose link type differs from the first one's (classic pcap holds one). */
export class LinkTypeMismatchError extends Error {
  /** `first` set the file's link type; `other` does not match it */
  constructor(readonly first: SourceInfo, readonly other: SourceInfo) {
    super(
      `cannot write classic pcap: source "${other.name}" has link type ${other.linkType} ` +
        `(${linkTypeName(other.linkType)}) but "${first.name}" has ${first.linkType} ` +
        `(${linkTypeName(first.linkType)}); a pcap file holds one link type. ` +
        "Use --format pcapng, or select sources with the same interface type.",
    );
    this.name = "LinkTypeMismatchError";
  }
}

/** Classic pcap {@link CaptureWriter} with nanosecond timestamps and one link type. */
export class PcapWriter implements CaptureWriter {
  /** always `pcap` */
  readonly format = "pcap" as const;
  #sink: ByteSink;
  #b = new ByteBuilder();
  #sources: SourceInfo[] = [];
  #counts: number[] = [];
  #headerWritten = false;
  #snaplen: number;

  /** `snaplen` goes into the header; the first source's snaplen is used when larger. */
  constructor(sink: ByteSink, snaplen = 0) {
    this.#sink = sink;
    this.#snaplen = snaplen;
  }

  addSource(source: SourceInfo): number {
    const first = this.#sources[0];
    if (first && first.linkType !== source.linkType) {
      throw new LinkTypeMismatchError(first, source);
    }
    if (!first) this.#header(source.linkType, Math.max(this.#snaplen, source.snaplen));
    this.#sources.push(source);
    this.#counts.push(0);
    return this.#sources.length - 1;
  }

  writeRecords(id: number, records: Uint8Array): number {
    this.#check(id);
    const n = encodeRecordsInto(this.#b, records, (view, off, caplen, origlen) => {
      this.#record(
        recordTimestamp(view, off),
        caplen,
        origlen,
        records,
        view,
        recordDataOffset(off),
      );
    });
    this.#counts[id] += n;
    this.#b.drainTo(this.#sink);
    return n;
  }

  writeIndexed(id: number, batch: IndexedRecords, from: number, to: number): number {
    this.#check(id);
    const { records, view, start, caplen } = batch;
    for (let i = from; i < to; i++) {
      const off = start[i];
      this.#record(
        recordTimestamp(view, off),
        caplen[i],
        recordOriglen(view, off),
        records,
        view,
        recordDataOffset(off),
      );
    }
    const n = to - from;
    this.#counts[id] += n;
    this.#b.drainTo(this.#sink);
    return n;
  }

  /** Classic pcap has no statistics block; the caller reports them on stderr. */
  writeStats(id: number, _stats: SourceStatistics): void {
    this.#check(id);
  }

  packetsWritten(id: number): number {
    this.#check(id);
    return this.#counts[id];
  }

  /** A capture that saw no source still leaves a readable (empty, Ethernet) file. */
  end(): void {
    if (!this.#headerWritten) this.#header(LINKTYPE_ETHERNET, this.#snaplen || 65535);
  }

  #check(id: number): void {
    if (this.#sources[id] === undefined) {
      throw new RangeError(`unknown source id ${id} (call addSource first)`);
    }
  }

  #header(linkType: number, snaplen: number): void {
    const b = this.#b;
    b.u32(MAGIC_NS);
    b.u16(2);
    b.u16(4);
    b.u32(0); // thiszone
    b.u32(0); // sigfigs
    b.u32(snaplen);
    b.u32(linkType);
    b.drainTo(this.#sink);
    this.#headerWritten = true;
  }

  #record(
    ts: bigint,
    caplen: number,
    origlen: number,
    src: Uint8Array,
    sv: DataView,
    at: number,
  ): void {
    const b = this.#b;
    b.ensure(PACKET_HEADER_BYTES + caplen);
    b.u32(Number(ts / NS_PER_S));
    b.u32(Number(ts % NS_PER_S));
    b.u32(caplen);
    b.u32(origlen);
    b.copyFrom(src, sv, at, at + caplen);
  }
}
