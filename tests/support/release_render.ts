/**
 * Renders the BOSH jobs in release/ with tests/release/render.rb (Ruby ERB, BOSH semantics) and
 * runs the rendered config through `pcap agent|api --check-config`. Rendered files land in a
 * fake /var/vcap tree under a temp dir; paths in the config are rewritten to point into it.
 */
import { parse } from "yaml";

export const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const RENDER = `${ROOT}/tests/release/render.rb`;
const dec = new TextDecoder();

export type Job = "pcap-agent" | "pcap-api";
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface Rendered {
  ok: boolean;
  /** render.rb's stderr: one "TEMPLATE: message" line per failed template */
  errors: string;
  /** fake root holding var/vcap/jobs/<job>/... */
  root: string;
  /** the job directory inside root */
  jobDir: string;
  read(dest: string): string;
  /** the rendered config parsed */
  config(): Record<string, Json>;
}

/** Sets a dotted property path in a nested object (manifest style). */
export function withProperty(props: Record<string, Json>, name: string, value: Json) {
  const keys = name.split(".");
  let node = props;
  for (const k of keys.slice(0, -1)) node = (node[k] ??= {}) as Record<string, Json>;
  node[keys[keys.length - 1]] = value;
  return props;
}

/** Renders every template of `job` for the given manifest properties into a fresh temp root. */
export async function renderJob(
  job: Job,
  properties: Record<string, Json>,
  spec: Record<string, Json> = {},
): Promise<Rendered> {
  const root = await Deno.makeTempDir({ prefix: `render-${job}-` });
  const jobDir = `${root}/var/vcap/jobs/${job}`;
  const ctx = `${root}/context.json`;
  await Deno.writeTextFile(ctx, JSON.stringify({ properties, spec }));
  const out = await new Deno.Command("ruby", {
    args: [RENDER, `${ROOT}/release/jobs/${job}`, ctx, jobDir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(ctx);
  const read = (dest: string) => Deno.readTextFileSync(`${jobDir}/${dest}`);
  return {
    ok: out.success,
    errors: dec.decode(out.stderr),
    root,
    jobDir,
    read,
    config: () => parse(read(`config/${job}.yml`)) as Record<string, Json>,
  };
}

/** The rendered config with /var/vcap/ paths moved into the render root (for --check-config). */
export async function relocatedConfig(r: Rendered, job: Job): Promise<string> {
  const text = r.read(`config/${job}.yml`).replaceAll("/var/vcap/", `${r.root}/var/vcap/`);
  const file = `${r.jobDir}/config/${job}.relocated.yml`;
  await Deno.writeTextFile(file, text);
  return file;
}

/** A `pcap` stand-in for scripts: runs this checkout's main.ts with deno (no compiled binary). */
export async function pcapWrapper(dir: string): Promise<string> {
  const path = `${dir}/pcap`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A --no-prompt "${ROOT}/main.ts" "$@"\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** Runs the rendered bin/pre-start (which runs `pcap <mode> --check-config`). */
export async function runPreStart(r: Rendered, job: Job): Promise<{ code: number; out: string }> {
  const config = await relocatedConfig(r, job);
  const out = await new Deno.Command(`${r.jobDir}/bin/pre-start`, {
    env: {
      PCAP_BIN: await pcapWrapper(r.root),
      PCAP_CONFIG: config,
      PCAP_AUDIT_DIR: `${r.root}/var/vcap/sys/log/${job}`,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

export async function cleanup(r: Rendered) {
  await Deno.remove(r.root, { recursive: true }).catch(() => {});
}

export interface SpecProperty {
  description?: string;
  default?: Json;
  example?: Json;
}

export interface JobSpec {
  name: string;
  templates: Record<string, string>;
  packages: string[];
  properties: Record<string, SpecProperty>;
}

export function readSpec(job: Job): JobSpec {
  return parse(Deno.readTextFileSync(`${ROOT}/release/jobs/${job}/spec`)) as JobSpec;
}

/** Property names a template reads: the string arguments of p(...) and if_p(...). */
export function propertiesUsed(template: string): string[] {
  const names: string[] = [];
  for (const call of template.matchAll(/\b(?:if_p|p)\(\s*([^)]*)\)/g)) {
    for (const m of call[1].matchAll(/"([a-z0-9_.-]+\.[a-z0-9_.-]+)"/g)) names.push(m[1]);
  }
  return names;
}
