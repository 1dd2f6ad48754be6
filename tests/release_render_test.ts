/**
 * The BOSH job templates rendered by the Ruby ERB harness (tests/release/render.rb) for the
 * defaults, for every property set to a non-default value, and for edge cases; each rendered
 * config goes through the real `pcap agent|api --check-config` via the rendered pre-start.
 */
import { parse } from "yaml";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import {
  cleanup,
  type Job,
  type Json,
  readSpec,
  type Rendered,
  renderJob,
  runPreStart,
  withProperty,
} from "./support/release_render.ts";
import { copy, makeReleasePki, type ReleasePki } from "./support/release_pki.ts";

const INSTANCE = { name: "diego-cell", id: "d55baeba-f645-4219-8b49-2b4654a17165", index: 3 };

function at(obj: Json, path: string): Json | undefined {
  let node: Json | undefined = obj;
  for (const k of path.split(".")) {
    if (node === null || typeof node !== "object" || Array.isArray(node)) return undefined;
    node = (node as Record<string, Json>)[k];
  }
  return node;
}

/** Where a property shows up: a key of the config, of bpm.yml's process, or the drain script. */
type Where = { config: string } | { bpm: string } | { drain: RegExp };
type Case = [property: string, value: Json, where: Where, expected?: Json];

const AGENT_CASES: Case[] = [
  ["pcap-agent.id", "router/7", { config: "id" }],
  ["pcap-agent.log_level", "debug", { config: "log_level" }],
  ["pcap-agent.buffer.size", 200, { config: "buffer.size" }],
  ["pcap-agent.buffer.upper_limit", 90, { config: "buffer.upper_limit" }],
  ["pcap-agent.buffer.lower_limit", 10, { config: "buffer.lower_limit" }],
  ["pcap-agent.listen.address", "127.0.0.1", { config: "listen.address" }],
  ["pcap-agent.listen.port", 9595, { config: "listen.port" }],
  ["pcap-agent.listen.max_connections", 100, { config: "listen.max_connections" }],
  ["pcap-agent.listen.tls.handshake_timeout", 5, { config: "listen.tls.handshake_timeout" }],
  ["pcap-agent.listen.tls.allowed_names", ["pcap-api.service.cf.internal"], {
    config: "listen.tls.allowed_names",
  }],
  ["pcap-agent.limits.concurrent_captures", 4, { config: "limits.concurrent_captures" }],
  ["pcap-agent.limits.max_duration", 600, { config: "limits.max_duration" }],
  ["pcap-agent.capture.buffer_size", 33554432, { config: "capture.buffer_size" }],
  ["pcap-agent.capture.timeout_ms", 50, { config: "capture.timeout_ms" }],
  ["pcap-agent.drain_timeout", 30, { drain: /^timeout=30$/m }],
  ["pcap-agent.bpm.memory_limit", "1G", { bpm: "limits.memory" }],
  ["pcap-agent.bpm.open_files", 8192, { bpm: "limits.open_files" }],
];

