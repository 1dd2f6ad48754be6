import assert from "node:assert/strict";
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { UaaSim } from "../lab/uaa_sim.ts";
import { Pki } from "../lab/pki.ts";
import { TokenVerifier } from "../lab/sim_auth.ts";

const USERS = [
  { username: "admin", password: "pw", scopes: ["openid", "bosh.admin"] },
  { username: "dev", password: "devpw", scopes: ["openid", "cloud_controller.read"] },
];
const CLIENTS = [
  { id: "bosh_cli", secret: "", grantTypes: ["password" as const, "refresh_token" as const] },
  {
    id: "ci",
    secret: "s3cret",
    grantTypes: ["client_credentials" as const],
    authorities: ["bosh.admin"],
  },
];

async function tokenRequest(
  url: string,
  form: Record<string, string>,
  basic?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = {
    "content-type": "application/x-www-form-urlencoded",
    accept: "application/json",
  };
  if (basic !== undefined) headers.authorization = `Basic ${btoa(basic)}`;
  const res = await fetch(`${url}/oauth/token`, {
    method: "POST",
    headers,
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("uaa: /token_keys has UAA's fields; password grant issues RS256 JWTs verifiable over HTTP", async () => {
  const uaa = await UaaSim.start({ users: USERS, clients: CLIENTS });
  try {
    const res = await fetch(`${uaa.url}/token_keys`);
    const tk = await res.json();
    assert.equal(tk.keys.length, 1);
    const k = tk.keys[0];
    for (const f of ["kid", "alg", "kty", "use", "n", "e", "value"]) assert.ok(k[f], `key.${f}`);
    assert.equal(k.alg, "RS256");
    assert.equal(k.kty, "RSA");
    assert.ok(String(k.value).startsWith("-----BEGIN PUBLIC KEY-----"));

    const { status, body } = await tokenRequest(
      uaa.url,
      { grant_type: "password", username: "admin", password: "pw" },
      "bosh_cli:",
    );
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.token_type, "bearer");
    assert.ok(typeof body.refresh_token === "string");
    assert.ok(typeof body.expires_in === "number" && body.expires_in > 0);
    assert.equal(body.scope, "openid bosh.admin");
    const access = String(body.access_token);
    assert.equal(decodeProtectedHeader(access).kid, k.kid);

    const jwks = createRemoteJWKSet(new URL(`${uaa.url}/token_keys`));
    const { payload } = await jwtVerify(access, jwks, {
      issuer: `${uaa.url}/oauth/token`,
      algorithms: ["RS256"],
    });
    assert.deepEqual(payload.scope, ["openid", "bosh.admin"]);
    assert.equal(payload.client_id, "bosh_cli");
    assert.equal(payload.cid, "bosh_cli");
    assert.equal(payload.user_name, "admin");
    assert.equal(payload.grant_type, "password");
    assert.equal(payload.zid, "uaa");
    assert.ok(payload.jti && payload.user_id && payload.sub === payload.user_id);
    assert.ok(Array.isArray(payload.aud) && payload.aud.includes("bosh"));
    assert.ok(payload.exp! > payload.iat!);
    assert.equal(payload.jti, body.jti);

    // refresh_token grant
    const r = await tokenRequest(
      uaa.url,
      { grant_type: "refresh_token", refresh_token: String(body.refresh_token) },
      "bosh_cli:",
    );
    assert.equal(r.status, 200);
    const p2 = (await jwtVerify(String(r.body.access_token), jwks)).payload;
    assert.equal(p2.grant_type, "refresh_token");
    assert.equal(p2.user_name, "admin");
    assert.notEqual(p2.jti, payload.jti);
    assert.equal(uaa.grantCounts.refresh_token, 1);

    uaa.revokeRefreshTokens();
    const revoked = await tokenRequest(
      uaa.url,
      { grant_type: "refresh_token", refresh_token: String(body.refresh_token) },
      "bosh_cli:",
    );
    assert.equal(revoked.status, 401);
    assert.equal(revoked.body.error, "invalid_token");
  } finally {
    await uaa.stop();
  }
});

Deno.test("uaa: client_credentials and OAuth error shapes", async () => {
  const uaa = await UaaSim.start({ users: USERS, clients: CLIENTS });
  try {
    const cc = await tokenRequest(uaa.url, { grant_type: "client_credentials" }, "ci:s3cret");
    assert.equal(cc.status, 200);
    assert.equal(cc.body.refresh_token, undefined, "client tokens have no refresh token");
    const keys = createLocalJWKSet(await (await fetch(`${uaa.url}/token_keys`)).json());
    const { payload } = await jwtVerify(String(cc.body.access_token), keys);
    assert.deepEqual(payload.scope, ["bosh.admin"]);
    assert.equal(payload.user_name, undefined);
    assert.equal(payload.sub, "ci");

    const cases: Array<[Record<string, string>, string | undefined, number, string]> = [
      [
        { grant_type: "password", username: "admin", password: "nope" },
        "bosh_cli:",
        401,
        "unauthorized",
      ],
      [
        { grant_type: "password", username: "ghost", password: "pw" },
        "bosh_cli:",
        401,
        "unauthorized",
      ],
      [{ grant_type: "client_credentials" }, "ci:wrong", 401, "unauthorized"],
      [{ grant_type: "client_credentials" }, "bosh_cli:", 401, "invalid_client"],
      [{ grant_type: "implicit" }, "bosh_cli:", 400, "unsupported_grant_type"],
      [{ grant_type: "password", username: "admin" }, "bosh_cli:", 400, "invalid_request"],
      [
        { grant_type: "refresh_token", refresh_token: "garbage" },
        "bosh_cli:",
        401,
        "invalid_token",
      ],
    ];
    for (const [form, basic, status, error] of cases) {
      const r = await tokenRequest(uaa.url, form, basic);
      assert.equal(r.status, status, JSON.stringify(form));
      assert.equal(r.body.error, error, JSON.stringify(form));
      assert.ok(typeof r.body.error_description === "string");
    }
    // client_id in the form body works as well as Basic auth
    const form = await tokenRequest(uaa.url, {
      grant_type: "password",
      username: "dev",
      password: "devpw",
      client_id: "bosh_cli",
      client_secret: "",
    });
    assert.equal(form.status, 200);
  } finally {
    await uaa.stop();
  }
});

Deno.test("uaa: minted tokens - only the valid one passes a strict verifier", async () => {
  const uaa = await UaaSim.start({ users: USERS, clients: CLIENTS });
  try {
    const v = new TokenVerifier({ uaaUrl: uaa.url, issuer: uaa.issuer });
    const good = await v.verify(await uaa.mintValid({ scopes: ["bosh.admin"] }));
    assert.ok(good.ok);
    assert.deepEqual(good.ok && good.token.scopes, ["bosh.admin"]);

    // Each broken token must be refused for its own reason, not by accident.
    const bad: Array<[string, string, RegExp]> = [
      ["expired", await uaa.mintExpired(), /"exp" claim/],
      ["notYetValid", await uaa.mintNotYetValid(), /"nbf" claim/],
      ["wrongKey", await uaa.mintWrongKey(), /signature verification failed/],
      ["unknownKid", await uaa.mintUnknownKid(), /no applicable key/],
      ["wrongIssuer", await uaa.mintWrongIssuer(), /"iss" claim/],
      ["algNone", uaa.mintAlgNone(), /"alg"/],
      ["hs256", uaa.mintHs256WithPublicKey(), /"alg"/],
      ["garbage", UaaSim.garbageToken(), /invalid/i],
    ];
    for (const [name, token, why] of bad) {
      const r = await v.verify(token);
      assert.ok(!r.ok, `${name} must be refused`);
      assert.match(r.detail, why, name);
      if (name === "expired") assert.equal(r.reason, "expired");
    }
    // The HS256 token really is the algorithm-confusion attack: its HMAC checks out with the PEM.
    const [h, p, sig] = bad[6][1].split(".");
    const key = await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode((await uaa.tokenKeys()).keys[0].value),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["verify"],
    );
    const sigBytes = Uint8Array.from(
      atob(sig.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - sig.length % 4) % 4)),
      (c) => c.charCodeAt(0),
    );
    assert.ok(
      await crypto.subtle.verify("HMAC", key, sigBytes, new TextEncoder().encode(`${h}.${p}`)),
    );
  } finally {
    await uaa.stop();
  }
});

