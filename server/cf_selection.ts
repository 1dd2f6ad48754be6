/**
 * Chooses the app instances to capture from a process's stats (pure; DESIGN §2, CF).
 *
 * - Indexes select instances; none means every instance the stats list.
 * - An index the stats do not list is bad input (INVALID_REQUEST naming the indexes there are).
 * - Instances that are not RUNNING (STARTING, CRASHED, DOWN, ...) are skipped with their state,
 *   so the others are still captured; they are reported per index, never fatal on their own.
 * - The agent is told which container: the instance guid plus the app guid (CC API ≥ 3.191.0),
 *   or, from an older CC without `instance_guid`, the app guid plus `instance_internal_ip`.
 * - More targets than `maxTargets` → LIMIT_REACHED.
 */
import { ApiError, limitReached } from "./limits.ts";
import { instanceGuidProblem, ipv4Problem } from "../protocol/cf_ids.ts";

/** One entry of `GET /v3/processes/:guid/stats`, as cc_client parses it. */
export interface InstanceStat {
  index: number;
  state: string;
  /** cell address; "" for CRASHED, absent for DOWN */
  host?: string;
  /** "" for CRASHED, absent for DOWN and on CCs before 3.191.0 */
  instanceGuid?: string;
  internalIp?: string;
}

/** How the agent finds the container (start request `target`). */
export type ContainerRef =
  | { app_guid: string; instance_guid: string }
  | { app_guid: string; ip: string };

export interface CfTarget {
  index: number;
  /** cell address the agent listens on */
  host: string;
  container: ContainerRef;
  /** instance guid, or `ip:<internal ip>` on old CCs: the source's id */
  id: string;
  /** "APP/INDEX (INSTANCE-GUID)": how sources are named in status messages and pcapng */
  origin: string;
}

export interface CfSkipped {
  index: number;
  origin: string;
  state: string;
  reason: string;
}

export interface CfSelection {
  targets: CfTarget[];
  skipped: CfSkipped[];
}

export interface CfSelectionRequest {
  app: { guid: string; name: string };
  /** process type, for messages */
  process: string;
  indexes: number[];
  maxTargets: number;
}

function describeIndexes(stats: InstanceStat[]): string {
  if (stats.length === 0) return "it has no instances";
  return `it has ${stats.length === 1 ? "index" : "indexes"} ` +
    stats.map((s) => s.index).sort((a, b) => a - b).join(", ");
}

/** The container reference for a RUNNING instance, or why there is none. */
function containerOf(appGuid: string, s: InstanceStat): ContainerRef | string {
  if (s.instanceGuid !== undefined && s.instanceGuid !== "") {
    const problem = instanceGuidProblem(s.instanceGuid);
    return problem
      ? `the Cloud Controller reports a malformed ${problem}`
      : { app_guid: appGuid, instance_guid: s.instanceGuid };
  }
  // CC before 3.191.0: no instance_guid; the cell finds the container by app guid + ip.
  if (s.internalIp) {
    const problem = ipv4Problem(s.internalIp);
    return problem
      ? `the Cloud Controller reports a malformed ${problem}`
      : { app_guid: appGuid, ip: s.internalIp };
  }
  return "the Cloud Controller reports neither instance_guid nor instance_internal_ip for it";
}

export function selectInstances(stats: InstanceStat[], req: CfSelectionRequest): CfSelection {
  const wanted = [...new Set(req.indexes)].sort((a, b) => a - b);
  const byIndex = new Map(stats.map((s) => [s.index, s]));
  const unknown = wanted.filter((i) => !byIndex.has(i));
  if (unknown.length > 0) {
    throw new ApiError(
      "INVALID_REQUEST",
      `app '${req.app.name}' (process ${req.process}) has no instance ` +
        `${unknown.join(", ")}; ${describeIndexes(stats)}`,
    );
  }
  const chosen = wanted.length > 0
    ? wanted.map((i) => byIndex.get(i)!)
    : [...stats].sort((a, b) => a.index - b.index);
  const targets: CfTarget[] = [];
  const skipped: CfSkipped[] = [];
  for (const s of chosen) {
    const label = `${req.app.name}/${s.index}`;
    if (s.state !== "RUNNING") {
      skipped.push({
        index: s.index,
        origin: label,
        state: s.state,
        reason: `is ${s.state}, not RUNNING; it is not captured`,
      });
      continue;
    }
    const container = containerOf(req.app.guid, s);
    if (typeof container === "string" || !s.host) {
      skipped.push({
        index: s.index,
        origin: label,
        state: s.state,
        reason: typeof container === "string" ? container : "the Cloud Controller names no cell",
      });
      continue;
    }
    const id = "instance_guid" in container ? container.instance_guid : `ip:${container.ip}`;
    targets.push({
      index: s.index,
      host: s.host,
      container,
      id,
      origin: `${label} (${"instance_guid" in container ? container.instance_guid : container.ip})`,
    });
  }
  if (targets.length > req.maxTargets) {
    throw limitReached(
      "max_targets",
      req.maxTargets,
      `${targets.length} instances selected, more than limits.max_targets (${req.maxTargets}); ` +
        "select fewer with --index",
    );
  }
  return { targets, skipped };
}

/** START_CAPTURE_FAILED when no instance is left, naming why for each. */
export function requireTargets(sel: CfSelection, appName: string): void {
  if (sel.targets.length > 0) return;
  const why = sel.skipped.length === 0
    ? "it has no instances"
    : sel.skipped.map((s) => `${s.origin} ${s.reason}`).join("; ");
  throw new ApiError(
    "START_CAPTURE_FAILED",
    `no instance of app '${appName}' can be captured: ${why}`,
  );
}
