// Long-running lab processes (agents, api) with stdout+stderr going to one file per process under
// the run dir. The shell redirect hands the file to the process itself, so its output never
// depends on our event loop draining a pipe, and the log survives if the test process dies.
import type { Netns } from "./netns.ts";

const NAME_RE = /^[A-Za-z0-9_.-]+$/;

export interface LoggedProcess {
  name: string;
  logPath: string;
  child: Deno.ChildProcess;
  /** set once the process has exited */
  exit: Promise<Deno.CommandStatus>;
}

export class ProcessLogs {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  path(name: string): string {
    if (!NAME_RE.test(name)) throw new Error(`invalid log name "${name}"`);
    return `${this.dir}/${name}.log`;
  }

  /** Starts cmd in ns (null = host), tracked by netns, output appended to <dir>/<name>.log. */
  spawn(
    netns: Netns,
    ns: string | null,
    name: string,
    cmd: string[],
    opts: { env?: Record<string, string>; cwd?: string } = {},
  ): LoggedProcess {
    const logPath = this.path(name);
    Deno.mkdirSync(this.dir, { recursive: true });
    Deno.writeTextFileSync(
      logPath,
      `### ${new Date().toISOString()} ${ns ? `[netns ${ns}] ` : ""}${cmd.join(" ")}\n`,
      { append: true },
    );
    // `exec` keeps the pid: the pid we track (and kill) is the program itself.
    const wrapped = ["sh", "-c", 'exec "$@" >>"$PCAP_LAB_LOG" 2>&1', "sh", ...cmd];
    const child = netns.spawn(ns, wrapped, {
      env: { ...opts.env, PCAP_LAB_LOG: logPath },
      cwd: opts.cwd,
    });
    return { name, logPath, child, exit: child.status };
  }

  /** Whole log of one process ("" if it never ran). */
  read(name: string): string {
    try {
      return Deno.readTextFileSync(this.path(name));
    } catch {
      return "";
    }
  }

  /** Last `lines` lines of a log. */
  tail(name: string, lines = 40): string {
    return tailText(this.read(name), lines);
  }

  /** Names of all logs in the run dir. */
  names(): string[] {
    try {
      return [...Deno.readDirSync(this.dir)]
        .filter((e) => e.isFile && e.name.endsWith(".log"))
        .map((e) => e.name.slice(0, -4))
        .sort();
    } catch {
      return [];
    }
  }

  /** Prints the tails of all (or the named) logs to stderr, e.g. when a test failed. */
  dump(names = this.names(), lines = 80): void {
    for (const n of names) {
      console.error(`----- lab log ${n} (${this.path(n)}) -----\n${this.tail(n, lines)}`);
    }
  }
}

/** Last n lines of text. Pure. */
export function tailText(text: string, n: number): string {
  const lines = text.replace(/\n$/, "").split("\n");
  return lines.slice(Math.max(0, lines.length - n)).join("\n");
}
