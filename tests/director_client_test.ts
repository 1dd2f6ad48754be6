// Director client against the lab Director over real HTTPS (lab CA) with real UAA tokens, plus
// a small hand-rolled server for the failure shapes the simulator does not produce (garbage JSON,
// wrong shapes, 500 bodies, slow answers, huge bodies).
import { Pki } from "../lab/pki.ts";
import { UaaSim } from "../lab/uaa_sim.ts";
import { DirectorSim, makeGroup } from "../lab/director_sim.ts";
import { DirectorClient } from "../server/director_client.ts";
import { ApiError, type ApiErrorKind } from "../server/limits.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { type BoshSims, rejectsWith, withBoshSims } from "./support/bosh_sims.ts";

function rejects(
  p: Promise<unknown>,
  kind: ApiErrorKind,
  re: RegExp,
  token?: string,
): Promise<ApiError> {
  return rejectsWith(p, ApiError, kind, re, token ? [token.split(".")[2]] : []);
}

function withLab(
  fn: (lab: BoshSims) => Promise<void>,
  opts: { forbiddenStatus?: 401 | 403 } = {},
): Promise<void> {
  return withBoshSims({
    prefix: "pcap_dc_",
    clientTimeoutMs: 2000,
    director: () => ({
      forbiddenStatus: opts.forbiddenStatus,
      deployments: [
        {
          name: "cf",
          teams: ["cf-team"],
          instances: [
            ...makeGroup("router", 2, "198.18.0.20"),
            { job: "errand", index: 0, id: crypto.randomUUID(), ips: [], expectsVm: false },
          ],
        },
        { name: "odd_name.v2-1", instances: makeGroup("web", 1, "198.18.1.10") },
      ],
    }),
  }, fn);
}

Deno.test("director client: /info over HTTPS, cached", async () => {
  await withLab(async ({ uaa, director, client }) => {
    const info = await client.info();
    assertEquals(info.uuid, director.uuid);
    assertEquals(await client.uaaUrl(), uaa.url);
    const before = director.requestCount;
    await Promise.all([client.info(), client.info(), client.uaaUrl()]);
    assertEquals(director.requestCount, before, "cached /info must not hit the Director");
  });
});

Deno.test("director client: instances with the user's token; BOSH-charset names", async () => {
  await withLab(async ({ uaa, client }) => {
    const token = await uaa.mintValid({ scopes: ["bosh.teams.cf-team.read"] });
    const list = await client.instances("cf", token);
    assertEquals(list.map((i) => `${i.job}/${i.index}`), ["router/0", "router/1", "errand/0"]);
    assertEquals(list[0].ips, ["198.18.0.20"]);
    assertEquals(list[2].ips, []);
    assertEquals(list[2].expects_vm, false);
    assertEquals(list[2].agent_id, null);
    const odd = await client.instances("odd_name.v2-1", await uaa.mintValid());
    assertEquals(odd.map((i) => i.job), ["web"]);
  });
});

Deno.test("director client: '.', '..' and names outside the BOSH charset never reach the Director", async () => {
  await withLab(async ({ uaa, director, client }) => {
    const token = await uaa.mintValid();
    await client.info();
    const before = director.requestCount;
    // "." and ".." survive encodeURIComponent and would turn /deployments/../instances into
    // /instances on the Director.
    for (const name of [".", "..", "a/b", "cf?x=1", "cf#x", "with space", "%2e%2e"]) {
      await rejects(client.instances(name, token), "INVALID_REQUEST", /deployment name/, token);
    }
    assertEquals(director.requestCount, before, "no request for an invalid name");
  });
});

Deno.test("director client: 401 / scope-401 / 403 / 404 mapping", async () => {
  await withLab(async ({ uaa, client }) => {
    const expired = await uaa.mintExpired();
    await rejects(
      client.instances("cf", expired),
      "UNAUTHENTICATED",
      /rejected your token/,
      expired,
    );
    // The real Director says "Require one of the scopes" with 401 and code 600000.
    const other = await uaa.mintValid({ scopes: ["bosh.teams.other.read"] });
    await rejects(client.instances("cf", other), "PERMISSION_DENIED", /Require one of the scopes/);
    const ok = await uaa.mintValid();
    await rejects(
      client.instances("nope", ok),
      "INVALID_REQUEST",
      /^deployment 'nope' not found on the Director/,
    );
    await rejects(client.instances("", ok), "INVALID_REQUEST", /1\.\.255/);
  });
  await withLab(async ({ uaa, client }) => {
    const other = await uaa.mintValid({ scopes: ["bosh.teams.other.read"] });
    await rejects(client.instances("cf", other), "PERMISSION_DENIED", /\(403\)/, other);
  }, { forbiddenStatus: 403 });
});

