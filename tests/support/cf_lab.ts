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
import type { Netns } from "../../lab/netns.ts";
import { PROTOCOL_VERSION } from "../../protocol/version.ts";
import {
  type ApiStarter,
  connect,
  type RunningApi,
  withApiLab,
  type WsClient,
} from "./api_harness.ts";
import { assert, assertEquals } from "./assert.ts";

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

/** Sends each payload (one marker token, ";"-terminated as lab/traffic.ts reads them) as UDP. */
export async function sendMarks(
  netns: Netns,
  ns: string | null,
  dst: string,
  payloads: string[],
): Promise<void> {
  const code = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in sys.argv[2:]: s.sendto((p+";").encode(),(sys.argv[1],7777))`;
  const child = netns.spawn(ns, ["python3", "-c", code, dst, ...payloads], { stderr: "piped" });
  const status = await child.status;
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert(status.success, `sender to ${dst} in ${ns ?? "the host namespace"} failed: ${err}`);
}

/** Sends a CF start request (process web, udp port 7777) on the api's WebSocket. */
export function cfStart(ws: WsClient, cf: Record<string, unknown>, iface = "eth0"): void {
  ws.send({
    type: "start",
    protocol_version: PROTOCOL_VERSION,
    cf: { process: "web", ...cf },
    interface: iface,
    snaplen: 65535,
    filter: "udp port 7777",
  });
}

/** Starts a capture that must be refused; returns the first status that is not a stop. */
export async function refusal(
  lab: Landscape,
  url: string,
  token: string,
  cf: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const c = connect(lab, url, token, "/v1/capture/cf");
  try {
    cfStart(c, cf);
    await c.closed;
    const errs = c.got.statuses.filter((s) => s.type !== "CAPTURE_STOPPED");
    assert(errs.length > 0, `no refusal: ${JSON.stringify(c.got.statuses)}`);
    assertEquals(c.got.sources, [], "a refused capture has no sources");
    return errs[0];
  } finally {
    c.close();
  }
}
