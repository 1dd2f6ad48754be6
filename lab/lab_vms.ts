// The lab's VMs as the tests and simulators see them (pure): specs from the group counts, each
// VM's identity, agent port and certificate name, and the Director's view of them.
import type { TopoVm } from "./topology.ts";
import type { DirectorInstance } from "./director_sim.ts";

export interface LabVm {
  deployment: string;
  group: string;
  index: number;
  /** instance uuid */
  id: string;
  ip: string;
  /** namespace name, null in loopback mode */
  netns: string | null;
  /** capture device inside the VM: eth0 (lo in loopback mode) */
  device: string;
  agentPort: number;
  agentUrl: string;
  /** DNS SAN of the agent's server certificate */
  agentDnsName: string;
}

/** VM specs from the group counts, in the order given. Pure. */
export function vmSpecs(opts: { deployment?: string; groups: Record<string, number> }) {
  const deployment = opts.deployment ?? "cf";
  return Object.entries(opts.groups).flatMap(([group, n]) => {
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`lab: group "${group}" count ${n} is not a non-negative integer`);
    }
    return Array.from({ length: n }, (_, index) => ({ deployment, group, index }));
  });
}

/** Gives each topology VM a fresh instance id and its agent's port (`ports[i]`). */
export function labVms(vms: TopoVm[], ports: number[]): LabVm[] {
  return vms.map((v, i) => {
    const id = crypto.randomUUID();
    return {
      deployment: v.deployment,
      group: v.group,
      index: v.index,
      id,
      ip: v.ip,
      netns: v.netns,
      device: v.device,
      agentPort: ports[i],
      agentUrl: `https://${v.ip}:${ports[i]}`,
      agentDnsName: `${id}.pcap-agent.internal`,
    };
  });
}

/** The VMs as the Director simulator lists them. */
export function directorInstances(vms: LabVm[], runId: string): DirectorInstance[] {
  return vms.map((vm) => ({
    job: vm.group,
    index: vm.index,
    id: vm.id,
    az: `z${(vm.index % 2) + 1}`,
    ips: [vm.ip],
    agentId: `agent-${vm.id}`,
    cid: `${runId}-vm-${vm.id.slice(0, 8)}`,
  }));
}
