/**
 * `pcap bosh …` / `pcap-bosh …`: the BOSH client's command. Parses (usage errors exit 2), then
 * refuses locally whatever it can before any server is contacted: the output path first, then
 * the filter (compiled offline with libpcap when it is there). Then the BOSH token (config or
 * client credentials), the output, and the capture session (bosh_capture.ts).
 */
import {
  boshCaptureHelp,
  type BoshCaptureOptions,
  boshInstancesHelp,
  parseBoshCaptureArgs,
  parseBoshInstancesArgs,
} from "./bosh_flags.ts";
import type { TargetsQuery } from "./instances_command.ts";
import { type CaptureIo, CaptureRun } from "./bosh_capture.ts";
import { preflight, processIo, readCa, tokenUser } from "./capture_preflight.ts";
import {
  dispatchCommand,
  EXIT_FAILED,
  EXIT_USAGE,
  prepareCapture,
  requestLimits,
  SHARED_CAPTURE_HELP,
} from "./client_command.ts";
import { describeCapture } from "./pcapng_writer.ts";
import { ProgressDisplay } from "./progress.ts";
import { boshAuth } from "./uaa_token.ts";
import type { BoshStartRequest } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";

const CAPTURE_EPILOG = `
Authentication:
  Uses the BOSH environment from the BOSH config (-c, BOSH_CONFIG, default ~/.bosh/config),
  selected by -e/BOSH_ENVIRONMENT (alias or URL), refreshing its UAA token when it is about to
  expire, like the bosh CLI. BOSH_CLIENT and BOSH_CLIENT_SECRET use client credentials instead.

${SHARED_CAPTURE_HELP.stopping}

Output:
  pcapng (default): one interface per VM, named like "diego-cell/0 (<instance id>) eth0", and
  statistics blocks with drops at the end. --format pcap writes classic pcap (one link type).
  -o - writes to stdout, e.g. | wireshark -k -i -   or   | tcpdump -r -
  Status and progress go to stderr; the selected targets are listed there first (not with -q).

${SHARED_CAPTURE_HELP.longCaptures}

${SHARED_CAPTURE_HELP.dryRun}

Exit codes:
  0  the capture ended cleanly (also after Ctrl-C or a limit)
  1  the capture failed: refused (bad filter, existing file, START_CAPTURE_FAILED,
     UNAUTHENTICATED, PERMISSION_DENIED, INVALID_REQUEST), or the api could not be reached
     or the connection broke
  2  usage error (bad or missing flags)

Examples:
  pcap-bosh capture -d cf -g diego-cell -o cells.pcapng -u https://pcap.example.com
  pcap-bosh capture -d cf router/0 -f "tcp port 443" -o - | wireshark -k -i -
`;

const BOSH_USAGE = `usage: pcap-bosh capture [flags] [INSTANCE...]
       pcap-bosh instances -d DEPLOYMENT [-g GROUP...] [INSTANCE...] [flags]

Captures packets on BOSH VMs through the pcap API, or lists what a capture would capture.
Run \`pcap-bosh capture --help\` or \`pcap-bosh instances --help\` for flags.
`;

const INSTANCES_EPILOG = `
Output:
  One line per VM a capture with the same selection would capture: its source name (as in
  the capture file), the address of its agent, and the agent's state as the pcap API sees it:
  up (with its version), draining (it would refuse a capture), incompatible or unreachable
  (with the reason). Selected instances that cannot be captured are listed as skipped.
  The same authorization applies as for a capture.

Exit codes:
  0  the list was printed (also when agents are down)
  1  refused (UNAUTHENTICATED, PERMISSION_DENIED, unknown deployment, bad filter) or the
     pcap API could not be reached
  2  usage error

Examples:
  pcap-bosh instances -d cf -g diego-cell
  pcap-bosh instances -d cf router/0 diego-cell/2
`;

export function startRequest(o: BoshCaptureOptions): BoshStartRequest {
  return {
    type: "start",
    protocol_version: PROTOCOL_VERSION,
    bosh: { deployment: o.deployment, groups: o.groups, instances: o.instances.map((i) => i.raw) },
    interface: o.interface,
    snaplen: o.snaplen,
    filter: o.filter ?? "",
    limits: requestLimits(o),
  };
}

/** Runs one capture; returns the exit code (0 clean, 1 failed). */
async function runBoshCapture(o: BoshCaptureOptions, io: CaptureIo): Promise<number> {
  const progress = new ProgressDisplay({
    write: io.writeErr,
    tty: io.stderrIsTty,
    quiet: o.quiet,
    width: io.width,
  });
  let auth;
  let caCert: string | undefined;
  try {
    await preflight(o, io);
    if (o.caCert) caCert = await readCa(o.caCert);
    auth = await boshAuth({
      configPath: o.boshConfig,
      environment: o.boshEnvironment,
      env: io.env,
    });
    if (o.verbose) progress.message(`BOSH Director ${auth.directorUrl} (token: ${auth.source})`);
  } catch (e) {
    io.writeErr(`pcap-bosh: ${(e as Error).message}\n`);
    return EXIT_FAILED;
  }
  const query: TargetsQuery = {
    apiUrl: o.pcapApiUrl,
    platform: "bosh",
    authorization: auth.authorization,
    caCert,
    request: startRequest(o),
    interface: o.interface,
  };
  const prepared = await prepareCapture(query, o, io, progress, "pcap-bosh");
  if ("exit" in prepared) return prepared.exit;
  const run = new CaptureRun(o, io, progress, prepared.output, {
    comment: describeCapture({
      target: describeTarget(o),
      user: tokenUser(auth.accessToken),
      start: new Date(),
      interface: o.interface,
      snaplen: o.snaplen,
      filter: o.filter,
    }),
  });
  return await run.run(auth.authorization, caCert, startRequest(o));
}

/** For the file comment: "deployment cf, instance groups router, instances router/0". Pure. */
export function describeTarget(o: BoshCaptureOptions): string {
  const parts = [`deployment ${o.deployment}`];
  if (o.groups.length) parts.push(`instance groups ${o.groups.join(", ")}`);
  if (o.instances.length) parts.push(`instances ${o.instances.map((i) => i.raw).join(", ")}`);
  return parts.join(", ");
}

/** Entry of mode `bosh`; `argv` starts after the mode, e.g. ["capture", "-d", "cf", …]. */
export async function runBosh(argv: string[]): Promise<number> {
  const env = Deno.env.toObject();
  const parsed = dispatchCommand(argv, env, {
    product: "pcap-bosh",
    usage: BOSH_USAGE,
    captureEpilog: CAPTURE_EPILOG,
    instancesEpilog: INSTANCES_EPILOG,
    captureHelp: boshCaptureHelp,
    instancesHelp: boshInstancesHelp,
    parseCapture: parseBoshCaptureArgs,
    parseInstances: parseBoshInstancesArgs,
  });
  if ("exit" in parsed) return parsed.exit;
  const { command, opts } = parsed;
  if (opts.insecure) {
    console.error(
      `pcap-bosh ${command}: -k/--insecure is not supported (this runtime cannot skip ` +
        "certificate verification for one connection); pass the pcap API's CA with --ca-cert " +
        `FILE\n(see pcap-bosh ${command} --help)`,
    );
    return EXIT_USAGE;
  }
  return await runBoshCapture(opts, processIo(env));
}
