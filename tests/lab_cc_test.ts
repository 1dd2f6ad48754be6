// deno-lint-ignore-file no-explicit-any -- tests read loosely typed JSON bodies field by field
import assert from "node:assert/strict";
import { UaaSim } from "../lab/uaa_sim.ts";
import { type CcApp, CcSim, instanceGuid, versionBelow } from "../lab/cc_sim.ts";

const ORG = { guid: crypto.randomUUID(), name: "org" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const LOCKED = { guid: crypto.randomUUID(), name: "locked", orgGuid: ORG.guid, allowSsh: false };
const USERS = {
  dev: crypto.randomUUID(),
  auditor: crypto.randomUUID(),
  supporter: crypto.randomUUID(),
  manager: crypto.randomUUID(),
  orgManager: crypto.randomUUID(),
  stranger: crypto.randomUUID(),
};

function app(name: string, spaceGuid: string, instances: number, sshEnabled = true): CcApp {
  return {
    guid: crypto.randomUUID(),
    name,
    spaceGuid,
    sshEnabled,
    processes: [{
      guid: crypto.randomUUID(),
      type: "web",
      instances: Array.from({ length: instances }, (_, index) => ({
        index,
        instanceGuid: instanceGuid(),
        host: `198.18.0.${10 + index}`,
        internalIp: `10.255.0.${10 + index}`,
      })),
    }],
  };
}

async function get(url: string, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { headers: token ? { authorization: `bearer ${token}` } : {} });
  return { status: res.status, body: await res.json() };
}

async function withCc(fn: (uaa: UaaSim, cc: CcSim, apps: CcApp[]) => Promise<void>) {
  const uaa = await UaaSim.start();
  const apps = [
    app("my-app", SPACE.guid, 2),
    app("quiet", SPACE.guid, 1, false),
    app("vault", LOCKED.guid, 1),
  ];
  let cc: CcSim | undefined;
  try {
    cc = await CcSim.start({
      uaaUrl: uaa.url,
      orgs: [ORG],
      spaces: [SPACE, LOCKED],
      apps,
      roles: [
        { userId: USERS.dev, type: "space_developer", target: SPACE.guid },
        { userId: USERS.auditor, type: "space_auditor", target: SPACE.guid },
        { userId: USERS.supporter, type: "space_supporter", target: SPACE.guid },
        { userId: USERS.manager, type: "space_manager", target: SPACE.guid },
        { userId: USERS.orgManager, type: "org_manager", target: ORG.guid },
      ],
    });
    await fn(uaa, cc, apps);
  } finally {
    await cc?.stop();
    await uaa.stop();
  }
}

const mint = (uaa: UaaSim, userId: string, scopes = ["openid", "cloud_controller.read"]) =>
  uaa.mintValid({
    clientId: "cf",
    userName: `u-${userId.slice(0, 4)}`,
    scopes,
    extra: { user_id: userId, sub: userId },
  });

Deno.test("cc: root links and app lookup by name and space, with pagination", async () => {
  await withCc(async (uaa, cc, apps) => {
    const root = await get(`${cc.url}/`);
    assert.equal(root.status, 200);
    assert.equal(root.body.links.cloud_controller_v3.href, `${cc.url}/v3`);
    assert.equal(root.body.links.uaa.href, uaa.url);
    assert.equal(root.body.links.login.href, uaa.url);

    const dev = await mint(uaa, USERS.dev);
    const list = await get(`${cc.url}/v3/apps?names=my-app&space_guids=${SPACE.guid}`, dev);
    assert.equal(list.status, 200);
    assert.equal(list.body.pagination.total_results, 1);
    assert.equal(list.body.pagination.next, null);
    const a = list.body.resources[0];
    assert.equal(a.guid, apps[0].guid);
    assert.equal(a.name, "my-app");
    assert.equal(a.relationships.space.data.guid, SPACE.guid);
    assert.ok(a.links.self.href && a.state && a.created_at);

    const paged = await get(`${cc.url}/v3/apps?per_page=1`, dev);
    assert.equal(paged.body.pagination.total_results, 2, "dev sees the two apps of their space");
    assert.equal(paged.body.pagination.total_pages, 2);
    assert.equal(paged.body.resources.length, 1);
    const next = await get(paged.body.pagination.next.href, dev);
    assert.equal(next.body.resources.length, 1);
    assert.notEqual(next.body.resources[0].guid, paged.body.resources[0].guid);

    const spaces = await get(`${cc.url}/v3/spaces?names=dev`, dev);
    assert.equal(spaces.body.resources[0].guid, SPACE.guid);
    assert.equal(spaces.body.resources[0].relationships.organization.data.guid, ORG.guid);
    const orgs = await get(`${cc.url}/v3/organizations`, dev);
    assert.deepEqual(orgs.body.resources.map((o: any) => o.name), ["org"]);
  });
});

