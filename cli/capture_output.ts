/**
 * Where a capture goes: the writer for `--format`, the checks on `-o` before a capture starts, and
 * the buffered file/stdout sink behind the writer.
 *
 * The sink is synchronous on purpose: a writer hands over whole blocks, the sink copies them into
 * one buffer (1 MiB by default) and writes that buffer when it is full, on a 250 ms timer and at
 * close. A flush ends on a block boundary, so the file is valid after every flush, and the timer
 * makes `-o - | tcpdump -r -` show packets while the capture runs. A flush goes out in write calls
 * of at most {@link WRITE_CHUNK_BYTES}: the kernel sizes a page-cache folio after the write, and on
 * a VM that hands free memory back to its host a large folio costs several times what the same
 * bytes cost in smaller ones (docs/benchmarks.md, "Output writes of at most 256 KiB").
 *
 * @module
 */
import type { ByteSink, CaptureWriter, OutputFormat } from "./capture_writer.ts";
import { PcapngWriter, type SectionInfo } from "./pcapng_writer.ts";
import { PcapWriter } from "./pcap_writer.ts";

/** Writer for `--format`; `snaplen` is the requested one (classic pcap header). */
export function createCaptureWriter(
  format: OutputFormat,
  sink: ByteSink,
  opts: { section?: SectionInfo; snaplen?: number } = {},
): CaptureWriter {
  return format === "pcap"
    ? new PcapWriter(sink, opts.snaplen)
    : new PcapngWriter(sink, opts.section);
}

/** Largest single write call of a {@link BufferedOutput}. */
export const WRITE_CHUNK_BYTES = 256 * 1024;

/** The output cannot be checked, opened or written; the message says which and why. */
export class OutputError extends Error {
  /** `message` is shown to the operator as it is */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OutputError";
  }
}

/** True when `path` means standard output. */
export function isStdout(path: string): boolean {
  return path === "-";
}

/**
 * Checks the output path before anything is captured, so that a typo or an existing file costs
 * the operator nothing. Refuses an existing file unless `force`, a directory, a symbolic link
 * (a capture is never written through a link someone else may have planted) and a path whose
 * directory does not exist. Does not create or delete anything.
 */
export async function prepareOutput(path: string, force: boolean): Promise<void> {
  if (isStdout(path)) return;
  if (path === "") throw new OutputError("output file name is empty; pass -o FILE or -o -");
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotADirectory) {
      throw new OutputError(`cannot write ${path}: ${dirname(path)} is not a directory`);
    }
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new OutputError(`cannot check output file ${path}: ${(e as Error).message}`);
    }
  }
  if (info?.isDirectory) {
    throw new OutputError(`output path ${path} is a directory; pass a file name with -o`);
  }
  if (info?.isSymlink) {
    throw new OutputError(
      `output path ${path} is a symbolic link; pcap does not write through links: ` +
        "pass the real file name with -o",
    );
  }
  if (info && !force) {
    throw new OutputError(
      `output file ${path} already exists; choose another name or pass -F to overwrite it`,
    );
  }
  const dir = dirname(path);
  let dirInfo: Deno.FileInfo;
  try {
    dirInfo = await Deno.stat(dir);
  } catch {
    throw new OutputError(`cannot write ${path}: directory ${dir} does not exist; create it first`);
  }
  if (!dirInfo.isDirectory) {
    throw new OutputError(`cannot write ${path}: ${dir} is not a directory`);
  }
}

/** -F: removes an existing regular file at `path` (never a link's target, never a directory). */
async function removeRegularFile(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isFile) throw notRegular(path);
  await Deno.remove(path);
}

function removeRegularFileSync(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isFile) throw notRegular(path);
  Deno.removeSync(path);
}

function notRegular(path: string): OutputError {
  return new OutputError(
    `output path ${path} is not a regular file (a link, directory or device); ` +
      "pass another file name with -o",
  );
}

function openError(path: string, e: unknown): OutputError {
  if (e instanceof OutputError) return e;
  if (e instanceof Deno.errors.AlreadyExists) {
    return new OutputError(
      `output file ${path} already exists; choose another name or pass -F to overwrite it`,
    );
  }
  return new OutputError(`cannot open output file ${path}: ${(e as Error).message}`);
}

/** The directory part of `path` (`.` for a bare name). */
export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}

/** Buffering and opening options of {@link BufferedOutput}. */
export interface BufferedOutputOptions {
  /** bytes held before a write; default 1 MiB */
  bufferBytes?: number;
  /** flush interval for live viewing; default 250 ms; 0 disables the timer */
  flushIntervalMs?: number;
  /** overwrite an existing file (prepareOutput should have been called already) */
  force?: boolean;
  /**
   * For a pipe whose reader may leave (Wireshark's extcap FIFO): when the reader has closed its
   * end, this is called once and the rest is discarded instead of failing every write.
   */
  onReaderGone?: () => void;
}

/** What a {@link BufferedOutput} writes to: a file, stdout or a FIFO. */
export interface SyncWriter {
  /** writes some of `p` (at least one byte) and returns how many */
  writeSync(p: Uint8Array): number;
  /** closes the file */
  close?(): void;
}

