/**
 * The bosh CLI's config file (`~/.bosh/config`), read and written the way the bosh CLI does:
 *
 *     environments:
 *     - url: https://10.0.0.6:25555
 *       ca_cert: |-
 *         -----BEGIN CERTIFICATE-----
 *       alias: prod
 *       access_token: eyJ...
 *       access_token_type: bearer
 *       refresh_token: eyJ...
 *
 * The file is kept as a YAML Document, so that fields and comments we do not know (a newer bosh
 * CLI's, the user's) survive a token update untouched. Writes go to a temporary file in the same
 * directory that is then renamed over the original, mode 0600: a crash never leaves a truncated
 * config, and the tokens are never readable by others.
 */
import { type Document, isMap, isSeq, parseDocument } from "yaml";

const BOSH_DEFAULT_PORT = 25555;

export interface BoshEnvironment {
  /** position in `environments`, for setTokens */
  index: number;
  url: string;
  alias?: string;
  caCert?: string;
  username?: string;
  accessToken?: string;
  accessTokenType?: string;
  refreshToken?: string;
}

export class BoshConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BoshConfigError";
  }
}

/** `10.0.0.6` → `https://10.0.0.6:25555`, like the bosh CLI; no trailing slash. */
export function normalizeDirectorUrl(raw: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new BoshConfigError(`"${raw}" is not a valid BOSH Director URL`);
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new BoshConfigError(`BOSH Director URL "${raw}" must use https`);
  }
  // URL drops a default port (":443"), so look at what was written
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(withScheme)?.[1] ?? "";
  if (!/:\d+$/.test(authority)) u.port = String(BOSH_DEFAULT_PORT);
  return u.toString().replace(/\/$/, "");
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

export class BoshConfig {
  readonly path: string;
  #doc: Document;

  private constructor(path: string, doc: Document) {
    this.path = path;
    this.#doc = doc;
  }

  /** Reads and parses `path`; every failure names the file and what to do. */
  static async load(path: string): Promise<BoshConfig> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new BoshConfigError(
          `BOSH config ${path} does not exist; run "bosh alias-env" and "bosh log-in" first, ` +
            "or pass another file with -c",
        );
      }
      throw new BoshConfigError(`cannot read BOSH config ${path}: ${(e as Error).message}`);
    }
    return BoshConfig.parse(text, path);
  }

  static parse(text: string, path: string): BoshConfig {
    const doc = parseDocument(text);
    if (doc.errors.length > 0) {
      throw new BoshConfigError(`BOSH config ${path} is not valid YAML: ${doc.errors[0].message}`);
    }
    const root = doc.contents;
    if (root !== null && !isMap(root)) {
      throw new BoshConfigError(`BOSH config ${path}: expected a mapping with "environments"`);
    }
    const envs = doc.get("environments");
    if (envs !== undefined && envs !== null && !isSeq(envs)) {
      throw new BoshConfigError(`BOSH config ${path}: "environments" must be a list`);
    }
    return new BoshConfig(path, doc);
  }

  environments(): BoshEnvironment[] {
    const list = this.#doc.toJS()?.environments;
    if (!Array.isArray(list)) return [];
    return list.map((e: Record<string, unknown> | null, index: number) => {
      const o = e ?? {};
      return {
        index,
        url: typeof o.url === "string" ? o.url : "",
        alias: str(o.alias),
        caCert: str(o.ca_cert),
        username: str(o.username),
        accessToken: str(o.access_token),
        accessTokenType: str(o.access_token_type),
        refreshToken: str(o.refresh_token),
      };
    });
  }

  /**
   * The environment named by alias or URL (`-e`, BOSH_ENVIRONMENT). Without a name, the only
   * environment is taken; with several, the error lists them.
   */
  select(urlOrAlias?: string): BoshEnvironment {
    const envs = this.environments();
    const known = () =>
      envs.length === 0
        ? 'it has no environments; run "bosh alias-env" first'
        : `known: ${envs.map((e) => e.alias ? `${e.alias} (${e.url})` : e.url).join(", ")}`;
    if (!urlOrAlias) {
      if (envs.length === 1) return envs[0];
      throw new BoshConfigError(
        `no BOSH environment given; pass -e ALIAS or set BOSH_ENVIRONMENT (${this.path}: ${known()})`,
      );
    }
    const exact = envs.find((e) => e.alias === urlOrAlias || e.url === urlOrAlias);
    if (exact) return exact;
    let wanted: string | undefined;
    try {
      wanted = normalizeDirectorUrl(urlOrAlias);
    } catch { /* not a URL: only aliases could match */ }
    const byUrl = wanted &&
      envs.find((e) => {
        try {
          return normalizeDirectorUrl(e.url) === wanted;
        } catch {
          return false;
        }
      });
    if (byUrl) return byUrl;
    throw new BoshConfigError(
      `BOSH environment "${urlOrAlias}" is not in ${this.path}; ${known()}`,
    );
  }

  /** Stores new tokens in the entry at `index`, leaving every other field as it was. */
  setTokens(
    index: number,
    t: { accessToken: string; accessTokenType: string; refreshToken?: string },
  ): void {
    if (!this.#doc.hasIn(["environments", index])) {
      throw new RangeError(`no environment at index ${index} in ${this.path}`);
    }
    this.#doc.setIn(["environments", index, "access_token"], t.accessToken);
    this.#doc.setIn(["environments", index, "access_token_type"], t.accessTokenType);
    if (t.refreshToken) this.#doc.setIn(["environments", index, "refresh_token"], t.refreshToken);
  }

  toString(): string {
    // never fold long values such as tokens; lay out lists like the bosh CLI (go-yaml) does
    return this.#doc.toString({ lineWidth: 0, indentSeq: false, flowCollectionPadding: false });
  }

  /** Writes the config back atomically with mode 0600. */
  async save(): Promise<void> {
    await writeFileAtomic(this.path, this.toString(), 0o600);
  }
}

/**
 * Replaces `path` with `text` atomically: temp file in the same directory, fsync, rename.
 * A symlinked config is resolved so that the link stays a link.
 */
export async function writeFileAtomic(
  path: string,
  text: string,
  mode = 0o600,
  what = "BOSH config",
): Promise<void> {
  let target = path;
  try {
    target = await Deno.realPath(path);
  } catch { /* new file: write where asked */ }
  const slash = target.lastIndexOf("/");
  const dir = slash < 0 ? "." : target.slice(0, slash) || "/";
  const base = target.slice(slash + 1);
  const tmp = `${dir}/.${base}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      const bytes = new TextEncoder().encode(text);
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.chmod(tmp, mode); // the umask may have narrowed or the file may be reused
    await Deno.rename(tmp, target);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new BoshConfigError(`cannot write ${what} ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
