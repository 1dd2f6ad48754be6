// deno-lint-ignore-file no-explicit-any -- tests read loosely typed JSON bodies field by field
import assert from "node:assert/strict";
import { UaaSim } from "../lab/uaa_sim.ts";
import { DirectorSim, makeGroup } from "../lab/director_sim.ts";
import { Pki } from "../lab/pki.ts";

async function get(
  url: string,
  token?: string,
  client?: Deno.HttpClient,
): Promise<{ status: number; body: unknown; text: string }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { headers, client });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch { /* plain-text answers */ }
  return { status: res.status, body, text };
}

async function withLab(
  fn: (uaa: UaaSim, dir: DirectorSim) => Promise<void>,
): Promise<void> {
  const uaa = await UaaSim.start();
  let director: DirectorSim | undefined;
  try {
    director = await DirectorSim.start({
      uaaUrl: uaa.url,
      name: "lab",
      deployments: [
        {
          name: "cf",
          teams: ["cf-team"],
          instances: [
            ...makeGroup("diego-cell", 3, "198.18.0.10"),
            ...makeGroup("router", 1, "198.18.0.20"),
            { job: "smoke-tests", index: 0, id: crypto.randomUUID(), ips: [], expectsVm: false },
          ],
        },
        { name: "other", teams: ["other-team"], instances: makeGroup("web", 2, "198.18.1.10") },
      ],
    });
    await fn(uaa, director);
  } finally {
    await director?.stop();
    await uaa.stop();
  }
}

Deno.test("director: /info is unauthenticated and names the UAA", async () => {
  await withLab(async (uaa, d) => {
    const { status, body } = await get(`${d.url}/info`);
    assert.equal(status, 200);
    const info = body as Record<string, any>;
    assert.equal(info.uuid, d.uuid);
    assert.equal(info.name, "lab");
    assert.equal(info.user, null);
    assert.equal(info.user_authentication.type, "uaa");
    assert.equal(info.user_authentication.options.url, uaa.url);
    assert.deepEqual(info.user_authentication.options.urls, [uaa.url]);
    assert.ok(info.version && info.cpi && info.features);
    const withToken = await get(`${d.url}/info`, await uaa.mintValid({ userName: "admin" }));
    assert.equal((withToken.body as Record<string, unknown>).user, "admin");
  });
});

Deno.test("director: instances have the Director's fields; scopes and teams are enforced", async () => {
  await withLab(async (uaa, d) => {
    // Real token from the UAA's password grant, as bosh_cli would get it.
    uaa.users.push({ username: "admin", password: "pw", scopes: ["openid", "bosh.admin"] });
    const tokRes = await fetch(`${uaa.url}/oauth/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${btoa("bosh_cli:")}`,
      },
      body: new URLSearchParams({ grant_type: "password", username: "admin", password: "pw" }),
    });
    const admin = String((await tokRes.json()).access_token);

    const deps = await get(`${d.url}/deployments`, admin);
    assert.equal(deps.status, 200);
    const list = deps.body as Array<Record<string, unknown>>;
    assert.deepEqual(list.map((x) => x.name), ["cf", "other"]);
    for (const f of ["releases", "stemcells", "cloud_config", "teams"]) assert.ok(f in list[0], f);

    const inst = await get(`${d.url}/deployments/cf/instances`, admin);
    assert.equal(inst.status, 200);
    const instances = inst.body as Array<Record<string, any>>;
    assert.equal(instances.length, 5);
    const cells = instances.filter((i) => i.job === "diego-cell");
    assert.deepEqual(cells.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(cells.map((c) => c.ips[0]), ["198.18.0.10", "198.18.0.11", "198.18.0.12"]);
    for (const c of cells) {
      for (const f of ["agent_id", "cid", "job", "index", "id", "az", "ips", "vm_created_at"]) {
        assert.ok(c[f] !== undefined && c[f] !== null, `cell.${f}`);
      }
      assert.equal(c.expects_vm, true);
    }
    const errand = instances.find((i) => i.job === "smoke-tests")!;
    assert.equal(errand.expects_vm, false);
    assert.deepEqual(errand.ips, []);
    assert.equal(errand.agent_id, null);

    // bosh.<uuid>.admin works like bosh.admin
    const uuidAdmin = await uaa.mintValid({ scopes: [`bosh.${d.uuid}.admin`] });
    assert.equal((await get(`${d.url}/deployments/other/instances`, uuidAdmin)).status, 200);

    // Team admin: sees only the team's deployments
    const team = await uaa.mintValid({ scopes: ["bosh.teams.cf-team.admin"] });
    const teamDeps = await get(`${d.url}/deployments`, team);
    assert.deepEqual((teamDeps.body as Array<{ name: string }>).map((x) => x.name), ["cf"]);
    assert.equal((await get(`${d.url}/deployments/cf/instances`, team)).status, 200);
    const denied = await get(`${d.url}/deployments/other/instances`, team);
    assert.equal(denied.status, 401);
    assert.equal((denied.body as any).code, 600000);
    assert.match((denied.body as any).description, /Require one of the scopes: bosh\.admin/);

    // Another director's uuid scope grants nothing here.
    const foreign = await uaa.mintValid({ scopes: [`bosh.${crypto.randomUUID()}.admin`] });
    assert.equal((await get(`${d.url}/deployments/cf/instances`, foreign)).status, 401);
    assert.deepEqual((await get(`${d.url}/deployments`, foreign)).body, []);

    // Unknown deployment: the Director's 404 body
    const missing = await get(`${d.url}/deployments/nope/instances`, admin);
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, { code: 70000, description: "Deployment 'nope' doesn't exist" });
  });
});

