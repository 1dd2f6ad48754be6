/**
 * Command line of `pcap-bosh capture [flags] [INSTANCE...]`, parsed with commander.
 *
 * Flags keep the names of pcap-release's pcap-bosh-cli (-o/--file, -F/--force-overwrite,
 * -u/--pcap-api-url, -f, -i, -c, -e, -d, -g, -l/--snaplen, -v, -q) and add limits and formats.
 * Parsing is pure: argv and the environment come in as arguments, and commander is told never to
 * exit or print, so every problem becomes a UsageError (the caller prints it and exits 2).
 */
import { MAX_SNAPLEN } from "../protocol/records.ts";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import {
  parseByteSize as parseByteSizeValue,
  parseDuration as parseDurationValue,
} from "../lib/units.ts";
import { isLoopbackHost } from "../lib/url_policy.ts";
import { MAX_CAPTURE_DURATION_MS } from "../protocol/messages.ts";
import { MAX_KEEP, type RotationPolicy, rotationProblem } from "./rotation_policy.ts";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** `--help` was asked for; `text` is the help to print (exit 0). */
export class HelpRequested extends Error {
  constructor(readonly text: string) {
    super("help requested");
    this.name = "HelpRequested";
  }
}

/** One positional INSTANCE: `group/id`, `group/index`, a bare id or a bare index. */
export interface InstanceSelector {
  raw: string;
  group?: string;
  id?: string;
  index?: number;
}

export type CaptureFormat = "pcapng" | "pcap";

export interface BoshCaptureOptions {
  deployment: string;
  groups: string[];
  instances: InstanceSelector[];
  /** output file; "-" is stdout */
  output: string;
  forceOverwrite: boolean;
  /** normalized: scheme defaulted to https, no trailing slash */
  pcapApiUrl: string;
  /** alias or URL of the BOSH environment; undefined = the config's only environment */
  boshEnvironment?: string;
  boshConfig: string;
  filter?: string;
  interface: string;
  snaplen: number;
  format: CaptureFormat;
  durationMs?: number;
  maxPackets?: number;
  maxBytes?: number;
  /** file with the CA of the pcap API */
  caCert?: string;
  insecure: boolean;
  verbose: boolean;
  quiet: boolean;
  /** --rotate-size/--rotate-every/--keep: a series of files instead of one */
  rotation?: RotationPolicy;
  /** --dry-run: list what would be captured, capture nothing */
  dryRun?: boolean;
}

/** `30s`, `5m`, `1h30m`, `250ms` or seconds → milliseconds (> 0). */
export function parseDuration(text: string): number {
  const ms = parseDurationValue(text);
  if (ms === null) {
    throw new InvalidArgumentError(`"${text}" is not a duration; use e.g. 30s, 5m, 1h30m`);
  }
  if (ms <= 0) throw new InvalidArgumentError(`duration "${text}" must be more than zero`);
  if (ms > MAX_CAPTURE_DURATION_MS) {
    throw new InvalidArgumentError(`duration "${text}" is longer than the maximum of 7 days`);
  }
  return ms;
}

/** `1048576`, `10MB` (10^6), `1GiB` (2^30), `500k`. Returns bytes (> 0). */
export function parseByteSize(text: string): number {
  const n = parseByteSizeValue(text);
  if (n === null) {
    throw new InvalidArgumentError(`"${text}" is not a size; use e.g. 500000, 10MB, 1GiB`);
  }
  if (n <= 0) throw new InvalidArgumentError(`size "${text}" must be more than zero`);
  return n;
}

export function positiveInt(what: string, min: number, max: number) {
  return (text: string): number => {
    if (!/^\d+$/.test(text.trim())) {
      throw new InvalidArgumentError(`${what} must be a whole number, not "${text}"`);
    }
    const n = Number(text);
    if (n < min || n > max) throw new InvalidArgumentError(`${what} must be ${min}..${max}`);
    return n;
  };
}

/**
 * `pcap.example.com` → `https://pcap.example.com`; no trailing slash. Only https, because the
 * bearer token travels with the request; http only to a loopback host (development).
 */
