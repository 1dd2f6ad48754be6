// The baseline of bench/e2e.ts, as `bosh pcap` / `cf ssh` users capture today: Debian's
// openssh-server started by the bench inside a lab VM's namespace (its own sshd_config, host key
// and authorized key in a temp dir, listening only on the VM's address), and
// `ssh root@VM tcpdump -U -w - -i eth0 FILTER > file` from the host namespace.
import type { Netns } from "../lab/netns.ts";
import { run } from "../lab/netns.ts";
import { comm, descendants, sleep } from "./bench_support.ts";

export const SSHD = "/usr/sbin/sshd";
/** The ciphers the bench tries (the client asks for exactly one per capture). */
export const SSH_CIPHERS = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"] as const;
export type SshCipher = typeof SSH_CIPHERS[number];
/** sshd's compiled-in privilege separation directory; it refuses to start without it. */
const PRIVSEP_DIR = "/run/sshd";

/** Throws with what to install when sshd or ssh is missing. */
export async function sshPreflight(): Promise<void> {
  const missing: string[] = [];
  try {
    await Deno.stat(SSHD);
  } catch {
    missing.push("openssh-server");
  }
  if ((await run("sh", ["-c", "command -v ssh"], { allowFailure: true })).code !== 0) {
    missing.push("openssh-client");
  }
  if (missing.length) {
    throw new Error(
      `bench e2e: the ssh baseline needs ${missing.join(" and ")}; run ` +
        "`bash scripts/install_deps.sh 2.9.6 bench` (root) or " +
        `\`apt-get install ${missing.join(" ")}\`, then rerun`,
    );
  }
}

/** sshd_config text for one bench sshd. Pure. */
export function sshdConfig(o: { ip: string; dir: string }): string {
  return [
    `ListenAddress ${o.ip}:22`,
    `HostKey ${o.dir}/host_ed25519`,
    `AuthorizedKeysFile ${o.dir}/authorized_keys`,
    "PidFile none",
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    // the keys live in a temp dir, not in ~root/.ssh
    "StrictModes no",
    "UseDNS no",
    "PrintMotd no",
    `Ciphers ${SSH_CIPHERS.join(",")}`,
    "LogLevel INFO",
    "",
  ].join("\n");
}

/** One sshd in a VM namespace, pinned to `cpus`; stop() ends it and every session it started. */
export class LabSshd {
  #stopped = false;
  readonly #unguard: () => void;

  private constructor(
    readonly child: Deno.ChildProcess,
    readonly ip: string,
    readonly dir: string,
    private readonly madePrivsepDir: boolean,
    private readonly log: () => string,
  ) {
    // A bench killed by a signal must not leave sshd behind: the lab's own guard removes the
    // namespaces, this one ends our processes (synchronously, before the lab's guard exits).
    const kill = () => this.#killAll();
    Deno.addSignalListener("SIGINT", kill);
    Deno.addSignalListener("SIGTERM", kill);
    this.#unguard = () => {
      Deno.removeSignalListener("SIGINT", kill);
      Deno.removeSignalListener("SIGTERM", kill);
    };
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Keys, config, then sshd -D in namespace ns; resolves once it listens. */
  static async start(netns: Netns, ns: string, ip: string, cpus: string): Promise<LabSshd> {
    await sshPreflight();
    const dir = await Deno.makeTempDir({ prefix: "pcap-bench-sshd-" });
    let madePrivsepDir = false;
    try {
      await Deno.stat(PRIVSEP_DIR);
    } catch {
      await Deno.mkdir(PRIVSEP_DIR, { mode: 0o755 });
      madePrivsepDir = true;
    }
    for (const k of ["host_ed25519", "client_ed25519"]) {
      await run(
        "ssh-keygen",
        ["-q", "-t", "ed25519", "-N", "", "-C", `pcap-bench-${k}`, "-f"]
          .concat(`${dir}/${k}`),
      );
    }
    await Deno.copyFile(`${dir}/client_ed25519.pub`, `${dir}/authorized_keys`);
    const hostPub = (await Deno.readTextFile(`${dir}/host_ed25519.pub`)).trim();
    await Deno.writeTextFile(`${dir}/known_hosts`, `${ip} ${hostPub}\n`);
    await Deno.writeTextFile(`${dir}/sshd_config`, sshdConfig({ ip, dir }));
    // -t first: a config error is reported plainly instead of as a daemon that never listens
    await netns.exec(ns, [SSHD, "-t", "-f", `${dir}/sshd_config`]);
    const child = netns.spawn(ns, [
      "taskset",
      "-c",
      cpus,
      SSHD,
      "-D",
      "-e",
      "-f",
      `${dir}/sshd_config`,
    ], { stderr: "piped" });
    let text = "";
    const dec = new TextDecoder();
    (async () => {
      for await (const c of child.stderr) text += dec.decode(c, { stream: true });
    })().catch(() => {});
    const d = new LabSshd(child, ip, dir, madePrivsepDir, () => text);
    let exited = false;
    child.status.then(() => exited = true);
    for (const until = Date.now() + 10_000; !/Server listening on/.test(text);) {
      if (exited || Date.now() > until) {
        await d.stop();
        throw new Error(`bench e2e: sshd in ${ns} did not start listening on ${ip}:22: ${text}`);
      }
      await sleep(10);
    }
    return d;
  }

