/**
 * A capture written as a series of files (`--rotate-size`, `--rotate-every`, `--keep`). Each
 * file is complete on its own: its own header (pcapng: SHB and the IDBs of every source known so
 * far, in the same order so interface ids stay the same; classic pcap: the file header), the
 * packets, and pcapng ISBs at its end. A file is switched only between two whole batches of
 * packets, so no packet is lost or written twice at a boundary. The ring deletes its oldest
 * files only after the next file has been completed (closed).
 *
 * When to switch and what files are called is decided by rotation_policy.ts; this module does
 * the I/O, with the same rules as a single output: files 0600, created with O_EXCL (a link is
 * never followed), an existing file refused unless -F.
 *
 * @module
 */
import { BufferedOutput, createCaptureWriter, dirname, OutputError } from "./capture_output.ts";
import type {
  CaptureWriter,
  IndexedRecords,
  OutputFormat,
  SourceInfo,
  SourceStatistics,
} from "./capture_writer.ts";
import type { SectionInfo } from "./pcapng_writer.ts";
import {
  ringExpired,
  rotationDecision,
  rotationFileName,
  type RotationName,
  type RotationPolicy,
  splitOutputName,
} from "./rotation_policy.ts";

/** How a {@link RotatingOutput} opens its files; the clocks are for tests. */
export interface RotatingOutputOptions {
  policy: RotationPolicy;
  format: OutputFormat;
  /** -F: replace an existing file of the same name */
  force?: boolean;
  /** per-file buffer; see BufferedOutput */
  bufferBytes?: number;
  flushIntervalMs?: number;
  /** wall clock for the names; default `new Date()` */
  now?: () => Date;
  /** clock for the intervals; default performance.now() */
  monotonicMs?: () => number;
  /** how often --rotate-every is checked; default a quarter of it, at most 1 s */
  checkIntervalMs?: number;
  /** told about every file completed and every file the ring removed */
  onFile?: (event: { kind: "completed" | "removed"; path: string }) => void;
}

/** What the writer of a rotating output needs to know about the capture. */
export interface RotatingWriterOptions {
  section?: SectionInfo;
  snaplen?: number;
  /** the statistics of a source so far, for the ISBs of a file completed mid-capture */
  statsFor?: (sourceId: number) => SourceStatistics;
}

interface OpenFile {
  seq: number;
  path: string;
  output: BufferedOutput;
  writer: CaptureWriter;
  packets: number;
  sinceMs: number;
}

/**
 * Checks `-o` for a rotating capture before anything is captured: its directory must exist, and
 * the name must not be a directory. The files themselves are checked as each one is created.
 */
export async function prepareRotation(path: string): Promise<void> {
  if (path === "") throw new OutputError("output file name is empty; pass -o FILE");
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
  try {
    if ((await Deno.lstat(path)).isDirectory) {
      throw new OutputError(
        `output path ${path} is a directory; pass a file name with -o (rotated files are ` +
          "named after it)",
      );
    }
  } catch (e) {
    if (e instanceof OutputError) throw e;
  }
}

/** The series of files of one rotating capture. */
export class RotatingOutput {
  /** the `-o` value the names derive from */
  readonly path: string;
  readonly #opts: RotatingOutputOptions;
  readonly #name: RotationName;
  #seq = 0;
  #first: OpenFile | undefined;
  #writer: RotatingWriter | undefined;
  /** completed files still on disk, oldest first */
  #complete: string[] = [];
  #removed = 0;

  private constructor(path: string, opts: RotatingOutputOptions) {
    this.path = path;
    this.#opts = opts;
    this.#name = splitOutputName(path, opts.format);
  }

  /** Creates the first file right away, so that a name or permission problem shows up now. */
  static open(path: string, opts: RotatingOutputOptions): Promise<RotatingOutput> {
    return new Promise((resolve) => {
      const out = new RotatingOutput(path, opts);
      out.#first = out.#openFile();
      resolve(out);
    });
  }

