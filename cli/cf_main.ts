/**
 * `pcap cf …` / `pcap-cf …`: the CF client's command. Parses (usage errors exit 2), refuses
 * locally what it can (output, filter, --ca-cert), loads the cf CLI login (cf_config.ts), maps
 * the flags and the targeted space to a CfStartRequest, then runs the same capture session and
 * output path as pcap-bosh (bosh_capture.ts) on the api's `/v1/capture/cf` route.
 */
import {
  cfCaptureHelp,
  type CfCaptureOptions,
  cfInstancesHelp,
  derivePcapApiUrl,
  parseCfCaptureArgs,
  parseCfInstancesArgs,
} from "./cf_flags.ts";
import type { TargetsQuery } from "./instances_command.ts";
import { type CfAuth, cfAuth, cfConfigPath, type CfLogin } from "./cf_config.ts";
import { type CaptureIo, CaptureRun } from "./bosh_capture.ts";
import { isStdout } from "./capture_output.ts";
import { fileEvents, openCaptureOutput } from "./rotating_output.ts";
import { preflight, processIo, readCa, tokenUser } from "./capture_preflight.ts";
import {
  dispatchCommand,
  EXIT_FAILED,
  prepareCapture,
  requestLimits,
  SHARED_CAPTURE_HELP,
} from "./client_command.ts";
import { describeCapture } from "./pcapng_writer.ts";
import { ProgressDisplay } from "./progress.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";

export const CF_CAPTURE_PATH = "/v1/capture/cf";

const CAPTURE_EPILOG = `
Authentication:
  Uses your cf CLI login ($CF_HOME/.cf/config.json, default ~/.cf/config.json): log in with
  "cf login" and target a space with "cf target -o ORG -s SPACE" first. The token is refreshed
  like the cf CLI does and written back (also once more if the pcap API refuses it). A
  client-credentials login ("cf auth") cannot be refreshed: run "cf auth" again when it has
  expired. You need the Space Developer role in the app's space; the operator may also require
  SSH to be enabled for the app ("cf enable-ssh").

TLS:
  --ca-cert is the pcap API's CA; it is also trusted for the UAA the login is refreshed at,
  unless --uaa-ca-cert gives the UAA's own. A login made with "cf api --skip-ssl-validation"
  (SSLDisabled) refreshes at the UAA without verifying its certificate, as the cf CLI does, and
  pcap-cf warns about it on every run; --uaa-ca-cert turns verification back on. The pcap API's
  certificate is always verified.

Targets:
  The app is looked up by name in the targeted space, or in --org/--space; --app-guid names it
  by guid (no space needed). --process picks the process type (default web), --index the
  instances (repeatable; default all).

${SHARED_CAPTURE_HELP.stopping}

Output:
  pcapng (default): one interface per app instance, named like "my-app/0 (<instance guid>) eth0",
  and statistics blocks with drops at the end. --format pcap writes classic pcap.
  -o - writes to stdout, e.g. | wireshark -k -i -   or   | tcpdump -r -
  Status and progress go to stderr; the selected targets are listed there first (not with -q).

${SHARED_CAPTURE_HELP.longCaptures}

${SHARED_CAPTURE_HELP.dryRun}

Exit codes:
  0  the capture ended cleanly (also after Ctrl-C or a limit)
  1  the capture failed: no usable cf login or target, refused (bad filter, existing file,
     START_CAPTURE_FAILED, UNAUTHENTICATED, PERMISSION_DENIED, INVALID_REQUEST), or the api
     could not be reached or the connection broke
  2  usage error (bad or missing flags)

Examples:
  pcap-cf capture my-app -o app.pcapng
  pcap-cf capture my-app --index 0 --index 2 -f "tcp port 8080" -o - | wireshark -k -i -
`;

