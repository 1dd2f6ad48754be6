/**
 * `pcap agent --config FILE` (serve) and `pcap agent --check-config FILE` (validate only).
 * SIGTERM/SIGINT drain running captures and exit within a bounded time.
 */
import { runService, type ServiceSignals } from "../lib/service_shell.ts";
import { createLogger } from "../lib/log.ts";
import { libpcapAvailable } from "../ffi/filter_check.ts";
import { describeAgentConfig, loadAgentConfig } from "./config.ts";
import { AgentServer } from "./server.ts";
import { CaptureEngine } from "./engine/capture_engine.ts";

/** Bound on the drain at SIGTERM; BOSH/bpm allow more, but a stuck client must not hold us. */
export const SHUTDOWN_TIMEOUT_MS = 10_000;

const HELP_EXAMPLES = `
Examples:
  pcap agent --config /var/vcap/jobs/pcap-agent/config/pcap-agent.yml
  pcap agent --check-config agent.yml`;

/** Runs the agent mode; resolves with the process exit code. */
export function runAgent(argv: string[]): Promise<number> {
  return runService<LoadedAgentConfig>({
    name: "agent",
    description: "Capture agent: serves packet captures of this VM over mutual TLS.",
    help: HELP_EXAMPLES,
    load: loadAgentConfig,
    describe: ({ config }) => describeAgentConfig(config),
    serve,
  }, argv);
}

type LoadedAgentConfig = Awaited<ReturnType<typeof loadAgentConfig>>;

// A second signal is ignored: the agent's drain is bounded by SHUTDOWN_TIMEOUT_MS already.
async function serve(
  loaded: LoadedAgentConfig,
  { stopped }: ServiceSignals,
): Promise<number> {
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
  const signal = await stopped;
  log.info("signal received; draining", { signal, active_captures: server.activeCaptures });
  // A second signal while draining is ignored: the drain itself is bounded.
  await server.shutdown(SHUTDOWN_TIMEOUT_MS);
  return 0;
}

if (import.meta.main) Deno.exit(await runAgent(Deno.args));