Deno.test("director: bad tokens get 401 Not authorized", async () => {
  await withLab(async (uaa, d) => {
    const url = `${d.url}/deployments/cf/instances`;
    const tokens: Array<[string, string | undefined]> = [
      ["none", undefined],
      ["expired", await uaa.mintExpired()],
      ["wrong key", await uaa.mintWrongKey()],
      ["unknown kid", await uaa.mintUnknownKid()],
      ["alg none", uaa.mintAlgNone()],
      ["hs256", uaa.mintHs256WithPublicKey()],
      ["garbage", UaaSim.garbageToken()],
    ];
    for (const [name, t] of tokens) {
      const r = await get(url, t);
      assert.equal(r.status, 401, name);
      assert.equal(r.text, "Not authorized: '/deployments/cf/instances'\n", name);
    }
    // A rotated key is picked up (refetch on unknown kid).
    await uaa.rotate(true);
    assert.equal((await get(url, await uaa.mintValid())).status, 200);
  });
});

Deno.test("director: fault switches (slow, flaky, down) and forbiddenStatus 403", async () => {
  const uaa = await UaaSim.start();
  const d = await DirectorSim.start({
    uaaUrl: uaa.url,
    forbiddenStatus: 403,
    deployments: [{ name: "cf", instances: makeGroup("diego-cell", 1, "198.18.0.10") }],
  });
  try {
    const admin = await uaa.mintValid();
    const url = `${d.url}/deployments/cf/instances`;
    const reader = await uaa.mintValid({ scopes: ["openid"] });
    assert.equal((await get(url, reader)).status, 403);

    d.faults.delayMs = 300;
    const t0 = performance.now();
    assert.equal((await get(url, admin)).status, 200);
    assert.ok(performance.now() - t0 >= 250, "slow switch delays the answer");
    // A client with a short timeout gives up on the slow Director.
    await assert.rejects(() => fetch(url, { signal: AbortSignal.timeout(50) }));
    d.faults.delayMs = 0;

    d.faults.flakyEvery = 2;
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await get(url, admin)).status);
    assert.equal(statuses.filter((s) => s === 500).length, 2, String(statuses));
    d.faults.flakyEvery = 0;

    await d.setDown(true);
    await assert.rejects(() => fetch(url));
    await d.setDown(false);
    assert.equal((await get(url, admin)).status, 200);
  } finally {
    await d.stop();
    await uaa.stop();
  }
});

Deno.test("director: HTTPS with a lab certificate", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-dir-" });
  const pki = await Pki.create(dir);
  const [uc, dc] = await Promise.all([
    pki.issue("uaa", { server: true, ips: ["127.0.0.1"] }),
    pki.issue("director", { server: true, ips: ["127.0.0.1"] }),
  ]);
  const uaa = await UaaSim.start({ tls: uc });
  const d = await DirectorSim.start({
    uaaUrl: uaa.url,
    uaaCaCert: pki.caCert,
    tls: dc,
    deployments: [{ name: "cf", instances: makeGroup("diego-cell", 2, "198.18.0.10") }],
  });
  const client = Deno.createHttpClient({ caCerts: [pki.caCert] });
  try {
    assert.ok(d.url.startsWith("https://"));
    const r = await get(`${d.url}/deployments/cf/instances`, await uaa.mintValid(), client);
    assert.equal(r.status, 200);
    assert.equal((r.body as unknown[]).length, 2);
  } finally {
    client.close();
    await d.stop();
    await uaa.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
