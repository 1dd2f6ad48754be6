/**
 * What both clients (pcap-bosh, pcap-cf) do before a capture session: refuse locally what they
 * can (a terminal as output, an existing file, a bad filter, an unusable --ca-cert), and the
 * small helpers around it (the token's user for the file comment, the terminal's width).
 */
import { isStdout, prepareOutput } from "./capture_output.ts";
import { prepareRotation } from "./rotating_output.ts";
import type { RotationPolicy } from "./rotation_policy.ts";
import type { CaptureIo } from "./bosh_capture.ts";
import { checkFilter, libpcapAvailable } from "../ffi/filter_check.ts";
import { HelpRequested, UsageError } from "./bosh_flags.ts";
import { checkFilterRules, FilterRuleError } from "../protocol/filter_rules.ts";

/** Refused before anything was captured (exit 1). */
export class Refusal extends Error {}

export interface PreflightOptions {
  output: string;
  forceOverwrite: boolean;
  filter?: string;
  snaplen: number;
  rotation?: RotationPolicy;
  /** --dry-run / instances: nothing is written, so the output is not checked */
  dryRun?: boolean;
}

export async function preflight(o: PreflightOptions, io: CaptureIo): Promise<void> {
  if (!o.dryRun) await preflightOutput(o, io);
  if (o.filter) {
    // The api's rules first: a filter it would refuse is never compiled (or resolved) here.
    try {
      checkFilterRules(o.filter);
    } catch (e) {
      if (e instanceof FilterRuleError) {
        throw new Refusal(`filter "${o.filter}" is not valid: ${e.message}`);
      }
      throw e;
    }
  }
  if (o.filter && libpcapAvailable()) {
    const r = checkFilter(o.filter, 1, o.snaplen);
    if (!r.ok) throw new Refusal(`filter "${o.filter}" is not valid: ${r.error}`);
  }
}

async function preflightOutput(o: PreflightOptions, io: CaptureIo): Promise<void> {
  if (isStdout(o.output) && io.stdoutIsTty) {
    throw new Refusal(
      "refusing to write capture data to a terminal; pipe it (-o - | wireshark -k -i -) " +
        "or write a file with -o FILE",
    );
  }
  if (o.rotation) await prepareRotation(o.output);
  else await prepareOutput(o.output, o.forceOverwrite);
}

export async function readCa(path: string, flag = "--ca-cert"): Promise<string> {
  try {
    const pem = await Deno.readTextFile(path);
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new Error("no PEM certificate in it");
    return pem;
  } catch (e) {
    throw new Refusal(`cannot use ${flag} ${path}: ${(e as Error).message}`);
  }
}

/** `user_name` or `client_id` of a JWT, for the file comment only (not verified here). */
export function tokenUser(token: string): string | undefined {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - part.length % 4) % 4)));
    const u = claims.user_name ?? claims.client_id;
    return typeof u === "string" ? u : undefined;
  } catch {
    return undefined;
  }
}

/** Columns of the terminal on stderr; 80 when unknown (e.g. a pty without a size). */
export function terminalWidth(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}

/** The CaptureIo of a real process: stderr, its ttys and width. */
export function processIo(env: Record<string, string | undefined>): CaptureIo {
  const enc = new TextEncoder();
  const writeAll = (out: { writeSync(p: Uint8Array): number }, s: string) => {
    const b = enc.encode(s);
    for (let off = 0; off < b.length;) off += out.writeSync(b.subarray(off));
  };
  return {
    env,
    writeErr: (s) => writeAll(Deno.stderr, s),
    writeOut: (s) => writeAll(Deno.stdout, s),
    stderrIsTty: Deno.stderr.isTerminal(),
    stdoutIsTty: Deno.stdout.isTerminal(),
    width: terminalWidth(),
  };
}

/**
 * Parses a client's capture flags: the options, or the exit code once help (0) or a usage error
 * (2, printed as `<product> capture: …`) has been shown. `help` completes the help text.
 */
export function captureOptionsOrExit<T>(
  parse: () => T,
  product: string,
  help: (text: string) => string,
  command = "capture",
): { opts: T } | { exit: number } {
  try {
    return { opts: parse() };
  } catch (e) {
    if (e instanceof HelpRequested) {
      console.log(help(e.text));
      return { exit: 0 };
    }
    if (e instanceof UsageError) {
      console.error(`${product} ${command}: ${e.message}`);
      return { exit: 2 };
    }
    throw e;
  }
}