Deno.test("uaa: key rotation keeps or drops the old key; verifier refetches on new kid", async () => {
  const uaa = await UaaSim.start({ users: USERS, clients: CLIENTS });
  try {
    const v = new TokenVerifier({ uaaUrl: uaa.url });
    const oldKid = uaa.signingKid;
    const before = await uaa.mintValid();
    assert.ok((await v.verify(before)).ok);
    assert.equal(v.fetchCount, 1);

    const newKid = await uaa.rotate(true);
    assert.notEqual(newKid, oldKid);
    const after = await uaa.mintValid();
    assert.equal(decodeProtectedHeader(after).kid, newKid);
    assert.ok((await v.verify(after)).ok, "new kid accepted after a refetch");
    assert.equal(v.fetchCount, 2);
    assert.ok((await v.verify(before)).ok, "old key kept");
    assert.equal((await uaa.tokenKeys()).keys.length, 2);

    await uaa.rotate(false);
    const kids = (await uaa.tokenKeys()).keys.map((k) => k.kid);
    assert.ok(!kids.includes(newKid) && kids.length === 2 && kids.includes(oldKid));
    uaa.removeKey(oldKid);
    const fresh = new TokenVerifier({ uaaUrl: uaa.url });
    assert.ok(!(await fresh.verify(before)).ok, "token of a dropped key refused");
    assert.ok((await fresh.verify(await uaa.mintValid())).ok);
  } finally {
    await uaa.stop();
  }
});

Deno.test("uaa: TLS with a lab certificate, and the down switch refuses connections", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-uaa-" });
  const pki = await Pki.create(dir);
  const cert = await pki.issue("uaa.lab", { server: true, dns: ["localhost"], ips: ["127.0.0.1"] });
  const uaa = await UaaSim.start({ users: USERS, tls: { cert: cert.cert, key: cert.key } });
  try {
    assert.ok(uaa.url.startsWith("https://127.0.0.1:"));
    const client = Deno.createHttpClient({ caCerts: [pki.caCert] });
    try {
      const res = await fetch(`${uaa.url}/token_keys`, { client });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      client.close();
    }
    const v = new TokenVerifier({ uaaUrl: uaa.url, caCert: pki.caCert, issuer: uaa.issuer });
    assert.ok((await v.verify(await uaa.mintValid())).ok);

    await uaa.setDown(true);
    const c2 = Deno.createHttpClient({ caCerts: [pki.caCert] });
    try {
      await assert.rejects(() => fetch(`${uaa.url}/token_keys`, { client: c2 }));
    } finally {
      c2.close();
    }
    await uaa.setDown(false);
    const c3 = Deno.createHttpClient({ caCerts: [pki.caCert] });
    try {
      const res = await fetch(`${uaa.url}/token_keys`, { client: c3 });
      assert.equal(res.status, 200, "back up on the same port");
      await res.body?.cancel();
    } finally {
      c3.close();
    }
  } finally {
    await uaa.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
