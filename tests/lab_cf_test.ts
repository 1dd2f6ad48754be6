// The lab's CF option (lab/lab_cf.ts): per-cell paths and configs (pure), and a landscape asked
// for CF without cells, or in loopback mode, refuses clearly and leaves nothing behind.
import { cellAgentConfig, cellPaths, labApiCfConfig } from "../lab/lab_cf.ts";
import { isRoot, run } from "../lab/netns.ts";
import { Landscape } from "../lab/landscape.ts";
import { assert, assertEquals, assertRejects } from "./support/assert.ts";

Deno.test("lab cf: each cell has its own store and runc root under the run dir", () => {
  const a = cellPaths("/tmp/run", { group: "diego-cell", index: 0 });
  const b = cellPaths("/tmp/run", { group: "diego-cell", index: 1 });
  assertEquals(a.storePath, "/tmp/run/diego/diego-cell-0/container-metadata/store.json");
  assertEquals(a.runcRoot, "/tmp/run/diego/diego-cell-0/runc");
  assert(a.storePath !== b.storePath && a.runcRoot !== b.runcRoot);
  assertEquals(cellPaths("/r", { group: "../x", index: 2 }).base, "/r/diego/.._x-2");
  assertEquals(cellAgentConfig("/tmp/run", { group: "diego-cell", index: 1 }), {
    cf: { enabled: true, container_store: b.storePath, runc_root: b.runcRoot },
  });
  assertEquals(labApiCfConfig("https://127.0.0.1:1", 9494, "/ca.pem"), {
    cf: {
      api_url: "https://127.0.0.1:1",
      agent_port: 9494,
      require_ssh_enabled: true,
      tls: { ca: "/ca.pem" },
    },
  });
});

async function refusedAndClean(opts: Parameters<typeof Landscape.start>[0], text: string) {
  const lines: string[] = [];
  await assertRejects(
    () => Landscape.start({ ...opts, log: (l) => lines.push(l) }),
    Error,
    text,
  );
  const runId = /^lab (pc[0-9a-z]{4})/.exec(lines.join("\n"))?.[1];
  if (runId && isRoot()) {
    const ns = await run("ip", ["netns", "list"]);
    assertEquals(ns.stdout.split("\n").filter((l) => l.startsWith(runId)), [], "namespaces left");
  }
}

Deno.test({
  name: "lab cf: no Diego cells, or loopback mode, is refused with what to do; nothing is left",
  ignore: !isRoot(),
  async fn() {
    await refusedAndClean(
      { groups: { router: 1 }, cf: true },
      'no VMs in group "diego-cell"; add it to groups',
    );
    await refusedAndClean(
      { groups: { "diego-cell": 1 }, cf: true, loopback: true, agents: false },
      "app containers need the cells' namespaces",
    );
  },
});