const CF_USAGE = `usage: pcap-cf capture APP [flags]
       pcap-cf instances APP [--index N...] [flags]

Captures packets inside the containers of a Cloud Foundry app through the pcap API, or lists
what a capture would capture. Run \`pcap-cf capture --help\` or \`pcap-cf instances --help\`.
`;

const INSTANCES_EPILOG = `
Output:
  One line per app instance a capture would capture: its source name (as in the capture
  file), the address of the agent on its cell, and the agent's state as the pcap API sees
  it: up (with its version), draining (it would refuse a capture), incompatible or
  unreachable (with the reason). Instances that cannot be captured (e.g. not running) are
  listed as skipped. The same authorization applies as for a capture (Space Developer).

Exit codes:
  0  the list was printed (also when agents are down)
  1  refused (no cf login, UNAUTHENTICATED, PERMISSION_DENIED, unknown app) or the pcap API
     could not be reached
  2  usage error

Examples:
  pcap-cf instances my-app
  pcap-cf instances my-app --index 0 --index 2
`;

/** The cf login cannot name the app's space (exit 1). */
export class CfTargetError extends Error {}

/**
 * The start request for the flags and the cf login's target. Pure. The app's space is, in this
 * order: --org/--space (names; --space alone takes the targeted org), the targeted space (guid),
 * or none when --app-guid alone names the app.
 */
export function cfStartRequest(o: CfCaptureOptions, login: CfLogin): CfStartRequest {
  const where: Pick<CfStartRequest["cf"], "org" | "space" | "space_guid"> = {};
  if (o.space !== undefined) {
    const org = o.org ?? login.org?.name;
    if (!org) {
      throw new CfTargetError(
        `--space ${o.space} needs an org: no org is targeted in the cf login; pass --org ` +
          `or run "cf target -o ORG"`,
      );
    }
    where.org = org;
    where.space = o.space;
  } else if (o.app !== undefined) {
    if (!login.space?.guid) {
      throw new CfTargetError(
        `no space is targeted in the cf login, so the app "${o.app}" cannot be found; run ` +
          `"cf target -o ORG -s SPACE", or pass --org and --space (or --app-guid)`,
      );
    }
    where.space_guid = login.space.guid;
  }
  return {
    type: "start",
    protocol_version: PROTOCOL_VERSION,
    cf: {
      ...(o.app !== undefined ? { app: o.app } : {}),
      ...(o.appGuid !== undefined ? { app_guid: o.appGuid } : {}),
      ...where,
      process: o.process,
      indexes: o.indexes,
    },
    interface: o.interface,
    snaplen: o.snaplen,
    filter: o.filter ?? "",
    limits: requestLimits(o),
  };
}

/** For the file's comment: "org o, space s, app a, process web, instances 0, 2". Pure. */
export function describeCfTarget(o: CfCaptureOptions, login: CfLogin): string {
  const parts: string[] = [];
  const org = o.space !== undefined ? (o.org ?? login.org?.name) : o.app && login.org?.name;
  const space = o.space ?? (o.app !== undefined ? login.space?.name : undefined);
  if (org) parts.push(`org ${org}`);
  if (space) parts.push(`space ${space}`);
  parts.push(o.app !== undefined ? `app ${o.app}` : `app guid ${o.appGuid}`);
  parts.push(`process ${o.process}`);
  if (o.indexes.length) parts.push(`instances ${o.indexes.join(", ")}`);
  return parts.join(", ");
}

