/**
 * glibc's thresholds for large allocations, set once at start-up by every mode (main.ts).
 *
 * Stream frames, TLS records and socket read buffers (64 KiB–1 MiB) are allocated and freed at
 * every chunk. Above its mmap threshold glibc maps each one fresh and unmaps it on free, so the
 * kernel faults in and zeroes every page again, and in a VM the hypervisor may back it again too:
 * about a fifth of the api's CPU at 1500 B (docs/benchmarks.md, "malloc thresholds"). A fixed
 * mmap threshold above those sizes serves them from the heap, and a trim threshold keeps that much
 * free heap mapped instead of handing it back at every free. Not glibc (macOS, musl) or no FFI
 * permission: nothing is changed, and the caller says so in its start-up line.
 *
 * @module
 */

/** mallopt(3) parameters (malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

export interface MallocTuning {
  /** allocations at least this big get their own mapping; the rest come from the heap */
  mmapThresholdBytes: number;
  /** free memory at the top of a heap beyond this is handed back to the kernel */
  trimThresholdBytes: number;
}

/** Above the largest buffer of the hot paths (the client's 1 MiB output buffer). */
export const PCAP_MALLOC_TUNING: MallocTuning = {
  mmapThresholdBytes: 4 * 1024 * 1024,
  trimThresholdBytes: 32 * 1024 * 1024,
};

export type MallocTuningResult =
  | { applied: true; tuning: MallocTuning }
  | { applied: false; reason: string };

let last: MallocTuningResult = { applied: false, reason: "not attempted" };

/** Sets glibc's thresholds once for the process; a failure leaves the defaults in place. */
export function tuneMalloc(tuning: MallocTuning = PCAP_MALLOC_TUNING): MallocTuningResult {
  last = apply(tuning);
  return last;
}

function apply(tuning: MallocTuning): MallocTuningResult {
  if (Deno.build.os !== "linux") return { applied: false, reason: `not glibc (${Deno.build.os})` };
  // Asking first: without --allow-ffi, dlopen would prompt on a terminal instead of failing.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return { applied: false, reason: "no FFI permission" };
  }
  let lib: Deno.DynamicLibrary<{ mallopt: { parameters: ["i32", "i32"]; result: "i32" } }>;
  try {
    lib = Deno.dlopen("libc.so.6", { mallopt: { parameters: ["i32", "i32"], result: "i32" } });
  } catch (e) {
    return { applied: false, reason: `no glibc: ${(e as Error).message}` };
  }
  try {
    // mallopt returns 1 on success, 0 for a value it refuses.
    if (lib.symbols.mallopt(M_MMAP_THRESHOLD, tuning.mmapThresholdBytes) !== 1) {
      return {
        applied: false,
        reason: `mallopt refused M_MMAP_THRESHOLD ${tuning.mmapThresholdBytes}`,
      };
    }
    if (lib.symbols.mallopt(M_TRIM_THRESHOLD, tuning.trimThresholdBytes) !== 1) {
      return {
        applied: false,
        reason: `mallopt refused M_TRIM_THRESHOLD ${tuning.trimThresholdBytes}`,
      };
    }
    return { applied: true, tuning };
  } finally {
    lib.close();
  }
}

/** What the last {@link tuneMalloc} did, for a start-up log line. */
export function mallocTuningSummary(): string {
  if (!last.applied) return `glibc defaults (${last.reason})`;
  const mib = (n: number) => `${n / 1024 / 1024} MiB`;
  return `mmap threshold ${mib(last.tuning.mmapThresholdBytes)}, ` +
    `trim threshold ${mib(last.tuning.trimThresholdBytes)}`;
}