export function normalizeApiUrl(text: string): string {
  const raw = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new UsageError(`pcap API URL "${text}" is not a valid URL`);
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new UsageError(`pcap API URL "${text}" must use https`);
  }
  if (u.protocol === "http:" && !isLoopbackHost(u.hostname)) {
    throw new UsageError(
      `pcap API URL "${text}" uses http, which would send your token in clear text; use ` +
        "https (http is accepted only for loopback addresses such as 127.0.0.1)",
    );
  }
  if (u.search || u.hash || u.username || u.password) {
    throw new UsageError(`pcap API URL "${text}" must not carry a query, fragment or credentials`);
  }
  // URL omits the scheme's default port (443/80), which is what the client will use
  return u.toString().replace(/\/$/, "");
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export function parseInstanceSelector(raw: string): InstanceSelector {
  const parts = raw.split("/");
  if (parts.length > 2 || parts.some((p) => p === "")) {
    throw new UsageError(
      `instance "${raw}" is not GROUP/ID, GROUP/INDEX, ID or INDEX (e.g. router/0)`,
    );
  }
  const [a, b] = parts;
  if (b === undefined) return /^\d+$/.test(a) ? { raw, index: Number(a) } : { raw, id: a };
  if (!NAME.test(a)) throw new UsageError(`instance "${raw}": "${a}" is not a group name`);
  return /^\d+$/.test(b) ? { raw, group: a, index: Number(b) } : { raw, group: a, id: b };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** A commander Command that never exits or prints; help text goes to `write`. */
export function quietCommand(write: (s: string) => void, name: string): Command {
  return new Command()
    .exitOverride()
    .configureOutput({
      writeOut: write,
      writeErr: () => {},
      outputError: () => {},
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    })
    .name(name);
}

/** The BOSH selection flags (what to capture where); `output` adds -o and -F among them. */
function boshSelection(cmd: Command, output: boolean): Command {
  cmd
    .argument("[instances...]")
    .option("-d, --deployment <name>", "deployment to capture in (required)")
    .option("-g, --instance-group <name>", "instance group; repeatable", collect);
  if (output) {
    cmd
      .option("-o, --file <path>", "output file, - for stdout (required)")
      .option("-F, --force-overwrite", "overwrite the output file if it exists");
  }
  return cmd
    .option("-u, --pcap-api-url <url>", "URL of the pcap API (env PCAP_API)")
    .option("-e, --bosh-environment <alias|url>", "BOSH environment (env BOSH_ENVIRONMENT)")
    .option("-c, --bosh-config <path>", "BOSH config (env BOSH_CONFIG, default ~/.bosh/config)")
    .option("-f, --filter <expr>", "capture filter in pcap-filter(7) syntax")
    .option("-i, --interface <name>", "network interface to capture on", "eth0")
    .option("-k, --insecure", "not supported (refused): pass the API's CA with --ca-cert instead");
}

/** `write` receives help text; nothing touches process.* (no exit, no env, no TTY probing). */
function buildCommand(write: (s: string) => void = () => {}): Command {
  const cmd = quietCommand(write, "pcap-bosh capture")
    .usage("[flags] [INSTANCE...]")
    .description(
      "Capture packets on BOSH VMs into one pcapng file (or stream, with -o -).\n" +
        "INSTANCE is GROUP/ID, GROUP/INDEX, or an ID or INDEX within the -g groups.",
    );
  return withCaptureOptions(boshSelection(cmd, true));
}

/** `pcap-bosh instances`: the selection flags, the CA and verbosity; no output, no limits. */
function buildInstancesCommand(write: (s: string) => void = () => {}): Command {
  const cmd = quietCommand(write, "pcap-bosh instances")
    .usage("-d DEPLOYMENT [-g GROUP...] [INSTANCE...] [flags]")
    .description(
      "List what a capture with the same selection would capture: each VM's source name,\n" +
        "its agent's address, and whether the agent answers (version, draining). Captures\n" +
        "nothing. INSTANCE is GROUP/ID, GROUP/INDEX, or an ID or INDEX within the -g groups.",
    );
  return withInstancesOptions(boshSelection(cmd, false));
}

/** The flags of an `instances` command besides the selection. */
export function withInstancesOptions(cmd: Command): Command {
  return cmd
    .option("--ca-cert <file>", "CA certificate file for the pcap API")
    .option("-v, --verbose", "show debug information")
    .helpOption("-h, --help", "show this help")
    .allowExcessArguments(false)
    .showSuggestionAfterError(true);
}

/** Help text for `pcap-bosh instances --help`. */
export function boshInstancesHelp(): string {
  return buildInstancesCommand().helpInformation();
}

/**
 * The flags every capture client shares (snaplen, format, stop conditions, CA, verbosity, help),
 * so pcap-bosh and pcap-cf spell and check them the same way.
 */
export function withCaptureOptions(cmd: Command): Command {
  return cmd
    .option(
      "-l, --snaplen <bytes>",
      `bytes kept per packet, 1..${MAX_SNAPLEN}`,
      positiveInt("snaplen", 1, MAX_SNAPLEN),
      65535,
    )
    .option("--format <format>", "pcapng or pcap", "pcapng")
    .option("--duration <time>", "stop after this long, e.g. 30s, 5m, 1h", parseDuration)
    .option(
      "--max-packets <n>",
      "stop after this many packets",
      positiveInt("max-packets", 1, Number.MAX_SAFE_INTEGER),
    )
    .option("--max-bytes <size>", "stop after this many bytes, e.g. 10MB, 1GiB", parseByteSize)
    .option(
      "--rotate-size <size>",
      "start a new file when this one reaches SIZE, e.g. 100MB (files FILE_NNNNN_TIME.EXT)",
      parseByteSize,
    )
    .option(
      "--rotate-every <time>",
      "start a new file every TIME, e.g. 1h (a file without packets is kept open)",
      parseDuration,
    )
    .option(
      "--keep <n>",
      "with --rotate-*: keep only the newest N files (a ring)",
      positiveInt("keep", 1, MAX_KEEP),
    )
    .option("--dry-run", "list the instances and their agents that would be captured, and exit")
    .option("--ca-cert <file>", "CA certificate file for the pcap API")
    .option("-v, --verbose", "show debug information")
    .option("-q, --quiet", "show only warnings and errors, no progress")
    .helpOption("-h, --help", "show this help")
    .allowExcessArguments(false)
    .showSuggestionAfterError(true);
}

/** Help text for `pcap-bosh capture --help`. */
export function boshCaptureHelp(): string {
  return buildCommand().helpInformation();
}

interface RawOpts {
  deployment?: string;
  instanceGroup?: string[];
  file?: string;
  forceOverwrite?: boolean;
  pcapApiUrl?: string;
  boshEnvironment?: string;
  boshConfig?: string;
  filter?: string;
  interface: string;
  snaplen: number;
  format: string;
  duration?: number;
  maxPackets?: number;
  maxBytes?: number;
  caCert?: string;
  insecure?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  rotateSize?: number;
  rotateEvery?: number;
  keep?: number;
  dryRun?: boolean;
}

/** The output flags every capture client shares, as commander parsed them. */
export interface RawOutputOpts {
  file?: string;
  rotateSize?: number;
  rotateEvery?: number;
  keep?: number;
  dryRun?: boolean;
}

/**
 * -o, the rotation flags and --dry-run checked together: -o is needed unless --dry-run, and
 * rotation needs a file. Throws what `usage` makes of the problem.
 */
export function outputChoice(
  o: RawOutputOpts,
  usage: (msg: string) => Error,
): { output: string; rotation?: RotationPolicy; dryRun: boolean } {
  const dryRun = !!o.dryRun;
  if (!o.file && !dryRun) throw usage("missing -o/--file: give an output file, or - for stdout");
  const policy = { sizeBytes: o.rotateSize, everyMs: o.rotateEvery, keep: o.keep };
  const problem = rotationProblem(policy, o.file);
  if (problem) throw usage(problem);
  const rotates = policy.sizeBytes !== undefined || policy.everyMs !== undefined;
  const rotation = Object.fromEntries(
    Object.entries(policy).filter(([, v]) => v !== undefined),
  ) as RotationPolicy;
  return { output: o.file ?? "", rotation: rotates ? rotation : undefined, dryRun };
}

/**
 * Runs a client's `capture` command over `argv` (which may start with "capture"): the parsed
 * command, HelpRequested with its help text, or UsageError pointing at `<product> capture --help`.
 */
export function parseCaptureCommand(
  build: (write: (s: string) => void) => Command,
  argv: readonly string[],
  product: string,
  command = "capture",
): Command {
  const args = argv[0] === command ? argv.slice(1) : [...argv];
  let helpText = "";
  const cmd = build((s) => (helpText += s));
  try {
    cmd.parse(args, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.help") {
        throw new HelpRequested(helpText || cmd.helpInformation());
      }
      throw new UsageError(
        `${e.message.replace(/^error: /, "")}\n(see ${product} ${command} --help)`,
      );
    }
    throw e;
  }
  return cmd;
}

