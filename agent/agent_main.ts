/**
 * `pcap agent --config FILE` (serve) and `pcap agent --check-config FILE` (validate only).
 * SIGTERM/SIGINT drain running captures and exit within a bounded time.
 */
import { Command, CommanderError } from "commander";
import { ConfigError } from "../lib/config_load.ts";
import { createLogger } from "../lib/log.ts";
import { libpcapAvailable } from "../ffi/filter_check.ts";
import { describeAgentConfig, loadAgentConfig } from "./config.ts";
import { AgentServer } from "./server.ts";
import { CaptureEngine } from "./capture_engine.ts";

/** Bound on the drain at SIGTERM; BOSH/bpm allow more, but a stuck client must not hold us. */
export const SHUTDOWN_TIMEOUT_MS = 10_000;

const HELP_EXAMPLES = `
Examples:
  pcap agent --config /var/vcap/jobs/pcap-agent/config/pcap-agent.yml
  pcap agent --check-config agent.yml`;

function eprint(text: string): void {
  console.error(text);
}

/** Runs the agent mode; resolves with the process exit code. */
export async function runAgent(argv: string[]): Promise<number> {
  const program = new Command("pcap agent")
    .description("Capture agent: serves packet captures of this VM over mutual TLS.")
    .option("--config <file>", "serve with this agent YAML configuration")
    .option("--check-config <file>", "validate the configuration and exit")
    .addHelpText("after", HELP_EXAMPLES)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => console.log(s.trimEnd()),
      writeErr: (s) => eprint(s.trimEnd()),
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
  if (opts.checkConfig !== undefined) return await checkConfig(opts.checkConfig);
  if (opts.config === undefined) {
    eprint("pcap agent: --config FILE is required (or --check-config FILE); see --help");
    return 2;
  }
  return await serve(opts.config);
}

async function checkConfig(file: string): Promise<number> {
  try {
    const { config } = await loadAgentConfig(file);
    console.log(describeAgentConfig(config));
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      eprint(`pcap agent: invalid configuration: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

async function serve(file: string): Promise<number> {
  let loaded;
  try {
    loaded = await loadAgentConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      eprint(`pcap agent: invalid configuration: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const { config, tls } = loaded;
  const log = createLogger({ component: "agent", level: config.logLevel }, { agent_id: config.id });
  if (!libpcapAvailable()) {
    log.error("libpcap not found; install libpcap0.8 (libpcap.so.0.8) on this VM");
    return 1;
  }
  let server: AgentServer;
  try {
    server = await AgentServer.start({
      config,
      tls,
      log,
      openEngine: (o) => CaptureEngine.open(o),
    });
  } catch (e) {
    log.error("agent failed to start", { error: e });
    return 1;
  }
  const { promise: stopped, resolve } = Promise.withResolvers<string>();
  const onSignal = (signal: Deno.Signal) => () => resolve(signal);
  const handlers = (["SIGTERM", "SIGINT"] as const).map((sig) => [sig, onSignal(sig)] as const);
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  const signal = await stopped;
  log.info("signal received; draining", { signal, active_captures: server.activeCaptures });
  // A second signal while draining is ignored: the drain itself is bounded.
  await server.shutdown(SHUTDOWN_TIMEOUT_MS);
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  return 0;
}

if (import.meta.main) Deno.exit(await runAgent(Deno.args));
