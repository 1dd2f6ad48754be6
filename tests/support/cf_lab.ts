/**
 * A CF landscape for the api's CF path: the lab's CF option (lab/lab_cf.ts) with two Diego cell
 * VMs (real agent processes configured for containers, each cell with its own container store
 * and runc root), simulated app containers on them, the CC simulator on TLS behind the lab UAA,
 * and helpers to start in-process apis with the lab's `cf` section and to mint a CF user's
 * token. Everything is torn down afterwards, on failure too.
 */
import type { LabVm, Landscape } from "../../lab/landscape.ts";
import type { Container, DiegoCell } from "../../lab/diego_containers.ts";
import type { CcApp, CcRole, CcSim, CcSpace } from "../../lab/cc_sim.ts";
import type { Json } from "../../lab/lab_agents.ts";
import { type ApiStarter, type RunningApi, withApiLab } from "./api_harness.ts";

export interface CfLab {
  lab: Landscape;
  cells: Array<{ vm: LabVm; cell: DiegoCell }>;
  cc: CcSim;
  /** the CF user's token (user id as `user_id`/`sub`, scope cloud_controller.read) */
  token(userId: string): Promise<string>;
  /** the api with the lab's `cf` section (CC simulator, lab CA); `extra` merged into it */
  startApi(extra?: Json): Promise<RunningApi>;
  /** a container of `appId` on cell `cellIndex` */
  addContainer(cellIndex: number, appId: string, space: CcSpace): Promise<Container>;
}

export interface CfLabOptions {
  spaces: CcSpace[];
  orgs: Array<{ guid: string; name: string }>;
  roles: CcRole[];
}

/** Runs `fn` on a 2-cell CF lab; which cell is asked is decided by the CC's `host`. */
export function withCfLab(o: CfLabOptions, fn: (cf: CfLab) => Promise<void>): Promise<void> {
  return withApiLab({
    groups: { "diego-cell": 2 },
    cf: { orgs: o.orgs, spaces: o.spaces, roles: o.roles },
  }, async (lab: Landscape, startApi: ApiStarter) => {
    const cf = lab.cf!;
    await fn({
      lab,
      cells: cf.cells,
      cc: cf.cc,
      token: (userId) => cfUserToken(lab, userId),
      startApi: (extra = {}) => startApi(extra),
      addContainer: (i, appId, space) => cf.addContainer(i, appId, space),
    });
  });
}

/** A token of the lab UAA for a CF user, as the cf CLI's login would hold it. */
export function cfUserToken(lab: Landscape, userId: string): Promise<string> {
  return lab.uaa.mintValid({
    clientId: "cf",
    userName: `user-${userId.slice(0, 8)}`,
    scopes: ["openid", "cloud_controller.read", "cloud_controller.write"],
    extra: { user_id: userId, sub: userId },
  });
}

/** A CC app whose web process has one instance per container, on the containers' cells. */
export function ccApp(
  o: { guid: string; name: string; spaceGuid: string; sshEnabled?: boolean },
  instances: Array<{ container: Container; vm: LabVm; state?: "RUNNING" | "CRASHED" }>,
): CcApp {
  return {
    guid: o.guid,
    name: o.name,
    spaceGuid: o.spaceGuid,
    sshEnabled: o.sshEnabled ?? true,
    processes: [{
      guid: crypto.randomUUID(),
      type: "web",
      instances: instances.map((x, index) => ({
        index,
        instanceGuid: x.container.handle,
        host: x.vm.ip,
        state: x.state ?? "RUNNING",
        internalIp: x.container.ip,
      })),
    }],
  };
}
