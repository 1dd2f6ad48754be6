// A real agent (mTLS, in-process) configured for a Diego cell: a capture request naming an app
// container is captured inside that container only, while the agent's own namespace never
// changes; hostile requests — another app's container, a reused pid, path-trick guids — are
// refused with clear texts. Real namespaces, runc-style state, CNI-style store, libpcap.
import { isRoot, Netns, newRunId } from "../lab/netns.ts";
import { DiegoCell } from "../lab/diego_containers.ts";
import { FrameKind } from "../protocol/frame_codec.ts";
import {
  postJson,
  readStream,
  startBody,
  statuses,
  withAgent,
  withPki,
} from "./support/agent_harness.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const APP = crypto.randomUUID();
const OTHER = crypto.randomUUID();
const ids = { spaceId: crypto.randomUUID(), orgId: crypto.randomUUID() };

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
  name: "agent on a Diego cell: captures in the named container only; hostile requests refused",
  ignore: !isRoot(),
  fn: async () => {
    const lab = new Netns(newRunId());
    const root = await Deno.makeTempDir({ prefix: "pcap-agentcf-" });
    const hostNs = Deno.readLinkSync("/proc/self/ns/net");
    let cell: DiegoCell | undefined;
    try {
      const cellNs = await lab.addNamespace("cell");
      cell = new DiegoCell({ netns: lab, cellShort: "a0", root, cellNs, subnet: 8 });
      const [mine, theirs, reused] = await Promise.all([
        cell.addContainer({ appId: APP, ...ids }),
        cell.addContainer({ appId: OTHER, ...ids }),
        cell.addContainer({ appId: APP, ...ids }),
      ]);
      // A pid reused by another process: runc recorded another start time.
      const statePath = `${cell.runcRoot}/${reused.handle}/state.json`;
      const st = JSON.parse(await Deno.readTextFile(statePath));
      await Deno.writeTextFile(statePath, JSON.stringify({ ...st, init_process_start: 1 }));
      const extra = `cf:
  enabled: true
  container_store: ${cell.storePath}
  runc_root: ${cell.runcRoot}
`;
      await withPki("agent-cf-", (t) =>
        withAgent(t, { extra }, async (agent, client) => {
          const refusals: Array<[Record<string, unknown>, string]> = [
            [{ app_guid: APP, instance_guid: theirs.handle }, "does not belong to app"],
            [{ app_guid: APP, ip: theirs.ip }, "does not belong to app"],
            [{ app_guid: APP, instance_guid: reused.handle }, "the pid was reused"],
            [{ app_guid: APP, instance_guid: "../../../proc/1/ns/net" }, "not of the Diego form"],
            [{ app_guid: "../..", instance_guid: mine.handle }, "app guid"],
            [{ container: mine.handle }, "needs app_guid"],
          ];
          for (const [target, text] of refusals) {
            const res = await postJson(
              client,
              agent.url("/captures"),
              startBody({ interface: "eth0", target }),
            );
            const body = await res.json();
            assertEquals(res.status, 400, JSON.stringify(body));
            assertStringIncludes(body.text, text);
          }
          assertEquals(agent.server.activeCaptures, 0);

          const res = await postJson(
            client,
            agent.url("/captures"),
            startBody({
              interface: "eth0",
              filter: "udp port 7777",
              target: { app_guid: APP, instance_guid: mine.handle },
            }),
          );
          assertEquals(res.status, 200);
          const id = res.headers.get("x-pcap-capture-id")!;
          const m = Array.from({ length: 30 }, (_, i) => `MINE${String(i).padStart(4, "0")}`);
          const o = Array.from({ length: 30 }, (_, i) => `THRS${String(i).padStart(4, "0")}`);
          let sent: Promise<void> | null = null;
          let nsDuringCapture = "";
          const result = await readStream(res.body!, (f) => {
            if (f.kind === FrameKind.SOURCE) {
              sent = (async () => {
                await send(lab, cellNs, mine.ip, m);
                await send(lab, cellNs, theirs.ip, o);
                // Checked from outside while the capture runs: the process stays home.
                nsDuringCapture = Deno.readLinkSync(`/proc/${Deno.pid}/ns/net`);
                const r = await postJson(client, agent.url(`/captures/${id}/stop`), "");
                await r.body?.cancel();
              })();
            }
          });
          await sent;
          assertEquals(nsDuringCapture, hostNs);
          assertEquals(result.kinds.at(-1), "END");
          const got = result.packets.map((p) => new TextDecoder().decode(p.data.subarray(42, 50)));
          assertEquals(got, m, "each packet of the container once, none of its neighbour");
          assertEquals(statuses(result, "CAPTURE_STOPPED").length, 1);
        }));
      assertEquals(Deno.readLinkSync("/proc/self/ns/net"), hostNs);
    } finally {
      await cell?.cleanup().catch(() => {});
      await lab.cleanup();
      await Deno.remove(root, { recursive: true });
    }
  },
});