Deno.test("cc: permissions, processes and stats follow the roles", async () => {
  await withCc(async (uaa, cc, apps) => {
    const guid = apps[0].guid;
    const perms = async (t: string) => await get(`${cc.url}/v3/apps/${guid}/permissions`, t);

    const dev = await mint(uaa, USERS.dev);
    assert.deepEqual((await perms(dev)).body, { read_basic_data: true, read_sensitive_data: true });
    const auditor = await mint(uaa, USERS.auditor);
    assert.deepEqual((await perms(auditor)).body, {
      read_basic_data: true,
      read_sensitive_data: false,
    });
    const om = await mint(uaa, USERS.orgManager);
    assert.deepEqual((await perms(om)).body, { read_basic_data: true, read_sensitive_data: false });
    const admin = await uaa.mintValid({
      clientId: "cf",
      userName: "admin",
      scopes: ["cloud_controller.admin"],
    });
    assert.deepEqual((await perms(admin)).body, {
      read_basic_data: true,
      read_sensitive_data: true,
    });

    const stranger = await mint(uaa, USERS.stranger);
    const hidden = await perms(stranger);
    assert.equal(hidden.status, 404);
    assert.deepEqual(hidden.body, {
      errors: [{ detail: "App not found", title: "CF-ResourceNotFound", code: 10010 }],
    });
    assert.equal((await get(`${cc.url}/v3/apps/${guid}`, stranger)).status, 404);
    assert.equal((await get(`${cc.url}/v3/apps?names=my-app`, stranger)).body.resources.length, 0);

    const procs = await get(`${cc.url}/v3/apps/${guid}/processes`, dev);
    assert.equal(procs.body.resources[0].type, "web");
    assert.equal(procs.body.resources[0].instances, 2);
    const pguid = procs.body.resources[0].guid;
    const stats = await get(`${cc.url}/v3/processes/${pguid}/stats`, dev);
    assert.equal(stats.status, 200);
    const inst = apps[0].processes[0].instances;
    assert.deepEqual(
      stats.body.resources.map((r: any) => [r.index, r.host, r.instance_guid, r.state, r.type]),
      inst.map((i) => [i.index, i.host, i.instanceGuid, "RUNNING", "web"]),
    );
    for (const f of ["uptime", "instance_ports", "mem_quota", "usage", "instance_internal_ip"]) {
      assert.ok(f in stats.body.resources[0], f);
    }
    const byType = await get(`${cc.url}/v3/apps/${guid}/processes/web/stats`, dev);
    assert.deepEqual(byType.body, stats.body);
    assert.equal((await get(`${cc.url}/v3/processes/${pguid}/stats`, stranger)).status, 404);
    const noProc = await get(`${cc.url}/v3/processes/${crypto.randomUUID()}/stats`, dev);
    assert.equal(noProc.body.errors[0].detail, "Process not found");
  });
});

Deno.test("cc: ssh_enabled reasons", async () => {
  await withCc(async (uaa, cc, apps) => {
    const admin = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.admin"] });
    const ssh = async (g: string) => (await get(`${cc.url}/v3/apps/${g}/ssh_enabled`, admin)).body;
    assert.deepEqual(await ssh(apps[0].guid), { enabled: true, reason: "" });
    assert.deepEqual(await ssh(apps[1].guid), {
      enabled: false,
      reason: "ssh is disabled for app",
    });
    assert.deepEqual(await ssh(apps[2].guid), {
      enabled: false,
      reason: "ssh is disabled for space 'locked'",
    });
    cc.allowSsh = false;
    assert.deepEqual(await ssh(apps[0].guid), {
      enabled: false,
      reason: "ssh is disabled globally",
    });
  });
});

Deno.test("cc: token errors (401/403) and fault switches", async () => {
  await withCc(async (uaa, cc, apps) => {
    const url = `${cc.url}/v3/apps/${apps[0].guid}`;
    const missing = await get(url);
    assert.equal(missing.status, 401);
    assert.equal(missing.body.errors[0].title, "CF-NotAuthenticated");
    for (
      const t of [
        await uaa.mintExpired(),
        await uaa.mintWrongKey(),
        uaa.mintAlgNone(),
        uaa.mintHs256WithPublicKey(),
      ]
    ) {
      const r = await get(url, t);
      assert.equal(r.status, 401);
      assert.deepEqual(r.body.errors[0], {
        detail: "Invalid Auth Token",
        title: "CF-InvalidAuthToken",
        code: 1000,
      });
    }
    // aud has cloud_controller (from .write) but no read scope: authenticated, not authorized
    const noScope = await get(url, await uaa.mintValid({ scopes: ["cloud_controller.write"] }));
    assert.equal(noScope.status, 403);
    assert.equal(noScope.body.errors[0].title, "CF-NotAuthorized");

    const dev = await mint(uaa, USERS.dev);
    cc.faults.flakyEvery = 3;
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await get(url, dev)).status);
    assert.deepEqual(statuses.filter((s) => s === 500).length, 1, String(statuses));
    cc.faults.flakyEvery = 0;

    cc.faults.delayMs = 5_000;
    await assert.rejects(() => fetch(url, { signal: AbortSignal.timeout(100) }));
    cc.faults.delayMs = 0;

    await cc.setDown(true);
    await assert.rejects(() => fetch(url));
    await cc.setDown(false);
    assert.equal((await get(url, dev)).status, 200);
  });
});

