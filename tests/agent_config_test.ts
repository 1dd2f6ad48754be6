/**
 * `pcap agent` configuration: each invalid case gives one error naming the file, the key and the
 * fix; `--check-config` exits 0 with a summary or 1 with the error.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./support/assert.ts";
import { agentYaml, type TestPki, withPki } from "./support/agent_harness.ts";
import { loadAgentConfig } from "../agent/config.ts";
import { ConfigError } from "../lib/config_load.ts";

/** Runs `fn` with a fresh test PKI in its own temp dir, removed afterwards (also on failure). */
const withDir = (fn: (t: TestPki) => Promise<void>) => withPki("agent-config-", fn);

async function write(t: TestPki, name: string, text: string): Promise<string> {
  const file = `${t.dir}/${name}.yml`;
  await Deno.writeTextFile(file, text);
  return file;
}

Deno.test("a valid config loads with defaults and PEM material", () =>
  withDir(async (t) => {
    const file = await write(t, "valid", agentYaml(t, { allowed: ["pcap-api"] }));
    const { config, tls } = await loadAgentConfig(file);
    assertEquals(config.id, "test-vm/0");
    assertEquals(config.buffer, { size: 100, upperLimit: 98, lowerLimit: 70 });
    assertEquals(config.limits, { concurrentCaptures: 2, maxDurationMs: 3_600_000 });
    assertEquals(config.listen.allowedNames, ["pcap-api"]);
    assertEquals(config.capture.timeoutMs, 100);
    assertStringIncludes(tls.key, "PRIVATE KEY");
    // pcap-release's own keys (listen.tls.ca instead of client_cas) still work; port defaults.
    const legacy = await write(
      t,
      "legacy",
      `id: router/0\nlog_level: info\nlisten:\n  tls:\n    certificate: ${t.server.certPath}\n` +
        `    private_key: ${t.server.keyPath}\n    ca: ${t.pki.caPath}\n` +
        `buffer:\n  size: 100\n  upper_limit: 98\n  lower_limit: 70\n`,
    );
    const l = (await loadAgentConfig(legacy)).config;
    assertEquals(l.listen.port, 9494);
    assertEquals(l.listen.address, "0.0.0.0");
    assertEquals(l.listen.paths.clientCas, t.pki.caPath);
  }));

