/**
 * Chooses capture targets among a deployment's instances (pure; DESIGN §2.3).
 *
 * Rules:
 * - `groups` (`-g`, repeatable) names instance groups; groups named only by a qualified selector
 *   (`router/0`) are selected too, so `-i router/0` alone works.
 * - Selectors (`-i`, repeatable): `group/id`, `group/index`, a bare id or a bare index. A bare
 *   index applies to EVERY selected group (`-g a -g b -i 0` → a/0 and b/0); a bare id matches
 *   wherever that id lives, and selects its group without `-g`.
 * - Selectors narrow only the groups they concern: a group no selector touches contributes all
 *   its instances (`-g a -g b -i a/0` → a/0 plus all of b).
 * - Every unknown group or selector is reported in one INVALID_REQUEST with the available groups.
 * - Instances without an IP (no VM yet, detached) are returned in `skipped`, not treated as fatal.
 * - More targets than `maxTargets` → LIMIT_REACHED naming max_targets and its value.
 */
import { ApiError, limitReached } from "./errors.ts";
import type { Instance } from "./director_client.ts";

export interface Target {
  group: string;
  index: number | null;
  id: string;
  ip: string;
  /** "group/index (id)": how sources are named in status messages and pcapng interfaces */
  origin: string;
  agentId?: string;
  az?: string;
}

export interface Skipped {
  group: string;
  index: number | null;
  id: string;
  origin: string;
  reason: string;
}

export interface Selection {
  targets: Target[];
  skipped: Skipped[];
}

export interface SelectionRequest {
  groups: string[];
  instances?: string[];
}

interface Selector {
  text: string;
  group?: string;
  /** index or id */
  key: string;
  matched: boolean;
}

export function originOf(i: Pick<Instance, "job" | "index" | "id">): string {
  return `${i.job}/${i.index ?? "?"} (${i.id})`;
}

function parseSelector(text: string): Selector {
  const parts = text.split("/");
  if (parts.length > 2 || parts.some((p) => p.trim() === "")) {
    throw new ApiError(
      "INVALID_REQUEST",
      `instance selector '${text}' is malformed; use group/index, group/id, an index or an id`,
    );
  }
  return parts.length === 2
    ? { text, group: parts[0], key: parts[1], matched: false }
    : { text, key: parts[0], matched: false };
}

function matches(sel: Selector, inst: Instance): boolean {
  if (sel.group !== undefined && sel.group !== inst.job) return false;
  return sel.key === inst.id || (/^\d+$/.test(sel.key) && Number(sel.key) === inst.index);
}

function describeGroups(instances: Instance[]): string {
  const counts = new Map<string, number>();
  for (const i of instances) counts.set(i.job, (counts.get(i.job) ?? 0) + 1);
  if (counts.size === 0) return "the deployment has no instances";
  return "available groups: " + [...counts].map(([g, n]) => `${g} (${n})`).join(", ");
}

export function selectTargets(
  instances: Instance[],
  req: SelectionRequest,
  maxTargets: number,
): Selection {
  const selectors = (req.instances ?? []).map(parseSelector);
  // A bare id is unique in the deployment, so it names its group by itself; a bare index does not.
  const impliedGroups = selectors.flatMap((s) =>
    s.group ??
      (/^\d+$/.test(s.key) ? [] : instances.filter((i) => i.id === s.key).map((i) => i.job))
  );
  const groups = [...new Set([...req.groups, ...impliedGroups])];
  if (groups.length === 0) {
    throw new ApiError(
      "INVALID_REQUEST",
      `name at least one instance group (-g); ${describeGroups(instances)}`,
    );
  }
  const known = new Set(instances.map((i) => i.job));
  const unknownGroups = groups.filter((g) => !known.has(g));

  const chosen: Instance[] = [];
  for (const group of groups) {
    const members = instances
      .filter((i) => i.job === group)
      .sort((a, b) => (a.index ?? Infinity) - (b.index ?? Infinity) || a.id.localeCompare(b.id));
    // Selectors that concern this group: qualified for it, or bare.
    const relevant = selectors.filter((s) => s.group === undefined || s.group === group);
    for (const inst of members) {
      const hits = relevant.filter((s) => matches(s, inst));
      hits.forEach((s) => (s.matched = true));
      if (relevant.length === 0 || hits.length > 0) chosen.push(inst);
    }
  }

  const unknownSelectors = selectors.filter((s) =>
    !s.matched && (s.group === undefined || known.has(s.group))
  );
  if (unknownGroups.length > 0 || unknownSelectors.length > 0) {
    const parts: string[] = [];
    if (unknownGroups.length > 0) {
      parts.push(`unknown instance group(s): ${unknownGroups.join(", ")}`);
    }
    if (unknownSelectors.length > 0) {
      parts.push(
        `no instance matches: ${unknownSelectors.map((s) => s.text).join(", ")}` +
          ` in the selected group(s) ${groups.filter((g) => known.has(g)).join(", ")}`,
      );
    }
    throw new ApiError("INVALID_REQUEST", `${parts.join("; ")}; ${describeGroups(instances)}`);
  }

  const targets: Target[] = [];
  const skipped: Skipped[] = [];
  const seen = new Set<string>();
  for (const inst of chosen) {
    if (seen.has(inst.id)) continue;
    seen.add(inst.id);
    const origin = originOf(inst);
    // The first IP is the one on the instance's default network, where the agent listens.
    const ip = inst.ips.find((a) => a.trim() !== "");
    if (!ip) {
      skipped.push({
        group: inst.job,
        index: inst.index,
        id: inst.id,
        origin,
        reason: inst.expects_vm === false || !inst.cid
          ? "has no VM, so there is nothing to capture on"
          : "has no IP address reported by the Director",
      });
      continue;
    }
    targets.push({
      group: inst.job,
      index: inst.index,
      id: inst.id,
      ip,
      origin,
      agentId: inst.agent_id ?? undefined,
      az: inst.az ?? undefined,
    });
  }
  if (targets.length > maxTargets) {
    throw limitReached(
      "max_targets",
      maxTargets,
      `the selection has ${targets.length} targets, the api allows at most ${maxTargets} ` +
        "(limits.max_targets); select fewer instances",
    );
  }
  return { targets, skipped };
}
