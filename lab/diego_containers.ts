// Simulated app containers on a Diego cell. A "container" is a network namespace with a
// long-running process in it and an eth0 veth to the cell, registered the way Garden/runc and the
// CNI wrapper register real ones:
//   - runc state:    <runcRoot>/<handle>/state.json with `init_process_pid`
//   - CNI metadata:  <storePath> = { "<handle>": { handle, ip, metadata: {app_id, ...} } }
// The handle is the Diego instance guid, so the agent can map `instance_guid` → pid → netns.
// Addressing follows silk: the container has <ip>/32 and a default route via 169.254.0.1 on the
// cell end of its veth; the cell routes <ip>/32 to that veth.
import { type Netns, run } from "./netns.ts";

export interface ContainerSpec {
  /** Garden handle == Diego instance guid (default: a random 28-char instance guid) */
  handle?: string;
  /** container ip (default 198.19.<cell>.<n>, inside the lab's benchmark range) */
  ip?: string;
  appId: string;
  spaceId: string;
  orgId: string;
  /** default: appId, as silk sets it */
  policyGroupId?: string;
  /** extra CNI metadata keys */
  metadata?: Record<string, string>;
}

export interface Container {
  handle: string;
  ip: string;
  pid: number;
  /** namespace name under /run/netns (for tests; the agent uses /proc/<pid>/ns/net) */
  netnsName: string;
  netnsPath: string;
  /** interface inside the container */
  ifname: "eth0";
  /** cell-side end of the veth */
  hostIfname: string;
  process: Deno.ChildProcess;
}

export interface DiegoCellConfig {
  /** the run's namespace manager; names come from its run id */
  netns: Netns;
  /** short tag of this cell inside the run, e.g. "d0" ([0-9a-z], ≤ 3 chars) */
  cellShort: string;
  /** per-run directory; runc root and store live below it unless given */
  root: string;
  runcRoot?: string;
  storePath?: string;
  /** namespace of the cell VM that holds the cell-side veth ends (null: host namespace) */
  cellNs: string | null;
  /** third octet of default container ips (default 0) */
  subnet?: number;
}

export interface StoreEntry {
  handle: string;
  ip: string;
  metadata: Record<string, string>;
}

const GATEWAY = "169.254.0.1";

/** The CNI datastore entry for a container. Pure. */
export function storeEntry(handle: string, ip: string, spec: ContainerSpec): StoreEntry {
  return {
    handle,
    ip,
    metadata: {
      ...spec.metadata,
      policy_group_id: spec.policyGroupId ?? spec.appId,
      app_id: spec.appId,
      space_id: spec.spaceId,
      org_id: spec.orgId,
    },
  };
}

/** A trimmed runc state.json: the fields a reader of runc state relies on. Pure. */
export function runcState(handle: string, pid: number, startTicks: string, bundle: string) {
  return {
    id: handle,
    init_process_pid: pid,
    init_process_start: Number(startTicks),
    created: new Date().toISOString(),
    status: "running",
    config: { rootfs: `${bundle}/rootfs`, labels: [`bundle=${bundle}`] },
    rootless: false,
    cgroup_paths: {},
    namespace_paths: { NEWNET: `/proc/${pid}/ns/net` },
    external_descriptors: ["/dev/null", "/dev/null", "/dev/null"],
  };
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, JSON.stringify(value, null, 2));
  await Deno.rename(tmp, path);
}

/** Field 22 of /proc/<pid>/stat: start time in clock ticks (runc's init_process_start). */
async function procStartTicks(pid: number): Promise<string> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "0";
}

export class DiegoCell {
  readonly runcRoot: string;
  readonly storePath: string;
  private readonly containers = new Map<string, Container>();
  private counter = 0;
  /** serializes read-modify-write of the store file */
  private storeLock: Promise<void> = Promise.resolve();

  constructor(private readonly cfg: DiegoCellConfig) {
    if (!/^[0-9a-z]{1,3}$/.test(cfg.cellShort)) {
      throw new Error(`invalid cellShort "${cfg.cellShort}": use 1-3 chars of [0-9a-z]`);
    }
    this.runcRoot = cfg.runcRoot ?? `${cfg.root}/runc`;
    this.storePath = cfg.storePath ?? `${cfg.root}/container-metadata/store.json`;
  }

  list(): Container[] {
    return [...this.containers.values()];
  }

  get(handle: string): Container | undefined {
    return this.containers.get(handle);
  }