Deno.test("director client: down, slow, wrong CA", async () => {
  await withLab(async ({ uaa, director, client, pki }) => {
    const token = await uaa.mintValid();
    await director.setDown(true);
    await rejects(client.instances("cf", token), "CONNECTION_ERROR", /cannot reach/, token);
    await director.setDown(false);

    director.faults.delayMs = 3000;
    const slow = new DirectorClient({ url: director.url, caCert: pki.caCert, timeoutMs: 300 });
    try {
      const t0 = Date.now();
      await rejects(slow.instances("cf", token), "CONNECTION_ERROR", /within 300 ms/, token);
      assert(Date.now() - t0 < 2500, "timeout must cut the slow Director short");
    } finally {
      slow.close();
      director.faults.delayMs = 0;
    }

    // Without the lab CA the TLS handshake fails: the Director's identity is not trusted.
    const noCa = new DirectorClient({ url: director.url, timeoutMs: 2000 });
    try {
      await rejects(noCa.info(), "CONNECTION_ERROR", /cannot reach .*bosh\.tls\.ca/);
    } finally {
      noCa.close();
    }
  });
});

/** A throwaway HTTPS "Director" answering whatever the test wants. */
async function withFake(
  tls: { cert: string; key: string },
  caCert: string,
  handler: (req: Request) => Response | Promise<Response>,
  fn: (client: DirectorClient) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: tls.cert, key: tls.key, onListen: () => {} },
    handler,
  );
  const client = new DirectorClient({
    url: `https://127.0.0.1:${server.addr.port}/`,
    caCert,
    timeoutMs: 2000,
  });
  try {
    await fn(client);
  } finally {
    client.close();
    await server.shutdown();
  }
}

