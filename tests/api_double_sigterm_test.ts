/**
 * Issue 12 defect 3: a second SIGTERM while the api process drains must not kill it. It aborts
 * the remaining captures, writes their audit lines and exits 0. The capture is held in its drain
 * by an agent that never ends its stream (the drain would otherwise wait for its idle timeout).
 */
import { stringify } from "yaml";
import { assert, assertEquals } from "./support/assert.ts";
import { connect, startFakeAgent, withApiLab } from "./support/api_harness.ts";
import { DEFAULT_AGENT_PORT, REPO_ROOT, waitHealthy } from "../lab/lab_agents.ts";
import { freePort } from "../lab/lab_api.ts";
import { deadline, TIMED_OUT } from "../lib/deadline.ts";

/** Waits for `pred` with a deadline, polling; fails with `what`. */
async function until(what: string, pred: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("api: a second SIGTERM during the drain aborts the captures, audits them, exits 0", async () => {
  await withApiLab({ groups: { router: 1 } }, async (lab) => {
    const token = await lab.mintToken();
    const rnd = crypto.getRandomValues(new Uint8Array(3));
    const addr = `127.${1 + rnd[0] % 250}.${rnd[1]}.${2 + rnd[2] % 250}`;
    const cert = await lab.pki.issue("stuck-agent", { server: true, ips: [addr] });
    const fake = await startFakeAgent(cert, {
      mode: "silent",
      hostname: addr,
      port: DEFAULT_AGENT_PORT,
    });
    lab.director.deployments.push({
      name: "stuck",
      instances: [{ job: "fake", index: 0, id: crypto.randomUUID(), ips: [addr] }],
    });
    const port = freePort();
    const auditFile = `${lab.dir}/double-sigterm-audit.log`;
    const configPath = `${lab.dir}/double-sigterm-api.yml`;
    await Deno.writeTextFile(
      configPath,
      stringify(lab.apiConfig(port, {
        drain_timeout: "120s",
        audit: { enabled: true, file: auditFile },
      })),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${REPO_ROOT}/main.ts`, "api", "--config", configPath],
      cwd: REPO_ROOT,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let log = "";
    const logged = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of child.stderr) log += dec.decode(chunk, { stream: true });
    })();
    const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
    let exited = false;
    try {
      const url = `https://127.0.0.1:${port}`;
      await waitHealthy({ url: `${url}/health`, client, timeoutMs: 30_000, what: "api" });
      const c = connect(lab, url.replace(/^http/, "ws"), token);
      c.start({ bosh: { deployment: "stuck", groups: ["fake"] } });
      await c.waitFor("the stuck source", (r) => r.sources.length === 1);
      child.kill("SIGTERM");
      await until("the api to drain", () => log.includes("api draining"));
      child.kill("SIGTERM");
      const status = await deadline(child.status, 60_000);
      assert(status !== TIMED_OUT, `the api did not exit after the second SIGTERM\n${log}`);
      exited = true;
      assertEquals(status.signal, null, `killed by a signal\n${log}`);
      assertEquals(status.code, 0, log);
      assert(log.includes("second signal while draining"), log);
      const closed = await c.closed;
      assert(closed.code !== 1000 || c.got.kinds.at(-1) === "END", JSON.stringify(closed));
      const lines = (await Deno.readTextFile(auditFile)).trim().split("\n").filter(Boolean);
      const records = lines.map((l) => JSON.parse(l));
      assertEquals(records.length, 1, lines.join("\n"));
      assertEquals(records[0].deployment, "stuck", lines[0]);
      assert(typeof records[0].outcome === "string" && records[0].outcome !== "", lines[0]);
      assert(log.includes("api stopped"), log);
    } finally {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
        await child.status;
      }
      await logged;
      client.close();
      await fake.stop();
    }
  });
});
