/**
 * The text side of Wireshark's extcap interface (extcap(4)): the sentences pcap prints for
 * `--extcap-interfaces`, `--extcap-dlts` and `--extcap-config`, and the command line Wireshark
 * calls it with. Pure: no I/O.
 *
 * A sentence is a keyword and `{key=value}` fields. Wireshark's parser ends a value at the first
 * `}`, so values are cleaned of braces and line breaks before they are printed.
 */

/** One argument of `--extcap-config`, in the types pcap uses. */
export interface ExtcapArg {
  /** the option as Wireshark passes it back, e.g. `--deployment` */
  call: string;
  display: string;
  type: "string" | "unsigned" | "fileselect";
  tooltip: string;
  /** tab of Wireshark's interface options dialog */
  group: string;
  default?: string;
  required?: boolean;
  /** a regular expression the GUI checks the value against (no braces: see above) */
  validation?: string;
  range?: [number, number];
  /** fileselect: the file must exist */
  mustExist?: boolean;
  placeholder?: string;
}

export interface ExtcapInterface {
  /** Wireshark's interface name, e.g. `pcap-bosh-prod` */
  value: string;
  display: string;
}

export interface ExtcapDlt {
  number: number;
  name: string;
  display: string;
}

/** A value as Wireshark can read it back: no braces, no line breaks. */
export function fieldValue(text: string): string {
  return text.replace(/[{}]/g, "").replace(/[\r\n]+/g, " ");
}

function sentence(keyword: string, fields: Array<[string, string | number | undefined]>): string {
  const parts = fields
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `{${k}=${fieldValue(String(v))}}`);
  return `${keyword} ${parts.join("")}`;
}

/** `extcap {version=…}{help=…}`: the first line of `--extcap-interfaces` and `--extcap-version`. */
export function versionSentence(version: string, help?: string): string {
  return sentence("extcap", [["version", version], ["help", help]]);
}

export function interfaceSentence(i: ExtcapInterface): string {
  return sentence("interface", [["value", i.value], ["display", i.display]]);
}

export function dltSentence(d: ExtcapDlt): string {
  return sentence("dlt", [["number", d.number], ["name", d.name], ["display", d.display]]);
}

/** `arg {number=N}…` lines, numbered in the order given. */
export function argSentences(args: readonly ExtcapArg[]): string[] {
  return args.map((a, n) =>
    sentence("arg", [
      ["number", n],
      ["call", a.call],
      ["display", a.display],
      ["type", a.type],
      ["default", a.default],
      ["range", a.range?.join(",")],
      ["required", a.required ? "true" : undefined],
      ["mustexist", a.mustExist ? "true" : undefined],
      ["validation", a.validation],
      ["placeholder", a.placeholder],
      ["tooltip", a.tooltip],
      ["group", a.group],
    ])
  );
}

/**
 * The name of the Wireshark preference that holds an argument of an interface, as tshark's
 * `-o extcap.<interface>.<option>:<value>` wants it: the interface lower-cased with every other
 * character than a letter or digit turned into `_`, the call without its dashes and anything but
 * letters and digits (`pcap-bosh-lab`, `--ca-cert` → `extcap.pcap_bosh_lab.cacert`).
 */
export function preferenceName(iface: string, call: string): string {
  const i = iface.toLowerCase().replace(/[^a-z0-9]/g, "_");
  const c = call.replace(/^-+/, "").toLowerCase().replace(/[^a-z0-9]/g, "");
  return `extcap.${i}.${c}`;
}

/** What Wireshark asks for. */
export type ExtcapRequest =
  | { kind: "interfaces" }
  | { kind: "version" }
  | { kind: "dlts"; iface: string }
  | { kind: "config"; iface: string }
  /** `--extcap-capture-filter` without `--capture`: is the filter valid? (exit 0 = yes) */
  | { kind: "check-filter"; iface: string; filter: string }
  | {
    kind: "capture";
    iface: string;
    fifo: string;
    captureFilter?: string;
    /** the interface's arguments by call, e.g. `--deployment` → `cf` */
    values: Map<string, string>;
  }
  | { kind: "install"; dir?: string; force: boolean }
  | { kind: "help" };

export class ExtcapUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExtcapUsageError";
  }
}

/** Flags of the extcap interface that take a value. */
const VALUED = new Set([
  "--extcap-interface",
  "--fifo",
  "--extcap-capture-filter",
  "--extcap-control-in",
  "--extcap-control-out",
  "--extcap-reload-option",
  "--dir",
]);
/** Flags that take none. `--extcap-version` may carry Wireshark's version (`=4.0`). */
const BARE = new Set([
  "--extcap-interfaces",
  "--extcap-version",
  "--extcap-config",
  "--extcap-dlts",
  "--capture",
  "--install",
  "--force",
  "--help",
  "-h",
]);

/**
 * Parses the command line Wireshark (or the user) calls `pcap extcap` with. Both `--flag value`
 * and `--flag=value` are accepted; every other `--name value` is an argument of the interface,
 * checked later against its declaration. Throws ExtcapUsageError.
 */
export function parseExtcapArgs(argv: readonly string[]): ExtcapRequest {
  const flags = new Map<string, string>();
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    if (!name.startsWith("-")) {
      throw new ExtcapUsageError(`unexpected argument "${arg}" (options start with --)`);
    }
    if (BARE.has(name)) {
      flags.set(name, inline ?? "");
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new ExtcapUsageError(`${name} needs a value`);
    (VALUED.has(name) ? flags : values).set(name, value);
  }
  const iface = flags.get("--extcap-interface");
  const needIface = (what: string) => {
    if (!iface) throw new ExtcapUsageError(`${what} needs --extcap-interface NAME`);
    return iface;
  };
  if (flags.has("--help") || flags.has("-h")) return { kind: "help" };
  if (flags.has("--install")) {
    return { kind: "install", dir: flags.get("--dir"), force: flags.has("--force") };
  }
  if (flags.has("--extcap-interfaces")) return { kind: "interfaces" };
  if (flags.has("--extcap-dlts")) return { kind: "dlts", iface: needIface("--extcap-dlts") };
  if (flags.has("--extcap-config")) return { kind: "config", iface: needIface("--extcap-config") };
  if (flags.has("--capture")) {
    const fifo = flags.get("--fifo");
    if (!fifo) throw new ExtcapUsageError("--capture needs --fifo PATH");
    return {
      kind: "capture",
      iface: needIface("--capture"),
      fifo,
      captureFilter: flags.get("--extcap-capture-filter") || undefined,
      values,
    };
  }
  const filter = flags.get("--extcap-capture-filter");
  if (filter !== undefined) {
    return { kind: "check-filter", iface: needIface("--extcap-capture-filter"), filter };
  }
  if (flags.has("--extcap-version")) return { kind: "version" };
  throw new ExtcapUsageError(
    "nothing to do: Wireshark calls pcap extcap with --extcap-interfaces, --extcap-config, " +
      "--extcap-dlts or --capture; to set it up, run pcap extcap --install",
  );
}