const API_CASES: Case[] = [
  ["pcap-api.id", "pcap-api/blue", { config: "id" }],
  ["pcap-api.log_level", "warn", { config: "log_level" }],
  ["pcap-api.buffer.size", 300, { config: "buffer.size" }],
  ["pcap-api.buffer.upper_limit", 80, { config: "buffer.upper_limit" }],
  ["pcap-api.buffer.lower_limit", 20, { config: "buffer.lower_limit" }],
  ["pcap-api.concurrent_captures", 9, { config: "concurrent_captures" }],
  ["pcap-api.drain_timeout", 25, { drain: /^timeout=30$/m }],
  ["pcap-api.listen.address", "127.0.0.1", { config: "listen.address" }],
  ["pcap-api.listen.port", 8443, { config: "listen.port" }],
  ["pcap-api.listen.tls.enabled", false, { config: "listen.tls" }, null],
  ["pcap-api.agents_mtls.common_name", "agents.internal", { config: "agents_mtls.server_name" }],
  ["pcap-api.agents_mtls.common_name", "", { config: "agents_mtls.server_name" }, null],
  ["pcap-api.agents_mtls.skip_verify", true, { config: "agents_mtls.skip_verify" }],
  ["pcap-api.bosh.director_url", "https://director.example:25555", {
    config: "bosh.director_url",
  }],
  ["pcap-api.bosh.agent_port", 9595, { config: "bosh.agent_port" }],
  ["pcap-api.bosh.token_scope", "bosh.0f0f.admin", { config: "bosh.token_scope" }],
  ["pcap-api.bosh.tls.enabled", false, { config: "bosh.tls.ca" }, null],
  ["pcap-api.bosh.tls.common_name", "director.internal", { config: "bosh.tls.server_name" }],
  ["pcap-api.bosh.tls.skip_verify", true, { config: "bosh.tls.skip_verify" }],
  ["pcap-api.limits.per_user_concurrent_captures", 1, {
    config: "limits.per_user_concurrent_captures",
  }],
  ["pcap-api.limits.max_waiting_sessions", 9, { config: "limits.max_waiting_sessions" }],
  ["pcap-api.limits.per_user_waiting_sessions", 3, { config: "limits.per_user_waiting_sessions" }],
  ["pcap-api.limits.max_targets", 7, { config: "limits.max_targets" }],
  ["pcap-api.limits.max_duration", 0, { config: "limits.max_duration" }],
  ["pcap-api.limits.max_bytes", 0, { config: "limits.max_bytes" }],
  ["pcap-api.audit.enabled", false, { config: "audit.enabled" }],
  ["pcap-api.audit.file", "/var/vcap/sys/log/pcap-api/audit.log", { config: "audit.file" }],
  ["pcap-api.metrics.enabled", false, { config: "metrics.enabled" }],
  ["pcap-api.timeouts.director", 30, { config: "timeouts.director" }],
  ["pcap-api.timeouts.uaa", 20, { config: "timeouts.uaa" }],
  ["pcap-api.timeouts.agent_connect", 2, { config: "timeouts.agent_connect" }],
  ["pcap-api.bpm.memory_limit", "2G", { bpm: "limits.memory" }],
  ["pcap-api.bpm.open_files", 1024, { bpm: "limits.open_files" }],
];

function bpmProcess(r: Rendered): Record<string, Json> {
  const doc = parse(r.read("config/bpm.yml")) as { processes: Record<string, Json>[] };
  assertEquals(doc.processes.length, 1);
  return doc.processes[0];
}

function found(r: Rendered, where: Where): Json | undefined {
  if ("config" in where) return at(r.config(), where.config);
  if ("bpm" in where) return at(bpmProcess(r), where.bpm);
  return where.drain.test(r.read("bin/drain")) ? "matched" : "not matched";
}

async function expectValid(r: Rendered, job: Job, what: string) {
  assert(r.ok, `${what}: rendering failed:\n${r.errors}`);
  const pre = await runPreStart(r, job);
  assertEquals(pre.code, 0, `${what}: pre-start (--check-config) failed:\n${pre.out}`);
  assertStringIncludes(pre.out, "config OK");
}

function propsFor(job: Job, pki: ReleasePki) {
  return copy(job === "pcap-agent" ? pki.agentProps : pki.apiProps);
}

for (const [job, cases] of [["pcap-agent", AGENT_CASES], ["pcap-api", API_CASES]] as const) {
  Deno.test(`${job}: defaults render and pass --check-config`, async () => {
    const pki = await makeReleasePki();
    const r = await renderJob(job, propsFor(job, pki), INSTANCE);
    try {
      await expectValid(r, job, "defaults");
      // The id defaults to <instance group>/<instance id>: unique per VM.
      assertEquals(r.config().id, `${INSTANCE.name}/${INSTANCE.id}`);
      assertEquals(r.config().cf, undefined, "no cf section unless asked for");
      assert(r.read("bin/drain").startsWith("#!/bin/bash"));
      assertEquals(Deno.statSync(`${r.jobDir}/bin/drain`).mode! & 0o111, 0o111);
    } finally {
      await cleanup(r);
      await Deno.remove(pki.dir, { recursive: true });
    }
  });

  Deno.test(`${job}: every property set to a non-default value reaches its key`, async (t) => {
    const pki = await makeReleasePki();
    try {
      for (const [name, value, where, expected] of cases) {
        await t.step(`${name} = ${JSON.stringify(value)}`, async () => {
          const props = withProperty(propsFor(job, pki), name, value);
          const r = await renderJob(job, props as Record<string, Json>, INSTANCE);
          try {
            assert(r.ok, r.errors);
            const want = "drain" in where ? "matched" : expected === undefined ? value : expected;
            assertEquals(found(r, where) ?? null, want, `${name} in ${JSON.stringify(where)}`);
            if (!("bpm" in where) && !("drain" in where)) await expectValid(r, job, name);
          } finally {
            await cleanup(r);
          }
        });
      }
    } finally {
      await Deno.remove(pki.dir, { recursive: true });
    }
  });
}

