/**
 * `pcap api`: `--config FILE` runs the api until SIGTERM/SIGINT (then drains within
 * drain_timeout and exits 0); `--check-config FILE` validates and exits 0/1; `--help`.
 */
import { checkApiConfig, describeApiConfig, loadApiConfig } from "./config.ts";
import { ConfigError } from "../lib/config_load.ts";
import { createLogger } from "../lib/log.ts";
import { ApiServer } from "./app.ts";

const USAGE = `usage: pcap api --config FILE
       pcap api --check-config FILE

Runs the pcap api: authenticates users against the BOSH Director's UAA, fans captures out to
the agents over mutual TLS and streams the merged capture to the client over a WebSocket.

  --config FILE        run with this api.yml
  --check-config FILE  validate api.yml (and the files it names) without starting; exit 0 if OK
  -h, --help           show this help

On SIGTERM the api stops taking captures, reports draining on /health, drains running captures
to their clients within drain_timeout and exits 0.`;

function parseArgs(argv: string[]): { mode: "help" | "check" | "run"; file?: string } | string {
  let mode: "check" | "run" | null = null;
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") return { mode: "help" };
    const m = /^--(config|check-config)(?:=(.*))?$/.exec(a);
    if (!m) return `unknown argument "${a}"`;
    if (mode) return "give either --config or --check-config, once";
    mode = m[1] === "config" ? "run" : "check";
    file = m[2] ?? argv[++i];
    if (!file) return `--${m[1]} needs a file path`;
  }
  if (!mode) return "missing --config FILE";
  return { mode, file };
}

export async function runApi(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (typeof args === "string") {
    console.error(`pcap api: ${args}\n\n${USAGE}`);
    return 2;
  }
  if (args.mode === "help") {
    console.log(USAGE);
    return 0;
  }
  if (args.mode === "check") {
    const result = await checkApiConfig(args.file!);
    if (result.ok) {
      console.log(describeApiConfig(result.config));
      return 0;
    }
    for (const e of result.errors) console.error(`pcap api: invalid configuration: ${e}`);
    return 1;
  }
  let config;
  try {
    config = await loadApiConfig(args.file!);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      return 1;
    }
    throw e;
  }
  const log = createLogger({ component: "api", level: config.logLevel });
  let server: ApiServer;
  try {
    server = await ApiServer.start({ config, log });
  } catch (e) {
    log.error("cannot start", { error: e as Error });
    return 1;
  }
  const { promise: stopped, resolve } = Promise.withResolvers<string>();
  const onTerm = () => resolve("SIGTERM");
  const onInt = () => resolve("SIGINT");
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  const signal = await stopped;
  Deno.removeSignalListener("SIGTERM", onTerm);
  Deno.removeSignalListener("SIGINT", onInt);
  log.info("signal received; draining", { signal });
  await server.drain();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await runApi(Deno.args));
}
