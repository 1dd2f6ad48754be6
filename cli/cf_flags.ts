/**
 * Command line of `pcap-cf capture APP [flags]`, parsed with commander like pcap-bosh's (same
 * flag names for what they share: -o, -F, -u, -f, -i, -l, --format, --duration, --max-packets,
 * --max-bytes, --ca-cert, -v, -q). Pure: argv and the environment come in, a typed options object
 * or a UsageError / HelpRequested comes out.
 */
import { Command } from "commander";
import {
  type CaptureFormat,
  normalizeApiUrl,
  outputChoice,
  parseCaptureCommand,
  positiveInt,
  quietCommand,
  UsageError,
  withCaptureOptions,
  withInstancesOptions,
} from "./bosh_flags.ts";
import { RESOURCE_GUID_RE } from "../protocol/cf_ids.ts";
import type { RotationPolicy } from "./rotation_policy.ts";

export interface CfCaptureOptions {
  /** app name; undefined when only --app-guid is given */
  app?: string;
  appGuid?: string;
  /** org/space names overriding the cf CLI's target */
  org?: string;
  space?: string;
  process: string;
  indexes: number[];
  output: string;
  forceOverwrite: boolean;
  /** from -u or PCAP_API; undefined = derive from the CF API URL (derivePcapApiUrl) */
  pcapApiUrl?: string;
  filter?: string;
  interface: string;
  snaplen: number;
  format: CaptureFormat;
  durationMs?: number;
  maxPackets?: number;
  maxBytes?: number;
  caCert?: string;
  /** CA of the UAA for refreshing the cf login (--uaa-ca-cert); default: caCert */
  uaaCaCert?: string;
  verbose: boolean;
  quiet: boolean;
  /** --rotate-size/--rotate-every/--keep: a series of files instead of one */
  rotation?: RotationPolicy;
  /** --dry-run: list what would be captured, capture nothing */
  dryRun?: boolean;
}

/** `https://api.sys.example.com` → `https://pcap.sys.example.com` (the route the release adds). */
export function derivePcapApiUrl(cfApiUrl: string): string {
  let u: URL;
  try {
    u = new URL(cfApiUrl);
  } catch {
    throw new UsageError(`the CF API URL "${cfApiUrl}" is not a URL; pass -u/--pcap-api-url`);
  }
  if (!u.hostname.startsWith("api.")) {
    throw new UsageError(
      `cannot derive the pcap API from the CF API ${cfApiUrl} (its host does not start with ` +
        '"api."); pass -u/--pcap-api-url or set PCAP_API',
    );
  }
  u.hostname = `pcap.${u.hostname.slice(4)}`;
  return normalizeApiUrl(u.origin);
}

function collect<T>(parse: (s: string) => T) {
  return (value: string, previous: T[] | undefined): T[] => [...(previous ?? []), parse(value)];
}

/** The CF selection flags (which app, which instances); `output` adds -o and -F among them. */
function cfSelection(cmd: Command, output: boolean): Command {
  cmd
    .argument("[app]")
    .option("--app-guid <guid>", "the app's guid instead of (or to check) its name")
    .option("--org <name>", "org of the app (default: the cf CLI's target)")
    .option("--space <name>", "space of the app (default: the cf CLI's target)")
    .option("--process <type>", "process type", "web")
    .option(
      "--index <n>",
      "instance index; repeatable (default: all)",
      collect(positiveInt("index", 0, 1_000_000)),
    );
  if (output) {
    cmd
      .option("-o, --file <path>", "output file, - for stdout (required)")
      .option("-F, --force-overwrite", "overwrite the output file if it exists");
  }
  return cmd
    .option(
      "-u, --pcap-api-url <url>",
      "URL of the pcap API (env PCAP_API; default: pcap.<domain>)",
    )
    .option("-f, --filter <expr>", "capture filter in pcap-filter(7) syntax")
    .option("-i, --interface <name>", "interface inside the container (eth0, or lo)", "eth0")
    .option(
      "--uaa-ca-cert <file>",
      "CA certificate file for the UAA the cf login is refreshed at (default: --ca-cert)",
    );
}

function buildCommand(write: (s: string) => void = () => {}): Command {
  const cmd = quietCommand(write, "pcap-cf capture")
    .usage("APP [flags]")
    .description(
      "Capture packets inside the containers of a Cloud Foundry app into one pcapng file\n" +
        "(or stream, with -o -): one interface per instance. Uses your cf CLI login.",
    );
  return withCaptureOptions(cfSelection(cmd, true));
}