/** Declared properties tested by the edge-case and TLS tests rather than the value tables. */
const COVERED_ELSEWHERE = [
  "pcap-agent.listen.tls.certificate",
  "pcap-agent.listen.tls.private_key",
  "pcap-agent.listen.tls.client_cas",
  "pcap-agent.listen.tls.ca",
  "pcap-agent.cf.enabled",
  "pcap-agent.cf.container_store",
  "pcap-agent.cf.runc_root",
  "pcap-agent.cf.netns_dir",
  "pcap-api.listen.tls.certificate",
  "pcap-api.listen.tls.private_key",
  "pcap-api.listen.tls.client_cas",
  "pcap-api.agents_mtls.enabled",
  "pcap-api.agents_mtls.certificate",
  "pcap-api.agents_mtls.private_key",
  "pcap-api.agents_mtls.ca",
  "pcap-api.bosh.tls.ca",
  "pcap-api.cf.api_url",
  "pcap-api.cf.agent_port",
  "pcap-api.cf.tls.ca",
  "pcap-api.cf.tls.server_name",
  "pcap-api.cf.tls.skip_verify",
  "pcap-api.cf.require_ssh_enabled",
];

Deno.test("every declared property is exercised by a test here", () => {
  const tested = new Set([...AGENT_CASES, ...API_CASES].map((c) => c[0]).concat(COVERED_ELSEWHERE));
  for (const job of ["pcap-agent", "pcap-api"] as const) {
    const missing = Object.keys(readSpec(job).properties).filter((n) => !tested.has(n));
    assertEquals(missing, [], `${job} properties without a rendering test`);
  }
});