/** Runs one capture; returns the exit code (0 clean, 1 failed). */
export async function runCfCapture(o: CfCaptureOptions, io: CaptureIo): Promise<number> {
  const progress = new ProgressDisplay({
    write: io.writeErr,
    tty: io.stderrIsTty,
    quiet: o.quiet,
    width: io.width,
  });
  let auth: CfAuth;
  let caCert: string | undefined;
  let uaa: { caCert?: string; caCertForUaa: boolean; warn: (line: string) => void };
  let request: CfStartRequest;
  let pcapApiUrl: string;
  try {
    await preflight(o, io);
    if (o.caCert) caCert = await readCa(o.caCert);
    let warned = false;
    uaa = {
      caCert: o.uaaCaCert ? await readCa(o.uaaCaCert, "--uaa-ca-cert") : caCert,
      caCertForUaa: !!o.uaaCaCert,
      // shown once per run, even with -q: it is about the safety of the user's token
      warn: (line) => {
        if (!warned) io.writeErr(`pcap-cf: ${line}\n`);
        warned = true;
      },
    };
    auth = await cfAuth({ configPath: cfConfigPath(io.env), ...uaa });
    request = cfStartRequest(o, auth.login);
    pcapApiUrl = o.pcapApiUrl ?? derivePcapApiUrl(auth.login.target);
    if (o.verbose) {
      progress.message(
        `CF API ${auth.login.target} (token: ${auth.source}); pcap API ${pcapApiUrl}`,
      );
    }
  } catch (e) {
    io.writeErr(`pcap-cf: ${(e as Error).message}\n`);
    return EXIT_FAILED;
  }
  const query: TargetsQuery = {
    apiUrl: pcapApiUrl,
    platform: "cf",
    authorization: auth.authorization,
    caCert,
    request,
    interface: o.interface,
  };
  // as for a capture (below): a token the login still thought valid is refreshed once
  const refresh = async () => {
    if (!o.quiet) progress.message("the pcap API refused the token; refreshing it and retrying");
    auth = await cfAuth({ configPath: cfConfigPath(io.env), ...uaa, marginSec: Infinity });
    return auth.authorization;
  };
  const prepared = await prepareCapture(query, o, io, progress, "pcap-cf", refresh);
  if ("exit" in prepared) return prepared.exit;
  let output = prepared.output;
  const comment = describeCapture({
    target: describeCfTarget(o, auth.login),
    user: tokenUser(auth.accessToken),
    start: new Date(),
    interface: o.interface,
    snaplen: o.snaplen,
    filter: o.filter,
  });
  const session = (retries: boolean) =>
    new CaptureRun({ ...o, pcapApiUrl }, io, progress, output, {
      comment,
      product: "pcap-cf",
      path: CF_CAPTURE_PATH,
      retriesUnauthenticated: retries,
    });
  // stdout already carries the first attempt's file header, so only a file is retried
  const first = session(!isStdout(o.output));
  const code = await first.run(auth.authorization, caCert, request);
  if (!first.refusedUnauthenticated) return code;
  // The api refused a token the login still thought valid (revoked, or clocks apart): refresh
  // it now, whatever its expiry says, and try once more.
  try {
    if (!o.quiet) progress.message("the pcap API refused the token; refreshing it and retrying");
    auth = await cfAuth({ configPath: cfConfigPath(io.env), ...uaa, marginSec: Infinity });
    output = await openCaptureOutput(o, fileEvents(progress, o.verbose));
  } catch (e) {
    io.writeErr(
      `pcap-cf: the pcap API refused the token, and refreshing it failed: ${
        (e as Error).message
      }\n`,
    );
    return EXIT_FAILED;
  }
  return await session(false).run(auth.authorization, caCert, request);
}

/** Entry of mode `cf`; `argv` starts after the mode, e.g. ["capture", "my-app", …]. */
export async function runCf(argv: string[], io?: CaptureIo): Promise<number> {
  const env = io?.env ?? Deno.env.toObject();
  const parsed = dispatchCommand(argv, env, {
    product: "pcap-cf",
    usage: CF_USAGE,
    captureEpilog: CAPTURE_EPILOG,
    instancesEpilog: INSTANCES_EPILOG,
    captureHelp: cfCaptureHelp,
    instancesHelp: cfInstancesHelp,
    parseCapture: parseCfCaptureArgs,
    parseInstances: parseCfInstancesArgs,
  });
  if ("exit" in parsed) return parsed.exit;
  return await runCfCapture(parsed.opts, io ?? processIo(env));
}
