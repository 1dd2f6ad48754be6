// Cloud Controller client and CF target lookup against the lab CC and UAA over real HTTPS (lab
// CA) with real RS256 tokens: the role matrix, SSH, odd instances, old CCs, CC errors, and a
// hand-rolled server for shapes the simulator does not produce (foreign pagination, huge or
// garbage bodies, slow answers).
import { Pki } from "../lab/pki.ts";
import { UaaSim } from "../lab/uaa_sim.ts";
import { type CcApp, CcSim, instanceGuid } from "../lab/cc_sim.ts";
import { CcClient } from "../server/cc_client.ts";
import { type CfLookupRequest, lookupCfTargets } from "../server/cf_lookup.ts";
import { ApiError, type ApiErrorKind } from "../server/limits.ts";
import { CfResolver, cfTokenVerifier } from "../server/cf_resolver.ts";
import { AuthError } from "../server/token_verifier.ts";
import { CfStartRequest } from "../protocol/cf_messages.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { rejectsWith } from "./support/bosh_sims.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const OTHER = { guid: crypto.randomUUID(), name: "other", orgGuid: ORG.guid };
const LOCKED = { guid: crypto.randomUUID(), name: "locked", orgGuid: ORG.guid, allowSsh: false };
const U = {
  dev: crypto.randomUUID(),
  auditor: crypto.randomUUID(),
  supporter: crypto.randomUUID(),
  manager: crypto.randomUUID(),
  orgManager: crypto.randomUUID(),
  otherDev: crypto.randomUUID(),
  nobody: crypto.randomUUID(),
};

function mkApp(name: string, spaceGuid: string, n: number, sshEnabled = true): CcApp {
  return {
    guid: crypto.randomUUID(),
    name,
    spaceGuid,
    sshEnabled,
    processes: [{
      guid: crypto.randomUUID(),
      type: "web",
      instances: Array.from({ length: n }, (_, index) => ({
        index,
        instanceGuid: instanceGuid(),
        host: `198.18.0.${10 + (index % 2)}`,
        internalIp: `198.19.${index % 2}.${10 + index}`,
      })),
    }],
  };
}

