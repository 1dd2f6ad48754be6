/**
 * Entry point of the single `pcap` executable. The mode is the first argument, or the name the
 * executable was invoked under (`pcap-bosh` → `pcap bosh`), busybox style.
 */
import { VERSION } from "./version.ts";
import { PROTOCOL_VERSION } from "./protocol/version.ts";
import { runAgent } from "./agent/agent_main.ts";
import { runApi } from "./server/api_main.ts";
import { runBosh } from "./cli/bosh_main.ts";
import { runCf } from "./cli/cf_main.ts";
import { runExtcap } from "./cli/extcap_main.ts";
import { tuneMalloc } from "./ffi/malloc_tuning.ts";

interface Mode {
  summary: string;
  run(args: string[]): Promise<number>;
}

const MODES: Record<string, Mode> = {
  agent: { summary: "capture server on a VM (BOSH job): --config FILE", run: runAgent },
  api: { summary: "api server behind gorouter (BOSH job): --config FILE", run: runApi },
  bosh: {
    summary: "capture on BOSH VMs (pcap-bosh): capture|instances [flags] [INSTANCE...]",
    run: runBosh,
  },
  cf: {
    summary: "capture in CF app containers (pcap-cf): capture|instances APP [flags]",
    run: runCf,
  },
  extcap: {
    summary: "Wireshark extcap: --install puts the pcap interfaces into Wireshark",
    run: (args) => runExtcap(args),
  },
  version: {
    summary: "print the version and protocol level",
    run: () => {
      console.log(`pcap ${VERSION} (protocol v${PROTOCOL_VERSION}, deno ${Deno.version.deno})`);
      return Promise.resolve(0);
    },
  },
};

const ALIASES: Record<string, string> = { "pcap-bosh": "bosh", "pcap-cf": "cf" };

function usage(): string {
  const width = Math.max(...Object.keys(MODES).map((m) => m.length));
  const lines = Object.entries(MODES).map(([name, m]) => `  ${name.padEnd(width)}  ${m.summary}`);
  return [
    "usage: pcap MODE [ARGS...]",
    "",
    "Distributed packet capture for BOSH VMs and Cloud Foundry app containers.",
    "",
    "modes:",
    ...lines,
    "",
    "Run `pcap MODE --help` for the flags of a mode.",
  ].join("\n");
}

/** argv[0] as the user typed it; Deno.execPath() resolves symlinks and would hide `pcap-bosh`. */
function invokedName(): string {
  try {
    const argv0 = Deno.readTextFileSync("/proc/self/cmdline").split("\0")[0];
    return argv0.split("/").pop() ?? "";
  } catch {
    return "";
  }
}

export async function main(argv: string[]): Promise<number> {
  const alias = ALIASES[invokedName()];
  const args = alias ? [alias, ...argv] : argv;
  const [mode, ...rest] = args;
  if (!mode || mode === "--help" || mode === "-h" || mode === "help") {
    console.log(usage());
    return mode ? 0 : 2;
  }
  if (mode === "--version") return MODES.version.run([]);
  const selected = MODES[mode];
  if (!selected) {
    const why = alias
      ? `this build of pcap has no "${mode}" mode yet (invoked as ${invokedName()})`
      : `unknown mode "${mode}"`;
    console.error(`pcap: ${why}\n\n${usage()}`);
    return 2;
  }
  if (mode !== "version") tuneMalloc();
  return await selected.run(rest);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
