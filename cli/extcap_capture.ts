/**
 * `pcap extcap --capture`: one capture of a pcap interface into Wireshark's FIFO, through the
 * same capture session as `pcap-bosh capture` / `pcap-cf capture` (bosh_capture.ts).
 *
 * What is particular to Wireshark:
 * - stderr is what Wireshark shows as the error of the capture, whatever the exit code, so it
 *   carries nothing but problems: no progress, no summary;
 * - Wireshark stops a capture with SIGTERM, which drains like Ctrl-C (a second one does not cut
 *   the drain short); it usually closes its end of the FIFO at about the same time, so once the
 *   reader has left, the rest of the output is discarded instead of failing the capture, and the
 *   capture is stopped cleanly if it was not stopping already;
 * - the FIFO is Wireshark's: it is never created or removed here.
 */
import { type CaptureIo, CaptureRun, type CaptureRunOptions } from "./bosh_capture.ts";
import { BufferedOutput } from "./capture_output.ts";
import { preflight, readCa, tokenUser } from "./capture_preflight.ts";
import { describeTarget, startRequest } from "./bosh_main.ts";
import { CF_CAPTURE_PATH, cfStartRequest, describeCfTarget } from "./cf_main.ts";
import { derivePcapApiUrl } from "./cf_flags.ts";
import { UsageError } from "./bosh_flags.ts";
import { cfAuth } from "./cf_config.ts";
import { boshAuth } from "./uaa_token.ts";
import { describeCapture } from "./pcapng_writer.ts";
import { ProgressDisplay } from "./progress.ts";
import { type BoshInterface, type CfInterface, findInterface } from "./extcap_interfaces.ts";
import { boshCaptureOptions, cfCaptureOptions, ExtcapOptionError } from "./extcap_options.ts";
import { preferenceName } from "./extcap_protocol.ts";
import type { BoshStartRequest } from "../protocol/messages.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";

/** how long Wireshark may take to open the reading end of its FIFO */
export const FIFO_OPEN_TIMEOUT_MS = 30_000;
/** Wireshark stops an extcap with SIGTERM; SIGINT is a user's Ctrl-C on a manual run */
const STOP_SIGNALS: Deno.Signal[] = ["SIGTERM", "SIGINT"];
/** how long a failed capture waits for the reader it has to release */
const RELEASE_TIMEOUT_MS = 5_000;

export interface ExtcapCaptureRequest {
  iface: string;
  fifo: string;
  captureFilter?: string;
  values: Map<string, string>;
}

/** Everything a capture needs once the options are checked and the token is in hand. */
interface Prepared {
  options: CaptureRunOptions;
  request: BoshStartRequest | CfStartRequest;
  authorization: string;
  caCert?: string;
  comment: string;
  product: string;
  path?: string;
}

/** Status lines as on the command line, but no summary: Wireshark would show it as an error. */
class ExtcapProgress extends ProgressDisplay {
  override finish(): void {}
}

async function prepareBosh(
  iface: BoshInterface,
  r: ExtcapCaptureRequest,
  io: CaptureIo,
): Promise<Prepared> {
  const o = boshCaptureOptions(iface, r.values, r.captureFilter, io.env);
  await preflight(o, io);
  const caCert = o.caCert ? await readCa(o.caCert) : undefined;
  const auth = await boshAuth({
    configPath: o.boshConfig,
    environment: o.boshEnvironment,
    env: io.env,
  });
  return {
    options: o,
    request: startRequest(o),
    authorization: auth.authorization,
    caCert,
    comment: describeCapture({
      target: describeTarget(o),
      user: tokenUser(auth.accessToken),
      start: new Date(),
      interface: o.interface,
      snaplen: o.snaplen,
      filter: o.filter,
    }),
    product: "pcap-bosh",
  };
}