Deno.test("director client: 500, garbage JSON, wrong shapes, huge body, non-UAA", async () => {
  await withLab(async ({ pki, tls }) => {
    let seenAuth = "";
    let seenPath = "";
    await withFake(tls, pki.caCert, (req) => {
      seenAuth = req.headers.get("authorization") ?? "";
      seenPath = new URL(req.url).pathname;
      if (seenPath.startsWith("/deployments/boom")) {
        return Response.json({ code: 100, description: "Internal error" }, { status: 500 });
      }
      if (seenPath.startsWith("/deployments/garbage")) return new Response("<html>oops");
      if (seenPath.startsWith("/deployments/shape")) return Response.json([{ job: 7 }]);
      if (seenPath.startsWith("/deployments/huge")) {
        return new Response("[" + " ".repeat(17 * 1024 * 1024) + "]");
      }
      if (seenPath.startsWith("/deployments/moved")) {
        return new Response(null, { status: 302, headers: { location: "https://127.0.0.1:1/x" } });
      }
      if (seenPath.startsWith("/deployments/extra")) {
        return Response.json([{
          job: "web",
          index: 0,
          id: "i-1",
          ips: ["10.0.0.1"],
          agent_id: "a",
          cid: "c",
          az: null,
          expects_vm: true,
          vm_created_at: "x",
          something_new: { nested: true },
        }]);
      }
      if (seenPath === "/info") {
        return Response.json({ uuid: "u", user_authentication: { type: "basic", options: {} } });
      }
      return new Response("not found", { status: 404 });
    }, async (client) => {
      await rejects(client.instances("boom", "tok.en.x"), "CONNECTION_ERROR", /500.*Internal/);
      assertEquals(seenAuth, "Bearer tok.en.x");
      await rejects(client.instances("garbage", "t"), "CONNECTION_ERROR", /not JSON.*<html>/);
      await rejects(client.instances("shape", "t"), "CONNECTION_ERROR", /unexpected shape \(0\./);
      // answered, so not "cannot reach … check the network" (found by tests/chaos/)
      await rejects(
        client.instances("huge", "t"),
        "CONNECTION_ERROR",
        /body too large.*byte limit/,
      );
      await rejects(client.instances("moved", "t"), "CONNECTION_ERROR", /answered with a redirect/);
      const extra = await client.instances("extra", "t");
      assertEquals(extra[0].id, "i-1");
      await rejects(client.uaaUrl(), "CONNECTION_ERROR", /does not use UAA/);
      assertEquals(seenAuth, "", "/info is fetched without the user's token");
    });
  });
});

Deno.test("director client: cleartext Director or UAA is refused unless on loopback", async () => {
  // The constructor refuses http to another host: the user's token would travel in clear.
  for (const url of ["http://10.0.0.6:25555", "http://director.example.invalid", "ftp://x"]) {
    let err: unknown;
    try {
      new DirectorClient({ url, timeoutMs: 1000 }).close();
    } catch (e) {
      err = e;
    }
    assert(err instanceof ApiError, `${url} must be refused`);
    assertMatch(err.message, /https/);
  }
  new DirectorClient({ url: "http://127.0.0.1:25555", timeoutMs: 1000 }).close();
  new DirectorClient({ url: "http://[::1]:25555", timeoutMs: 1000 }).close();
  new DirectorClient({ url: "http://localhost:25555", timeoutMs: 1000 }).close();

  // The UAA URL in /info is the root of trust for token keys: http to a remote host is refused
  // (a man in the middle could serve their own keys), http on loopback is accepted.
  await withLab(async ({ pki, tls }) => {
    let uaa = "http://uaa.example.invalid:8080";
    await withFake(tls, pki.caCert, (req) => {
      if (new URL(req.url).pathname !== "/info") return new Response("no", { status: 404 });
      return Response.json({
        uuid: "u",
        user_authentication: { type: "uaa", options: { url: uaa } },
      });
    }, async (client) => {
      await rejects(client.uaaUrl(), "CONNECTION_ERROR", /names its UAA .*uses http/);
      const fresh = new DirectorClient({
        url: client.opts.url,
        caCert: pki.caCert,
        timeoutMs: 2000,
      });
      try {
        uaa = "http://127.0.0.1:8080/";
        assertEquals(await fresh.uaaUrl(), "http://127.0.0.1:8080");
      } finally {
        fresh.close();
      }
    });
  });
});

Deno.test("director client: bosh.tls.server_name verifies that name; skip_verify accepts any", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_dc_sn_" });
  let uaa: UaaSim | undefined;
  let director: DirectorSim | undefined;
  try {
    const pki = await Pki.create(dir);
    // Like a Director certificate issued for its DNS name only: dialled by IP it does not match.
    const named = await pki.issue("director.bosh.internal", {
      server: true,
      dns: ["director.bosh.internal"],
    });
    uaa = await UaaSim.start();
    director = await DirectorSim.start({
      tls: { cert: named.cert, key: named.key },
      uaaUrl: uaa.url,
      deployments: [{ name: "cf", instances: makeGroup("router", 1, "198.18.0.20") }],
    });
    const token = await uaa.mintValid();
    const byIp = new DirectorClient({ url: director.url, caCert: pki.caCert, timeoutMs: 2000 });
    try {
      await rejects(byIp.info(), "CONNECTION_ERROR", /cannot reach/);
    } finally {
      byIp.close();
    }
    const withName = new DirectorClient({
      url: director.url,
      caCert: pki.caCert,
      serverName: "director.bosh.internal",
      timeoutMs: 2000,
    });
    try {
      assertEquals((await withName.info()).uuid, director.uuid);
      assertEquals((await withName.instances("cf", token)).length, 1);
    } finally {
      withName.close();
    }
    const wrongName = new DirectorClient({
      url: director.url,
      caCert: pki.caCert,
      serverName: "other.bosh.internal",
      timeoutMs: 2000,
    });
    try {
      await rejects(wrongName.info(), "CONNECTION_ERROR", /cannot reach/);
    } finally {
      wrongName.close();
    }
    // A certificate from a CA nobody configured: refused, unless skip_verify.
    const rogue = await (await Pki.create(`${dir}/rogue`, "rogue")).issue("x", {
      server: true,
      ips: ["127.0.0.1"],
    });
    const other = await DirectorSim.start({
      tls: { cert: rogue.cert, key: rogue.key },
      uaaUrl: uaa.url,
    });
    try {
      const strict = new DirectorClient({ url: other.url, caCert: pki.caCert, timeoutMs: 2000 });
      try {
        await rejects(strict.info(), "CONNECTION_ERROR", /cannot reach/);
      } finally {
        strict.close();
      }
      const lax = new DirectorClient({
        url: other.url,
        caCert: pki.caCert,
        skipVerify: true,
        timeoutMs: 2000,
      });
      try {
        assertEquals((await lax.info()).uuid, other.uuid);
      } finally {
        lax.close();
      }
    } finally {
      await other.stop();
    }
  } finally {
    await director?.stop();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
