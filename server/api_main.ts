/**
 * `pcap api`: `--config FILE` runs the api until SIGTERM/SIGINT (then drains within
 * drain_timeout and exits 0); `--check-config FILE` validates and exits 0/1; `--help`.
 */
import { type ApiConfig, describeApiConfig, loadApiConfig } from "./config.ts";
import { runService, type ServiceSignals } from "../lib/service_shell.ts";
import { createLogger } from "../lib/log.ts";
import { ApiServer } from "./app.ts";

const HELP = `
Runs the pcap api: authenticates users against the BOSH Director's UAA, fans captures out to
the agents over mutual TLS and streams the merged capture to the client over a WebSocket.

On SIGTERM the api stops taking captures, reports draining on /health, drains running captures
to their clients within drain_timeout and exits 0.

Examples:
  pcap api --config /var/vcap/jobs/pcap-api/config/api.yml
  pcap api --check-config api.yml`;

export function runApi(argv: string[]): Promise<number> {
  return runService<ApiConfig>({
    name: "api",
    description: "pcap api: capture requests from users, fanned out to the agents.",
    help: HELP,
    load: loadApiConfig,
    describe: describeApiConfig,
    serve,
  }, argv);
}

async function serve(config: ApiConfig, { stopped, again }: ServiceSignals): Promise<number> {
  const log = createLogger({ component: "api", level: config.logLevel });
  let server: ApiServer;
  try {
    server = await ApiServer.start({ config, log });
  } catch (e) {
    log.error("cannot start", { error: e as Error });
    return 1;
  }
  const signal = await stopped;
  log.info("signal received; draining", { signal });
  // An operator who signals again wants out now: cut the captures (each still writes its audit
  // line and tells its client) instead of dying with their audit lines unwritten.
  again.then((second) => {
    log.warn("second signal while draining; aborting the remaining captures", { signal: second });
    server.abortCaptures();
  });
  await server.drain();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await runApi(Deno.args));
}