  /** The writer that spreads the capture over the files (one per output). */
  writer(w: RotatingWriterOptions = {}): CaptureWriter {
    if (this.#writer) throw new Error("a rotating output has one writer");
    const first = this.#first!;
    first.writer = createCaptureWriter(this.#opts.format, first.output, w);
    this.#writer = new RotatingWriter(this, first, w, this.#opts);
    return this.#writer;
  }

  /** Completed files still on disk and the open one, oldest first. */
  get files(): string[] {
    const open = this.#writer?.current.path ?? this.#first?.path;
    return [...this.#complete, ...(open && !this.#complete.includes(open) ? [open] : [])];
  }

  /** For the summary: which files hold the capture. */
  describe(): string {
    const files = this.files;
    const dropped = this.#removed ? `; the ring removed ${this.#removed} older` : "";
    if (files.length <= 1) return `${files[0] ?? this.path}${dropped}`;
    return `${files.length} files, ${files[0]} ... ${files[files.length - 1]}${dropped}`;
  }

  /** Completes the open file (trailer, close) and applies the ring. Idempotent. */
  close(): void {
    if (this.#writer) this.#writer.finish();
    else if (this.#first) {
      const f = this.#first;
      this.#first = undefined;
      createCaptureWriter(this.#opts.format, f.output).end();
      this.completed(f);
    }
  }

  /** Nothing was captured: removes every file this output created. */
  discard(): void {
    try {
      this.close(); // normally done already; never leave a descriptor or timer behind
    } catch { /* the files go anyway */ }
    for (const p of this.files) {
      try {
        Deno.removeSync(p);
      } catch { /* already gone */ }
    }
    this.#complete = [];
  }

  /** Opens the next file with its writer. @internal */
  openNext(w: RotatingWriterOptions): OpenFile {
    const f = this.#openFile();
    f.writer = createCaptureWriter(this.#opts.format, f.output, w);
    return f;
  }

  /** A file was closed complete: the ring may now drop older ones. @internal */
  completed(f: OpenFile): void {
    this.#complete.push(f.path);
    this.#opts.onFile?.({ kind: "completed", path: f.path });
    for (const old of ringExpired(this.#complete, this.#opts.policy.keep)) {
      try {
        Deno.removeSync(old);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          throw new OutputError(`cannot remove ${old} from the ring: ${(e as Error).message}`);
        }
      }
      this.#complete.shift();
      this.#removed++;
      this.#opts.onFile?.({ kind: "removed", path: old });
    }
  }

  /** The next file, without its writer yet (the caller creates it for its section). */
  #openFile(): OpenFile {
    const seq = ++this.#seq;
    const path = rotationFileName(this.#name, seq, (this.#opts.now ?? (() => new Date()))());
    const output = BufferedOutput.openSync(path, {
      force: this.#opts.force,
      bufferBytes: this.#opts.bufferBytes,
      flushIntervalMs: this.#opts.flushIntervalMs,
    });
    const sinceMs = (this.#opts.monotonicMs ?? (() => performance.now()))();
    return { seq, path, output, writer: undefined!, packets: 0, sinceMs };
  }
}

/** {@link CaptureWriter} over the files of a {@link RotatingOutput}. */
class RotatingWriter implements CaptureWriter {
  readonly format: OutputFormat;
  #file: OpenFile;
  #sources: SourceInfo[] = [];
  #totals: number[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  /** a rotation on the timer failed; reported by the next call */
  #error: Error | undefined;
  #finished = false;

  constructor(
    private readonly out: RotatingOutput,
    first: OpenFile,
    private readonly w: RotatingWriterOptions,
    private readonly opts: RotatingOutputOptions,
  ) {
    this.format = opts.format;
    this.#file = first;
    const every = opts.policy.everyMs;
    if (every !== undefined) {
      const tick = opts.checkIntervalMs ?? Math.min(1000, Math.max(50, every / 4));
      const timer = setInterval(() => this.#onTimer(), tick);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  get current(): OpenFile {
    return this.#file;
  }

  addSource(source: SourceInfo): number {
    this.#check();
    const id = this.#file.writer.addSource(source);
    this.#sources.push(source);
    this.#totals.push(0);
    return id;
  }

  writeRecords(sourceId: number, records: Uint8Array): number {
    this.#check();
    return this.#counted(sourceId, this.#file.writer.writeRecords(sourceId, records));
  }

  writeIndexed(sourceId: number, batch: IndexedRecords, from: number, to: number): number {
    this.#check();
    return this.#counted(sourceId, this.#file.writer.writeIndexed(sourceId, batch, from, to));
  }

  /** Counts `n` packets just written for `sourceId`; the file may rotate after them. */
  #counted(sourceId: number, n: number): number {
    this.#file.packets += n;
    this.#totals[sourceId] += n;
    if (n > 0) this.#consider();
    return n;
  }

  writeStats(sourceId: number, stats: SourceStatistics): void {
    this.#check();
    this.#file.writer.writeStats(sourceId, stats);
  }

  /** Packets of this source across all files. */
  packetsWritten(sourceId: number): number {
    this.#file.writer.packetsWritten(sourceId); // range check
    return this.#totals[sourceId];
  }

  end(): void {
    this.#check();
    this.#file.writer.end();
  }

  /** Closes the last file (after the caller's writeStats and end) and applies the ring. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#stopTimer();
    const f = this.#file;
    f.output.close();
    this.out.completed(f);
    if (this.#error) throw this.#error;
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #check(): void {
    if (this.#error) throw this.#error;
    if (this.#finished) throw new OutputError(`output ${this.out.path} is already closed`);
  }

  #onTimer(): void {
    if (this.#error || this.#finished) return;
    try {
      this.#consider();
    } catch (e) {
      this.#error = e as Error; // surfaced by the next write, or at close
    }
  }

  #consider(): void {
    const f = this.#file;
    const now = (this.opts.monotonicMs ?? (() => performance.now()))();
    const state = { bytes: f.output.bytesWritten + f.output.pending, packets: f.packets };
    const decision = rotationDecision(this.opts.policy, { ...state, sinceMs: f.sinceMs }, now);
    if (decision === "restart-clock") f.sinceMs = now;
    if (decision === "rotate") this.#rotate();
  }

  /** Completes the open file and continues in the next one with the same sources. */
  #rotate(): void {
    const f = this.#file;
    const endNs = BigInt(Date.now()) * 1_000_000n;
    for (let id = 0; id < this.#sources.length; id++) {
      const soFar = this.w.statsFor?.(id) ?? {};
      f.writer.writeStats(id, {
        ...soFar,
        endNs,
        comment: `file ${f.seq} of a rotating capture; counters are totals since the ` +
          "capture started",
      });
    }
    f.writer.end();
    f.output.close();
    this.out.completed(f);
    const next = this.out.openNext(this.w);
    for (const s of this.#sources) next.writer.addSource(s);
    this.#file = next;
  }
}

/** Where a capture goes: one file or stdout, or a rotating series of files. */
export type CaptureOutput = BufferedOutput | RotatingOutput;

/** Opens the output the flags ask for (call preflight first); `onFile` hears of rotations. */
export function openCaptureOutput(
  o: { output: string; forceOverwrite: boolean; format: OutputFormat; rotation?: RotationPolicy },
  onFile?: RotatingOutputOptions["onFile"],
): Promise<CaptureOutput> {
  return o.rotation
    ? RotatingOutput.open(o.output, {
      policy: o.rotation,
      format: o.format,
      force: o.forceOverwrite,
      onFile,
    })
    : BufferedOutput.open(o.output, { force: o.forceOverwrite });
}

/** With -v, each completed and each removed file as a progress line. */
export function fileEvents(
  progress: { message(text: string): void },
  verbose: boolean,
): RotatingOutputOptions["onFile"] {
  if (!verbose) return undefined;
  return (e) =>
    progress.message(`${e.kind === "completed" ? "completed" : "ring removed"} ${e.path}`);
}
