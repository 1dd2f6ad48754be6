/**
 * The capture interfaces `pcap extcap` offers Wireshark: one per BOSH environment of the bosh
 * config (`pcap-bosh-<alias>`), and one for the cf CLI's target if a cf login exists
 * (`pcap-cf-<api host>`). Wireshark lists them by these names beside `eth0`, keeps each one's
 * options under its name, and calls pcap back with it to capture.
 *
 * Only the config files are read here; a login is needed to capture, not to be listed.
 */
import { BoshConfig, BoshConfigError, type BoshEnvironment } from "./bosh_config.ts";
import { CfConfig, CfConfigError, cfConfigPath, type CfLogin } from "./cf_config.ts";

export interface BoshInterface {
  kind: "bosh";
  value: string;
  display: string;
  configPath: string;
  /** how `-e` names the environment: its alias, else its URL */
  environment: string;
  directorUrl: string;
}

export interface CfInterface {
  kind: "cf";
  value: string;
  display: string;
  configPath: string;
  login: CfLogin;
}

export type PcapInterface = BoshInterface | CfInterface;

export const BOSH_PREFIX = "pcap-bosh";
export const CF_PREFIX = "pcap-cf";

/** Anything but letters, digits, `.`, `_` and `-` becomes `-` (Wireshark shows the name). */
function slug(text: string): string {
  return text.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").replace(/\/+$/, "")
    .replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "unnamed";
}

/** `pcap-bosh-<alias>`, or `pcap-bosh-<host>-<port>` for an environment without alias. Pure. */
export function boshInterfaceName(e: Pick<BoshEnvironment, "alias" | "url">): string {
  return `${BOSH_PREFIX}-${slug(e.alias ?? e.url)}`;
}

/** `pcap-cf-<host of the CF API>`. Pure. */
export function cfInterfaceName(target: string): string {
  let host = target;
  try {
    host = new URL(target).host;
  } catch { /* not a URL: slug what is there */ }
  return `${CF_PREFIX}-${slug(host)}`;
}

/** The BOSH config the bosh CLI would use: BOSH_CONFIG, else ~/.bosh/config. */
export function boshConfigPath(env: Record<string, string | undefined>): string | undefined {
  return env.BOSH_CONFIG || (env.HOME ? `${env.HOME}/.bosh/config` : undefined);
}

/** The interfaces of the BOSH environments; names made unique with `-2`, `-3`. Pure. */
export function boshInterfaces(envs: BoshEnvironment[], configPath: string): BoshInterface[] {
  const seen = new Set<string>();
  return envs.filter((e) => e.url).map((e) => {
    let value = boshInterfaceName(e);
    for (let n = 2; seen.has(value); n++) value = `${boshInterfaceName(e)}-${n}`;
    seen.add(value);
    return {
      kind: "bosh",
      value,
      display: `pcap BOSH ${e.alias ?? e.url}${e.alias ? ` (${e.url})` : ""}`,
      configPath,
      environment: e.alias ?? e.url,
      directorUrl: e.url,
    };
  });
}

/** The interface of the cf login's target. Pure. */
export function cfInterface(login: CfLogin, configPath: string): CfInterface {
  const where = [
    login.org?.name && `org ${login.org.name}`,
    login.space?.name && `space ${login.space.name}`,
  ]
    .filter(Boolean).join(", ");
  return {
    kind: "cf",
    value: cfInterfaceName(login.target),
    display: `pcap CF ${login.target}${where ? ` (${where})` : ""}`,
    configPath,
    login,
  };
}

export interface Discovery {
  interfaces: PcapInterface[];
  /** configs that exist but cannot be used, for stderr */
  warnings: string[];
}

/**
 * Reads the bosh config and the cf config named by the environment. A missing file means no
 * interfaces of that kind; a broken one is a warning, so the other kind is still offered.
 */
export async function discoverInterfaces(
  env: Record<string, string | undefined>,
): Promise<Discovery> {
  const interfaces: PcapInterface[] = [];
  const warnings: string[] = [];
  const boshPath = boshConfigPath(env);
  if (boshPath && await exists(boshPath)) {
    try {
      const config = await BoshConfig.load(boshPath);
      interfaces.push(...boshInterfaces(config.environments(), boshPath));
    } catch (e) {
      if (!(e instanceof BoshConfigError)) throw e;
      warnings.push(e.message);
    }
  }
  let cfPath: string | undefined;
  try {
    cfPath = cfConfigPath(env);
  } catch { /* neither CF_HOME nor HOME: no cf login to offer */ }
  if (cfPath && await exists(cfPath)) {
    try {
      const login = (await CfConfig.load(cfPath)).login();
      if (login.target) interfaces.push(cfInterface(login, cfPath));
      else warnings.push(`cf config ${cfPath} targets no CF API; run "cf api URL" and "cf login"`);
    } catch (e) {
      if (!(e instanceof CfConfigError)) throw e;
      warnings.push(e.message);
    }
  }
  return { interfaces, warnings };
}

/** The interface Wireshark named, or an error that lists the known ones. */
export async function findInterface(
  name: string,
  env: Record<string, string | undefined>,
): Promise<PcapInterface> {
  const { interfaces, warnings } = await discoverInterfaces(env);
  const found = interfaces.find((i) => i.value === name);
  if (found) return found;
  const known = interfaces.length
    ? `known: ${interfaces.map((i) => i.value).join(", ")}`
    : "no BOSH environment or cf login was found";
  const why = warnings.length ? `; ${warnings.join("; ")}` : "";
  throw new Error(`no pcap interface "${name}" (${known}${why})`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
