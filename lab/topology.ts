// The lab's network: a bridge in its own namespace, one namespace per "VM" joined to the bridge by
// a veth whose VM end is `eth0` (captures use `-i eth0` as on a real VM), and optionally a veth
// from the host namespace so host processes (api, client, simulators) reach the VMs.
// Without root there are no namespaces: every VM is 127.0.0.1 and captures on `lo`.
import { isRoot, Netns, newRunId, run } from "./netns.ts";

export interface VmSpec {
  deployment: string;
  group: string;
  index: number;
}

export interface TopoVm extends VmSpec {
  /** `group/index` */
  name: string;
  /** namespace name (path /run/netns/<netns>); null in loopback mode */
  netns: string | null;
  ip: string;
  /** the capture device inside the VM: `eth0`, or `lo` in loopback mode */
  device: string;
}

export interface TopologyOptions {
  vms: VmSpec[];
  runId?: string;
  /** veth from the host namespace (host gets `.1` of the subnet); default true */
  hostLink?: boolean;
  /** third octet of the 198.18.X.0/24 subnet; default: a free one */
  subnet?: number;
  /** force loopback mode even as root */
  loopback?: boolean;
  log?: (line: string) => void;
}

/** First VM address in the subnet; .1 is the host end, .2-.9 are reserved. */
const FIRST_VM_HOST = 10;
export const MAX_VMS = 254 - FIRST_VM_HOST + 1;
/** Parallel VM set-up; enough to hide process start latency, few enough for 2 cores. */
const SETUP_CONCURRENCY = 6;

/** Namespace suffix for a VM: `-<deployment>-<group>-<index>` in [0-9a-z-]. Pure. */
export function vmNamespaceSuffix(vm: VmSpec): string {
  const clean = (s: string) => s.toLowerCase().replace(/[^0-9a-z]+/g, "-").replace(/^-|-$/g, "");
  return `-${clean(vm.deployment) || "d"}-${clean(vm.group) || "g"}-${vm.index}`;
}

/** Address plan of a run: subnet 198.18.<octet>.0/24, host .1, VMs from .10. Pure. */
export function addressPlan(octet: number, count: number) {
  if (!Number.isInteger(octet) || octet < 0 || octet > 255) {
    throw new Error(`lab subnet octet ${octet} out of range 0..255`);
  }
  if (count > MAX_VMS) {
    throw new Error(`lab supports at most ${MAX_VMS} VMs per run, ${count} requested`);
  }
  const prefix = `198.18.${octet}`;
  return {
    subnet: `${prefix}.0/24`,
    hostIp: `${prefix}.1`,
    vmIps: Array.from({ length: count }, (_, i) => `${prefix}.${FIRST_VM_HOST + i}`),
  };
}

/** Third octets of 198.18.X.0/24 already used by host addresses or routes. */
async function usedOctets(): Promise<Set<number>> {
  const used = new Set<number>();
  const texts = await Promise.all([
    run("ip", ["-4", "-o", "addr", "show"], { allowFailure: true }),
    run("ip", ["-4", "route", "show"], { allowFailure: true }),
  ]);
  for (const t of texts) {
    for (const m of t.stdout.matchAll(/\b198\.18\.(\d+)\./g)) used.add(Number(m[1]));
  }
  return used;
}

async function pickOctet(): Promise<number> {
  const used = await usedOctets();
  const free = Array.from({ length: 256 }, (_, i) => i).filter((i) => !used.has(i));
  if (!free.length) {
    throw new Error("no free 198.18.X.0/24 subnet on this host; run `deno task lab down`");
  }
  // Random among the free ones so that two labs starting at once rarely collide.
  return free[crypto.getRandomValues(new Uint32Array(1))[0] % free.length];
}

