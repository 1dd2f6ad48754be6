/**
 * The options of a pcap interface in Wireshark (`--extcap-config`) and their way back: the values
 * Wireshark passes to `--capture` become the command line of `pcap-bosh capture` or `pcap-cf
 * capture` and are checked by the very parsers those commands use, so that a value means the same
 * in Wireshark as on the command line. Pure.
 */
import type { ExtcapArg } from "./extcap_protocol.ts";
import { preferenceName } from "./extcap_protocol.ts";
import type { BoshInterface, CfInterface, PcapInterface } from "./extcap_interfaces.ts";
import { type BoshCaptureOptions, parseBoshCaptureArgs, UsageError } from "./bosh_flags.ts";
import { type CfCaptureOptions, derivePcapApiUrl, parseCfCaptureArgs } from "./cf_flags.ts";
import { MAX_SNAPLEN } from "../protocol/records.ts";

/** No braces in these: Wireshark's parser would cut the sentence there. */
const NAME_LIST = "^ *([A-Za-z0-9][A-Za-z0-9_.-]*([ ,]+|$))*$";
const INSTANCE_LIST = "^ *([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?([ ,]+|$))*$";
const INDEX_LIST = "^ *([0-9]+([ ,]+|$))*$";
const NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";
const API_URL = "^(https?://)?[^ /]+(/[^ ]*)?$";

/** A problem with the interface's options, worded for Wireshark's error dialog. */
export class ExtcapOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExtcapOptionError";
  }
}

function captureArgs(apiDefault: string | undefined, apiTooltip: string): ExtcapArg[] {
  return [
    {
      call: "--interface",
      display: "Network interface",
      type: "string",
      default: "eth0",
      validation: "^[^ ]+$",
      tooltip: "the network interface to capture on",
      group: "Capture",
    },
    {
      call: "--filter",
      display: "Capture filter",
      type: "string",
      placeholder: "e.g. tcp port 443",
      tooltip: "pcap-filter(7) expression applied where the packets are captured; combined " +
        "(and) with Wireshark's capture filter",
      group: "Capture",
    },
    {
      call: "--snaplen",
      display: "Snapshot length",
      type: "unsigned",
      default: "65535",
      range: [1, MAX_SNAPLEN],
      tooltip: `bytes kept of each packet, 1 to ${MAX_SNAPLEN}`,
      group: "Capture",
    },
    {
      call: "--pcap-api-url",
      display: "pcap API URL",
      type: "string",
      required: true,
      default: apiDefault,
      validation: API_URL,
      placeholder: "https://pcap.example.com",
      tooltip: apiTooltip,
      group: "Connection",
    },
    {
      call: "--ca-cert",
      display: "CA certificate file",
      type: "fileselect",
      mustExist: true,
      tooltip: "PEM file with the CA of the pcap API, if the system does not trust it",
      group: "Connection",
    },
  ];
}

/** The `--extcap-config` arguments of a BOSH interface; PCAP_API gives the API's default. */
export function boshArgs(env: Record<string, string | undefined>): ExtcapArg[] {
  return [
    {
      call: "--deployment",
      display: "Deployment",
      type: "string",
      required: true,
      validation: NAME,
      tooltip: "the BOSH deployment to capture in",
      group: "Selection",
    },
    {
      call: "--groups",
      display: "Instance groups",
      type: "string",
      validation: NAME_LIST,
      placeholder: "e.g. diego-cell, router",
      tooltip: "instance groups to capture on, all of their instances; comma-separated",
      group: "Selection",
    },
    {
      call: "--instances",
      display: "Instances",
      type: "string",
      validation: INSTANCE_LIST,
      placeholder: "e.g. router/0",
      tooltip: "GROUP/INDEX or GROUP/ID, comma-separated; with instance groups also INDEX or ID",
      group: "Selection",
    },
    ...captureArgs(env.PCAP_API || undefined, "where the pcap API is (default: PCAP_API)"),
  ];
}

/** The `--extcap-config` arguments of a CF interface; the API defaults to pcap.<domain>. */
export function cfArgs(iface: CfInterface, env: Record<string, string | undefined>): ExtcapArg[] {
  let derived: string | undefined;
  try {
    derived = derivePcapApiUrl(iface.login.target);
  } catch { /* no api. host: the user has to name the pcap API */ }
  return [
    {
      call: "--app",
      display: "App",
      type: "string",
      required: true,
      tooltip: "name of the app in the targeted space (or in Org/Space)",
      group: "Selection",
    },
    {
      call: "--index",
      display: "Instance indexes",
      type: "string",
      validation: INDEX_LIST,
      placeholder: "all",
      tooltip: "app instances to capture, comma-separated, e.g. 0, 2 (default: all)",
      group: "Selection",
    },
    {
      call: "--process",
      display: "Process type",
      type: "string",
      default: "web",
      validation: "^[A-Za-z0-9_-]+$",
      tooltip: "the app's process type",
      group: "Selection",
    },
    {
      call: "--org",
      display: "Org",
      type: "string",
      placeholder: iface.login.org?.name,
      tooltip: "org of the app (default: the cf CLI's target); needs Space",
      group: "Selection",
    },
    {
      call: "--space",
      display: "Space",
      type: "string",
      placeholder: iface.login.space?.name,
      tooltip: "space of the app (default: the cf CLI's target)",
      group: "Selection",
    },
    ...captureArgs(
      env.PCAP_API || derived,
      "where the pcap API is (default: PCAP_API, else pcap.<domain of the CF API>)",
    ),
  ];
}

