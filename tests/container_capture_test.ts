// Capture inside app containers on a simulated Diego cell, end to end on the agent side: the
// start request's target is resolved by the container lookup, the capture engine enters the
// container's netns on its worker thread, and only that container's traffic is captured —
// not a neighbour container's, not the cell's own eth0 — while the process stays in its own
// namespace. Real namespaces, real libpcap.
import { isRoot, Netns, newRunId } from "../lab/netns.ts";
import { DiegoCell } from "../lab/diego_containers.ts";
import { CaptureEngine, type PacketBatch } from "../agent/engine/capture_engine.ts";
import { containerNetns } from "../agent/container_target.ts";
import { CfAgentConfig } from "../agent/cf_agent_config.ts";
import { assert, assertEquals, assertRejects } from "./support/assert.ts";

const APP = crypto.randomUUID();
const OTHER = crypto.randomUUID();
const ids = { spaceId: crypto.randomUUID(), orgId: crypto.randomUUID() };

/** UDP payload marks of a batch (Ethernet + IPv4 without options + UDP). */
function marks(b: PacketBatch): string[] {
  const v = new DataView(b.records.buffer, b.records.byteOffset, b.records.byteLength);
  const out: string[] = [];
  for (let off = 0; off < b.records.length;) {
    const caplen = v.getUint32(off + 8, true);
    const data = b.records.subarray(off + 16, off + 16 + caplen);
    out.push(new TextDecoder().decode(data.subarray(42, 50)));
    off += 16 + caplen;
  }
  return out;
}

async function send(lab: Netns, ns: string, dst: string, payloads: string[]): Promise<void> {
  const code = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in sys.argv[2:]: s.sendto(p.encode(),(sys.argv[1],7777))`;
  const child = lab.spawn(ns, ["python3", "-c", code, dst, ...payloads], { stderr: "piped" });
  const status = await child.status;
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert(status.success, `sender failed: ${err}`);
}

Deno.test({
  name: "container capture: only the requested container's traffic; process stays home",
  ignore: !isRoot(),
  fn: async () => {
    const lab = new Netns(newRunId());
    const root = await Deno.makeTempDir({ prefix: "pcap-ccap-" });
    const hostNs = Deno.readLinkSync("/proc/self/ns/net");
    let engine: CaptureEngine | undefined;
    let cell: DiegoCell | undefined;
    try {
      const cellNs = await lab.addNamespace("cell");
      cell = new DiegoCell({ netns: lab, cellShort: "k0", root, cellNs, subnet: 9 });
      const [mine, theirs] = await Promise.all([
        cell.addContainer({ appId: APP, ...ids }),
        cell.addContainer({ appId: OTHER, ...ids }),
      ]);
      const cf = CfAgentConfig.parse({
        enabled: true,
        container_store: cell.storePath,
        runc_root: cell.runcRoot,
      });
      await assertRejects(
        () =>
          containerNetns({ app_guid: APP, instance_guid: mine.handle }, CfAgentConfig.parse({})),
        Error,
        "cf.enabled is false",
      );
      await assertRejects(
        () => containerNetns({ container: mine.handle }, cf),
        Error,
        "needs app_guid",
      );
      await assertRejects(
        () => containerNetns({ app_guid: APP, instance_guid: theirs.handle }, cf),
        Error,
        "does not belong to app",
      );
      const found = await containerNetns({ app_guid: APP, instance_guid: mine.handle }, cf);
      engine = await CaptureEngine.open({
        device: "eth0",
        netns: found.netns,
        snaplen: 128,
        filter: "udp port 7777",
        timeoutMs: 20,
      });
      assertEquals(engine.netnsId, `net:[${Deno.statSync(`/run/netns/${mine.netnsName}`).ino}]`);
      assertEquals(Deno.readLinkSync("/proc/self/ns/net"), hostNs, "process stays home");
      assertEquals(Deno.readLinkSync("/proc/thread-self/ns/net"), hostNs, "main thread stays home");

      const m = Array.from({ length: 20 }, (_, i) => `MINE${String(i).padStart(4, "0")}`);
      const o = Array.from({ length: 20 }, (_, i) => `THRS${String(i).padStart(4, "0")}`);
      const c = Array.from({ length: 20 }, (_, i) => `CELL${String(i).padStart(4, "0")}`);
      await send(lab, cellNs, mine.ip, m);
      await send(lab, cellNs, theirs.ip, o);
      // The cell's own traffic (on its loopback here, its eth0 in a landscape) never enters.
      await send(lab, cellNs, "127.0.0.1", c);
      await engine.stop();
      const got: string[] = [];
      for (let b; (b = await engine.next());) got.push(...marks(b));
      assertEquals(got, m, "each of the container's packets exactly once, nothing else");
      assertEquals(Deno.readLinkSync("/proc/self/ns/net"), hostNs);
    } finally {
      engine?.close();
      await engine?.finished;
      await cell?.cleanup().catch(() => {});
      await lab.cleanup();
      await Deno.remove(root, { recursive: true });
    }
  },
});
