/**
 * `pcap extcap` for a CF interface, end to end with Debian's real tshark: a temporary HOME with
 * the launcher and a cf login (the lab UAA's token, the CC simulator as target, a targeted space),
 * the api's CF resolver, and real agents capturing inside app containers on two Diego cells.
 * tshark captures two of an app's three instances by name and index; each instance's marks
 * arrive once, on its own interface, and nothing of the third instance does.
 */
import { isRoot, type Netns } from "../lab/netns.ts";
import { markerTokens, randomMarker } from "../lab/traffic.ts";
import { ccApp, withCfLab } from "./support/cf_lab.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { packets } from "./support/capture_readback.ts";
import { eventually, installExtcap, startTshark, tsharkExit } from "./support/extcap_home.ts";
import { preferenceName } from "../cli/extcap_protocol.ts";
import { cfInterfaceName } from "../cli/extcap_interfaces.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const DEV = crypto.randomUUID();
const N = 8;
/** long enough for start-up and traffic on a loaded 2-core box */
const DURATION_S = 25;

async function send(netns: Netns, ns: string | null, dst: string, payloads: string[]) {
  const code = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in sys.argv[2:]: s.sendto((p+";").encode(),(sys.argv[1],7777))`;
  const child = netns.spawn(ns, ["python3", "-c", code, dst, ...payloads], { stderr: "piped" });
  const status = await child.status;
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert(status.success, `sender to ${dst} failed: ${err}`);
}

Deno.test({
  name: "pcap extcap with tshark: a CF app's instances 0 and 2 on the lab" +
    (isRoot() ? "" : " (ignored: needs root)"),
  ignore: !isRoot(),
  fn: () =>
    withCfLab({
      orgs: [ORG],
      spaces: [SPACE],
      roles: [{ userId: DEV, type: "space_developer", target: SPACE.guid }],
    }, async ({ lab, cells, cc, token, startApi, addContainer }) => {
      const APP = crypto.randomUUID();
      const c0 = await addContainer(0, APP, SPACE);
      const c1 = await addContainer(1, APP, SPACE);
      const c2 = await addContainer(0, APP, SPACE);
      const [v0, v1] = [cells[0].vm, cells[1].vm];
      cc.apps.push(ccApp({ guid: APP, name: "web", spaceGuid: SPACE.guid }, [
        { container: c0, vm: v0 },
        { container: c1, vm: v1 },
        { container: c2, vm: v0 },
      ]));
      const api = await startApi();
      const home = await Deno.makeTempDir({ prefix: "pcap-extcap-cf-" });
      let ts: ReturnType<typeof startTshark> | undefined;
      try {
        await Deno.mkdir(`${home}/.cf`);
        await Deno.writeTextFile(
          `${home}/.cf/config.json`,
          JSON.stringify({
            ConfigVersion: 4,
            Target: cc.url,
            AuthorizationEndpoint: lab.uaa.url,
            AccessToken: `bearer ${await token(DEV)}`,
            RefreshToken: "",
            OrganizationFields: { GUID: ORG.guid, Name: ORG.name },
            SpaceFields: { GUID: SPACE.guid, Name: SPACE.name },
          }),
        );
        const { env } = await installExtcap(home);
        const iface = cfInterfaceName(cc.url);
        const pref = (call: string, v: string) => ["-o", `${preferenceName(iface, call)}:${v}`];
        const file = `${home}/app.pcapng`;
        ts = startTshark([
          "-i",
          iface,
          ...pref("--app", "web"),
          ...pref("--index", "0, 2"),
          ...pref("--pcap-api-url", api.url.replace(/^wss:/, "https:")),
          ...pref("--ca-cert", lab.pki.caPath),
          "-f",
          "udp port 7777",
          "-a",
          `duration:${DURATION_S}`,
          "-w",
          file,
        ], env);
        await eventually(
          "the capture of instances 0 and 2 started",
          () => api.logs.some((l) => l.includes('"capture starting"')),
        );
        // the agents say they capture once the api has started them
        const active = async (vm: typeof v0) =>
          (await (await lab.fetchAgent(vm, "/health")).json()).active_captures as number;
        await eventually("cell 0 capturing both containers", async () => (await active(v0)) >= 2);
        let ended = false;
        ts.done.then(() => ended = true);
        const mk = [c0, c1, c2].map(() => markerTokens(randomMarker(), N));
        await send(lab.topology.netns, v0.netns, c0.ip, mk[0]);
        await send(lab.topology.netns, v1.netns, c1.ip, mk[1]);
        await send(lab.topology.netns, v0.netns, c2.ip, mk[2]);
        assert(!ended, `tshark ended before the traffic was sent:\n${ts.stderr()}`);
        assertEquals(await tsharkExit(ts, (DURATION_S + 60) * 1000), 0, ts.stderr());
        const pkts = await packets(file);
        for (const [i, c] of [[0, c0], [2, c2]] as const) {
          const got = pkts.filter((p) => p.iface.includes(c.handle)).flatMap((p) => p.tokens);
          assertEquals(got.sort(), [...mk[i]].sort(), `marks of instance ${i}`);
        }
        assertEquals(pkts.length, 2 * N, "nothing else: instance 1 was not selected");
        await eventually("no agent capture left", async () =>
          (await active(v0)) === 0 && (await active(v1)) === 0);
        await eventually("the api's audit line", () =>
          api.audit.length > 0);
        assertEquals(api.audit.map((a) => a.outcome), ["CAPTURE_STOPPED"]);
      } catch (e) {
        if (ts) console.error(`tshark stderr:\n${ts.stderr()}`);
        throw e;
      } finally {
        if (ts) {
          try {
            ts.child.kill("SIGKILL");
          } catch { /* exited */ }
          await ts.done;
        }
        await Deno.remove(home, { recursive: true });
      }
    }),
});
