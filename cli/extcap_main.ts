/**
 * `pcap extcap …`: pcap as a Wireshark extcap (extcap(4)). Wireshark calls it to list the
 * interfaces (`--extcap-interfaces`), their link types and options, to check a capture filter,
 * and to capture into a FIFO; the user calls it once with `--install`. Answers go to stdout in
 * extcap's sentences; problems go to stderr with a non-zero exit, which Wireshark shows.
 */
import { VERSION } from "../version.ts";
import { type CaptureIo } from "./bosh_capture.ts";
import { processIo } from "./capture_preflight.ts";
import { checkFilter, libpcapAvailable } from "../ffi/filter_check.ts";
import {
  argSentences,
  dltSentence,
  type ExtcapRequest,
  ExtcapUsageError,
  interfaceSentence,
  parseExtcapArgs,
  versionSentence,
} from "./extcap_protocol.ts";
import { discoverInterfaces, findInterface } from "./extcap_interfaces.ts";
import { interfaceArgs } from "./extcap_options.ts";
import { runExtcapCapture } from "./extcap_capture.ts";
import { installLauncher } from "./extcap_install.ts";

const USAGE = `usage: pcap extcap --install [--dir DIR] [--force]

Makes pcap a Wireshark extcap: one capture interface per BOSH environment of the bosh config
(pcap-bosh-<alias>) and one for the cf CLI's target (pcap-cf-<api host>), listed by Wireshark
and tshark -D beside eth0. --install writes a launcher into Wireshark's personal extcap folder
(the one \`tshark -G folders\` reports; --dir to choose another).

Wireshark calls it with the extcap(4) options: --extcap-interfaces, --extcap-version,
--extcap-interface NAME with --extcap-dlts, --extcap-config, --extcap-capture-filter FILTER,
or --capture --fifo PATH and the interface's options. See docs/wireshark.md.`;

/** the link type Wireshark is told; the pcapng stream names each source's own */
const DLT = { number: 1, name: "EN10MB", display: "Ethernet (pcapng, one interface per source)" };

export interface ExtcapOutput {
  /** stdout lines */
  out(line: string): void;
}

async function answer(req: ExtcapRequest, io: CaptureIo, o: ExtcapOutput): Promise<number> {
  switch (req.kind) {
    case "help":
      o.out(USAGE);
      return 0;
    case "version":
      o.out(versionSentence(VERSION));
      return 0;
    case "interfaces": {
      const { interfaces, warnings } = await discoverInterfaces(io.env);
      o.out(versionSentence(VERSION));
      for (const i of interfaces) o.out(interfaceSentence(i));
      for (const w of warnings) io.writeErr(`pcap extcap: ${w}\n`);
      return 0;
    }
    case "dlts":
      await findInterface(req.iface, io.env);
      o.out(dltSentence(DLT));
      return 0;
    case "config":
      for (
        const line of argSentences(interfaceArgs(await findInterface(req.iface, io.env), io.env))
      ) {
        o.out(line);
      }
      return 0;
    case "check-filter": {
      await findInterface(req.iface, io.env);
      if (!req.filter.trim() || !libpcapAvailable()) return 0; // the api checks it then
      const r = checkFilter(req.filter, DLT.number);
      if (r.ok) return 0;
      io.writeErr(`pcap extcap: filter "${req.filter}" is not valid: ${r.error}\n`);
      return 1;
    }
    case "capture":
      return await runExtcapCapture(req, io);
    case "install": {
      const done = await installLauncher({ env: io.env, dir: req.dir, force: req.force });
      const { interfaces } = await discoverInterfaces(io.env);
      o.out(`installed the pcap extcap launcher: ${done.path}`);
      o.out(`  it runs: ${done.command.argv.join(" ")} extcap`);
      o.out(`  folder: ${done.how}`);
      o.out(
        interfaces.length
          ? `restart Wireshark (or run tshark -D) to see: ${
            interfaces.map((i) => i.value).join(", ")
          }`
          : 'no BOSH environment or cf login found yet: "bosh alias-env"/"bosh log-in" or ' +
            '"cf login", then restart Wireshark',
      );
      return 0;
    }
  }
}

/** Entry of mode `extcap`; `argv` starts after the mode. */
export async function runExtcap(
  argv: string[],
  io: CaptureIo = processIo(Deno.env.toObject()),
  o: ExtcapOutput = { out: (line) => console.log(line) },
): Promise<number> {
  let req: ExtcapRequest;
  try {
    req = parseExtcapArgs(argv);
  } catch (e) {
    if (!(e instanceof ExtcapUsageError)) throw e;
    io.writeErr(`pcap extcap: ${e.message}\n\n${USAGE}\n`);
    return 2;
  }
  try {
    return await answer(req, io, o);
  } catch (e) {
    io.writeErr(`pcap extcap: ${(e as Error).message}\n`);
    return 1;
  }
}
