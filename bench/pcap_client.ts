// The pcap side of bench/e2e.ts, as users run it: the real `pcap-bosh capture … -o file` (a
// `deno run -A main.ts bosh capture` child pinned with taskset) against the lab's api and agents,
// with a BOSH config holding a fresh UAA token, like the bosh CLI leaves one.
import type { LabVm, Landscape } from "../lab/landscape.ts";
import { REPO_ROOT } from "../lab/lab_agents.ts";
import { v8FlagsArgs } from "../lib/v8_flags.ts";
import { sleep } from "./bench_support.ts";

export class PcapBoshCapture {
  #err = "";
  readonly #reading: Promise<void>;

  private constructor(readonly child: Deno.ChildProcess) {
    const dec = new TextDecoder();
    this.#reading = (async () => {
      for await (const c of child.stderr) this.#err += dec.decode(c, { stream: true });
    })().catch(() => {});
  }

  /** Starts `pcap-bosh capture -d DEP GROUP/INDEX -f FILTER -o FILE`; resolves once capturing. */
  static async start(
    lab: Landscape,
    vm: LabVm,
    o: { filter: string; file: string; cpus: string; dir: string },
  ): Promise<PcapBoshCapture> {
    const config = `${o.dir}/bosh-config.yml`;
    await Deno.writeTextFile(
      config,
      `environments:\n- url: ${lab.director.url}\n  alias: lab\n` +
        `  access_token: ${await lab.mintToken()}\n  access_token_type: bearer\n` +
        `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
    );
    const child = lab.topology.netns.spawn(null, [
      "taskset",
      "-c",
      o.cpus,
      Deno.execPath(),
      "run",
      "-A",
      ...v8FlagsArgs(),
      `${REPO_ROOT}/main.ts`,
      "bosh",
      "capture",
      "-d",
      vm.deployment,
      "--ca-cert",
      lab.pki.caPath,
      "-f",
      o.filter,
      "-o",
      o.file,
      `${vm.group}/${vm.index}`,
    ], {
      stderr: "piped",
      env: {
        NO_COLOR: "1",
        BOSH_CONFIG: config,
        BOSH_ENVIRONMENT: "lab",
        PCAP_API: lab.apiUrl!,
      },
    });
    const c = new PcapBoshCapture(child);
    let exited = false;
    child.status.then(() => exited = true);
    for (const until = Date.now() + 30_000; !/capturing on/.test(c.#err);) {
      if (exited || Date.now() > until) {
        await c.stop();
        throw new Error(`bench e2e: pcap-bosh did not start capturing: ${c.stderrTail()}`);
      }
      await sleep(10);
    }
    return c;
  }

  get pid(): number {
    return this.child.pid;
  }

  stderrTail(): string {
    return this.#err.trim().split("\n").slice(-4).join("\n");
  }

  /** Ctrl-C (the clean stop: every agent drains, the file is closed); the exit code. */
  async stop(timeoutMs = 30_000): Promise<number> {
    try {
      this.child.kill("SIGINT");
    } catch { /* gone */ }
    let t: ReturnType<typeof setTimeout> | undefined;
    const s = await Promise.race([
      this.child.status,
      new Promise<null>((r) => t = setTimeout(() => r(null), timeoutMs)),
    ]);
    clearTimeout(t);
    if (!s) {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    const code = (await this.child.status).code;
    await this.#reading;
    return s ? code : -1;
  }
}
