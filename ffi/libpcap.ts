/**
 * Typed bindings to libpcap (Debian/Ubuntu package libpcap0.8) through Deno FFI.
 * The library is opened lazily so that importing this module never fails on a
 * machine without libpcap; the first use throws a clear error instead.
 *
 * @example
 * ```ts
 * import { libpcapAvailable, libVersion } from "./libpcap.ts";
 *
 * if (libpcapAvailable()) console.log(libVersion()); // "libpcap version 1.10.x ..."
 * ```
 *
 * @module
 */

const LIBPCAP = "libpcap.so.0.8";

export const PCAP_ERRBUF_SIZE = 256;
/** pcap_stat: u32 ps_recv, ps_drop, ps_ifdrop (+ Windows-only fields; 16 bytes is enough). */
export const PCAP_STAT_SIZE = 16;
/** struct bpf_program on LP64: u32 bf_len, 4 bytes padding, pointer bf_insns. */
export const BPF_PROGRAM_SIZE = 16;
/** struct pcap_pkthdr on LP64: timeval (2 × i64), u32 caplen, u32 len. */
export const PKTHDR_SIZE = 24;
export const PCAP_TSTAMP_PRECISION_NANO = 1;
export const PCAP_NETMASK_UNKNOWN = 0xffffffff;

const symbols = {
  pcap_create: { parameters: ["buffer", "buffer"], result: "pointer" },
  pcap_set_snaplen: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_set_promisc: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_set_timeout: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_set_buffer_size: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_set_immediate_mode: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_set_tstamp_precision: { parameters: ["pointer", "i32"], result: "i32" },
  pcap_activate: { parameters: ["pointer"], result: "i32" },
  pcap_compile: { parameters: ["pointer", "buffer", "buffer", "i32", "u32"], result: "i32" },
  pcap_setfilter: { parameters: ["pointer", "buffer"], result: "i32" },
  pcap_freecode: { parameters: ["buffer"], result: "void" },
  // Hot path: out-params are plain buffers so the call stays on V8's fast path.
  pcap_next_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  pcap_dispatch: { parameters: ["pointer", "i32", "function", "pointer"], result: "i32" },
  pcap_stats: { parameters: ["pointer", "buffer"], result: "i32" },
  pcap_datalink: { parameters: ["pointer"], result: "i32" },
  pcap_snapshot: { parameters: ["pointer"], result: "i32" },
  pcap_breakloop: { parameters: ["pointer"], result: "void" },
  pcap_close: { parameters: ["pointer"], result: "void" },
  pcap_geterr: { parameters: ["pointer"], result: "pointer" },
  pcap_statustostr: { parameters: ["i32"], result: "pointer" },
  pcap_open_dead: { parameters: ["i32", "i32"], result: "pointer" },
  pcap_lib_version: { parameters: [], result: "pointer" },
  // Used by the capture worker's direct TPACKET_V3 ring reader.
  pcap_fileno: { parameters: ["pointer"], result: "i32" },
  pcap_setnonblock: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  pcap_offline_filter: { parameters: ["buffer", "buffer", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type PcapSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let lib: Deno.DynamicLibrary<typeof symbols> | null = null;
let loadError: Error | null = null;

/** The libpcap symbols; throws an Error naming the package to install when missing. */
export function pcap(): PcapSymbols {
  if (lib) return lib.symbols;
  if (loadError) throw loadError;
  try {
    lib = Deno.dlopen(LIBPCAP, symbols);
    return lib.symbols;
  } catch (e) {
    loadError = new Error(
      `cannot load ${LIBPCAP}: ${(e as Error).message}. ` +
        `Install the libpcap runtime (Debian/Ubuntu package "libpcap0.8").`,
    );
    throw loadError;
  }
}

export function libpcapAvailable(): boolean {
  try {
    pcap();
    return true;
  } catch {
    return false;
  }
}

export function cString(s: string): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder().encode(s);
  const buf = new Uint8Array(enc.length + 1);
  buf.set(enc);
  return buf;
}

export function readCString(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

function ptrString(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/** libpcap's last error message for handle p. */
export function geterr(p: Deno.PointerObject): string {
  return ptrString(pcap().pcap_geterr(p));
}

export function statusToStr(code: number): string {
  return ptrString(pcap().pcap_statustostr(code));
}

export function libVersion(): string {
  return ptrString(pcap().pcap_lib_version());
}

export interface PcapStats {
  received: number;
  dropped: number;
  ifDropped: number;
}

/** A compiled BPF program; free() must be called once. */
export class BpfProgram {
  readonly buf: Uint8Array<ArrayBuffer> = new Uint8Array(BPF_PROGRAM_SIZE);
  #freed = false;
  free(): void {
    if (!this.#freed) pcap().pcap_freecode(this.buf);
    this.#freed = true;
  }
}

/**
 * Compiles filter for handle p. Returns the program or libpcap's error text.
 * (pcap_compile is not thread safe before libpcap 1.8; every 1.10 call is.)
 */
export function compileFilter(
  p: Deno.PointerObject,
  filter: string,
): { program: BpfProgram } | { error: string } {
  const program = new BpfProgram();
  const rc = pcap().pcap_compile(p, program.buf, cString(filter), 1, PCAP_NETMASK_UNKNOWN);
  if (rc !== 0) return { error: geterr(p) || statusToStr(rc) };
  return { program };
}
