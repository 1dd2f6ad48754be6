/**
 * The agent's `cf` configuration section (DESIGN §4): capture inside app containers on a Diego
 * cell. A self-contained sub-schema so that agent/config.ts only adds `cf: CfAgentConfig`.
 * Defaults are the real paths on a cell.
 */
import { z } from "zod";

const AbsPath = z.string().startsWith("/", "must be an absolute path");

export const CfAgentConfig = z.strictObject({
  /** serve CF container captures; needs setns (CAP_SYS_ADMIN) in bpm */
  enabled: z.boolean().default(false),
  container_store: AbsPath.default("/var/vcap/data/container-metadata/store.json"),
  runc_root: AbsPath.default("/run/containerd/runc/garden"),
  /** garden-cni's bind mounts of container netns, informational: the agent uses /proc/PID */
  netns_dir: AbsPath.default("/var/vcap/data/garden-cni/container-netns"),
}).default({
  enabled: false,
  container_store: "/var/vcap/data/container-metadata/store.json",
  runc_root: "/run/containerd/runc/garden",
  netns_dir: "/var/vcap/data/garden-cni/container-netns",
});
export type CfAgentConfig = z.output<typeof CfAgentConfig>;
