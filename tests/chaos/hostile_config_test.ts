/**
 * Configuration, every field wrong in turn: starting from a full valid agent.yml and api.yml, each
 * leaf key gets each wrong value of its kind (wrong type, out of range, empty, a file that does not
 * exist, an object or a list where a scalar belongs), and every containing section is replaced by
 * a scalar. Each variant must be refused with one ConfigError naming the file and the key; none is
 * silently accepted. (tests/agent_config_test.ts and tests/api_config_test.ts hold the hand-written
 * messages; this sweeps the whole tree.)
 */
import { stringify } from "yaml";
import { Pki } from "../../lab/pki.ts";
import { ConfigError } from "../../lib/config_load.ts";
import { loadAgentConfig } from "../../agent/config.ts";
import { loadApiConfig } from "../../server/config.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { record } from "./support/chaos.ts";

type Tree = { [k: string]: unknown };

/** Leaf and section paths of a config tree (lists count as leaves). Pure. */
function paths(t: Tree, prefix: string[] = []): Array<{ path: string[]; value: unknown }> {
  return Object.entries(t).flatMap(([k, v]) => {
    const p = [...prefix, k];
    const self = { path: p, value: v };
    return v && typeof v === "object" && !Array.isArray(v) ? [self, ...paths(v as Tree, p)] : [
      self,
    ];
  });
}

/** Wrong values for a value of this kind. Pure. */
function wrongValues(v: unknown, key: string): unknown[] {
  if (typeof v === "boolean") return ["yes please", 2, [], {}];
  // very large counts are allowed (they mean "practically unlimited"); unsafe integers are not
  if (typeof v === "number") return ["many", -1, 2 ** 60, 1.5, [], {}, true];
  if (Array.isArray(v)) return ["pcap-api", [""], [7], {}];
  if (v && typeof v === "object") return ["section", 7, [1]];
  const s = String(v);
  if (s.startsWith("/")) return ["/nonexistent/pcap-chaos/file.pem", "", 7, [], {}];
  if (/url/.test(key)) return ["not a url", "ftp://x", "", 7, []];
  if (key === "address") return ["", 7, [], {}]; // any host name is an address until it binds
  if (/^\d/.test(s)) return ["soon", "-5s", "99999d", "", [], {}]; // durations and sizes
  return ["", 7, [], {}, true];
}

function withValue(t: Tree, path: string[], value: unknown): Tree {
  const copy: Tree = structuredClone(t);
  let at = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Tree;
  at[path.at(-1)!] = value;
  return copy;
}

async function sweep(
  name: string,
  dir: string,
  base: Tree,
  load: (file: string) => Promise<unknown>,
  /** values a key may take on purpose (e.g. 0 = unlimited): not counted as wrong */
  allowed: (path: string, value: unknown) => boolean = () => false,
) {
  const file = `${dir}/${name}.yml`;
  await Deno.writeTextFile(file, stringify(base));
  await load(file); // the base itself is valid
  const accepted: string[] = [];
  let tried = 0;
  for (const { path, value } of paths(base)) {
    const key = path.join(".");
    for (const wrong of wrongValues(value, path.at(-1)!)) {
      if (allowed(key, wrong)) continue;
      tried++;
      await Deno.writeTextFile(file, stringify(withValue(base, path, wrong)));
      try {
        await load(file);
        accepted.push(`${key} = ${JSON.stringify(wrong)}`);
      } catch (e) {
        const what = `${key} = ${JSON.stringify(wrong)}: ${(e as Error).message}`;
        assert(e instanceof ConfigError, `not a ConfigError: ${what}`);
        assert(e.message.includes(file), `the file is not named: ${what}`);
        const named = path.some((k, i) => e.message.includes(path.slice(i).join(".")) || k === "");
        assert(named, `the key is not named: ${what}`);
      }
    }
  }
  return { tried, accepted };
}

Deno.test("hostile config: every field of agent.yml and api.yml wrong in turn", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-chaos-cfg-" });
  try {
    const pki = await Pki.create(`${dir}/pki`);
    const pair = await pki.issue("pcap", { client: true, server: true, dns: ["pcap"] });
    const agent: Tree = {
      id: "router/0",
      log_level: "info",
      buffer: { size: 100, upper_limit: 98, lower_limit: 70 },
      listen: {
        address: "127.0.0.1",
        port: 9494,
        tls: {
          certificate: pair.certPath,
          private_key: pair.keyPath,
          client_cas: pki.caPath,
          allowed_names: ["pcap-api"],
        },
      },
      limits: { concurrent_captures: 2, max_duration: "1h" },
      capture: { buffer_size: 1 << 20, timeout_ms: 100 },
    };
    const api: Tree = {
      id: "pcap-api/0",
      log_level: "info",
      buffer: { size: 1000, upper_limit: 995, lower_limit: 900 },
      listen: {
        address: "127.0.0.1",
        port: 8443,
        tls: { certificate: pair.certPath, private_key: pair.keyPath },
      },
      agents_mtls: {
        certificate: pair.certPath,
        private_key: pair.keyPath,
        ca: pki.caPath,
        server_name: "pcap-agent.internal",
        skip_verify: false,
      },
      concurrent_captures: 20,
      drain_timeout: "10s",
      limits: {
        per_user_concurrent_captures: 3,
        max_targets: 50,
        max_duration: "2h",
        max_bytes: "512MiB",
      },
      audit: { enabled: true, file: `${dir}/audit.log` },
      metrics: { enabled: true },
      timeouts: { director: "5s", uaa: "2s", agent_connect: "750ms" },
      bosh: {
        director_url: "https://10.0.0.6:25555",
        agent_port: 9495,
        token_scope: "bosh.admin",
        tls: { ca: pki.caPath, server_name: "director", skip_verify: false },
      },
    };
    // the audit file is created when missing: a path that does not exist yet is fine
    const apiAllowed = (key: string, v: unknown) =>
      key === "audit.file" && v === "/nonexistent/pcap-chaos/file.pem";
    const a = await sweep("agent", dir, agent, loadAgentConfig);
    const b = await sweep("api", dir, api, loadApiConfig, apiAllowed);
    record("configuration", {
      inputs: a.tried + b.tried,
      crashes: 0,
      acceptedWrong: [...a.accepted, ...b.accepted],
    });
    assertEquals([...a.accepted, ...b.accepted], [], "wrong values accepted silently");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