export function interfaceArgs(
  iface: PcapInterface,
  env: Record<string, string | undefined>,
): ExtcapArg[] {
  return iface.kind === "bosh" ? boshArgs(env) : cfArgs(iface, env);
}

/** Items of a comma- or space-separated list. */
function list(text: string | undefined): string[] {
  return (text ?? "").split(/[\s,]+/).filter(Boolean);
}

/** `(a) and (b)` of the interface's filter and Wireshark's capture filter, either may be unset. */
export function combineFilters(own?: string, wireshark?: string): string | undefined {
  const parts = [own, wireshark].map((f) => f?.trim()).filter((f): f is string => !!f);
  if (parts.length < 2) return parts[0];
  return parts.map((f) => `(${f})`).join(" and ");
}

interface Checked {
  values: Map<string, string>;
  pref: (call: string) => string;
  missing: (call: string, display: string, what: string) => ExtcapOptionError;
}

/** Refuses calls the interface does not declare; the helpers word errors with preference names. */
function check(
  iface: PcapInterface,
  args: ExtcapArg[],
  values: Map<string, string>,
): Checked {
  const known = new Set(args.map((a) => a.call));
  for (const call of values.keys()) {
    if (!known.has(call)) {
      throw new ExtcapOptionError(
        `${iface.value} has no option ${call}; it has ${[...known].join(", ")}`,
      );
    }
  }
  const pref = (call: string) => preferenceName(iface.value, call);
  return {
    values,
    pref,
    missing: (call, display, what) =>
      new ExtcapOptionError(
        `no ${what}: set "${display}" in the options of ${iface.value} (tshark: -o ` +
          `${pref(call)}:VALUE)`,
      ),
  };
}

/** A UsageError of the command line parsers without its pointer to `--help`. */
function reworded(e: unknown): never {
  if (e instanceof UsageError) {
    throw new ExtcapOptionError(e.message.replace(/\n\(see [^)]*--help\)$/, ""));
  }
  throw e;
}

const common = (v: Map<string, string>, filter: string | undefined) => [
  ...(v.get("--interface") ? ["-i", v.get("--interface")!] : []),
  ...(v.get("--snaplen") ? ["-l", v.get("--snaplen")!] : []),
  ...(filter ? ["-f", filter] : []),
  ...(v.get("--ca-cert") ? ["--ca-cert", v.get("--ca-cert")!] : []),
  // the capture goes to the FIFO; "-" keeps the parsers happy and marks it as not ours to remove
  "-o",
  "-",
  "-q",
];

/**
 * `pcap-bosh capture` options for a BOSH interface's values and Wireshark's capture filter.
 * The environment supplies PCAP_API (when the option is empty) and HOME.
 */
export function boshCaptureOptions(
  iface: BoshInterface,
  values: Map<string, string>,
  captureFilter: string | undefined,
  env: Record<string, string | undefined>,
): BoshCaptureOptions {
  const c = check(iface, boshArgs(env), values);
  const deployment = values.get("--deployment");
  if (!deployment) throw c.missing("--deployment", "Deployment", "deployment");
  const groups = list(values.get("--groups"));
  const instances = list(values.get("--instances"));
  if (groups.length === 0 && instances.length === 0) {
    throw new ExtcapOptionError(
      `nothing selected in ${iface.value}: set "Instance groups" and/or "Instances" (tshark: -o ` +
        `${c.pref("--groups")}:GROUP or -o ${c.pref("--instances")}:GROUP/INDEX)`,
    );
  }
  const api = values.get("--pcap-api-url") || env.PCAP_API;
  if (!api) throw c.missing("--pcap-api-url", "pcap API URL", "pcap API URL");
  const argv = [
    "-d",
    deployment,
    ...groups.flatMap((g) => ["-g", g]),
    "-u",
    api,
    "-c",
    iface.configPath,
    "-e",
    iface.environment,
    ...common(values, combineFilters(values.get("--filter"), captureFilter)),
    "--",
    ...instances,
  ];
  try {
    return parseBoshCaptureArgs(argv, { HOME: env.HOME });
  } catch (e) {
    reworded(e);
  }
}

/** `pcap-cf capture` options for a CF interface's values and Wireshark's capture filter. */
export function cfCaptureOptions(
  iface: CfInterface,
  values: Map<string, string>,
  captureFilter: string | undefined,
  env: Record<string, string | undefined>,
): CfCaptureOptions {
  const c = check(iface, cfArgs(iface, env), values);
  const app = values.get("--app");
  if (!app) throw c.missing("--app", "App", "app");
  const argv = [
    ...list(values.get("--index")).flatMap((i) => ["--index", i]),
    ...(values.get("--process") ? ["--process", values.get("--process")!] : []),
    ...(values.get("--org") ? ["--org", values.get("--org")!] : []),
    ...(values.get("--space") ? ["--space", values.get("--space")!] : []),
    ...(values.get("--pcap-api-url") ? ["-u", values.get("--pcap-api-url")!] : []),
    ...common(values, combineFilters(values.get("--filter"), captureFilter)),
    "--",
    app,
  ];
  try {
    return parseCfCaptureArgs(argv, { PCAP_API: env.PCAP_API });
  } catch (e) {
    reworded(e);
  }
}