/**
 * Parses `pcap-bosh capture` arguments (argv may start with "capture"); `env` supplies PCAP_API,
 * BOSH_ENVIRONMENT, BOSH_CONFIG and HOME. Throws UsageError or HelpRequested.
 */
export function parseBoshCaptureArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): BoshCaptureOptions {
  const cmd = parseCaptureCommand(buildCommand, argv, "pcap-bosh");
  return validate(cmd.opts<RawOpts>(), cmd.args, env, "capture");
}

/**
 * Parses `pcap-bosh instances` arguments (argv may start with "instances") into the options a
 * `capture --dry-run` with the same selection has. Throws UsageError or HelpRequested.
 */
export function parseBoshInstancesArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): BoshCaptureOptions {
  const cmd = parseCaptureCommand(buildInstancesCommand, argv, "pcap-bosh", "instances");
  // no snaplen or format flags here: a listing uses what a capture would default to
  const given = cmd.opts<Partial<RawOpts>>();
  const raw: RawOpts = {
    ...given,
    interface: given.interface ?? "eth0",
    snaplen: 65535,
    format: "pcapng",
    dryRun: true,
  };
  return validate(raw, cmd.args, env, "instances");
}

function validate(
  o: RawOpts,
  positional: string[],
  env: Record<string, string | undefined>,
  command: "capture" | "instances",
): BoshCaptureOptions {
  const usage = (msg: string) => new UsageError(`${msg}\n(see pcap-bosh ${command} --help)`);
  const groups = o.instanceGroup ?? [];
  if (!o.deployment) throw usage("missing -d/--deployment: name the deployment to capture in");
  const out = outputChoice(o, usage);
  if (o.verbose && o.quiet) throw usage("-v/--verbose and -q/--quiet exclude each other");
  if (o.format !== "pcapng" && o.format !== "pcap") {
    throw usage(`--format must be pcapng or pcap, not "${o.format}"`);
  }
  const apiRaw = o.pcapApiUrl ?? env.PCAP_API;
  if (!apiRaw) throw usage("missing -u/--pcap-api-url (or set PCAP_API): where is the pcap API?");
  for (const g of groups) {
    if (!NAME.test(g)) throw usage(`-g "${g}" is not an instance group name`);
  }
  const instances = positional.map(parseInstanceSelector);
  if (groups.length === 0 && instances.length === 0) {
    throw usage("nothing selected: pass -g GROUP and/or INSTANCE (e.g. router/0)");
  }
  const bareIndex = instances.find((i) => i.index !== undefined && !i.group);
  if (bareIndex && groups.length === 0) {
    throw usage(`instance "${bareIndex.raw}" is an index: say GROUP/${bareIndex.raw} or add -g`);
  }
  let boshConfig = o.boshConfig ?? env.BOSH_CONFIG;
  if (!boshConfig) {
    if (!env.HOME) throw usage("HOME is not set: pass the BOSH config with -c PATH");
    boshConfig = `${env.HOME}/.bosh/config`;
  }
  if (o.interface.trim() === "") throw usage("-i/--interface must not be empty");
  return {
    deployment: o.deployment,
    groups: [...new Set(groups)],
    instances,
    output: out.output,
    forceOverwrite: !!o.forceOverwrite,
    pcapApiUrl: normalizeApiUrl(apiRaw),
    boshEnvironment: o.boshEnvironment ?? (env.BOSH_ENVIRONMENT || undefined),
    boshConfig,
    filter: o.filter?.trim() ? o.filter : undefined,
    interface: o.interface,
    snaplen: o.snaplen,
    format: o.format,
    durationMs: o.duration,
    maxPackets: o.maxPackets,
    maxBytes: o.maxBytes,
    caCert: o.caCert,
    insecure: !!o.insecure,
    verbose: !!o.verbose,
    quiet: !!o.quiet,
    ...(out.rotation ? { rotation: out.rotation } : {}),
    ...(out.dryRun ? { dryRun: true } : {}),
  };
}