interface Lab {
  uaa: UaaSim;
  cc: CcSim;
  client: CcClient;
  apps: Record<string, CcApp>;
  token(user: keyof typeof U): Promise<string>;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pcap_cc_" });
  const pki = await Pki.create(dir);
  const cert = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
  const tls = { cert: cert.cert, key: cert.key };
  const apps = {
    web: mkApp("web", SPACE.guid, 3),
    quiet: mkApp("quiet", SPACE.guid, 1, false),
    vault: mkApp("vault", LOCKED.guid, 1),
    theirs: mkApp("theirs", OTHER.guid, 1),
  };
  let uaa: UaaSim | undefined;
  let cc: CcSim | undefined;
  let client: CcClient | undefined;
  try {
    uaa = await UaaSim.start({ tls });
    cc = await CcSim.start({
      tls,
      uaaUrl: uaa.url,
      uaaCaCert: pki.caCert,
      orgs: [ORG],
      spaces: [SPACE, OTHER, LOCKED],
      apps: Object.values(apps),
      roles: [
        { userId: U.dev, type: "space_developer", target: SPACE.guid },
        { userId: U.dev, type: "space_developer", target: LOCKED.guid },
        { userId: U.auditor, type: "space_auditor", target: SPACE.guid },
        { userId: U.supporter, type: "space_supporter", target: SPACE.guid },
        { userId: U.manager, type: "space_manager", target: SPACE.guid },
        { userId: U.orgManager, type: "org_manager", target: ORG.guid },
        { userId: U.otherDev, type: "space_developer", target: OTHER.guid },
      ],
    });
    client = new CcClient({ url: cc.url, caCert: pki.caCert, timeoutMs: 2000 });
    const u = uaa;
    const token = (user: keyof typeof U) =>
      u.mintValid({
        clientId: "cf",
        userName: user,
        scopes: ["openid", "cloud_controller.read", "cloud_controller.write"],
        extra: { user_id: U[user], sub: U[user] },
      });
    await fn({ uaa, cc, client, apps, token });
  } finally {
    client?.close();
    await cc?.stop();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const POLICY = { requireSshEnabled: true, maxTargets: 100 };
const byName = (app: string, more: Partial<CfLookupRequest> = {}): CfLookupRequest => ({
  app,
  space_guid: SPACE.guid,
  process: "web",
  indexes: [],
  ...more,
});

function rejects(p: Promise<unknown>, kind: ApiErrorKind, re: RegExp, token?: string) {
  return rejectsWith(p, ApiError, kind, re, token ? [token.split(".")[2]] : []);
}

Deno.test("cc client: root names the UAA and the API version, cached", async () => {
  await withLab(async ({ uaa, cc, client }) => {
    const root = await client.root();
    assertEquals(root, { uaaUrl: uaa.url, loginUrl: uaa.url, apiVersion: cc.apiVersion });
    const before = cc.requestCount;
    await Promise.all([client.root(), client.uaaUrl()]);
    assertEquals(cc.requestCount, before, "cached root must not hit the CC");
  });
});

Deno.test("cf lookup: a space developer gets every instance, by name, by guid, by org/space", async () => {
  await withLab(async ({ client, apps, token }) => {
    const t = await token("dev");
    const a = apps.web;
    const got = await lookupCfTargets(client, byName("web"), t, "dev", POLICY);
    assertEquals(got.app.guid, a.guid);
    assertEquals([got.space.name, got.org.name], ["dev", "acme"]);
    const inst = a.processes[0].instances;
    assertEquals(
      got.selection.targets.map((x) => [x.index, x.host, x.container, x.origin]),
      inst.map((i) => [
        i.index,
        i.host,
        { app_guid: a.guid, instance_guid: i.instanceGuid },
        `web/${i.index} (${i.instanceGuid})`,
      ]),
    );
    const byGuid = await lookupCfTargets(
      client,
      { app_guid: a.guid, process: "web", indexes: [2, 0] },
      t,
      "dev",
      POLICY,
    );
    assertEquals(byGuid.selection.targets.map((x) => x.index), [0, 2]);
    const byOrgSpace = await lookupCfTargets(
      client,
      { app: "web", org: "acme", space: "dev", process: "web", indexes: [1] },
      t,
      "dev",
      POLICY,
    );
    assertEquals(byOrgSpace.selection.targets.map((x) => x.index), [1]);
    await rejects(
      lookupCfTargets(
        client,
        { app: "web", app_guid: apps.quiet.guid, process: "web", indexes: [] },
        t,
        "dev",
        POLICY,
      ),
      "INVALID_REQUEST",
      /is app 'quiet', not 'web'/,
    );
  });
});

Deno.test("cf lookup: permission matrix — only read_sensitive_data may capture", async () => {
  await withLab(async ({ client, uaa, token }) => {
    for (const who of ["auditor", "supporter", "manager", "orgManager"] as const) {
      const t = await token(who);
      await rejects(
        lookupCfTargets(client, byName("web"), t, who, POLICY),
        "PERMISSION_DENIED",
        new RegExp(
          `user '${who}' may see app 'web' but not capture.*Space Developer role in space 'dev'`,
        ),
        t,
      );
    }
    for (const who of ["otherDev", "nobody"] as const) {
      const t = await token(who);
      await rejects(
        lookupCfTargets(client, byName("web"), t, who, POLICY),
        "INVALID_REQUEST",
        /app 'web' not found in space .*, or not visible to you/,
        t,
      );
    }
    const t = await token("nobody");
    await rejects(
      lookupCfTargets(
        client,
        { app_guid: crypto.randomUUID(), process: "web", indexes: [] },
        t,
        "x",
        POLICY,
      ),
      "INVALID_REQUEST",
      /app [0-9a-f-]{36} not found, or not visible to you/,
    );
    const admin = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.admin"] });
    const ro = await uaa.mintValid({
      clientId: "cf",
      scopes: ["cloud_controller.admin_read_only"],
    });
    const ga = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.global_auditor"] });
    for (const tk of [admin, ro]) {
      const got = await lookupCfTargets(client, byName("web"), tk, "admin", POLICY);
      assertEquals(got.selection.targets.length, 3);
    }
    await rejects(
      lookupCfTargets(client, byName("web"), ga, "auditor", POLICY),
      "PERMISSION_DENIED",
      /Space Developer/,
    );
  });
});

Deno.test("cf lookup: ssh disabled for app, space or globally is denied with CC's reason", async () => {
  await withLab(async ({ client, cc, token }) => {
    const t = await token("dev");
    await rejects(
      lookupCfTargets(client, byName("quiet"), t, "dev", POLICY),
      "PERMISSION_DENIED",
      /ssh is disabled for app\. Enable it with 'cf enable-ssh quiet'/,
    );
    await rejects(
      lookupCfTargets(client, byName("vault", { space_guid: LOCKED.guid }), t, "dev", POLICY),
      "PERMISSION_DENIED",
      /ssh is disabled for space 'locked'\. A space manager can allow it with 'cf allow-space-ssh locked'/,
    );
    const relaxed = { ...POLICY, requireSshEnabled: false };
    assertEquals(
      (await lookupCfTargets(client, byName("quiet"), t, "dev", relaxed)).selection.targets.length,
      1,
    );
    cc.allowSsh = false;
    await rejects(
      lookupCfTargets(client, byName("web"), t, "dev", POLICY),
      "PERMISSION_DENIED",
      /ssh is disabled globally\. An operator must allow SSH/,
    );
  });
});

Deno.test("cf lookup: crashed and down instances are skipped per index; unknown index and process", async () => {
  await withLab(async ({ client, apps, token }) => {
    const t = await token("dev");
    const inst = apps.web.processes[0].instances;
    inst[1].state = "CRASHED";
    inst.push({ index: 3, instanceGuid: instanceGuid(), host: "198.18.0.11", state: "DOWN" });
    const got = await lookupCfTargets(client, byName("web"), t, "dev", POLICY);
    assertEquals(got.selection.targets.map((x) => x.index), [0, 2]);
    assertEquals(
      got.selection.skipped.map((s) => [s.index, s.state, s.origin]),
      [[1, "CRASHED", "web/1"], [3, "DOWN", "web/3"]],
    );
    assert(/is CRASHED, not RUNNING/.test(got.selection.skipped[0].reason));
    await rejects(
      lookupCfTargets(client, byName("web", { indexes: [0, 7] }), t, "dev", POLICY),
      "INVALID_REQUEST",
      /app 'web' \(process web\) has no instance 7; it has indexes 0, 1, 2, 3/,
    );
    await rejects(
      lookupCfTargets(client, byName("web", { process: "worker" }), t, "dev", POLICY),
      "INVALID_REQUEST",
      /process 'worker' of app 'web' not found, or not visible to you/,
    );
    await rejects(
      lookupCfTargets(client, byName("web", { process: "../x" }), t, "dev", POLICY),
      "INVALID_REQUEST",
      /process type "\.\.\/x" may only contain/,
    );
    await rejects(
      lookupCfTargets(client, byName("nope"), t, "dev", POLICY),
      "INVALID_REQUEST",
      /app 'nope' not found/,
    );
  });
});

Deno.test("cf lookup: old CC without instance_guid → app guid + internal ip; stats 503", async () => {
  await withLab(async ({ client, cc, apps, token }) => {
    const t = await token("dev");
    cc.apiVersion = "3.180.0";
    const got = await lookupCfTargets(client, byName("web"), t, "dev", POLICY);
    assertEquals(got.apiVersion, "3.180.0");
    const inst = apps.web.processes[0].instances;
    assertEquals(
      got.selection.targets.map((x) => [x.container, x.id, x.origin]),
      inst.map((i) => [
        { app_guid: apps.web.guid, ip: i.internalIp! },
        `ip:${i.internalIp}`,
        `web/${i.index} (${i.internalIp})`,
      ]),
    );
    cc.statsUnavailable = true;
    await rejects(
      lookupCfTargets(client, byName("web"), t, "dev", POLICY),
      "CONNECTION_ERROR",
      /cannot list the instances .*CF-InstancesUnavailable: Stats server temporarily unavailable/,
    );
  });
});

Deno.test("cc client: bad tokens are UNAUTHENTICATED, a missing read scope PERMISSION_DENIED", async () => {
  await withLab(async ({ client, uaa, apps }) => {
    const expired = await uaa.mintExpired({ clientId: "cf", scopes: ["cloud_controller.read"] });
    await rejects(
      client.appByGuid(apps.web.guid, expired),
      "UNAUTHENTICATED",
      /CF-InvalidAuthToken.*cf login/,
      expired,
    );
    const wrongAud = await uaa.mintValid({ clientId: "cf", scopes: ["bosh.admin"] });
    await rejects(
      client.appByGuid(apps.web.guid, wrongAud),
      "UNAUTHENTICATED",
      /rejected your token/,
      wrongAud,
    );
    const noRead = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.write"] });
    await rejects(
      client.appByGuid(apps.web.guid, noRead),
      "PERMISSION_DENIED",
      /CF-NotAuthorized/,
      noRead,
    );
    // Guids go into CC paths: anything but the UUID form is refused before any request.
    for (const g of ["..", "../v3/apps", `${apps.web.guid}/../x`, "a?b=c", ""]) {
      await rejects(client.appByGuid(g, noRead), "INVALID_REQUEST", /not a Cloud Controller guid/);
    }
  });
});

Deno.test("cc client: CC down, slow, http to a non-loopback host", async () => {
  await withLab(async ({ client, cc, apps, token }) => {
    const t = await token("dev");
    cc.faults.delayMs = 5000;
    await rejects(
      client.appByGuid(apps.web.guid, t),
      "CONNECTION_ERROR",
      /did not answer within 2000 ms/,
    );
    cc.faults.delayMs = 0;
    await cc.setDown(true);
    await rejects(
      client.appByGuid(apps.web.guid, t),
      "CONNECTION_ERROR",
      /cannot reach the Cloud Controller/,
    );
    await cc.setDown(false);
    assertEquals((await client.appByGuid(apps.web.guid, t)).name, "web");
  });
  let thrown: unknown;
  try {
    new CcClient({ url: "http://198.18.0.1", timeoutMs: 1000 });
  } catch (e) {
    thrown = e;
  }
  assert(
    thrown instanceof ApiError && /cf.api_url .*uses http/.test(thrown.message),
    String(thrown),
  );
});

/** A loopback CC that answers every request with `answer(url)`. */
async function withFakeCc(
  answer: (url: URL, base: string) => Response | Promise<Response>,
  fn: (client: CcClient, base: string) => Promise<void>,
) {
  const ac = new AbortController();
  const { promise, resolve } = Promise.withResolvers<number>();
  let base = "";
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: (a) => resolve(a.port) },
    (req) => answer(new URL(req.url), base),
  );
  base = `http://127.0.0.1:${await promise}`;
  const client = new CcClient({ url: base, timeoutMs: 2000 });
  try {
    await fn(client, base);
  } finally {
    client.close();
    ac.abort();
    await server.finished;
  }
}