async function prepareCf(
  iface: CfInterface,
  r: ExtcapCaptureRequest,
  io: CaptureIo,
): Promise<Prepared> {
  const o = cfCaptureOptions(iface, r.values, r.captureFilter, io.env);
  await preflight(o, io);
  const caCert = o.caCert ? await readCa(o.caCert) : undefined;
  const auth = await cfAuth({ configPath: iface.configPath, caCert });
  let pcapApiUrl = o.pcapApiUrl;
  if (!pcapApiUrl) {
    try {
      pcapApiUrl = derivePcapApiUrl(auth.login.target);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      throw new ExtcapOptionError(
        `no pcap API URL: set "pcap API URL" in the options of ${iface.value} (tshark: -o ` +
          `${preferenceName(iface.value, "--pcap-api-url")}:URL); ${e.message}`,
      );
    }
  }
  return {
    options: { ...o, pcapApiUrl },
    request: cfStartRequest(o, auth.login),
    authorization: auth.authorization,
    caCert,
    comment: describeCapture({
      target: describeCfTarget(o, auth.login),
      user: tokenUser(auth.accessToken),
      start: new Date(),
      interface: o.interface,
      snaplen: o.snaplen,
      filter: o.filter,
    }),
    product: "pcap-cf",
    path: CF_CAPTURE_PATH,
  };
}

/** The FIFO opened for writing, or an error once nobody opened its reading end in time. */
async function openFifo(
  path: string,
  onReaderGone: () => void,
  timeoutMs = FIFO_OPEN_TIMEOUT_MS,
): Promise<BufferedOutput> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `nobody opened the FIFO ${path} for reading within ${timeoutMs / 1000} s`,
          ),
        ),
      timeoutMs,
    );
    Deno.unrefTimer(timer);
  });
  try {
    return await Promise.race([BufferedOutput.openFifo(path, { onReaderGone }), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Wireshark's reader waits in open() until a writer comes, and would wait forever after a
 * capture that failed before it started: opening and closing the FIFO gives it its end of file,
 * so Wireshark stops and shows the error.
 */
async function releaseReader(path: string): Promise<void> {
  try {
    (await openFifo(path, () => {}, RELEASE_TIMEOUT_MS)).close();
  } catch { /* no FIFO, or nobody reading it: nothing waits */ }
}

/** Runs one capture for Wireshark; returns the exit code (0 clean, 1 failed). */
export async function runExtcapCapture(r: ExtcapCaptureRequest, io: CaptureIo): Promise<number> {
  let prepared: Prepared;
  let output: BufferedOutput;
  // the FIFO is opened before the session exists, and tells it when Wireshark has left
  const session: { run?: CaptureRun } = {};
  try {
    const iface = await findInterface(r.iface, io.env);
    prepared = iface.kind === "bosh"
      ? await prepareBosh(iface, r, io)
      : await prepareCf(iface, r, io);
    output = await openFifo(r.fifo, () => session.run?.stop("Wireshark closed the capture pipe"));
  } catch (e) {
    io.writeErr(`pcap extcap: ${(e as Error).message}\n`);
    await releaseReader(r.fifo);
    return 1;
  }
  const progress = new ExtcapProgress({ write: io.writeErr, tty: false, quiet: true });
  // Our own signal handling: on the command line a second Ctrl-C stops at once, but Wireshark's
  // SIGTERM often comes just after its reader has left and the drain has begun, and must not cut
  // that drain short. Every SIGTERM asks for the clean stop; the drain is bounded anyway.
  const run = session.run = new CaptureRun(
    prepared.options,
    { ...io, signals: [] },
    progress,
    output,
    {
      comment: prepared.comment,
      product: prepared.product,
      path: prepared.path,
    },
  );
  const stop = () => run.stop("stopped by Wireshark");
  for (const sig of STOP_SIGNALS) Deno.addSignalListener(sig, stop);
  try {
    return await run.run(prepared.authorization, prepared.caCert, prepared.request);
  } finally {
    for (const sig of STOP_SIGNALS) Deno.removeSignalListener(sig, stop);
  }
}