Deno.test("cc: read_sensitive_data only for developers, admin and admin_read_only", async () => {
  await withCc(async (uaa, cc, apps) => {
    const url = `${cc.url}/v3/apps/${apps[0].guid}`;
    const sensitive = async (t: string) => {
      const r = await get(`${url}/permissions`, t);
      assert.equal(r.status, 200);
      // Stats stay visible to every role that can see the app: they are no permission to capture.
      assert.equal((await get(`${url}/processes/web/stats`, t)).status, 200);
      return r.body.read_sensitive_data;
    };
    assert.equal(await sensitive(await mint(uaa, USERS.dev)), true);
    for (const u of [USERS.auditor, USERS.supporter, USERS.manager, USERS.orgManager]) {
      assert.equal(await sensitive(await mint(uaa, u)), false, u);
    }
    const global = (scope: string) => uaa.mintValid({ clientId: "cf", scopes: [scope] });
    assert.equal(await sensitive(await global("cloud_controller.admin_read_only")), true);
    assert.equal(await sensitive(await global("cloud_controller.global_auditor")), false);
  });
});

Deno.test("cc: tokens need aud cloud_controller and the UAA's issuer", async () => {
  await withCc(async (uaa, cc, apps) => {
    const url = `${cc.url}/v3/apps/${apps[0].guid}`;
    const dev = { user_id: USERS.dev, sub: USERS.dev };
    const ok = await uaa.mintValid({
      clientId: "cf",
      scopes: ["cloud_controller.read"],
      extra: dev,
    });
    assert.equal((await get(url, ok)).status, 200);
    const noAud = await uaa.mintValid({
      clientId: "cf",
      scopes: ["cloud_controller.read"],
      extra: { ...dev, aud: ["cf", "bosh"] },
    });
    const wrongIss = await uaa.mintWrongIssuer({
      clientId: "cf",
      scopes: ["cloud_controller.read"],
      extra: dev,
    });
    for (const t of [noAud, wrongIss]) {
      const r = await get(url, t);
      assert.equal(r.status, 401);
      assert.equal(r.body.errors[0].title, "CF-InvalidAuthToken");
    }
  });
});

Deno.test("cc: stats states, 28-char instance guids, old CC and 503", async () => {
  await withCc(async (uaa, cc, apps) => {
    const procs = apps[0].processes[0];
    procs.instances.push(
      { index: 2, instanceGuid: instanceGuid(), host: "198.18.0.12", state: "CRASHED" },
      { index: 3, instanceGuid: instanceGuid(), host: "198.18.0.13", state: "DOWN" },
    );
    const dev = await mint(uaa, USERS.dev);
    const url = `${cc.url}/v3/apps/${apps[0].guid}/processes/web/stats`;
    const r = (await get(url, dev)).body.resources;
    assert.deepEqual(r.map((x: any) => x.state), ["RUNNING", "RUNNING", "CRASHED", "DOWN"]);
    assert.match(
      r[0].instance_guid,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$/,
    );
    assert.equal(r[0].instance_guid.length, 28);
    assert.equal(r[2].host, "");
    assert.equal(r[2].instance_guid, "");
    assert.ok(!("host" in r[3]) && !("instance_guid" in r[3]), JSON.stringify(r[3]));

    const root = async () => (await get(`${cc.url}/`)).body.links.cloud_controller_v3.meta.version;
    assert.equal(versionBelow(await root(), "3.191.0"), false);
    cc.apiVersion = "3.190.0";
    assert.equal(await root(), "3.190.0");
    const old = (await get(url, dev)).body.resources;
    assert.ok(old.every((x: any) => !("instance_guid" in x)), "old CC: no instance_guid");
    assert.equal(old[0].instance_internal_ip, procs.instances[0].internalIp);
    assert.equal(old[0].host, procs.instances[0].host);

    cc.statsUnavailable = true;
    const down = await get(url, dev);
    assert.equal(down.status, 503);
    assert.deepEqual(down.body.errors[0], {
      detail: "Stats server temporarily unavailable.",
      title: "CF-InstancesUnavailable",
      code: 220002,
    });
    assert.ok(versionBelow("3.99.9", "3.100.0") && !versionBelow("3.191.0", "3.191.0"));
  });
});
