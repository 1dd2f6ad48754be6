/**
 * The table of `pcap-bosh instances`, `pcap-cf instances` and `capture --dry-run` (pure): one
 * line per source a capture would have (its name in the capture file, the agent's address, and
 * whether the agent answers), then the selected instances that would be skipped.
 *
 * @module
 */
import type { InstancesAnswer, ListedTarget } from "../protocol/instances.ts";
import { sanitize } from "./progress.ts";
import { sourceName } from "./bosh_capture.ts";

/** What the agent column says: `up (pcap 1.2.3)`, `draining (…)`, `unreachable: why`. */
export function agentColumn(t: ListedTarget): string {
  const a = t.agent;
  const version = a.version ? `pcap ${a.version}` : "";
  const busy = a.active_captures ? `${a.active_captures} capturing` : "";
  const facts = [version, busy].filter(Boolean).join(", ");
  switch (a.status) {
    case "up":
      return facts ? `up (${facts})` : "up";
    case "draining":
      return `draining${facts ? ` (${facts})` : ""}: a capture would be refused`;
    case "unprobed":
      return "not asked";
    default:
      return `${a.status}: ${a.reason ?? "no reason given"}`;
  }
}

/**
 * The table, one line per target (aligned), `iface` naming the interface to be captured. When no
 * agent was probed (a capture's preview) the AGENT column and the count of agents up are left out.
 */
export function formatInstancesTable(answer: InstancesAnswer, iface: string): string {
  const probed = answer.targets.some((t) => t.agent.status !== "unprobed");
  const rows = answer.targets.map((t) =>
    [
      sourceName({ origin: t.origin, interface: iface, instance: t.instance }),
      `${t.address}:${t.port}`,
      probed ? agentColumn(t) : "",
    ].map(sanitize)
  );
  for (const s of answer.skipped) {
    rows.push([sanitize(s.origin), "-", `skipped: ${sanitize(s.reason)}`]);
  }
  const header = ["SOURCE", "ADDRESS", probed ? "AGENT" : ""];
  const widths = [0, 1].map((i) => Math.max(header[i].length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    `${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${r[2]}`.trimEnd();
  const up = answer.targets.filter((t) => t.agent.status === "up").length;
  const summary = `${answer.targets.length} source${answer.targets.length === 1 ? "" : "s"}` +
    (probed ? `, ${up} agent${up === 1 ? "" : "s"} up` : "") +
    (answer.skipped.length ? `, ${answer.skipped.length} skipped` : "");
  return [line(header), ...rows.map(line), summary].join("\n") + "\n";
}
