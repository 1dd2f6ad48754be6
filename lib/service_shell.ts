/**
 * The service shell of `pcap agent` and `pcap api`: commander arguments (`--config FILE`,
 * `--check-config FILE`, `--help`), the `--check-config` summary, config errors on stderr, and
 * the signal wait before the service's own bounded drain. Exit codes: 0 ok, 1 invalid config or
 * failed start, 2 usage error.
 */
import { Command, CommanderError } from "commander";
import { ConfigError } from "./config_load.ts";

export interface ServiceSpec<C> {
  /** mode name: "agent" or "api" (prefix of every message: "pcap agent: …") */
  name: string;
  description: string;
  /** extra help text (examples, signals) */
  help: string;
  /** loads and validates; throws ConfigError (or one with `errors: ConfigError[]`) */
  load(file: string): Promise<C>;
  /** the `--check-config` summary (lib/config_summary.ts) */
  describe(config: C): string;
  /**
   * Serves until `signals.stopped` resolves with a signal name, then drains; resolves with the
   * exit code. `signals.again` resolves on a second signal during that drain: a service that can
   * cut its drain short does so then; one that ignores it keeps its bounded drain.
   */
  serve(config: C, signals: ServiceSignals): Promise<number>;
}

/** The signals a service sees: the first SIGTERM/SIGINT, and a second one while it drains. */
export interface ServiceSignals {
  stopped: Promise<Deno.Signal>;
  again: Promise<Deno.Signal>;
}

function configErrorLines(e: ConfigError): string[] {
  const many = (e as ConfigError & { errors?: ConfigError[] }).errors;
  return (many?.length ? many : [e]).map((x) => x.message);
}

/**
 * Resolves `stopped` with the first SIGTERM/SIGINT and `again` with the second; the listeners
 * stay installed until `dispose`, so no later signal can end the process mid-drain.
 */
export function waitForSignal(): ServiceSignals & { dispose(): void } {
  const first = Promise.withResolvers<Deno.Signal>();
  const second = Promise.withResolvers<Deno.Signal>();
  let seen = 0;
  const handlers = (["SIGTERM", "SIGINT"] as const).map((sig) =>
    [sig, () => (seen++ === 0 ? first : second).resolve(sig)] as const
  );
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  return {
    stopped: first.promise,
    again: second.promise,
    dispose: () => {
      for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    },
  };
}

/** Runs a service mode with `argv` (after the mode); resolves with the process exit code. */
export async function runService<C>(spec: ServiceSpec<C>, argv: string[]): Promise<number> {
  const prefix = `pcap ${spec.name}`;
  const program = new Command(prefix)
    .description(spec.description)
    .option("--config <file>", `serve with this ${spec.name} YAML configuration`)
    .option("--check-config <file>", "validate the configuration and exit")
    .addHelpText("after", spec.help)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => console.log(s.trimEnd()),
      writeErr: (s) => console.error(s.trimEnd()),
    });
  try {
    program.parse(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === "commander.helpDisplayed" || e.code === "commander.help" ? 0 : 2;
    }
    throw e;
  }
  const opts = program.opts<{ config?: string; checkConfig?: string }>();
  if (opts.config !== undefined && opts.checkConfig !== undefined) {
    console.error(`${prefix}: give either --config or --check-config; see --help`);
    return 2;
  }
  const file = opts.checkConfig ?? opts.config;
  if (file === undefined) {
    console.error(`${prefix}: --config FILE is required (or --check-config FILE); see --help`);
    return 2;
  }
  let config: C;
  try {
    config = await spec.load(file);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const line of configErrorLines(e)) {
      console.error(`${prefix}: invalid configuration: ${line}`);
    }
    return 1;
  }
  if (opts.checkConfig !== undefined) {
    console.log(spec.describe(config));
    return 0;
  }
  const signals = waitForSignal();
  try {
    return await spec.serve(config, signals);
  } finally {
    signals.dispose();
  }
}