  /** The sshd log so far (for error messages). */
  get logText(): string {
    return this.log();
  }

  /** ssh client arguments for one connection with exactly `cipher`; -v reports the kex. */
  sshArgs(cipher: SshCipher): string[] {
    return [
      "-F",
      "/dev/null",
      "-v",
      "-i",
      `${this.dir}/client_ed25519`,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${this.dir}/known_hosts`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      `Ciphers=${cipher}`,
      "-o",
      "Compression=no",
      `root@${this.ip}`,
    ];
  }

  /** Session processes (sshd children, tcpdump) alive now. */
  sessions(): number[] {
    return descendants(this.pid);
  }

  #killAll(): void {
    for (const p of [...this.sessions(), this.pid]) {
      try {
        Deno.kill(p, "SIGTERM");
      } catch { /* gone */ }
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#unguard();
    const sessions = this.sessions();
    this.#killAll();
    await this.child.status;
    for (const until = Date.now() + 5_000; sessions.some(alive) && Date.now() < until;) {
      await sleep(20);
    }
    for (const p of sessions.filter(alive)) {
      try {
        Deno.kill(p, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    if (this.madePrivsepDir) await Deno.remove(PRIVSEP_DIR).catch(() => {});
  }
}

const alive = (pid: number) => comm(pid) !== "";

/** `ssh root@VM tcpdump -U -w - -i DEV FILTER > file`, the ssh client pinned to `cpus`. */
export class SshTcpdump {
  #err = "";
  readonly #reading: Promise<void>;

  private constructor(readonly child: Deno.ChildProcess, readonly sshd: LabSshd) {
    const dec = new TextDecoder();
    this.#reading = (async () => {
      for await (const c of child.stderr) this.#err += dec.decode(c, { stream: true });
    })().catch(() => {});
  }

  static async start(
    netns: Netns,
    sshd: LabSshd,
    o: { cipher: SshCipher; dev: string; filter: string; file: string; cpus: string },
  ): Promise<SshTcpdump> {
    const remote = `tcpdump -U -w - -i ${o.dev} '${o.filter}'`;
    // `exec` keeps the pid: the tracked process is ssh itself, its stdout the file.
    const child = netns.spawn(null, [
      "sh",
      "-c",
      'exec taskset -c "$0" ssh "$@" > "$OUT"',
      o.cpus,
      ...sshd.sshArgs(o.cipher),
      remote,
    ], { stderr: "piped", env: { OUT: o.file } });
    const s = new SshTcpdump(child, sshd);
    let exited = false;
    child.status.then(() => exited = true);
    for (const until = Date.now() + 20_000; !/listening on/.test(s.#err);) {
      if (exited || Date.now() > until) {
        await s.stop();
        throw new Error(
          `bench e2e: ssh tcpdump did not start: ${s.stderrTail()}\nsshd: ${sshd.logText}`,
        );
      }
      await sleep(10);
    }
    return s;
  }

  /** The cipher ssh negotiated (from its -v kex line), e.g. "aes128-gcm@openssh.com". */
  get cipher(): string {
    return /kex: server->client cipher: (\S+)/.exec(this.#err)?.[1] ?? "?";
  }

  /** ssh client, then the session's sshd processes, then tcpdump. */
  pids(): { ssh: number; sshd: number[]; tcpdump: number[] } {
    const session = this.sshd.sessions();
    return {
      ssh: this.child.pid,
      sshd: session.filter((p) => comm(p).startsWith("sshd")),
      tcpdump: session.filter((p) => comm(p) === "tcpdump"),
    };
  }

  stderrTail(): string {
    return this.#err.split("\n").filter((l) => !l.startsWith("debug")).slice(-5).join("\n");
  }

  /** SIGINT to the remote tcpdump (it flushes and exits), then ssh ends with the file complete. */
  async stop(timeoutMs = 10_000): Promise<void> {
    for (const p of this.pids().tcpdump) {
      try {
        Deno.kill(p, "SIGINT");
      } catch { /* gone */ }
    }
    let t: ReturnType<typeof setTimeout> | undefined;
    const ended = await Promise.race([
      this.child.status.then(() => true),
      new Promise<boolean>((r) => t = setTimeout(() => r(false), timeoutMs)),
    ]);
    clearTimeout(t);
    if (!ended) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* gone */ }
      await this.child.status;
    }
    await this.#reading;
  }
}
