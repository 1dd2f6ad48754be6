// The instances table and the agent health → state mapping (pure).
import { assertEquals, assertStringIncludes } from "./support/assert.ts";
import { agentColumn, formatInstancesTable } from "../cli/instances_table.ts";
import { probeOf } from "../server/agent_probe.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { InstancesAnswer } from "../protocol/instances.ts";

const health = (extra: Record<string, unknown> = {}) => ({
  healthy: true,
  draining: false,
  id: "agent-1",
  version: "1.2.3",
  protocol_version: PROTOCOL_VERSION,
  min_protocol_version: 1,
  active_captures: 0,
  ...extra,
});

Deno.test("probeOf: up, draining, incompatible, and not an agent's health", () => {
  assertEquals(probeOf("router/0", health()), {
    status: "up",
    version: "1.2.3",
    protocol_version: PROTOCOL_VERSION,
    active_captures: 0,
  });
  assertEquals(probeOf("router/0", health({ draining: true })).status, "draining");
  const old = probeOf("router/0", health({ protocol_version: 0 }));
  assertEquals(old.status, "incompatible");
  assertStringIncludes(old.reason!, "agent router/0 speaks protocol v0");
  const newer = probeOf("router/0", health({ min_protocol_version: PROTOCOL_VERSION + 1 }));
  assertEquals(newer.status, "incompatible");
  assertStringIncludes(newer.reason!, "upgrade the api");
  for (const junk of [undefined, "ok", { version: 1 }, health({ active_captures: -1 })]) {
    const p = probeOf("router/0", junk);
    assertEquals(p.status, "unreachable");
    assertStringIncludes(p.reason!, "answered /health with no agent health");
  }
});

const answer: InstancesAnswer = {
  resolver: "bosh",
  facts: { deployment: "cf" },
  targets: [
    {
      origin: "router/0 (aaaa)",
      address: "198.18.0.10",
      port: 9494,
      instance: { deployment: "cf", group: "router", index: 0, id: "aaaa" },
      agent: { status: "up", version: "1.2.3", active_captures: 2 },
    },
    {
      origin: "diego-cell/12 (bbbb)",
      address: "198.18.0.11",
      port: 9494,
      instance: { deployment: "cf", group: "diego-cell", index: 12, id: "bbbb" },
      agent: { status: "unreachable", reason: "agent diego-cell/12 is unreachable: refused" },
    },
    {
      origin: "db/0 (cccc)",
      address: "198.18.0.12",
      port: 9494,
      instance: { deployment: "cf", group: "db", index: 0, id: "cccc" },
      agent: { status: "draining", version: "1.2.3" },
    },
  ],
  skipped: [{ origin: "api/1 (dddd)", reason: "has no IP address\x1b[2J" }],
};

Deno.test("formatInstancesTable: aligned columns, capture-file names, skipped and a summary", () => {
  assertEquals(
    formatInstancesTable(answer, "eth0"),
    [
      "SOURCE                     ADDRESS           AGENT",
      "router/0 (aaaa) eth0       198.18.0.10:9494  up (pcap 1.2.3, 2 capturing)",
      "diego-cell/12 (bbbb) eth0  198.18.0.11:9494  unreachable: agent diego-cell/12 is " +
      "unreachable: refused",
      "db/0 (cccc) eth0           198.18.0.12:9494  draining (pcap 1.2.3): a capture would be " +
      "refused",
      "api/1 (dddd)               -                 skipped: has no IP address",
      "3 sources, 1 agent up, 1 skipped",
      "",
    ].join("\n"),
  );
  assertEquals(agentColumn({ ...answer.targets[0], agent: { status: "up" } }), "up");
  assertEquals(
    agentColumn({ ...answer.targets[0], agent: { status: "incompatible" } }),
    "incompatible: no reason given",
  );
});

Deno.test("formatInstancesTable: a preview (agents not probed) has no AGENT column", () => {
  const unprobed: InstancesAnswer = {
    ...answer,
    targets: answer.targets.map((t) => ({ ...t, agent: { status: "unprobed" as const } })),
  };
  assertEquals(
    formatInstancesTable(unprobed, "eth0"),
    [
      "SOURCE                     ADDRESS",
      "router/0 (aaaa) eth0       198.18.0.10:9494",
      "diego-cell/12 (bbbb) eth0  198.18.0.11:9494",
      "db/0 (cccc) eth0           198.18.0.12:9494",
      "api/1 (dddd)               -                 skipped: has no IP address",
      "3 sources, 1 skipped",
      "",
    ].join("\n"),
  );
  assertEquals(agentColumn(unprobed.targets[0]), "not asked");
});