async function parallel<T>(items: T[], limit: number, fn: (t: T, i: number) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function ipBatch(ns: string | null, commands: string[]): Promise<void> {
  if (!commands.length) return;
  const nsArgs = ns === null ? [] : ["-n", ns];
  await run("ip", [...nsArgs, "-batch", "-"], { stdin: commands.join("\n") + "\n" });
}

// Written through /proc rather than with sysctl(8), which lives in /usr/sbin (procps) and may be
// missing or off the PATH; /proc/sys/net shows the namespace of the writing process.
const NO_IPV6 = [
  "sh",
  "-c",
  "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && " +
  "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
];

// ---- cleanup on SIGINT/SIGTERM and uncaught errors ----

interface Stoppable {
  stop(): Promise<void>;
}
const guarded = new Set<Stoppable>();
let signalsInstalled = false;
let signalled = false;

/** Stops every guarded resource, then exits with code. A second call exits at once. */
function stopAllAndExit(why: string, code: number): void {
  if (signalled) {
    console.error(`lab: ${why} again: exiting now; run \`deno task lab down\` for leftovers`);
    Deno.exit(code);
  }
  signalled = true;
  console.error(`lab: ${why}: tearing down ${guarded.size} lab resource(s)…`);
  Promise.allSettled([...guarded].map((r) => r.stop())).then((results) => {
    for (const r of results) {
      if (r.status === "rejected") console.error(`lab: cleanup error: ${r.reason}`);
    }
    console.error("lab: teardown finished");
    Deno.exit(code);
  });
}

const onSigint = () => stopAllAndExit("SIGINT", 130);
const onSigterm = () => stopAllAndExit("SIGTERM", 143);
// An uncaught error would end the process without running any finally block: clean up first.
const onError = (e: ErrorEvent) => {
  e.preventDefault();
  console.error("lab: uncaught error:", e.error);
  stopAllAndExit("uncaught error", 1);
};
const onRejection = (e: PromiseRejectionEvent) => {
  e.preventDefault();
  console.error("lab: unhandled rejection:", e.reason);
  stopAllAndExit("unhandled rejection", 1);
};

/**
 * Stops r on SIGINT/SIGTERM or an uncaught error (then exits) while it is registered. Listeners
 * are installed with the first registration and removed with the last, so an idle process keeps
 * its default behaviour. Returns the unregister function.
 */
export function stopOnSignal(r: Stoppable): () => void {
  guarded.add(r);
  if (!signalsInstalled) {
    Deno.addSignalListener("SIGINT", onSigint);
    Deno.addSignalListener("SIGTERM", onSigterm);
    globalThis.addEventListener("error", onError);
    globalThis.addEventListener("unhandledrejection", onRejection);
    signalsInstalled = true;
  }
  return () => {
    guarded.delete(r);
    if (guarded.size === 0 && signalsInstalled) {
      Deno.removeSignalListener("SIGINT", onSigint);
      Deno.removeSignalListener("SIGTERM", onSigterm);
      globalThis.removeEventListener("error", onError);
      globalThis.removeEventListener("unhandledrejection", onRejection);
      signalsInstalled = false;
    }
  };
}

// ---- topology ----

export class Topology {
  readonly runId: string;
  readonly netns: Netns;
  readonly vms: TopoVm[];
  /** address of the host end (also where VMs reach host-side services); 127.0.0.1 in loopback mode */
  readonly hostIp: string;
  readonly subnet: string;
  readonly bridgeNs: string | null;
  readonly loopback: boolean;
  readonly hostLink: string | null;
  #unguard: () => void = () => {};
  #stopping: Promise<void> | null = null;

  private constructor(init: {
    netns: Netns;
    vms: TopoVm[];
    hostIp: string;
    subnet: string;
    bridgeNs: string | null;
    hostLink: string | null;
  }) {
    this.runId = init.netns.runId;
    this.netns = init.netns;
    this.vms = init.vms;
    this.hostIp = init.hostIp;
    this.subnet = init.subnet;
    this.bridgeNs = init.bridgeNs;
    this.hostLink = init.hostLink;
    this.loopback = init.bridgeNs === null;
  }

  /** Builds the network; on any failure removes what it built and rethrows. */
  static async create(opts: TopologyOptions): Promise<Topology> {
    const log = opts.log ?? ((l: string) => console.error(l));
    const netns = new Netns(opts.runId ?? newRunId());
    // The topology (and a landscape above it) tears down in its own order on signals.
    netns.releaseSignalGuard();
    checkVmSpecs(opts.vms);
    if (opts.loopback || !isRoot()) {
      log(
        `lab ${netns.runId}: ${opts.loopback ? "loopback mode requested" : "not root"}: ` +
          "no network namespaces; every VM is 127.0.0.1 and captures on lo",
      );
      const vms = opts.vms.map((v) => ({
        ...v,
        name: `${v.group}/${v.index}`,
        netns: null,
        ip: "127.0.0.1",
        device: "lo",
      }));
      const topo = new Topology({
        netns,
        vms,
        hostIp: "127.0.0.1",
        subnet: "127.0.0.0/8",
        bridgeNs: null,
        hostLink: null,
      });
      topo.#unguard = stopOnSignal(topo);
      return topo;
    }
    // Guard before building so that a signal during set-up still cleans up.
    const partial: Stoppable = { stop: () => netns.cleanup() };
    const unguard = stopOnSignal(partial);
    try {
      const topo = await Topology.#build(netns, opts);
      unguard();
      topo.#unguard = stopOnSignal(topo);
      log(
        `lab ${netns.runId}: ${topo.vms.length} VM namespace(s) on ${topo.subnet}` +
          (topo.hostLink ? `, host ${topo.hostIp} via ${topo.hostLink}` : ""),
      );
      return topo;
    } catch (e) {
      const cleanupError = await netns.cleanup().then(() => null, (c) => c as Error);
      unguard();
      if (cleanupError) (e as Error).message += ` (and cleanup failed: ${cleanupError.message})`;
      throw e;
    }
  }

  static async #build(netns: Netns, opts: TopologyOptions): Promise<Topology> {
    const id = netns.runId;
    const plan = addressPlan(opts.subnet ?? await pickOctet(), opts.vms.length);
    const prefixLen = plan.subnet.split("/")[1];

    const bridgeNs = await netns.addNamespace("-br");
    await netns.exec(bridgeNs, NO_IPV6);
    await ipBatch(bridgeNs, ["link add br0 type bridge", "link set br0 up"]);

    const vms: TopoVm[] = opts.vms.map((v, i) => ({
      ...v,
      name: `${v.group}/${v.index}`,
      netns: "",
      ip: plan.vmIps[i],
      device: "eth0",
    }));
    await parallel(vms, SETUP_CONCURRENCY, async (vm, i) => {
      const ns = await netns.addNamespace(vmNamespaceSuffix(vm));
      vm.netns = ns;
      await netns.exec(ns, NO_IPV6);
      // The VM end is created directly inside the VM namespace, so it can be called eth0.
      await netns.addVethPair(`${id}v${i}`, bridgeNs, "eth0", ns);
      await ipBatch(ns, [`addr add ${vm.ip}/${prefixLen} dev eth0`, "link set eth0 up"]);
    });
    await ipBatch(
      bridgeNs,
      vms.flatMap((_, i) => [`link set ${id}v${i} master br0`, `link set ${id}v${i} up`]),
    );

    let hostLink: string | null = null;
    if (opts.hostLink !== false) {
      hostLink = `${id}h`;
      await netns.addVethPair(hostLink, null, `${id}hb`, bridgeNs);
      await Deno.writeTextFile(`/proc/sys/net/ipv6/conf/${hostLink}/disable_ipv6`, "1")
        .catch(() => {}); // IPv6 may be off in the kernel already: nothing to silence then
      await ipBatch(null, [
        `addr add ${plan.hostIp}/${prefixLen} dev ${hostLink}`,
        `link set ${hostLink} up`,
      ]);
      await ipBatch(bridgeNs, [`link set ${id}hb master br0`, `link set ${id}hb up`]);
    }
    return new Topology({
      netns,
      vms,
      hostIp: plan.hostIp,
      subnet: plan.subnet,
      bridgeNs,
      hostLink,
    });
  }

  vm(group: string, index: number): TopoVm {
    const vm = this.vms.find((v) => v.group === group && v.index === index);
    if (!vm) throw new Error(`lab ${this.runId}: no VM ${group}/${index}`);
    return vm;
  }

  /** Removes every namespace, link and tracked process. Idempotent; concurrent calls share one. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        await this.netns.cleanup();
      } finally {
        this.#unguard();
      }
    })();
    return this.#stopping;
  }

  /** For an owner (the landscape) that stops this topology itself on a signal, in its own order. */
  releaseSignalGuard(): void {
    this.#unguard();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

function checkVmSpecs(vms: VmSpec[]): void {
  const seen = new Set<string>();
  for (const v of vms) {
    if (!v.deployment || !v.group || !Number.isInteger(v.index) || v.index < 0) {
      throw new Error(`lab: invalid VM ${JSON.stringify(v)}: needs deployment, group, index ≥ 0`);
    }
    const key = vmNamespaceSuffix(v);
    if (seen.has(key)) {
      throw new Error(`lab: two VMs map to the same namespace suffix "${key}"; rename a group`);
    }
    seen.add(key);
  }
  if (vms.length > MAX_VMS) throw new Error(`lab: at most ${MAX_VMS} VMs, ${vms.length} requested`);
}
