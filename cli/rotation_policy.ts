/**
 * When a long capture starts its next file, what the files are called, and which ones a ring
 * drops (`--rotate-size`, `--rotate-every`, `--keep`, in the manner of dumpcap's `-b`). Pure:
 * the rotating output (rotating_output.ts) asks these functions and does the I/O itself.
 *
 * @module
 */

/** What the flags asked for; at least one of `sizeBytes` and `everyMs` is set. */
export interface RotationPolicy {
  /** start the next file once this file holds at least this many bytes */
  sizeBytes?: number;
  /** start the next file once this file has been open this long */
  everyMs?: number;
  /** a ring: keep only the newest `keep` complete files */
  keep?: number;
}

/** The smallest `--rotate-size`: below it nearly every batch would open a file of its own. */
export const MIN_ROTATE_SIZE_BYTES = 1000;
/** The shortest `--rotate-every`. */
export const MIN_ROTATE_EVERY_MS = 1000;
/** The largest `--keep`. */
export const MAX_KEEP = 100_000;

/** The file being written, as the policy needs to see it. */
export interface OpenFileState {
  /** bytes handed to the file so far (headers included) */
  bytes: number;
  /** packets written into it */
  packets: number;
  /** when its time interval started (ms, any monotonic clock) */
  sinceMs: number;
}

/**
 * - `rotate`: close this file and open the next one
 * - `restart-clock`: the interval passed without a packet: keep the (empty) file and count the
 *   interval from now, so that an idle capture does not push real data out of a ring
 * - `keep`: go on writing
 */
export type RotationDecision = "rotate" | "restart-clock" | "keep";

/** What to do with the open file now. A file without packets is never rotated away. */
export function rotationDecision(
  policy: RotationPolicy,
  file: OpenFileState,
  nowMs: number,
): RotationDecision {
  const timeUp = policy.everyMs !== undefined && nowMs - file.sinceMs >= policy.everyMs;
  if (file.packets === 0) return timeUp ? "restart-clock" : "keep";
  if (policy.sizeBytes !== undefined && file.bytes >= policy.sizeBytes) return "rotate";
  return timeUp ? "rotate" : "keep";
}

/** `-o` split into what comes before and after the number and the time stamp. */
export interface RotationName {
  /** e.g. `/tmp/cells` */
  stem: string;
  /** e.g. `.pcapng`, with the dot */
  ext: string;
}

/**
 * `cells.pcapng` → `cells` + `.pcapng`; `dir/cells` → `dir/cells` + the format's extension.
 * Only the last dot of the file name counts (not one in a directory name, not a leading one).
 */
export function splitOutputName(path: string, format: "pcapng" | "pcap"): RotationName {
  const slash = path.lastIndexOf("/");
  const dot = path.lastIndexOf(".");
  if (dot > slash + 1 && dot < path.length - 1) {
    return { stem: path.slice(0, dot), ext: path.slice(dot) };
  }
  return { stem: path, ext: `.${format}` };
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

/**
 * dumpcap's ring names: `STEM_NNNNN_YYYYmmddHHMMSS.EXT`, the number from 1 and the local time at
 * which the file was opened. Numbers past 99999 simply grow a digit.
 */
export function rotationFileName(name: RotationName, seq: number, opened: Date): string {
  const stamp = pad(opened.getFullYear(), 4) + pad(opened.getMonth() + 1, 2) +
    pad(opened.getDate(), 2) + pad(opened.getHours(), 2) + pad(opened.getMinutes(), 2) +
    pad(opened.getSeconds(), 2);
  return `${name.stem}_${pad(seq, 5)}_${stamp}${name.ext}`;
}

/**
 * The complete files a ring drops now: all but the newest `keep` of `complete` (oldest first).
 * Called after a file was completed, so the ring never holds fewer than `keep` complete files.
 * Without a ring nothing is dropped.
 */
export function ringExpired<T>(complete: readonly T[], keep: number | undefined): T[] {
  if (keep === undefined || complete.length <= keep) return [];
  return complete.slice(0, complete.length - keep);
}

/** Why a combination of rotation flags cannot work, or undefined when it can. */
export function rotationProblem(
  policy: Partial<RotationPolicy>,
  output: string | undefined,
): string | undefined {
  const rotates = policy.sizeBytes !== undefined || policy.everyMs !== undefined;
  if (policy.keep !== undefined && !rotates) {
    return "--keep needs --rotate-size or --rotate-every (it sets how many rotated files remain)";
  }
  if (!rotates) return undefined;
  if (output === "-") {
    return "--rotate-size/--rotate-every write a series of files and cannot rotate standard " +
      "output (-o -); pass -o FILE (files are named FILE_00001_<time>.pcapng, ...)";
  }
  if (policy.sizeBytes !== undefined && policy.sizeBytes < MIN_ROTATE_SIZE_BYTES) {
    return `--rotate-size must be at least ${MIN_ROTATE_SIZE_BYTES} bytes (e.g. 100MB)`;
  }
  if (policy.everyMs !== undefined && policy.everyMs < MIN_ROTATE_EVERY_MS) {
    return `--rotate-every must be at least ${MIN_ROTATE_EVERY_MS / 1000} s (e.g. 1h)`;
  }
  return undefined;
}
