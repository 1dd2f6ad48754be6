/**
 * A CF landscape for the api's CF path: two Diego cell VMs (lab namespaces with real agent
 * processes configured for cf), simulated app containers on them (lab/diego_containers.ts), the
 * CC simulator on TLS behind the lab UAA, and helpers to start the api with a `cf` section and
 * to mint a CF user's token. Everything is torn down afterwards, on failure too.
 */
import { type LabVm, Landscape } from "../../lab/landscape.ts";
import { type Container, DiegoCell } from "../../lab/diego_containers.ts";
import { type CcApp, type CcRole, CcSim, type CcSpace } from "../../lab/cc_sim.ts";
import type { Json } from "../../lab/lab_agents.ts";
import { mergeConfig } from "../../lab/lab_agents.ts";
import { type ApiStarter, type RunningApi, withApiLab } from "./api_harness.ts";

export interface CfLab {
  lab: Landscape;
  cells: Array<{ vm: LabVm; cell: DiegoCell }>;
  cc: CcSim;
  /** the CF user's token (user id as `user_id`/`sub`, scope cloud_controller.read) */
  token(userId: string): Promise<string>;
  /** the api with a `cf` section pointing at the CC simulator; `extra` merged into it */
  startApi(extra?: Json): Promise<RunningApi>;
  /** a container of `appId` on cell `cellIndex` */
  addContainer(cellIndex: number, appId: string, space: CcSpace): Promise<Container>;
}

export interface CfLabOptions {
  spaces: CcSpace[];
  orgs: Array<{ guid: string; name: string }>;
  roles: CcRole[];
}

/**
 * Runs `fn` on a 2-cell CF lab. The two cells' agents share one container store and runc root
 * (the lab's agent config is common to all VMs); which cell is asked is decided by the CC's
 * `host`, as on a real foundation.
 */
export async function withCfLab(
  o: CfLabOptions,
  fn: (cf: CfLab) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "pcap-cflab-" });
  const storePath = `${root}/container-metadata/store.json`;
  const runcRoot = `${root}/runc`;
  const cells: Array<{ vm: LabVm; cell: DiegoCell }> = [];
  let cc: CcSim | undefined;
  try {
    await withApiLab({
      groups: { "diego-cell": 2 },
      agentConfig: { cf: { enabled: true, container_store: storePath, runc_root: runcRoot } },
    }, async (lab: Landscape, startApi: ApiStarter) => {
      try {
        const cert = await lab.pki.issue("cc-sim", { server: true, ips: ["127.0.0.1"] });
        cc = await CcSim.start({
          tls: { cert: cert.cert, key: cert.key },
          uaaUrl: lab.uaa.url,
          uaaCaCert: lab.pki.caCert,
          orgs: o.orgs,
          spaces: o.spaces,
          roles: o.roles,
          apps: [],
        });
        lab.vms.forEach((vm, i) => {
          cells.push({
            vm,
            cell: new DiegoCell({
              netns: lab.topology.netns,
              cellShort: `d${i}`,
              root,
              storePath,
              runcRoot,
              cellNs: vm.netns,
              subnet: 40 + i,
            }),
          });
        });
        const sim = cc;
        // The store is shared: one container at a time, so no cell overwrites another's entry.
        let serial: Promise<unknown> = Promise.resolve();
        await fn({
          lab,
          cells,
          cc: sim,
          token: (userId) =>
            lab.uaa.mintValid({
              clientId: "cf",
              userName: `user-${userId.slice(0, 8)}`,
              scopes: ["openid", "cloud_controller.read", "cloud_controller.write"],
              extra: { user_id: userId, sub: userId },
            }),
          startApi: (extra = {}) =>
            startApi(mergeConfig({
              cf: {
                api_url: sim.url,
                agent_port: lab.vms[0].agentPort,
                require_ssh_enabled: true,
                tls: { ca: lab.pki.caPath },
              },
            }, extra)),
          addContainer: (i, appId, space) => {
            const next = serial.then(() =>
              cells[i].cell.addContainer({ appId, spaceId: space.guid, orgId: space.orgGuid })
            );
            serial = next.catch(() => {});
            return next;
          },
        });
      } finally {
        for (const c of cells) await c.cell.cleanup().catch(() => {});
        await cc?.stop();
      }
    });
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
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
