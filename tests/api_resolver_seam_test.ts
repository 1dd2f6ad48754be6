/**
 * The TargetResolver seam: a second platform, written here in the test, is added to the api as
 * one more resolver on its own route and captures from a real lab agent over mTLS, with the
 * session and the stream unchanged. Its name labels the metrics and the audit line; its own
 * start schema, authentication and unavailable targets take effect.
 */
import { z } from "zod";
import { assert, assertEquals } from "./support/assert.ts";
import { connect, countTokens, statusesOf, withApiLab } from "./support/api_harness.ts";
import { rawUpgrade } from "./support/raw_upgrade.ts";
import { CaptureLimits, Filter, InterfaceName, Snaplen } from "../protocol/message_schemas.ts";
import { ApiError } from "../server/limits.ts";
import type { Landscape } from "../lab/landscape.ts";
import type { Resolution, TargetResolver } from "../server/target_resolver.ts";

const LabStart = z.strictObject({
  type: z.literal("start"),
  protocol_version: z.number().int().nonnegative(),
  lab: z.strictObject({ vms: z.array(z.string()).min(1) }),
  interface: InterfaceName.default("eth0"),
  snaplen: Snaplen.default(65535),
  filter: Filter.default(""),
  limits: CaptureLimits.default({}),
});
type LabStart = z.output<typeof LabStart>;

/** Resolves "group/index" names straight to lab VMs; one fixed secret token is accepted. */
class LabResolver implements TargetResolver<LabStart> {
  readonly name = "lab";
  readonly path = "/v1/capture/lab";
  readonly startRequest = LabStart;
  readonly secret = crypto.randomUUID();
  constructor(private readonly lab: Landscape) {}

  authenticate(token: string) {
    if (token !== this.secret) {
      return Promise.reject(new ApiError("UNAUTHENTICATED", "not the lab's secret"));
    }
    return Promise.resolve({ user: "lab-user", key: "lab:lab-user", scopes: [], claims: {} });
  }

  resolve(req: LabStart): Promise<Resolution> {
    const res: Resolution = { targets: [], skipped: [] };
    for (const name of req.lab.vms) {
      const [group, index] = name.split("/");
      const vm = this.lab.vms.find((v) => v.group === group && String(v.index) === index);
      if (!vm) {
        res.skipped.push({ origin: name, reason: "is not in the lab" });
        continue;
      }
      res.targets.push({
        address: vm.ip,
        port: vm.agentPort,
        origin: `lab:${name}`,
        instance: { group: vm.group, index: vm.index, id: vm.id },
      });
    }
    return Promise.resolve(res);
  }

  facts(req: LabStart) {
    return { vms: req.lab.vms.join(",") };
  }
}

Deno.test("a second TargetResolver captures from a real agent without session changes", async (t) => {
  await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
    const resolver = new LabResolver(lab);
    const api = await startApi({}, { extraResolvers: [resolver] });
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
    const health = await (await lab.fetchLab(`${api.url.replace(/^ws/, "http")}/health`)).json();
    assertEquals(health.resolvers, ["bosh", "lab"]);

    await t.step("capture through the lab resolver, unavailable target told", async () => {
      const c = connect(lab, api.url, resolver.secret, resolver.path);
      c.send({
        type: "start",
        protocol_version: 1,
        lab: { vms: ["router/0", "router/9"] },
        filter: "udp port 5566",
      });
      await c.waitFor("one source", (r) => r.sources.length === 1);
      const src = c.got.sources[0];
      assertEquals(src.origin, "lab:router/0");
      assertEquals(src.instance, { group: "router", index: 0, id: r0.id });
      const unavailable = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
      assertEquals(unavailable.map((s) => s.origin), ["router/9"]);
      const sent = await lab.traffic.udp({ from: r0, to: r1, port: 5566, count: 20, rate: 200 });
      await c.waitFor("all packets", (r) => {
        const got = countTokens(r.tokens.get(src.source) ?? []);
        return sent.every((tok) => got.get(tok) === 1);
      });
      c.send({ type: "stop" });
      assertEquals((await c.closed).code, 1000);
      assertEquals(c.got.kinds.at(-1), "END");
      const m = api.server.metrics;
      assert(m.packets.get({ resolver: "lab" }) >= sent.length);
      assertEquals(m.packets.get({ resolver: "bosh" }), 0);
      assertEquals(m.captures.get({ resolver: "lab", outcome: "CAPTURE_STOPPED" }), 1);
      const line = api.audit.find((a) => a.resolver === "lab")!;
      assertEquals(line.user, "lab-user");
      assertEquals(line.targets, ["lab:router/0"]);
      assertEquals(line.outcome, "CAPTURE_STOPPED");
    });

    await t.step("its own start schema and authentication", async () => {
      const bad = connect(lab, api.url, resolver.secret, resolver.path);
      bad.send({ type: "start", protocol_version: 1, bosh: { deployment: "cf" } });
      const closed = await bad.closed;
      assertEquals(closed.code, 1008);
      assertEquals(statusesOf(bad.got, "INVALID_REQUEST").length, 1);

      // The resolver's own authentication refuses at the upgrade: 401 with its text.
      const wrong = await rawUpgrade(api.url + resolver.path, {
        authorization: `Bearer ${await lab.mintToken()}`,
      }, lab.pki.caCert);
      assertEquals(wrong.status, 401);
      assertEquals(JSON.parse(wrong.body).text, "not the lab's secret");
    });
  });
});