/** Writes all of `data` to `out` in calls of at most `chunk` bytes, resuming after short writes. */
export function writeInChunks(out: SyncWriter, data: Uint8Array, chunk = WRITE_CHUNK_BYTES): void {
  for (let off = 0; off < data.length;) {
    off += out.writeSync(data.subarray(off, off + chunk));
  }
}

/**
 * Buffered sink to a file or stdout. `write` copies into the buffer; a full buffer, the timer and
 * `close` write it out synchronously (a slow pipe reader therefore slows us down instead of
 * growing memory). A write failure (e.g. the reader of `-o -` went away) is kept and re-thrown
 * by the next `write`/`flush`/`close`.
 */
export class BufferedOutput implements ByteSink {
  /** the output path; `-` is stdout */
  readonly path: string;
  #out: SyncWriter;
  #ownsOut: boolean;
  #buf: Uint8Array;
  #used = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #error: OutputError | undefined;
  #closed = false;
  #onReaderGone: (() => void) | undefined;
  #readerGone = false;
  /** bytes written out so far */
  bytesWritten = 0;

  private constructor(path: string, out: SyncWriter, owns: boolean, opts: BufferedOutputOptions) {
    this.path = path;
    this.#out = out;
    this.#ownsOut = owns;
    this.#buf = new Uint8Array(opts.bufferBytes ?? 1024 * 1024);
    this.#onReaderGone = opts.onReaderGone;
    const every = opts.flushIntervalMs ?? 250;
    if (every > 0) {
      const timer = setInterval(() => this.#timerFlush(), every);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /**
   * Opens `path` (`-` = stdout) as a new file readable by its owner only (0600, like dumpcap:
   * captures hold other people's traffic). Refuses an existing file unless `force`, which
   * replaces a regular file. Always created with O_EXCL, so a symbolic link is never followed.
   */
  static async open(path: string, opts: BufferedOutputOptions = {}): Promise<BufferedOutput> {
    if (!isStdout(path) && opts.force) {
      try {
        await removeRegularFile(path);
      } catch (e) {
        throw openError(path, e);
      }
    }
    return BufferedOutput.openSync(path, { ...opts, force: false });
  }

  /**
   * {@link open} without awaiting: a rotating output opens its next file between two batches
   * of packets, where nothing else may run.
   */
  static openSync(path: string, opts: BufferedOutputOptions = {}): BufferedOutput {
    if (isStdout(path)) return new BufferedOutput(path, Deno.stdout, false, opts);
    try {
      if (opts.force) removeRegularFileSync(path);
      const file = Deno.openSync(path, { write: true, createNew: true, mode: 0o600 });
      return new BufferedOutput(path, file, true, opts);
    } catch (e) {
      throw openError(path, e);
    }
  }

  /** Bytes waiting in the buffer. */
  get pending(): number {
    return this.#used;
  }

  write(chunk: Uint8Array): void {
    this.#check();
    if (this.#used + chunk.length > this.#buf.length) this.#flushSync();
    if (chunk.length > this.#buf.length) {
      this.#writeAll(chunk);
      return;
    }
    this.#buf.set(chunk, this.#used);
    this.#used += chunk.length;
  }

  /** Writes out everything buffered. */
  flush(): void {
    this.#check();
    this.#flushSync();
  }

  /**
   * Opens an existing FIFO for writing, e.g. Wireshark's extcap `--fifo`: nothing is created or
   * removed, and the open waits until a reader has opened the other end.
   */
  static async openFifo(path: string, opts: BufferedOutputOptions = {}): Promise<BufferedOutput> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      throw new OutputError(`cannot use FIFO ${path}: ${(e as Error).message}`);
    }
    if (!info.isFifo) throw new OutputError(`${path} is not a FIFO (named pipe)`);
    try {
      return new BufferedOutput(path, await Deno.open(path, { write: true }), true, opts);
    } catch (e) {
      throw new OutputError(`cannot open FIFO ${path}: ${(e as Error).message}`);
    }
  }

  /** Flushes, stops the timer and closes the file (never stdout). Idempotent. */
  close(): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    try {
      if (!this.#error) this.#flushSync();
    } finally {
      this.#closed = true;
      if (this.#ownsOut) this.#out.close?.();
    }
    if (this.#error) throw this.#error;
  }

  #timerFlush(): void {
    if (this.#error || this.#used === 0) return;
    try {
      this.#flushSync();
    } catch {
      // kept in #error; surfaced by the next write/flush/close
    }
  }

  #check(): void {
    if (this.#error) throw this.#error;
    if (this.#closed) throw new OutputError(`output ${this.path} is already closed`);
  }

  #flushSync(): void {
    if (this.#used === 0) return;
    const n = this.#used;
    this.#used = 0;
    this.#writeAll(this.#buf.subarray(0, n));
  }

  #writeAll(data: Uint8Array): void {
    if (this.#readerGone) return;
    try {
      writeInChunks(this.#out, data);
      this.bytesWritten += data.length;
    } catch (e) {
      if (e instanceof Deno.errors.BrokenPipe && this.#onReaderGone) {
        this.#readerGone = true;
        queueMicrotask(this.#onReaderGone);
        return;
      }
      const where = isStdout(this.path) ? "standard output" : this.path;
      const reason = e instanceof Deno.errors.BrokenPipe
        ? "the reading program has exited"
        : (e as Error).message;
      this.#error = new OutputError(`cannot write to ${where}: ${reason}`, { cause: e });
      throw this.#error;
    }
  }
}
