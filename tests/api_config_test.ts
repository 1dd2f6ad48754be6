// api.yml loading: defaults, every kind of invalid input with the message an operator sees,
// and the --check-config result. Certificates are real lab PEM files.
import { Pki } from "../lab/pki.ts";
import { ConfigError } from "../lib/config_load.ts";
import { checkApiConfig, loadApiConfig } from "../server/config.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { stringify } from "yaml";

interface Fixture {
  dir: string;
  cert: string;
  key: string;
  ca: string;
  /** writes api.yml with `mutate` applied to a valid base config; returns its path */
  write(mutate?: (c: Record<string, Any>) => void, name?: string): Promise<string>;
}

// deno-lint-ignore no-explicit-any
type Any = any;

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pcap_cfg_" });
  try {
    const pki = await Pki.create(dir);
    const pair = await pki.issue("pcap-api", { client: true, server: true, dns: ["pcap-api"] });
    const f: Fixture = {
      dir,
      cert: pair.certPath,
      key: pair.keyPath,
      ca: pki.caPath,
      async write(mutate, name = "api.yml") {
        const c: Record<string, Any> = {
          id: "pcap-api/0",
          agents_mtls: { certificate: pair.certPath, private_key: pair.keyPath, ca: pki.caPath },
          bosh: { director_url: "https://10.0.0.6:25555" },
        };
        mutate?.(c);
        const path = `${dir}/${name}`;
        await Deno.writeTextFile(path, stringify(c));
        return path;
      },
    };
    await fn(f);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function loadFails(path: string, ...parts: string[]): Promise<string> {
  try {
    await loadApiConfig(path);
  } catch (e) {
    assert(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assertStringIncludes(e.message, path);
    for (const p of parts) assertStringIncludes(e.message, p);
    return e.message;
  }
  throw new Error(`expected ${path} to be refused`);
}

Deno.test("api config: minimal file gets defaults and loads PEM contents", async () => {
  await withFixture(async (f) => {
    const cfg = await loadApiConfig(await f.write());
    assertEquals(cfg.id, "pcap-api/0");
    assertEquals(cfg.logLevel, "info");
    assertEquals(cfg.listen, { address: "0.0.0.0", port: 8080, tls: undefined });
    assertEquals(cfg.buffer, { size: 100, upperLimit: 95, lowerLimit: 60 });
    assertEquals(cfg.concurrentCaptures, 5);
    assertEquals(cfg.drainTimeoutMs, 10_000);
    assertEquals(cfg.bosh.agentPort, 9494);
    assertEquals(cfg.bosh.tokenScope, "bosh.admin");
    assertEquals(cfg.bosh.tls, { ca: undefined, serverName: undefined, skipVerify: false });
    assertEquals(cfg.agentsMtls.skipVerify, false);
    assertStringIncludes(cfg.agentsMtls.certificate.pem, "-----BEGIN CERTIFICATE-----");
    assertStringIncludes(cfg.agentsMtls.privateKey.pem, "PRIVATE KEY-----");
    assertEquals(cfg.agentsMtls.ca.path, f.ca);
    assertEquals(cfg.limits, {
      perUserConcurrentCaptures: 2,
      maxWaitingSessions: 64,
      perUserWaitingSessions: 4,
      maxTargets: 100,
      maxDurationMs: 3_600_000,
      maxBytes: 1024 ** 3,
    });
    assertEquals(cfg.audit, { enabled: true, file: undefined });
    assertEquals(cfg.timeouts, {
      directorMs: 10_000,
      cloudControllerMs: 10_000,
      uaaMs: 10_000,
      agentConnectMs: 5_000,
    });
  });
});

Deno.test("api config: a full file with every key", async () => {
  await withFixture(async (f) => {
    const path = await f.write((c) => {
      Object.assign(c, {
        log_level: "debug",
        buffer: { size: 1000, upper_limit: 995, lower_limit: 900 },
        listen: {
          address: "127.0.0.1",
          port: 8443,
          tls: { certificate: f.cert, private_key: f.key },
        },
        concurrent_captures: 20,
        drain_timeout: "1m30s",
        limits: {
          per_user_concurrent_captures: 3,
          max_targets: 50,
          max_duration: "2h",
          max_bytes: "512MiB",
        },
        audit: { enabled: true, file: `${f.dir}/audit.log` },
        timeouts: { director: "5s", uaa: 2.5, agent_connect: "750ms" },
      });
      c.agents_mtls.server_name = "pcap-agent.service.cf.internal";
      c.agents_mtls.skip_verify = false;
      c.bosh = {
        director_url: "https://10.0.0.6:25555/",
        agent_port: 9495,
        token_scope: "bosh.read",
        tls: { ca: f.ca, server_name: "director", skip_verify: false },
      };
    });
    const cfg = await loadApiConfig(path);
    assertEquals(cfg.listen.address, "127.0.0.1");
    assertEquals(cfg.listen.tls?.certificate.path, f.cert);
    assertEquals(cfg.drainTimeoutMs, 90_000);
    assertEquals(cfg.limits.maxDurationMs, 7_200_000);
    assertEquals(cfg.limits.maxBytes, 512 * 1024 * 1024);
    assertEquals(cfg.timeouts, {
      directorMs: 5000,
      cloudControllerMs: 10_000,
      uaaMs: 2500,
      agentConnectMs: 750,
    });
    assertEquals(cfg.bosh.directorUrl, "https://10.0.0.6:25555");
    assertEquals(cfg.bosh.tls.serverName, "director");
    assertStringIncludes(cfg.bosh.tls.ca!.pem, "BEGIN CERTIFICATE");
    assertEquals(cfg.agentsMtls.serverName, "pcap-agent.service.cf.internal");
    const ok = await checkApiConfig(path);
    assert(ok.ok);
  });
});

Deno.test("api config: unknown keys name the key and the file", async () => {
  await withFixture(async (f) => {
    await loadFails(await f.write((c) => (c.colour = "blue")), 'key "colour"', "unknown key");
    await loadFails(
      await f.write((c) => (c.bosh.tls = { ca: f.ca, insecure: true })),
      'key "bosh.tls.insecure"',
      "unknown key",
    );
    // Accepting client_cas without enforcing it would mislead the operator.
    await loadFails(
      await f.write((
        c,
      ) => (c.listen = { tls: { certificate: f.cert, private_key: f.key, client_cas: f.ca } })),
      'key "listen.tls.client_cas"',
      "does not verify client certificates",
    );
  });
});

Deno.test("api config: wrong types, missing keys, bad values", async () => {
  await withFixture(async (f) => {
    await loadFails(
      await f.write((c) => (c.listen = { port: "eighty" })),
      'key "listen.port"',
      "expected number",
    );
    await loadFails(await f.write((c) => (c.listen = { port: 70000 })), 'key "listen.port"');
    await loadFails(await f.write((c) => delete c.agents_mtls), 'key "agents_mtls"', "required");
    await loadFails(await f.write((c) => delete c.id), 'key "id"', "required");
    await loadFails(
      await f.write((c) => (c.log_level = "chatty")),
      'key "log_level"',
      "fix its value",
    );
    await loadFails(
      await f.write((c) => (c.drain_timeout = "ten seconds")),
      'key "drain_timeout"',
      'invalid duration "ten seconds"',
    );
    await loadFails(
      await f.write((c) => (c.limits = { max_bytes: "lots" })),
      'key "limits.max_bytes"',
    );
    await loadFails(
      await f.write((c) => (c.bosh.director_url = "ftp://x")),
      'key "bosh.director_url"',
      "https URL",
    );
    await loadFails(await f.write((c) => delete c.bosh), 'key "bosh"', "no target resolver");
    await loadFails(
      await f.write((c) => (c.limits = { per_user_concurrent_captures: 9 })),
      'key "limits.per_user_concurrent_captures"',
      "concurrent_captures (5)",
    );
    await loadFails(
      await f.write((c) => (c.limits = { max_waiting_sessions: 3, per_user_waiting_sessions: 4 })),
      'key "limits.per_user_waiting_sessions"',
      "limits.max_waiting_sessions (3)",
    );
    await loadFails(
      await f.write((c) => (c.timeouts = { uaa: 0 })),
      'key "timeouts.uaa"',
      "must be > 0",
    );
  });
});

Deno.test("api config: the Director URL must be https, except on loopback", async () => {
  await withFixture(async (f) => {
    for (const url of ["http://10.0.0.6:25555", "http://director.example.com:25555"]) {
      await loadFails(
        await f.write((c) => (c.bosh.director_url = url)),
        'key "bosh.director_url"',
        "uses http",
        "loopback",
      );
    }
    for (const url of ["http://127.0.0.1:25555", "http://localhost:25555", "http://[::1]:25555"]) {
      const cfg = await loadApiConfig(await f.write((c) => (c.bosh.director_url = url)));
      assertEquals(cfg.bosh.directorUrl, url);
    }
  });
});

Deno.test("api config: durations bounded to 7 days, max_targets below the api source", async () => {
  await withFixture(async (f) => {
    // 2^31 ms (~24.8 days) and more would fire timers at once.
    for (const d of ["169h", 2 ** 31 / 1000, "600h"]) {
      await loadFails(
        await f.write((c) => (c.limits = { max_duration: d })),
        'key "limits.max_duration"',
        "7 days",
      );
    }
    await loadFails(
      await f.write((c) => (c.drain_timeout = "1000h")),
      'key "drain_timeout"',
      "7 days",
    );
    const ok = await loadApiConfig(await f.write((c) => (c.limits = { max_duration: "168h" })));
    assertEquals(ok.limits.maxDurationMs, 7 * 24 * 3600 * 1000);
    await loadFails(
      await f.write((c) => (c.limits = { max_targets: 65535 })),
      'key "limits.max_targets"',
    );
    const t = await loadApiConfig(await f.write((c) => (c.limits = { max_targets: 65534 })));
    assertEquals(t.limits.maxTargets, 65534);
  });
});

Deno.test("api config: buffer bounds lower < upper <= size", async () => {
  await withFixture(async (f) => {
    await loadFails(
      await f.write((c) => (c.buffer = { size: 100, upper_limit: 101, lower_limit: 50 })),
      'key "buffer.upper_limit"',
      "must be <= buffer.size (100), got 101",
    );
    await loadFails(
      await f.write((c) => (c.buffer = { size: 100, upper_limit: 90, lower_limit: 90 })),
      'key "buffer.lower_limit"',
      "must be < buffer.upper_limit (90), got 90",
    );
    const ok = await loadApiConfig(
      await f.write((c) => (c.buffer = { size: 100, upper_limit: 100, lower_limit: 99 })),
    );
    assertEquals(ok.buffer.upperLimit, 100);
  });
});

Deno.test("api config: missing and unreadable files; check-config lists them all", async () => {
  await withFixture(async (f) => {
    const missing = `${f.dir}/nope.pem`;
    await loadFails(
      await f.write((c) => (c.agents_mtls.ca = missing)),
      'key "agents_mtls.ca"',
      `file ${missing} does not exist`,
    );
    const notPem = `${f.dir}/not.pem`;
    await Deno.writeTextFile(notPem, "hello");
    await loadFails(
      await f.write((c) => (c.agents_mtls.certificate = notPem)),
      'key "agents_mtls.certificate"',
      "holds no PEM block",
    );
    const path = await f.write((c) => {
      c.agents_mtls.ca = missing;
      c.listen = { tls: { certificate: missing, private_key: f.key } };
      c.bosh.tls = { ca: missing };
      c.audit = { file: `${f.dir}/no/such/dir/audit.log` };
    });
    const res = await checkApiConfig(path);
    assert(!res.ok);
    assertEquals(res.errors.length, 4, res.errors.join("\n"));
    for (const key of ["listen.tls.certificate", "agents_mtls.ca", "bosh.tls.ca", "audit.file"]) {
      assert(res.errors.some((e) => e.includes(`key "${key}"`)), `no error for ${key}`);
    }
    const noFile = await checkApiConfig(`${f.dir}/absent.yml`);
    assert(!noFile.ok);
    assertStringIncludes(noFile.errors[0], "file not found");
    await Deno.writeTextFile(`${f.dir}/bad.yml`, "id: [unclosed\n");
    const bad = await checkApiConfig(`${f.dir}/bad.yml`);
    assert(!bad.ok);
    assertStringIncludes(bad.errors[0], "not valid YAML");
  });
});

Deno.test("api config: skip_verify is honoured but warned about loudly at start", async () => {
  const { ApiServer } = await import("../server/app.ts");
  const { createLogger } = await import("../lib/log.ts");
  await withFixture(async (f) => {
    const path = await f.write((c) => {
      c.listen = { address: "127.0.0.1" };
      c.bosh.tls = { skip_verify: true, server_name: "director.bosh.internal" };
      c.audit = { enabled: false };
    });
    const cfg = await loadApiConfig(path);
    assertEquals([cfg.bosh.tls.skipVerify, cfg.bosh.tls.serverName], [
      true,
      "director.bosh.internal",
    ]);
    const logs: string[] = [];
    const server = await ApiServer.start({
      config: cfg,
      log: createLogger({ component: "api", level: "info", sink: (l) => logs.push(l) }),
      port: 0,
    });
    await server.close();
    const warning = logs.map((l) => JSON.parse(l)).find((l) =>
      /INSECURE CONFIGURATION: bosh\.tls\.skip_verify/.test(l.msg ?? l.message ?? "")
    );
    assert(warning, `no warning in ${logs.join("\n")}`);
    assertEquals(warning.level, "warn");
  });
});

Deno.test("api config: metrics.enabled false takes /metrics off the (public) route", async () => {
  const { ApiServer } = await import("../server/app.ts");
  const { createLogger } = await import("../lib/log.ts");
  await withFixture(async (f) => {
    for (const enabled of [true, false]) {
      const cfg = await loadApiConfig(
        await f.write((c) => {
          c.listen = { address: "127.0.0.1" };
          c.audit = { enabled: false };
          c.metrics = { enabled };
        }),
      );
      const server = await ApiServer.start({
        config: cfg,
        log: createLogger({ component: "api", level: "error", sink: () => {} }),
        port: 0,
      });
      try {
        const m = await fetch(`${server.url}/metrics`);
        await m.body?.cancel();
        assertEquals(m.status, enabled ? 200 : 404);
        const h = await fetch(`${server.url}/health`);
        await h.body?.cancel();
        assertEquals(h.status, 200);
      } finally {
        await server.close();
      }
    }
  });
});

async function pcapApi(args: string[]) {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "api", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("pcap api --check-config prints the summary (exit 0) or the errors (exit 1)", async () => {
  await withFixture(async (f) => {
    const good = await f.write((c) => (c.limits = { max_duration: "2h" }));
    const ok = await pcapApi(["--check-config", good]);
    assertEquals(ok.code, 0, ok.stderr);
    const lines = ok.stdout.trim().split("\n");
    assertEquals(lines[0], `config OK: ${good}`);
    assertStringIncludes(ok.stdout, "  id: pcap-api/0\n");
    assertStringIncludes(ok.stdout, "  listen: http://0.0.0.0:8080\n");
    assertStringIncludes(ok.stdout, "  bosh: https://10.0.0.6:25555 (agents on port 9494");
    assertStringIncludes(ok.stdout, "max duration 7200 s");
    assert(!ok.stdout.includes("PRIVATE KEY"), "no key material in the summary");
    const bad = await f.write((c) => (c.colour = "red"), "bad.yml");
    const ko = await pcapApi(["--check-config", bad]);
    assertEquals(ko.code, 1);
    assertEquals(ko.stdout, "");
    assertStringIncludes(ko.stderr, `pcap api: invalid configuration: ${bad}: key "colour"`);
  });
});

Deno.test("api config: PEM files are checked like the agent's (X.509, key match)", async () => {
  await withFixture(async (f) => {
    await Deno.mkdir(`${f.dir}/other`);
    const other = await (await Pki.create(`${f.dir}/other`)).issue("other", { client: true });
    await loadFails(
      await f.write((c) => (c.agents_mtls.private_key = other.keyPath)),
      'key "agents_mtls.private_key"',
      "does not belong to the certificate",
    );
    await loadFails(
      await f.write((
        c,
      ) => (c.listen = { tls: { certificate: f.cert, private_key: other.keyPath } })),
      'key "listen.tls.private_key"',
      "key that belongs",
    );
    // A private key where a certificate belongs, and a garbled certificate.
    await loadFails(
      await f.write((c) => (c.agents_mtls.ca = f.key)),
      'key "agents_mtls.ca"',
      "holds no PEM block",
    );
    const garbled = `${f.dir}/garbled.pem`;
    await Deno.writeTextFile(
      garbled,
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    await loadFails(
      await f.write((c) => (c.bosh.tls = { ca: garbled })),
      'key "bosh.tls.ca"',
      "is not a valid certificate",
    );
    await loadFails(
      await f.write((c) => (c.agents_mtls.private_key = `${f.dir}/absent.pem`)),
      'key "agents_mtls.private_key"',
      "does not exist",
    );
  });
});