  /** Creates, starts and registers a container; cleans up its pieces if any step fails. */
  async addContainer(spec: ContainerSpec): Promise<Container> {
    const n = this.counter++;
    // Diego instance guids are the first 28 characters of a UUID.
    const handle = spec.handle ?? crypto.randomUUID().slice(0, 28);
    if (this.containers.has(handle)) throw new Error(`container ${handle} exists already`);
    const ip = spec.ip ?? `198.19.${this.cfg.subnet ?? 0}.${n + 2}`;
    const short = `${this.cfg.cellShort}c${n}`;
    const hostIfname = `${this.cfg.netns.runId}${short}`;
    const nsName = await this.cfg.netns.addNamespace(short);
    let process: Deno.ChildProcess | undefined;
    try {
      const cell = this.cfg.cellNs;
      await this.cfg.netns.addVethPair(hostIfname, cell, "eth0", nsName);
      await this.cfg.netns.addAddress(nsName, "eth0", `${ip}/32`);
      await this.cfg.netns.setUp(nsName, "eth0");
      await this.cfg.netns.exec(nsName, [
        "ip",
        "route",
        "add",
        GATEWAY,
        "dev",
        "eth0",
        "scope",
        "link",
      ]);
      await this.cfg.netns.exec(nsName, [
        "ip",
        "route",
        "add",
        "default",
        "via",
        GATEWAY,
        "dev",
        "eth0",
      ]);
      const inCell = cell === null ? [] : ["-n", cell];
      await run("ip", [...inCell, "addr", "add", `${GATEWAY}/32`, "dev", hostIfname]);
      await run("ip", [...inCell, "link", "set", hostIfname, "up"]);
      await run("ip", [...inCell, "route", "add", `${ip}/32`, "dev", hostIfname]);

      // `ip netns exec` execs in place, so the child's pid is the process inside the namespace.
      process = this.cfg.netns.spawn(nsName, ["sleep", "infinity"]);
      const pid = process.pid;
      await this.waitInNamespace(pid, nsName);

      const bundle = `${this.cfg.root}/depot/${handle}`;
      await Deno.mkdir(`${this.runcRoot}/${handle}`, { recursive: true });
      await writeJsonAtomic(
        `${this.runcRoot}/${handle}/state.json`,
        runcState(handle, pid, await procStartTicks(pid), bundle),
      );
      await this.updateStore((s) => {
        s[handle] = storeEntry(handle, ip, spec);
      });
      const c: Container = {
        handle,
        ip,
        pid,
        netnsName: nsName,
        netnsPath: `/proc/${pid}/ns/net`,
        ifname: "eth0",
        hostIfname,
        process,
      };
      this.containers.set(handle, c);
      return c;
    } catch (e) {
      if (process) await this.cfg.netns.kill(process).catch(() => {});
      const inCell = this.cfg.cellNs === null ? [] : ["-n", this.cfg.cellNs];
      await run("ip", [...inCell, "link", "del", hostIfname], { allowFailure: true });
      await run("ip", ["netns", "del", nsName], { allowFailure: true });
      await Deno.remove(`${this.runcRoot}/${handle}`, { recursive: true }).catch(() => {});
      throw new Error(`diego cell ${this.cfg.cellShort}: cannot create container ${handle}: ${e}`);
    }
  }

  /**
   * Kills the container's process but leaves its registration behind, like a crashed container
   * whose state.json is stale.
   */
  async killProcess(handle: string): Promise<void> {
    const c = this.mustGet(handle);
    await this.cfg.netns.kill(c.process);
  }

  /** Destroys a container as Garden would: process, namespace, runc state and store entry. */
  async removeContainer(handle: string): Promise<void> {
    const c = this.mustGet(handle);
    this.containers.delete(handle);
    await this.cfg.netns.kill(c.process);
    // Delete the cell end explicitly: after `netns del` the kernel tears the pair down lazily.
    const inCell = this.cfg.cellNs === null ? [] : ["-n", this.cfg.cellNs];
    await run("ip", [...inCell, "link", "del", c.hostIfname], { allowFailure: true });
    await run("ip", ["netns", "del", c.netnsName], { allowFailure: true });
    await Deno.remove(`${this.runcRoot}/${handle}`, { recursive: true }).catch(() => {});
    await this.updateStore((s) => {
      delete s[handle];
    });
  }

  /** Removes every container of this cell (Netns.cleanup() would catch leftovers too). */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    for (const h of [...this.containers.keys()]) {
      await this.removeContainer(h).catch((e) => errors.push(String(e)));
    }
    if (errors.length) throw new Error(`diego cell cleanup: ${errors.join("; ")}`);
  }

  async readStore(): Promise<Record<string, StoreEntry>> {
    try {
      return JSON.parse(await Deno.readTextFile(this.storePath));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return {};
      throw e;
    }
  }

  private updateStore(fn: (s: Record<string, StoreEntry>) => void): Promise<void> {
    const next = this.storeLock.then(async () => {
      const dir = this.storePath.slice(0, this.storePath.lastIndexOf("/"));
      if (dir) await Deno.mkdir(dir, { recursive: true });
      const store = await this.readStore();
      fn(store);
      await writeJsonAtomic(this.storePath, store);
    });
    this.storeLock = next.catch(() => {});
    return next;
  }

  private mustGet(handle: string): Container {
    const c = this.containers.get(handle);
    if (!c) throw new Error(`diego cell ${this.cfg.cellShort}: no container ${handle}`);
    return c;
  }

  /** Waits until the spawned pid has entered the namespace (setns happens just after fork). */
  private async waitInNamespace(pid: number, nsName: string): Promise<void> {
    const want = (await Deno.stat(`/run/netns/${nsName}`)).ino;
    for (let i = 0; i < 200; i++) {
      try {
        if ((await Deno.stat(`/proc/${pid}/ns/net`)).ino === want) return;
      } catch {
        // process not visible yet
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`process ${pid} did not enter namespace ${nsName} within 2 s`);
  }
}
