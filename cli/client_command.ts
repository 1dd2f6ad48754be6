/**
 * What `pcap-bosh` and `pcap-cf` share around a capture: the help sections that say the same for
 * both, the top-level command dispatch (usage, help, capture/instances), the request's limits, and
 * the step between authentication and the capture (dry run, target preview, opening the output).
 * The platform parts (flags, authentication, the start request) stay in bosh_main.ts and
 * cf_main.ts.
 */
import type { CaptureLimits } from "../protocol/messages.ts";
import { captureOptionsOrExit } from "./capture_preflight.ts";
import type { CaptureIo } from "./bosh_capture.ts";
import { listTargets, previewTargets, type TargetsQuery } from "./instances_command.ts";
import { type CaptureOutput, fileEvents, openCaptureOutput } from "./rotating_output.ts";
import type { ProgressDisplay } from "./progress.ts";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export type ClientProduct = "pcap-bosh" | "pcap-cf";

/** The help sections whose text is the same for both clients. */
export const SHARED_CAPTURE_HELP = {
  stopping: `Stopping:
  Ctrl-C, --duration, --max-packets or --max-bytes stop the capture cleanly: the api stops every
  agent and delivers what is still in flight, then the file is closed. A second Ctrl-C stops at
  once; the file is still valid (packets in flight are lost).`,
  longCaptures: `Long captures:
  --rotate-size and/or --rotate-every write a series of complete files named like dumpcap's,
  FILE_00001_YYYYmmddHHMMSS.pcapng, ...; --keep N deletes all but the newest N (a ring).
  No packet is lost or duplicated between files. Not with -o -.`,
  dryRun: `Dry run:
  --dry-run lists the sources a capture would have, their agents' addresses and whether each
  agent answers (version, draining), and exits without capturing (no -o needed).`,
};

/** The generated flag help, then `epilog` (which starts with a blank line). */
export function withEpilog(text: string, epilog: string): string {
  return text.replace(/\s*$/, "\n") + epilog;
}

/** The client's limits in a start request: only those that were given. Pure. */
export function requestLimits(
  o: { durationMs?: number; maxPackets?: number; maxBytes?: number },
): CaptureLimits {
  return {
    ...(o.durationMs ? { duration_ms: o.durationMs } : {}),
    ...(o.maxPackets ? { max_packets: o.maxPackets } : {}),
    ...(o.maxBytes ? { max_bytes: o.maxBytes } : {}),
  };
}

export interface ClientCommands<C, I> {
  product: ClientProduct;
  usage: string;
  captureEpilog: string;
  instancesEpilog: string;
  captureHelp(): string;
  instancesHelp(): string;
  parseCapture(args: string[], env: Record<string, string | undefined>): C;
  parseInstances(args: string[], env: Record<string, string | undefined>): I;
}

/**
 * The first word of a client's argv: usage or help (exit 0, or 2 for no command), an unknown
 * command (2), or the parsed options of `capture` or `instances` (a usage error exits 2).
 */
export function dispatchCommand<C, I>(
  argv: string[],
  env: Record<string, string | undefined>,
  spec: ClientCommands<C, I>,
): { exit: number } | { command: "capture" | "instances"; opts: C | I } {
  const [command, ...rest] = argv;
  const capture = (t: string) => withEpilog(t, spec.captureEpilog);
  const instances = (t: string) => withEpilog(t, spec.instancesEpilog);
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    const help = command === "help" && rest[0] === "capture"
      ? capture(spec.captureHelp())
      : command === "help" && rest[0] === "instances"
      ? instances(spec.instancesHelp())
      : "";
    if (help) console.log(help);
    else (command ? console.log : console.error)(spec.usage.trimEnd());
    return { exit: command ? EXIT_OK : EXIT_USAGE };
  }
  if (command !== "capture" && command !== "instances") {
    console.error(`${spec.product}: unknown command "${command}"\n\n${spec.usage.trimEnd()}`);
    return { exit: EXIT_USAGE };
  }
  const parsed = command === "instances"
    ? captureOptionsOrExit<C | I>(
      () => spec.parseInstances(rest, env),
      spec.product,
      instances,
      "instances",
    )
    : captureOptionsOrExit<C | I>(() => spec.parseCapture(rest, env), spec.product, capture);
  return "exit" in parsed ? parsed : { command, opts: parsed.opts };
}

/**
 * After authentication: a dry run lists the targets and ends (its exit code); otherwise the
 * targets are previewed (not with -q) and the output is opened, or refused with exit 1.
 * `refresh` renews a token the api refused for the dry run's listing (once).
 */
export async function prepareCapture(
  query: TargetsQuery,
  o: Parameters<typeof openCaptureOutput>[0] & {
    dryRun?: boolean;
    quiet: boolean;
    verbose: boolean;
  },
  io: CaptureIo,
  progress: ProgressDisplay,
  product: ClientProduct,
  refresh?: () => Promise<string>,
): Promise<{ exit: number } | { output: CaptureOutput }> {
  if (o.dryRun) {
    const out = io.writeOut ?? ((s: string) => console.log(s.trimEnd()));
    return { exit: await listTargets(query, out, io.writeErr, product, refresh) };
  }
  if (!o.quiet) await previewTargets(query, (s) => progress.message(s), o.verbose);
  try {
    return { output: await openCaptureOutput(o, fileEvents(progress, o.verbose)) };
  } catch (e) {
    io.writeErr(`${product}: ${(e as Error).message}\n`);
    return { exit: EXIT_FAILED };
  }
}
