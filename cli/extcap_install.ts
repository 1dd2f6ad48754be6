/**
 * `pcap extcap --install`: writes a small launcher into Wireshark's personal extcap folder, so
 * that Wireshark and tshark find the pcap interfaces without a system-wide install.
 *
 * The folder is the one the installed Wireshark reports in `tshark -G folders`: "Personal Extcap
 * path" (Wireshark 4.2 and later, ~/.local/lib/wireshark/extcap), else the "extcap" folder of the
 * "Personal configuration" (Wireshark 4.0 looks there: ~/.config/wireshark/extcap). Without
 * tshark, the 4.2 default is taken and the output says so.
 *
 * The launcher runs this very pcap: the compiled binary, or `deno run … main.ts` of this
 * checkout with its deno.json, since Wireshark starts extcaps from any working directory.
 */
import { writeFileAtomic } from "./bosh_config.ts";

export const LAUNCHER_NAME = "pcap-extcap";
const MARKER = "# pcap extcap launcher";

/** What the launcher execs, before `extcap "$@"`. */
export interface LaunchCommand {
  argv: string[];
  /** the module cache to use when Wireshark's environment names none */
  denoDir?: string;
}

/** The command that runs this pcap: the compiled binary, or deno on this checkout's main.ts. */
export function launchCommand(env: Record<string, string | undefined>): LaunchCommand {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/.test(exe.split("/").pop() ?? "")) return { argv: [exe] };
  const file = (name: string) =>
    decodeURIComponent(new URL(`../${name}`, import.meta.url).pathname);
  return {
    argv: [
      exe,
      "run",
      "--allow-all",
      "--no-prompt",
      "--quiet",
      "--config",
      file("deno.json"),
      file("main.ts"),
    ],
    denoDir: env.DENO_DIR || undefined,
  };
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The launcher script. Pure. */
export function launcherScript(c: LaunchCommand): string {
  return [
    "#!/bin/sh",
    `${MARKER}, written by \`pcap extcap --install\`: Wireshark runs it to list the`,
    "# pcap interfaces and to capture from them. Run the install again after moving pcap.",
    ...(c.denoDir
      ? [`export DENO_DIR="\${DENO_DIR:-${c.denoDir.replace(/["\\$`]/g, "\\$&")}}"`]
      : []),
    `exec ${c.argv.map(shellQuote).join(" ")} extcap "$@"`,
    "",
  ].join("\n");
}

export interface WiresharkFolders {
  /** Wireshark 4.2+: "Personal Extcap path" */
  personalExtcap?: string;
  /** "Personal configuration" */
  personalConfig?: string;
}

/** The folders of `tshark -G folders` ("Name:\tpath" lines). Pure. */
export function parseFolders(text: string): WiresharkFolders {
  const get = (key: string) =>
    text.split("\n").map((l) => /^([^:]+):\s*(.*?)\s*$/.exec(l))
      .find((m) => m && m[1].trim().toLowerCase() === key.toLowerCase())?.[2] || undefined;
  return {
    personalExtcap: get("Personal Extcap path"),
    personalConfig: get("Personal configuration"),
  };
}

export interface ExtcapFolder {
  dir: string;
  /** how the folder was found, for the user */
  how: string;
}

/** Wireshark's personal extcap folder for this user (see the module comment). */
export async function personalExtcapFolder(
  env: Record<string, string | undefined>,
  tshark = "tshark",
): Promise<ExtcapFolder> {
  let out: string | undefined;
  try {
    const r = await new Deno.Command(tshark, {
      args: ["-G", "folders"],
      env: env as Record<string, string>,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(15_000),
    }).output();
    if (r.success) out = new TextDecoder().decode(r.stdout);
  } catch { /* no tshark */ }
  const f = out ? parseFolders(out) : {};
  if (f.personalExtcap) {
    return { dir: f.personalExtcap, how: "Personal Extcap path of `tshark -G folders`" };
  }
  if (f.personalConfig) {
    return {
      dir: `${f.personalConfig}/extcap`,
      how: "Wireshark before 4.2 looks for extcaps in the extcap folder of its Personal " +
        "configuration (`tshark -G folders`)",
    };
  }
  if (!env.HOME) throw new Error("HOME is not set; pass the extcap folder with --dir DIR");
  return {
    dir: `${env.HOME}/.local/lib/wireshark/extcap`,
    how: "tshark was not found, so this is Wireshark 4.2's default; Wireshark 4.0 looks in " +
      "~/.config/wireshark/extcap instead (see About > Folders; use --dir DIR)",
  };
}

export interface Installed {
  path: string;
  how: string;
  command: LaunchCommand;
}

/**
 * Writes the launcher (mode 0755) into `dir` or the personal extcap folder. Refuses to replace
 * a file that is not a pcap launcher unless `force`.
 */
export async function installLauncher(o: {
  env: Record<string, string | undefined>;
  dir?: string;
  force?: boolean;
  tshark?: string;
}): Promise<Installed> {
  const folder = o.dir
    ? { dir: o.dir, how: "given with --dir" }
    : await personalExtcapFolder(o.env, o.tshark);
  const path = `${folder.dir.replace(/\/+$/, "")}/${LAUNCHER_NAME}`;
  let existing: string | undefined;
  try {
    existing = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`cannot check ${path}: ${(e as Error).message}`);
    }
  }
  if (existing !== undefined && !existing.includes(MARKER) && !o.force) {
    throw new Error(`${path} exists and is not a pcap launcher; remove it or pass --force`);
  }
  try {
    await Deno.mkdir(folder.dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new Error(`cannot create the extcap folder ${folder.dir}: ${(e as Error).message}`);
  }
  const command = launchCommand(o.env);
  await writeFileAtomic(path, launcherScript(command), 0o755, "extcap launcher");
  return { path, how: folder.how, command };
}
