// The CF part of a landscape (`Landscape.start({ cf: … })`): the Diego cell VMs' agents are
// configured for containers, each cell with its own CNI store and runc root as on a real cell,
// app containers are created on them on demand (lab/diego_containers.ts), and the Cloud
// Controller simulator answers on TLS behind the lab UAA. Pure helpers for the per-cell paths
// and the api's `cf` section; LabCf holds the running pieces.
import { type Container, type ContainerSpec, DiegoCell } from "./diego_containers.ts";
import { type CcApp, type CcOrg, type CcRole, CcSim, type CcSpace } from "./cc_sim.ts";
import type { Json } from "./lab_agents.ts";
import type { LabVm } from "./lab_vms.ts";
import type { Netns } from "./netns.ts";
import type { SimTls } from "./http_sim_server.ts";

export interface LabCfOptions {
  /** instance group whose VMs are Diego cells (default "diego-cell") */
  cellGroup?: string;
  orgs?: CcOrg[];
  spaces?: CcSpace[];
  roles?: CcRole[];
  apps?: CcApp[];
  /** CC API version the simulator announces (default: one with instance_guid in stats) */
  apiVersion?: string;
}

export const DEFAULT_CELL_GROUP = "diego-cell";

/** Where a cell's container registrations live inside the run dir. Pure. */
export function cellPaths(dir: string, vm: Pick<LabVm, "group" | "index">) {
  const base = `${dir}/diego/${vm.group.replace(/[^A-Za-z0-9_.-]/g, "_")}-${vm.index}`;
  return {
    base,
    storePath: `${base}/container-metadata/store.json`,
    runcRoot: `${base}/runc`,
  };
}

/** The `cf` section of a cell's agent.yml: its own store and runc root. Pure. */
export function cellAgentConfig(dir: string, vm: Pick<LabVm, "group" | "index">): Json {
  const p = cellPaths(dir, vm);
  return { cf: { enabled: true, container_store: p.storePath, runc_root: p.runcRoot } };
}

/** The api's `cf` section for the simulated CC (agents of the lab share one port). Pure. */
export function labApiCfConfig(ccUrl: string, agentPort: number, caPath: string): Json {
  return {
    cf: {
      api_url: ccUrl,
      agent_port: agentPort,
      require_ssh_enabled: true,
      tls: { ca: caPath },
    },
  };
}

export interface LabCell {
  vm: LabVm;
  cell: DiegoCell;
}

export class LabCf {
  readonly cc: CcSim;
  readonly cells: LabCell[];

  private constructor(cc: CcSim, cells: LabCell[]) {
    this.cc = cc;
    this.cells = cells;
  }

  /** Starts the CC simulator and prepares one DiegoCell per VM of the cell group. */
  static async start(o: {
    opts: LabCfOptions;
    dir: string;
    netns: Netns;
    vms: LabVm[];
    tls: SimTls;
    uaaUrl: string;
    caCert: string;
  }): Promise<LabCf> {
    const group = o.opts.cellGroup ?? DEFAULT_CELL_GROUP;
    const cellVms = o.vms.filter((vm) => vm.group === group);
    if (!cellVms.length) {
      throw new Error(
        `lab cf: no VMs in group "${group}"; add it to groups, e.g. { "${group}": 2 }`,
      );
    }
    const flat = cellVms.find((vm) => vm.netns === null);
    if (flat) {
      throw new Error(
        `lab cf: cell ${flat.group}/${flat.index} has no namespace (loopback mode); app ` +
          "containers need the cells' namespaces: run as root without loopback",
      );
    }
    const cells = cellVms.map((vm, i) => {
      const p = cellPaths(o.dir, vm);
      return {
        vm,
        cell: new DiegoCell({
          netns: o.netns,
          cellShort: `d${i}`,
          root: p.base,
          storePath: p.storePath,
          runcRoot: p.runcRoot,
          cellNs: vm.netns,
          // containers live behind their own cell, so the /24 only has to be unique per cell
          subnet: i,
        }),
      };
    });
    for (const { vm } of cells) {
      await Deno.mkdir(`${cellPaths(o.dir, vm).base}/container-metadata`, { recursive: true });
    }
    const cc = await CcSim.start({
      tls: o.tls,
      uaaUrl: o.uaaUrl,
      uaaCaCert: o.caCert,
      orgs: o.opts.orgs ?? [],
      spaces: o.opts.spaces ?? [],
      roles: o.opts.roles ?? [],
      apps: o.opts.apps ?? [],
      apiVersion: o.opts.apiVersion,
    });
    return new LabCf(cc, cells);
  }

  /** Whether the agent of `vm` is configured as a Diego cell. */
  isCell(vm: LabVm): boolean {
    return this.cells.some((c) => c.vm.id === vm.id);
  }

  /** A new app container of `appId` in `space` on cell `cellIndex`. */
  addContainer(
    cellIndex: number,
    appId: string,
    space: Pick<CcSpace, "guid" | "orgGuid">,
    spec: Partial<ContainerSpec> = {},
  ): Promise<Container> {
    const c = this.cells[cellIndex];
    if (!c) {
      throw new Error(`lab cf: no cell ${cellIndex}; there are ${this.cells.length} cell(s)`);
    }
    return c.cell.addContainer({ ...spec, appId, spaceId: space.guid, orgId: space.orgGuid });
  }

  /** Removes every container and stops the CC simulator; collects, then throws, failures. */
  async stop(): Promise<void> {
    const errors: string[] = [];
    for (const c of this.cells) {
      await c.cell.cleanup().catch((e) => errors.push((e as Error).message));
    }
    await this.cc.stop().catch((e) => errors.push(`cc sim: ${(e as Error).message}`));
    if (errors.length) throw new Error(errors.join("; "));
  }
}
