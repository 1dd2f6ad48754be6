// This lab's VM hands freed guest memory back to its host at once (the guest kernel's free page
// reporting: min_free_ms 0, up to max_waiting_mib 1024 waiting), so memory a process or the page
// cache takes after something else freed it costs a host fault per page again. A 1500 MB file
// written into memory freed 3 s before cost 1.4 s of system time; with reporting held off, 0.27 s
// (docs/benchmarks.md, "Freed memory goes back to the host"). Which path of a benchmark lands in
// reported memory is chance: the writer of the next output file, a process growing its heap, a
// capture's new rings. No machine users run pcap on does this, so a benchmark holds it off while
// it runs, for every path alike, and puts the parameters back afterwards (also on SIGINT/SIGTERM).
// Where the parameters do not exist or cannot be written, nothing changes and the note says so.
//
// ```ts ignore
// const held = holdFreedMemory();
// try { console.log(held.note); /* … the benchmark … */ } finally { held.restore(); }
// ```

import { meminfoKb } from "./bench_support.ts";

const DIR = "/sys/module/page_reporting/parameters";
/** Free memory waits this long before it is reported: the kernel's maximum, far longer than
 * anything between a benchmark's steps. */
export const HOLD_MIN_FREE_MS = 5 * 60 * 1000;

export interface ReportingParams {
  minFreeMs: number;
  maxWaitingMib: number;
}

/** The parameters while a benchmark runs: never lower than they were. Pure. */
export function heldParams(now: ReportingParams, memTotalMib: number): ReportingParams {
  return {
    minFreeMs: Math.max(now.minFreeMs, HOLD_MIN_FREE_MS),
    maxWaitingMib: Math.max(now.maxWaitingMib, Math.ceil(memTotalMib)),
  };
}

export interface HeldMemory {
  /** one line for the benchmark's machine description */
  note: string;
  restore(): void;
}

let depth = 0;
let saved: ReportingParams | null = null;
let onSignal: (() => void) | null = null;

function readParams(): ReportingParams | null {
  try {
    const n = (f: string) => Number(Deno.readTextFileSync(`${DIR}/${f}`).trim());
    const p = { minFreeMs: n("min_free_ms"), maxWaitingMib: n("max_waiting_mib") };
    return Number.isFinite(p.minFreeMs) && Number.isFinite(p.maxWaitingMib) ? p : null;
  } catch {
    return null;
  }
}

function writeParams(p: ReportingParams): void {
  Deno.writeTextFileSync(`${DIR}/max_waiting_mib`, String(p.maxWaitingMib));
  Deno.writeTextFileSync(`${DIR}/min_free_ms`, String(p.minFreeMs));
}

function putBack(): void {
  if (!saved) return;
  try {
    writeParams(saved);
  } catch (e) {
    console.error(
      `bench: could not restore ${DIR} (min_free_ms ${saved.minFreeMs}, max_waiting_mib ` +
        `${saved.maxWaitingMib}): ${(e as Error).message}; write them back by hand`,
    );
  }
  saved = null;
  globalThis.removeEventListener("unload", putBack);
  if (onSignal) {
    for (const s of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(s, onSignal);
    onSignal = null;
  }
}

/** Holds off free page reporting until restore() (nested holds share the first one's state). */
export function holdFreedMemory(): HeldMemory {
  depth++;
  const release = () => {
    if (depth > 0 && --depth === 0) putBack();
  };
  if (saved) return { note: heldNote(heldParams(saved, memTotalMib())), restore: release };
  const now = readParams();
  if (!now) {
    return { note: "free page reporting: not on this machine (nothing changed)", restore: release };
  }
  const held = heldParams(now, memTotalMib());
  try {
    writeParams(held);
  } catch (e) {
    try {
      writeParams(now); // one of the two may have been written
    } catch { /* as it was */ }
    return {
      note: `free page reporting left as it is (min_free_ms ${now.minFreeMs}): ${
        (e as Error).message
      }`,
      restore: release,
    };
  }
  saved = now;
  globalThis.addEventListener("unload", putBack); // a script that ends without restore()
  onSignal = () => {
    putBack();
    Deno.exit(130);
  };
  for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, onSignal);
  return {
    note: heldNote(held) + ` (was ${now.minFreeMs} ms, ${now.maxWaitingMib} MiB)`,
    restore: release,
  };
}

/** Runs `fn` with freed memory held (the note printed first), then puts the parameters back. */
export async function withFreedMemoryHeld<T>(fn: () => Promise<T>): Promise<T> {
  const held = holdFreedMemory();
  console.log(`bench: ${held.note}\n`);
  try {
    return await fn();
  } finally {
    held.restore();
  }
}

function heldNote(p: ReportingParams): string {
  return `free page reporting held off: freed memory waits ${p.minFreeMs / 1000} s, ` +
    `up to ${p.maxWaitingMib} MiB`;
}

function memTotalMib(): number {
  return meminfoKb("MemTotal") / 1024;
}
