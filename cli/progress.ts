/**
 * What the capture client shows on stderr: a live block of per-source lines on a terminal
 * (redrawn in place with ANSI cursor movement), status messages as `origin (TYPE): text`, and a
 * final summary. With -q or when stderr is not a terminal the live block is off and only the
 * summary (and, with -q, only warnings) remain. Formatting is pure; ProgressDisplay only decides
 * what to write where, through a `write` function the caller provides.
 */

export interface SourceProgress {
  name: string;
  packets: number;
  bytes: number;
  /** every loss reported for this source (kernel + discards on the way) */
  drops: number;
  state?: "capturing" | "stopped" | "unavailable";
}

export interface StatusLine {
  type: string;
  origin: string;
  text: string;
}

/** Status types that are only informational; everything else is a warning or error. */
const INFO_TYPES = new Set(["CAPTURE_STOPPED"]);

// deno-lint-ignore no-control-regex
const CONTROL = /\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/** Text from the network must not move our cursor or recolor the terminal. */
export function sanitize(text: string): string {
  return text.replace(/\r?\n/g, " ").replace(CONTROL, "");
}

export function formatCount(n: number): string {
  return Math.trunc(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

/** `5s`, `1m05s`, `2h03m10s` */
export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (x: number) => String(x).padStart(2, "0");
  if (h > 0) return `${h}h${pad(m)}m${pad(sec)}s`;
  if (m > 0) return `${m}m${pad(sec)}s`;
  return `${sec}s`;
}

/** `origin (TYPE): text` */
export function formatStatus(m: StatusLine): string {
  return `${sanitize(m.origin)} (${sanitize(m.type)}): ${sanitize(m.text)}`;
}

function clip(line: string, width: number): string {
  return line.length <= width ? line : line.slice(0, Math.max(0, width - 1)) + "…";
}

function totals(sources: SourceProgress[]) {
  return sources.reduce(
    (t, s) => ({
      packets: t.packets + s.packets,
      bytes: t.bytes + s.bytes,
      drops: t.drops + s.drops,
    }),
    { packets: 0, bytes: 0, drops: 0 },
  );
}

function formatSourceLine(s: SourceProgress, nameWidth: number, width: number): string {
  const state = s.state && s.state !== "capturing" ? `  ${s.state}` : "";
  const drops = s.drops > 0 ? `  ${formatCount(s.drops)} dropped` : "";
  const line =
    `  ${sanitize(s.name).padEnd(nameWidth)}  ${formatCount(s.packets).padStart(9)} pkts` +
    `  ${formatBytes(s.bytes).padStart(10)}${drops}${state}`;
  return clip(line, width);
}

/** Lines of the live block: one total line, then up to `maxSources` sources. */
export function renderProgress(
  sources: SourceProgress[],
  elapsedMs: number,
  width = 80,
  maxSources = 10,
): string[] {
  const t = totals(sources);
  const head = `capturing ${formatElapsed(elapsedMs)}: ${formatCount(t.packets)} packets, ` +
    `${formatBytes(t.bytes)}` + (t.drops > 0 ? `, ${formatCount(t.drops)} dropped` : "") +
    ` from ${sources.length} source${sources.length === 1 ? "" : "s"}`;
  const shown = sources.slice(0, maxSources);
  const nameWidth = Math.min(40, Math.max(0, ...shown.map((s) => sanitize(s.name).length)));
  const lines = [clip(head, width), ...shown.map((s) => formatSourceLine(s, nameWidth, width))];
  if (sources.length > shown.length) lines.push(`  … and ${sources.length - shown.length} more`);
  return lines;
}

/** Final summary, printed once at the end whatever the mode. */
export function formatSummary(
  sources: SourceProgress[],
  elapsedMs: number,
  output: string,
): string {
  const t = totals(sources);
  const where = output === "-" ? "stdout" : output;
  const lines = [
    `captured ${formatCount(t.packets)} packets (${formatBytes(t.bytes)}) from ` +
    `${sources.length} source${sources.length === 1 ? "" : "s"} in ${formatElapsed(elapsedMs)} ` +
    `to ${where}` + (t.drops > 0 ? `; ${formatCount(t.drops)} packets lost on the way` : ""),
  ];
  for (const s of sources) {
    if (s.drops > 0 || (s.state && s.state !== "stopped" && s.state !== "capturing")) {
      lines.push(
        `  ${sanitize(s.name)}: ${formatCount(s.packets)} packets, ${formatCount(s.drops)} lost` +
          (s.state === "unavailable" ? ", became unavailable" : ""),
      );
    }
  }
  return lines.join("\n");
}

/** Escape sequence that replaces a block of `previous` lines with `lines` (cursor on last). */
function redraw(previous: number, lines: string[]): string {
  const up = previous > 1 ? `\x1b[${previous - 1}A` : "";
  const clear = previous > 0 ? `\r${up}\x1b[J` : "";
  return clear + lines.join("\n");
}

export interface ProgressDisplayOptions {
  write: (s: string) => void;
  /** is stderr a terminal */
  tty: boolean;
  quiet: boolean;
  width?: number;
  maxSources?: number;
}

export class ProgressDisplay {
  #o: ProgressDisplayOptions;
  #drawn = 0;
  #last: string[] = [];

  constructor(opts: ProgressDisplayOptions) {
    this.#o = opts;
  }

  get live(): boolean {
    return this.#o.tty && !this.#o.quiet;
  }

  /** Redraws the live block (no-op unless live). */
  update(sources: SourceProgress[], elapsedMs: number): void {
    if (!this.live) return;
    const lines = renderProgress(sources, elapsedMs, this.#o.width ?? 80, this.#o.maxSources);
    this.#o.write(redraw(this.#drawn, lines));
    this.#drawn = lines.length;
    this.#last = lines;
  }

  /** Prints a status message above the live block; with -q only warnings and errors. */
  status(m: StatusLine): void {
    if (this.#o.quiet && INFO_TYPES.has(m.type)) return;
    this.message(formatStatus(m));
  }

  /** Prints a line of text above the live block. */
  message(text: string): void {
    if (this.#drawn > 0) {
      this.#o.write(redraw(this.#drawn, [text]) + "\n" + this.#last.join("\n"));
    } else {
      this.#o.write(text + "\n");
    }
  }

  /** Removes the live block and prints the summary. */
  finish(sources: SourceProgress[], elapsedMs: number, output: string): void {
    if (this.#drawn > 0) this.#o.write(redraw(this.#drawn, []));
    this.#drawn = 0;
    this.#last = [];
    this.#o.write(formatSummary(sources, elapsedMs, output) + "\n");
  }
}