Deno.test("cc client: pagination is followed on the same origin only, and bounded", async () => {
  const space = crypto.randomUUID();
  const app = (name: string) => ({
    guid: crypto.randomUUID(),
    name,
    relationships: { space: { data: { guid: space } } },
  });
  // Page 1 has another app of a similar name; the exact match is on page 2.
  await withFakeCc((url, base) => {
    const page = Number(url.searchParams.get("page") ?? "1");
    const next = page === 1 ? { href: `${base}/v3/apps?page=2` } : null;
    return Response.json({ pagination: { next }, resources: [app(page === 1 ? "web2" : "web")] });
  }, async (client) => {
    assertEquals((await client.appByName("web", space, "t")).name, "web");
  });
  await withFakeCc(
    () =>
      Response.json({
        pagination: { next: { href: "https://evil.invalid/v3/apps?page=2" } },
        resources: [],
      }),
    async (client) => {
      await rejects(
        client.appByName("web", space, "t"),
        "CONNECTION_ERROR",
        /another origin.*refusing to send the token/,
      );
    },
  );
  await withFakeCc(
    (url, base) =>
      Response.json({
        pagination: { next: { href: `${base}${url.pathname}?page=x` } },
        resources: [],
      }),
    async (client) => {
      await rejects(client.appByName("web", space, "t"), "CONNECTION_ERROR", /more than 100 pages/);
    },
  );
});