Deno.test("missing TLS material fails rendering, naming the property", async (t) => {
  const pki = await makeReleasePki();
  const cases: [Job, string, string][] = [
    ["pcap-agent", "pcap-agent.listen.tls.certificate", "server.crt.erb"],
    ["pcap-agent", "pcap-agent.listen.tls.private_key", "server.key.erb"],
    ["pcap-agent", "pcap-agent.listen.tls.client_cas", "client-ca.crt.erb"],
    ["pcap-api", "pcap-api.listen.tls.certificate", "api.crt.erb"],
    ["pcap-api", "pcap-api.listen.tls.private_key", "api.key.erb"],
    ["pcap-api", "pcap-api.agents_mtls.certificate", "agent-client.crt.erb"],
    ["pcap-api", "pcap-api.agents_mtls.private_key", "agent-client.key.erb"],
    ["pcap-api", "pcap-api.agents_mtls.ca", "agents-ca.crt.erb"],
    ["pcap-api", "pcap-api.bosh.tls.ca", "director-ca.crt.erb"],
  ];
  try {
    for (const [job, name, template] of cases) {
      for (const value of [null, "", "  \n"]) {
        await t.step(`${name} = ${JSON.stringify(value)}`, async () => {
          const r = await renderJob(job, withProperty(propsFor(job, pki), name, value));
          try {
            assert(!r.ok, "rendering must fail");
            assertStringIncludes(r.errors, `${template}: ${name} is not set: give `);
            assertStringIncludes(r.errors, "in PEM format");
          } finally {
            await cleanup(r);
          }
        });
      }
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("edge cases render as documented", async (t) => {
  const pki = await makeReleasePki();
  const render = async (job: Job, edit: (p: Record<string, Json>) => void) => {
    const props = propsFor(job, pki);
    edit(props);
    return await renderJob(job, props, INSTANCE);
  };
  const agentTls = (p: Record<string, Json>) =>
    at(p, "pcap-agent.listen.tls") as Record<string, Json>;
  try {
    await t.step("agent: the older name listen.tls.ca works alone", async () => {
      const r = await render("pcap-agent", (p) => {
        const tls = agentTls(p);
        tls.ca = tls.client_cas;
        delete tls.client_cas;
      });
      try {
        await expectValid(r, "pcap-agent", "listen.tls.ca");
        assertEquals(r.read("config/certs/client-ca.crt").trim(), pki.pki.caCert.trim());
      } finally {
        await cleanup(r);
      }
    });
    await t.step("agent: ca and client_cas with different CAs are refused", async () => {
      const r = await render("pcap-agent", (p) => (agentTls(p).ca = "other"));
      try {
        assert(!r.ok);
        assertStringIncludes(r.errors, "pcap-agent.yml.erb: pcap-agent.listen.tls.client_cas");
        assertStringIncludes(r.errors, "keep only client_cas");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("agent: an inconsistent buffer fails pre-start with pcap's text", async () => {
      const r = await render("pcap-agent", (p) => withProperty(p, "pcap-agent.buffer.size", 50));
      try {
        assert(r.ok, r.errors);
        const pre = await runPreStart(r, "pcap-agent");
        assertEquals(pre.code, 1, pre.out);
        assertStringIncludes(pre.out, "buffer.upper_limit");
        assertStringIncludes(pre.out, "above buffer.size 50");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("agent: cf.enabled emits the cf section with its paths", async () => {
      const r = await render("pcap-agent", (p) => {
        withProperty(p, "pcap-agent.cf.enabled", true);
        withProperty(p, "pcap-agent.cf.netns_dir", "/var/vcap/data/netns");
      });
      try {
        assert(r.ok, r.errors);
        assertEquals(r.config().cf, {
          enabled: true,
          container_store: "/var/vcap/data/container-metadata/store.json",
          runc_root: "/run/containerd/runc/garden",
          netns_dir: "/var/vcap/data/netns",
        });
        await expectValid(r, "pcap-agent", "cf.enabled");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("agent: a string drain_timeout is refused", async () => {
      const r = await render(
        "pcap-agent",
        (p) => withProperty(p, "pcap-agent.drain_timeout", "1m"),
      );
      try {
        assert(!r.ok);
        assertStringIncludes(
          r.errors,
          "drain.erb: pcap-agent.drain_timeout must be a whole number",
        );
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: listen.tls.enabled false needs no certificate", async () => {
      const r = await render("pcap-api", (p) => {
        withProperty(p, "pcap-api.listen.tls", { enabled: false });
      });
      try {
        await expectValid(r, "pcap-api", "plain http");
        assertEquals(r.read("config/certs/api.crt"), "");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: pcap-release's listen.tls.client_cas is refused clearly", async () => {
      const r = await render("pcap-api", (p) => {
        withProperty(p, "pcap-api.listen.tls.client_cas", pki.pki.caCert);
      });
      try {
        assert(!r.ok);
        assertStringIncludes(r.errors, "pcap-api.listen.tls.client_cas is not supported");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: agents_mtls.enabled false is refused", async () => {
      const r = await render("pcap-api", (p) => {
        withProperty(p, "pcap-api.agents_mtls.enabled", false);
      });
      try {
        assert(!r.ok);
        assertStringIncludes(r.errors, "always uses mutual TLS towards agents");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: no director_url fails rendering (no default)", async () => {
      const r = await render("pcap-api", (p) => {
        delete (at(p, "pcap-api.bosh") as Record<string, Json>).director_url;
      });
      try {
        assert(!r.ok);
        assertStringIncludes(r.errors, "Can't find property 'pcap-api.bosh.director_url'");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: an http director_url fails pre-start with pcap's text", async () => {
      const r = await render("pcap-api", (p) => {
        withProperty(p, "pcap-api.bosh.director_url", "http://10.0.0.6:25555");
      });
      try {
        assert(r.ok, r.errors);
        const pre = await runPreStart(r, "pcap-api");
        assertEquals(pre.code, 1, pre.out);
        assertStringIncludes(pre.out, "bosh.director_url");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: cf.api_url emits the cf section, and it passes --check-config", async () => {
      const r = await render("pcap-api", (p) => {
        withProperty(p, "pcap-api.cf", {
          api_url: "https://api.sys.example",
          agent_port: 9595,
          require_ssh_enabled: false,
          tls: { ca: pki.pki.caCert, server_name: "api.internal", skip_verify: true },
        });
      });
      try {
        assert(r.ok, r.errors);
        assertEquals(r.config().cf, {
          api_url: "https://api.sys.example",
          agent_port: 9595,
          require_ssh_enabled: false,
          tls: {
            ca: "/var/vcap/jobs/pcap-api/config/certs/cf-api-ca.crt",
            server_name: "api.internal",
            skip_verify: true,
          },
        });
        assertEquals(r.read("config/certs/cf-api-ca.crt").trim(), pki.pki.caCert.trim());
        await expectValid(r, "pcap-api", "cf");
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: cf defaults when only api_url is set", async () => {
      const r = await render(
        "pcap-api",
        (p) => withProperty(p, "pcap-api.cf.api_url", "https://a"),
      );
      try {
        assert(r.ok, r.errors);
        assertEquals(r.config().cf, {
          api_url: "https://a",
          agent_port: 9494,
          require_ssh_enabled: true,
          tls: { skip_verify: false },
        });
        assertEquals(r.read("config/certs/cf-api-ca.crt"), "");
        await expectValid(r, "pcap-api", "cf defaults");
      } finally {
        await cleanup(r);
      }
    });
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("bpm.yml grants exactly the capabilities needed", async (t) => {
  const pki = await makeReleasePki();
  try {
    await t.step("agent, defaults: NET_RAW and NET_ADMIN, nothing unsafe", async () => {
      const r = await renderJob("pcap-agent", propsFor("pcap-agent", pki));
      try {
        const p = bpmProcess(r);
        assertEquals(p.capabilities, ["NET_RAW", "NET_ADMIN"]);
        assertEquals(p.unsafe, undefined);
        assertEquals(p.additional_volumes, undefined);
        assertEquals(p.executable, "/var/vcap/packages/pcap/bin/pcap");
        assertEquals(p.args, [
          "agent",
          "--config",
          "/var/vcap/jobs/pcap-agent/config/pcap-agent.yml",
        ]);
        assertEquals(p.limits, { memory: "512M", open_files: 4096 });
      } finally {
        await cleanup(r);
      }
    });
    await t.step("agent, cf.enabled: + SYS_ADMIN, SYS_PTRACE, host pids, state paths", async () => {
      const r = await renderJob(
        "pcap-agent",
        withProperty(propsFor("pcap-agent", pki), "pcap-agent.cf.enabled", true),
      );
      try {
        const p = bpmProcess(r);
        assertEquals(p.capabilities, ["NET_RAW", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]);
        assertEquals(p.unsafe, {
          host_pid_namespace: true,
          unrestricted_volumes: [
            { path: "/run/containerd/runc/garden", writable: false, mount_only: true },
          ],
        });
        assertEquals(p.additional_volumes, [
          { path: "/var/vcap/data/container-metadata", writable: false, mount_only: true },
          { path: "/var/vcap/data/garden-cni/container-netns", writable: false, mount_only: true },
        ]);
      } finally {
        await cleanup(r);
      }
    });
    await t.step("api: no capabilities at all", async () => {
      const r = await renderJob("pcap-api", propsFor("pcap-api", pki));
      try {
        const p = bpmProcess(r);
        assertEquals(p.capabilities, undefined);
        assertEquals(p.unsafe, undefined);
        assertEquals(p.args, ["api", "--config", "/var/vcap/jobs/pcap-api/config/pcap-api.yml"]);
      } finally {
        await cleanup(r);
      }
    });
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
