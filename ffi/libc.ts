/**
 * libc bindings for entering network namespaces. All calls are synchronous on
 * purpose: setns() changes the namespace of the calling thread only, and
 * nonblocking FFI calls would run on a pool thread in the host namespace.
 *
 * @example
 * ```ts ignore
 * // On a worker thread only: setns() moves the calling thread, not the process.
 * enterNetns("/run/netns/capture-1");
 * ```
 *
 * @module
 */

const LIBC = "libc.so.6";
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const SOL_SOCKET = 1;
export const SO_ERROR = 4;
export const SO_GET_FILTER = 26;
export const SOL_PACKET = 263;
export const PACKET_VERSION = 10;
export const TPACKET_V3 = 2;
export const POLLIN = 1;
export const POLLERR = 8;
export const POLLHUP = 16;
export const POLLNVAL = 32;

const symbols = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  gettid: { parameters: [], result: "i32" },
  // Used by the capture worker to copy packets out of libpcap's ring.
  memcpy: { parameters: ["usize", "usize", "usize"], result: "usize" },
  // Direct packet-ring reading: wait for a ring block, query the socket.
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  // The capture worker's per-step CPU time (logged at a capture's start).
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof symbols> | null = null;

export function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  lib ??= Deno.dlopen(LIBC, symbols);
  return lib.symbols;
}

/** clock_gettime's clock for the calling thread's CPU time (linux/time.h). */
const CLOCK_THREAD_CPUTIME_ID = 3;
const timespec = new BigInt64Array(2);

/** CPU time the calling thread has used, in ms (NaN if the clock is unavailable). */
export function threadCpuMs(): number {
  if (libc().clock_gettime(CLOCK_THREAD_CPUTIME_ID, timespec) !== 0) return NaN;
  return Number(timespec[0]) * 1e3 + Number(timespec[1]) / 1e6;
}

/** errno of the last failed libc call on this thread. */
export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

export function strerror(code: number): string {
  const p = libc().strerror(code);
  return p === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(p);
}

/** An Error with the OS message for errno, saying what was being attempted. */
export function osError(attempt: string): Error {
  const code = errno();
  const err = new Error(`${attempt}: ${strerror(code)}`);
  (err as Error & { errno?: number }).errno = code;
  return err;
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder().encode(s);
  const buf = new Uint8Array(enc.length + 1);
  buf.set(enc);
  return buf;
}

/**
 * Moves the calling thread into the network namespace at path
 * (/run/netns/NAME or /proc/PID/ns/net). The fd is closed before returning.
 */
export function enterNetns(path: string): void {
  const fd = libc().open(cString(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw osError(`opening network namespace ${path}`);
  try {
    if (libc().setns(fd, CLONE_NEWNET) !== 0) {
      const err = osError(`entering network namespace ${path} (setns)`);
      // EINVAL from setns means the file is not a network namespace.
      if ((err as Error & { errno?: number }).errno === 22) {
        err.message += " (not a network namespace file: use /run/netns/NAME or /proc/PID/ns/net)";
      }
      throw err;
    }
  } finally {
    libc().close(fd);
  }
}

/** getsockopt for an int option; returns the value, or null (errno set) on failure. */
export function getsockoptInt(fd: number, level: number, name: number): number | null {
  const val = new Int32Array(1);
  const len = new Uint32Array([4]);
  const rc = libc().getsockopt(
    fd,
    level,
    name,
    new Uint8Array(val.buffer),
    new Uint8Array(len.buffer),
  );
  return rc === 0 ? val[0] : null;
}

/** Number of instructions of the BPF filter attached to socket fd (0 = none). */
export function attachedFilterLength(fd: number): number | null {
  // SO_GET_FILTER with optlen 0 only reports the program length.
  const len = new Uint32Array(1);
  const rc = libc().getsockopt(
    fd,
    SOL_SOCKET,
    SO_GET_FILTER,
    new Uint8Array(8),
    new Uint8Array(len.buffer),
  );
  return rc === 0 ? len[0] : null;
}