Deno.test("cc client: garbage, wrong shapes, huge bodies, 500 and a cleartext UAA", async () => {
  const guid = crypto.randomUUID();
  const cases: Array<[string, () => Response, RegExp]> = [
    [
      "not JSON",
      () => new Response("<html>oops"),
      /body that is not JSON.*check that cf\.api_url names the Cloud Controller/,
    ],
    [
      "wrong shape",
      () => Response.json({ resources: [{ index: "zero" }] }),
      /unexpected shape \(resources\.0\.index/,
    ],
    ["huge", () => new Response("x".repeat(17 * 1024 * 1024)), /too large.*exceeds the 16777216/],
    // answered, so not "cannot reach … check the network" (found by tests/chaos/)
    [
      "redirect",
      () => new Response(null, { status: 302, headers: { location: "http://127.0.0.1:1/x" } }),
      /answered with a redirect, which the api never follows/,
    ],
    // an https redirect comes back as the 302 itself, not as a fetch error (found end to end by
    // tests/chaos/cc_faults_test.ts: it read "answered 302 …; retry later")
    [
      "https redirect",
      () => new Response(null, { status: 302, headers: { location: "https://127.0.0.1:1/x" } }),
      /answered with a redirect, which the api never follows.*set cf\.api_url/,
    ],
    [
      "500",
      () =>
        Response.json({ errors: [{ code: 10001, title: "UnknownError", detail: "boom" }] }, {
          status: 500,
        }),
      /answered 500 .*UnknownError: boom; retry later/,
    ],
  ];
  for (const [name, answer, re] of cases) {
    await withFakeCc(answer, async (client) => {
      await rejects(client.processStats(guid, "web", "t"), "CONNECTION_ERROR", re).catch((e) => {
        throw new Error(`${name}: ${e}`);
      });
    });
  }
  await withFakeCc(
    () => Response.json({ links: { uaa: { href: "http://uaa.example.com" } } }),
    async (client) => {
      await rejects(
        client.uaaUrl(),
        "CONNECTION_ERROR",
        /names its UAA .*uses http.*refusing to load token keys/,
      );
    },
  );
  await withFakeCc(
    () => Response.json({ links: { uaa: null } }),
    async (client) => {
      await rejects(client.uaaUrl(), "CONNECTION_ERROR", /names no UAA/);
    },
  );
});

Deno.test("cf resolver: token checked against the CC's UAA with aud cloud_controller; targets and audit", async () => {
  await withLab(async ({ client, uaa, apps, token }) => {
    const verifier = cfTokenVerifier(client, { timeoutMs: 2000 });
    const resolver = new CfResolver({
      cc: client,
      verifier,
      agentPort: 9494,
      requireSshEnabled: true,
      maxTargets: 10,
    });
    const t = await token("dev");
    const user = await resolver.authenticate(t);
    assertEquals(user.user, "dev");
    const noAud = await uaa.mintValid({ clientId: "cf", scopes: ["bosh.admin"] });
    await rejectsWith(resolver.authenticate(noAud), AuthError, "UNAUTHENTICATED", /\(aud\)/);
    const noScope = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.write"] });
    // Authentication and authorization are apart: the scope is checked by authorize().
    const scopeless = await resolver.authenticate(noScope);
    await rejectsWith(
      resolver.authorize(scopeless),
      AuthError,
      "PERMISSION_DENIED",
      /cloud_controller\.read/,
    );
    const wrongIss = await uaa.mintWrongIssuer({
      clientId: "cf",
      scopes: ["cloud_controller.read"],
    });
    await rejectsWith(resolver.authenticate(wrongIss), AuthError, "UNAUTHENTICATED", /iss/);

    const parsed = CfStartRequest.safeParse({
      type: "start",
      protocol_version: 1,
      cf: { app: "web", space_guid: SPACE.guid, indexes: [0, 2] },
    });
    assert(parsed.success, parsed.success ? "" : JSON.stringify(parsed.error));
    const r = await resolver.resolve(parsed.data, { token: t, user });
    const inst = apps.web.processes[0].instances;
    assertEquals(
      r.targets.map((x) => [x.address, x.port, x.origin, x.container, x.instance]),
      [0, 2].map((i) => [
        inst[i].host,
        9494,
        `web/${i} (${inst[i].instanceGuid})`,
        { app_guid: apps.web.guid, instance_guid: inst[i].instanceGuid },
        { group: "web", index: i, id: inst[i].instanceGuid },
      ]),
    );
    assertEquals(r.facts, {
      org: "acme",
      space: "dev",
      app: "web",
      app_guid: apps.web.guid,
      process: "web",
      indexes: "0,2",
    });
    inst.forEach((i) => i.state = "CRASHED");
    await rejectsWith(
      resolver.resolve(parsed.data, { token: t, user }),
      ApiError,
      "START_CAPTURE_FAILED",
      /no instance of app 'web' can be captured: web\/0 is CRASHED/,
    );
    for (
      const bad of [
        { space_guid: SPACE.guid },
        { app: "web", app_guid: "../x" },
        { app: "web", process: "a/b" },
        { app: "web", indexes: [-1] },
        { app: "web", colour: "red" },
      ]
    ) {
      assert(
        !CfStartRequest.safeParse({ type: "start", protocol_version: 1, cf: bad }).success,
        JSON.stringify(bad),
      );
    }
  });
});