Deno.test("each invalid config gives one error naming the file, the key and the fix", () =>
  withDir(async (t) => {
    const dir = t.dir;
    const base = agentYaml(t);
    const other = await t.pki.issue("unrelated", { server: true });
    await Deno.writeTextFile(`${dir}/not-pem.txt`, "hello\n");
    const cases: { name: string; text?: string; file?: string; key: string; includes: string }[] = [
      { name: "unknown key", text: base + "colour: red\n", key: "colour", includes: "unknown key" },
      {
        name: "unknown nested key",
        text: base.replace("client_cas:", "client_ca_typo: x\n    client_cas:"),
        key: "listen.tls.client_ca_typo",
        includes: "unknown key",
      },
      {
        name: "wrong type",
        text: base.replace("port: 0", 'port: "ninety"'),
        key: "listen.port",
        includes: "fix its type",
      },
      {
        name: "port out of range",
        text: base.replace("port: 0", "port: 70000"),
        key: "listen.port",
        includes: "fix its value",
      },
      {
        name: "missing id",
        text: base.replace("id: test-vm/0\n", ""),
        key: "id",
        includes: "missing",
      },
      {
        name: "bad log level",
        text: base.replace("log_level: debug", "log_level: verbose"),
        key: "log_level",
        includes: 'expected one of "debug"|"info"|"warn"|"error"; fix its value',
      },
      {
        name: "upper above size",
        text: base + "buffer:\n  size: 10\n  upper_limit: 20\n  lower_limit: 5\n",
        key: "buffer.upper_limit",
        includes: "at most the size",
      },
      {
        name: "lower not below upper",
        text: base + "buffer:\n  size: 10\n  upper_limit: 5\n  lower_limit: 5\n",
        key: "buffer.lower_limit",
        includes: "must be below",
      },
      {
        name: "no tls",
        text: "id: a\nlisten:\n  port: 9494\n",
        key: "listen.tls",
        includes: "missing",
      },
      {
        name: "no client_cas",
        text: base.replace(/\n {4}client_cas: .*/, ""),
        key: "listen.tls.client_cas",
        includes: "is required",
      },
      {
        name: "tls disabled",
        text: base.replace("tls:\n", "tls:\n    enabled: false\n"),
        key: "listen.tls.enabled",
        includes: "always serves mutual TLS",
      },
      {
        name: "certificate file missing",
        text: base.replace(t.server.certPath, `${dir}/nope.pem`),
        key: "listen.tls.certificate",
        includes: "does not exist",
      },
      {
        name: "certificate not PEM",
        text: base.replace(t.server.certPath, `${dir}/not-pem.txt`),
        key: "listen.tls.certificate",
        includes: "no PEM",
      },
      {
        name: "key of another certificate",
        text: base.replace(t.server.keyPath, other.keyPath),
        key: "listen.tls.private_key",
        includes: "key that belongs",
      },
      {
        name: "duration above 7 days (timers would fire at once)",
        text: base + "limits:\n  max_duration: 600h\n",
        key: "limits.max_duration",
        includes: "7 days",
      },
      {
        name: "bad duration",
        text: base + "limits:\n  max_duration: soon\n",
        key: "limits.max_duration",
        includes: "not a duration",
      },
      {
        name: "zero concurrency",
        text: base + "limits:\n  concurrent_captures: 0\n",
        key: "limits.concurrent_captures",
        includes: "expected number to be >0; fix its value",
      },
      { name: "not YAML", text: "id: [unclosed\n", key: "", includes: "not valid YAML" },
      { name: "missing file", file: `${dir}/absent.yml`, key: "", includes: "file not found" },
      { name: "unreadable file", file: dir, key: "", includes: "cannot read" },
    ];
    for (const c of cases) {
      const file = c.file ?? await write(t, c.name.replaceAll(" ", "-"), c.text!);
      const err = await assertRejects(() => loadAgentConfig(file), ConfigError).catch((e) => {
        throw new Error(`${c.name}: ${e.message}`);
      }) as ConfigError;
      assertEquals(err.key, c.key, `${c.name}: ${err.message}`);
      assertStringIncludes(err.message, file, c.name);
      if (c.key) assertStringIncludes(err.message, `key "${c.key}"`, c.name);
      assertStringIncludes(err.message, c.includes, c.name);
      assert(!err.message.includes("PRIVATE KEY"), `${c.name}: no key material in errors`);
    }
  }));

async function cli(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../agent/agent_main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("--check-config exits 0 with a summary, 1 with the error; --help 0", () =>
  withDir(async (t) => {
    const good = await write(t, "check-good", agentYaml(t, { port: 9494 }));
    const ok = await cli(["--check-config", good]);
    assertEquals(ok.code, 0, ok.stderr);
    assertStringIncludes(ok.stdout, "config OK");
    assertStringIncludes(ok.stdout, "test-vm/0");
    assertStringIncludes(ok.stdout, ":9494");
    assert(!ok.stdout.includes("PRIVATE KEY"));
    const bad = await write(t, "check-bad", agentYaml(t) + "colour: red\n");
    const ko = await cli(["--check-config", bad]);
    assertEquals(ko.code, 1);
    assertStringIncludes(ko.stderr, `${bad}: key "colour": unknown key`);
    assertEquals(ko.stderr.trim().split("\n").length, 1, "one error line");
    const serveBad = await cli(["--config", bad]);
    assertEquals(serveBad.code, 1);
    assertStringIncludes(serveBad.stderr, "colour");
    const help = await cli(["--help"]);
    assertEquals(help.code, 0);
    assertStringIncludes(help.stdout, "--check-config");
    assertEquals((await cli([])).code, 2);
  }));
