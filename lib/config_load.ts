/**
 * Loads a YAML configuration file and validates it against a zod schema. Every failure becomes a
 * ConfigError whose message names the file, the key and what to do, so an operator reading a
 * failed `bpm` start or `--check-config` output knows exactly which line to fix.
 */
import { parse as parseYaml } from "yaml";
import type { z } from "zod";

export class ConfigError extends Error {
  constructor(readonly file: string, readonly key: string, detail: string) {
    super(`${file}: ${key ? `key "${key}": ` : ""}${detail}`);
    this.name = "ConfigError";
  }
}

function keyPath(path: readonly PropertyKey[]): string {
  return path.map(String).join(".");
}

/** Turns the first zod issue into one readable sentence with a fix. */
function describeIssue(file: string, issue: z.core.$ZodIssue): ConfigError {
  const key = keyPath(issue.path);
  switch (issue.code) {
    case "unrecognized_keys": {
      const names = issue.keys.map((k) => (key ? `${key}.${k}` : k));
      return new ConfigError(
        file,
        names[0],
        `unknown key${names.length > 1 ? `s ${names.join(", ")}` : ""}; ` +
          "remove it or check its spelling against the documentation",
      );
    }
    case "invalid_type":
      return new ConfigError(
        file,
        key,
        issue.message.includes("received undefined")
          ? "is required but missing; add it"
          : `${issue.message}; fix its type`,
      );
    default:
      return new ConfigError(file, key, `${issue.message}; fix its value`);
  }
}

/** Reads `file`, parses YAML and validates; throws ConfigError on any problem. */
export async function loadYamlConfig<S extends z.ZodType>(
  file: string,
  schema: S,
): Promise<z.output<S>> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    const reason = e instanceof Deno.errors.NotFound
      ? "file not found; pass the path of an existing config file"
      : `cannot read the file (${(e as Error).message}); check its path and permissions`;
    throw new ConfigError(file, "", reason);
  }
  return parseConfigText(file, text, schema);
}

/** Validation of already-read text; separate so tests and --check-config share it. */
export function parseConfigText<S extends z.ZodType>(
  file: string,
  text: string,
  schema: S,
): z.output<S> {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(file, "", `is not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(file, "", "must be a YAML mapping of keys to values");
  }
  const result = schema.safeParse(raw);
  if (!result.success) throw describeIssue(file, result.error.issues[0]);
  return result.data;
}

/** Checks that a file named by a config key can be read; returns its content. */
export async function readConfiguredFile(
  file: string,
  key: string,
  path: string,
): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    const what = e instanceof Deno.errors.NotFound ? "does not exist" : (e as Error).message;
    throw new ConfigError(file, key, `file ${path} ${what}; point it at a readable PEM file`);
  }
}