function buildInstancesCommand(write: (s: string) => void = () => {}): Command {
  const cmd = quietCommand(write, "pcap-cf instances")
    .usage("APP [--index N...] [flags]")
    .description(
      "List what a capture of the app would capture: each instance's source name, the address\n" +
        "of its cell's agent, and whether the agent answers (version, draining). Captures\n" +
        "nothing. Uses your cf CLI login.",
    );
  return withInstancesOptions(cfSelection(cmd, false));
}

/** Help text for `pcap-cf instances --help`. */
export function cfInstancesHelp(): string {
  return buildInstancesCommand().helpInformation();
}

export function cfCaptureHelp(): string {
  return buildCommand().helpInformation();
}

interface RawOpts {
  appGuid?: string;
  org?: string;
  space?: string;
  process: string;
  index?: number[];
  file?: string;
  forceOverwrite?: boolean;
  pcapApiUrl?: string;
  filter?: string;
  interface: string;
  snaplen: number;
  format: string;
  duration?: number;
  maxPackets?: number;
  maxBytes?: number;
  caCert?: string;
  uaaCaCert?: string;
  verbose?: boolean;
  quiet?: boolean;
  rotateSize?: number;
  rotateEvery?: number;
  keep?: number;
  dryRun?: boolean;
}

/** Parses `pcap-cf capture` arguments (argv may start with "capture"); `env` gives PCAP_API. */
export function parseCfCaptureArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): CfCaptureOptions {
  const cmd = parseCaptureCommand(buildCommand, argv, "pcap-cf");
  return validate(cmd.opts<RawOpts>(), cmd.args[0], env, "capture");
}

/**
 * Parses `pcap-cf instances` arguments (argv may start with "instances") into the options a
 * `capture --dry-run` of the same app has. Throws UsageError or HelpRequested.
 */
export function parseCfInstancesArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): CfCaptureOptions {
  const cmd = parseCaptureCommand(buildInstancesCommand, argv, "pcap-cf", "instances");
  const given = cmd.opts<Partial<RawOpts>>();
  const raw: RawOpts = {
    ...given,
    process: given.process ?? "web",
    interface: given.interface ?? "eth0",
    snaplen: 65535,
    format: "pcapng",
    dryRun: true,
  };
  return validate(raw, cmd.args[0], env, "instances");
}

function validate(
  o: RawOpts,
  app: string | undefined,
  env: Record<string, string | undefined>,
  command: "capture" | "instances",
): CfCaptureOptions {
  const usage = (msg: string) => new UsageError(`${msg}\n(see pcap-cf ${command} --help)`);
  if (!app && !o.appGuid) {
    throw usage(`name the app: pcap-cf ${command} APP (or --app-guid GUID)`);
  }
  if (o.appGuid !== undefined && !RESOURCE_GUID_RE.test(o.appGuid)) {
    throw usage(`--app-guid "${o.appGuid}" is not an app guid (see 'cf app APP --guid')`);
  }
  if ((o.org === undefined) !== (o.space === undefined) && o.space === undefined) {
    throw usage("--org needs --space too (the app is looked up in a space)");
  }
  if (!/^[A-Za-z0-9_-]{1,255}$/.test(o.process)) {
    throw usage(`--process "${o.process}" is not a process type (letters, digits, _ and -)`);
  }
  const out = outputChoice(o, usage);
  if (o.verbose && o.quiet) throw usage("-v/--verbose and -q/--quiet exclude each other");
  if (o.format !== "pcapng" && o.format !== "pcap") {
    throw usage(`--format must be pcapng or pcap, not "${o.format}"`);
  }
  if (o.interface.trim() === "") throw usage("-i/--interface must not be empty");
  const apiRaw = o.pcapApiUrl ?? (env.PCAP_API || undefined);
  return {
    app,
    appGuid: o.appGuid,
    org: o.org,
    space: o.space,
    process: o.process,
    indexes: [...new Set(o.index ?? [])].sort((a, b) => a - b),
    output: out.output,
    forceOverwrite: !!o.forceOverwrite,
    pcapApiUrl: apiRaw === undefined ? undefined : normalizeApiUrl(apiRaw),
    filter: o.filter?.trim() ? o.filter : undefined,
    interface: o.interface,
    snaplen: o.snaplen,
    format: o.format,
    durationMs: o.duration,
    maxPackets: o.maxPackets,
    maxBytes: o.maxBytes,
    caCert: o.caCert,
    uaaCaCert: o.uaaCaCert,
    verbose: !!o.verbose,
    quiet: !!o.quiet,
    ...(out.rotation ? { rotation: out.rotation } : {}),
    ...(out.dryRun ? { dryRun: true } : {}),
  };
}
