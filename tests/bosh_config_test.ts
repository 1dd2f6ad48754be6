// ~/.bosh/config handling and token refresh, against the lab's simulated Director and UAA over
// real TLS (certificates from lab/pki.ts) with real RS256 JWTs.
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "./support/assert.ts";
import {
  BoshConfig,
  BoshConfigError,
  normalizeDirectorUrl,
  writeFileAtomic,
} from "../cli/bosh_config.ts";
import { AuthError, boshAuth, fetchTrusting, needsRefresh, tokenExpiry } from "../cli/uaa_token.ts";
import { Pki } from "../lab/pki.ts";
import { UaaSim } from "../lab/uaa_sim.ts";
import { DirectorSim } from "../lab/director_sim.ts";

function configText(o: { url: string; ca: string; access: string; refresh: string }): string {
  // unknown fields, comments and an order the bosh CLI would not produce, to prove they survive
  return `# written by hand
future_top_level: {keep: me}
environments:
- url: https://198.18.0.250:25555
  alias: other
  ca_cert: "not used"
  access_token: other-access
  access_token_type: bearer
- alias: lab # the lab director
  url: ${o.url}
  ca_cert: |-
${o.ca.trim().split("\n").map((l) => "    " + l).join("\n")}
  username: admin
  access_token: ${o.access}
  access_token_type: bearer
  refresh_token: ${o.refresh}
  x_unknown_field: [1, 2, 3]
`;
}

interface Lab {
  dir: string;
  pki: Pki;
  uaa: UaaSim;
  director: DirectorSim;
  configPath: string;
  /** a real refresh token from a password grant */
  refresh: string;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "bosh_config_test" });
  let uaa: UaaSim | undefined;
  let director: DirectorSim | undefined;
  try {
    const pki = await Pki.create(`${dir}/pki`);
    const leaf = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
    const tls = { cert: leaf.cert, key: leaf.key };
    uaa = await UaaSim.start({
      tls,
      users: [{ username: "admin", password: "pw", scopes: ["openid", "bosh.admin"] }],
      clients: [
        { id: "bosh_cli", secret: "", grantTypes: ["password", "refresh_token"] },
        {
          id: "ci",
          secret: "s3cret",
          grantTypes: ["client_credentials"],
          authorities: ["bosh.admin"],
        },
      ],
    });
    director = await DirectorSim.start({ tls, uaaUrl: uaa.url, uaaCaCert: pki.caCert });
    const t = fetchTrusting(pki.caCert);
    let refresh: string;
    try {
      const res = await t.fetch(`${uaa.url}/oauth/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${btoa("bosh_cli:")}`,
        },
        body: "grant_type=password&username=admin&password=pw",
      });
      refresh = (await res.json()).refresh_token;
    } finally {
      t.close();
    }
    uaa.grantCounts.password = 0;
    const configPath = `${dir}/config`;
    await fn({ dir, pki, uaa, director, configPath, refresh });
  } finally {
    await director?.stop();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const NO_ENV = {};

Deno.test("bosh config: select by alias, URL, host without scheme/port, or the only one", () => {
  const cfg = BoshConfig.parse(
    `environments:
- {url: "https://10.0.0.6:25555", alias: prod}
- {url: "https://bosh.example.com:25555", alias: stage}
`,
    "/x/config",
  );
  assertEquals(cfg.select("prod").url, "https://10.0.0.6:25555");
  assertEquals(cfg.select("https://bosh.example.com:25555").alias, "stage");
  assertEquals(cfg.select("10.0.0.6").alias, "prod");
  assertEquals(cfg.select("https://10.0.0.6").alias, "prod");
  const e = assertThrows(() => cfg.select("dev"), BoshConfigError, 'environment "dev" is not in');
  assertStringIncludes(e.message, "prod (https://10.0.0.6:25555), stage");
  assertThrows(() => cfg.select(), BoshConfigError, "pass -e ALIAS or set BOSH_ENVIRONMENT");
  const one = BoshConfig.parse("environments:\n- {url: 'https://1.2.3.4:25555'}\n", "c");
  assertEquals(one.select().url, "https://1.2.3.4:25555");
  assertEquals(normalizeDirectorUrl("10.0.0.6"), "https://10.0.0.6:25555");
  assertEquals(normalizeDirectorUrl("https://[fd00::6]"), "https://[fd00::6]:25555");
  assertEquals(normalizeDirectorUrl("https://director.example:443"), "https://director.example");
  assertEquals(normalizeDirectorUrl("https://d.example:8443/"), "https://d.example:8443");
  assertThrows(
    () => BoshConfig.parse("environments: {a: 1}", "c"),
    BoshConfigError,
    "must be a list",
  );
  assertThrows(() => BoshConfig.parse("environments: [\n", "c"), BoshConfigError, "not valid YAML");
});

Deno.test("bosh config: token update keeps unknown fields, comments and order; 0600; atomic", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bosh_config_test" });
  try {
    const real = `${dir}/real-config`;
    const link = `${dir}/config`;
    const original = configText({
      url: "https://127.0.0.1:25555",
      ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
      access: "old-access",
      refresh: "old-refresh",
    });
    await Deno.writeTextFile(real, original, { mode: 0o644 });
    await Deno.chmod(real, 0o644);
    await Deno.symlink(real, link);
    const cfg = await BoshConfig.load(link);
    const env = cfg.select("lab");
    assertEquals(env.index, 1);
    assertEquals(env.username, "admin");
    cfg.setTokens(env.index, {
      accessToken: "new-access",
      accessTokenType: "bearer",
      refreshToken: "new-refresh",
    });
    await cfg.save();
    const saved = await Deno.readTextFile(real);
    // exactly the two token values changed, nothing else (not even formatting)
    assertEquals(
      saved,
      original.replace("old-access", "new-access").replace("old-refresh", "new-refresh"),
    );
    assertEquals((await Deno.stat(real)).mode! & 0o777, 0o600);
    assert((await Deno.lstat(link)).isSymlink, "the symlink stays a symlink");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assertEquals(names.sort(), ["config", "real-config"]); // no temp file left
    // a failed replace (here: the target is a non-empty directory) leaves no temp file behind
    await Deno.mkdir(`${dir}/adir`);
    await Deno.writeTextFile(`${dir}/adir/keep`, "x");
    await assertRejects(
      () => writeFileAtomic(`${dir}/adir`, "new"),
      BoshConfigError,
      "cannot write",
    );
    const after = [];
    for await (const e of Deno.readDir(dir)) after.push(e.name);
    assertEquals(after.sort(), ["adir", "config", "real-config"]);
    assertEquals(await Deno.readTextFile(`${dir}/adir/keep`), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bosh config: missing file says what to do", async () => {
  await assertRejects(
    () => BoshConfig.load("/nonexistent/dir/config"),
    BoshConfigError,
    'run "bosh alias-env" and "bosh log-in" first',
  );
});

Deno.test("tokens: exp is read without verification; refresh only when expired or close", async () => {
  await withLab(async ({ uaa }) => {
    const now = Math.floor(Date.now() / 1000);
    const valid = await uaa.mintValid({ ttlSec: 600 });
    const soon = await uaa.mintValid({ ttlSec: 30 });
    const expired = await uaa.mintExpired();
    assert(Math.abs(tokenExpiry(valid)! - (now + 600)) <= 2);
    assertEquals(needsRefresh(valid, now), false);
    assertEquals(needsRefresh(soon, now), true);
    assertEquals(needsRefresh(expired, now), true);
    assertEquals(needsRefresh("garbage", now), true);
    assertEquals(needsRefresh(undefined, now), true);
    assertEquals(needsRefresh(soon, now, 10), false);
  });
});

Deno.test("auth: a valid stored token is used as is, without any network request", async () => {
  await withLab(async ({ uaa, director, configPath, pki, refresh }) => {
    const access = await uaa.mintValid({ ttlSec: 600 });
    const text = configText({ url: director.url, ca: pki.caCert, access, refresh });
    await Deno.writeTextFile(configPath, text);
    const before = director.requestCount;
    const auth = await boshAuth({ configPath, environment: "lab", env: NO_ENV });
    assertEquals(auth.source, "config");
    assertEquals(auth.authorization, `Bearer ${access}`);
    assertEquals(auth.directorUrl, director.url);
    assertEquals(director.requestCount, before);
    assertEquals(uaa.grantCounts.refresh_token, 0);
    assertEquals(await Deno.readTextFile(configPath), text);
  });
});

Deno.test("auth: an expired token is refreshed through the Director's UAA over TLS and saved", async () => {
  await withLab(async ({ uaa, director, configPath, pki, refresh }) => {
    const expired = await uaa.mintExpired();
    const text = configText({ url: director.url, ca: pki.caCert, access: expired, refresh });
    await Deno.writeTextFile(configPath, text, { mode: 0o644 });
    await Deno.chmod(configPath, 0o644);
    const auth = await boshAuth({ configPath, environment: director.url, env: NO_ENV });
    assertEquals(auth.source, "refreshed");
    assertEquals(uaa.grantCounts.refresh_token, 1);
    assertNotEquals(auth.accessToken, expired);
    assert(!needsRefresh(auth.accessToken, Math.floor(Date.now() / 1000)));
    // saved: new tokens, everything else kept, 0600
    const cfg = await BoshConfig.load(configPath);
    const env = cfg.select("lab");
    assertEquals(env.accessToken, auth.accessToken);
    assertNotEquals(env.refreshToken, refresh);
    assertEquals(env.caCert, pki.caCert.trim());
    const saved = await Deno.readTextFile(configPath);
    assertStringIncludes(saved, "future_top_level: {keep: me}");
    assertStringIncludes(saved, "x_unknown_field: [1, 2, 3]");
    assertStringIncludes(saved, "- alias: lab # the lab director");
    assertEquals((await Deno.stat(configPath)).mode! & 0o777, 0o600);
    // the next run uses the saved token: no second refresh
    const again = await boshAuth({ configPath, environment: "lab", env: NO_ENV });
    assertEquals(again.source, "config");
    assertEquals(uaa.grantCounts.refresh_token, 1);
    // a token that expires within the margin is refreshed too
    const soon = await uaa.mintValid({ ttlSec: 20 });
    cfg.setTokens(env.index, { accessToken: soon, accessTokenType: "bearer" });
    await cfg.save();
    assertEquals(
      (await boshAuth({ configPath, environment: "lab", env: NO_ENV })).source,
      "refreshed",
    );
    assertEquals(uaa.grantCounts.refresh_token, 2);
  });
});

Deno.test("auth: two clients refreshing one config at once take turns; a symlink stays a link", async () => {
  await withLab(async ({ dir, uaa, director, configPath, pki, refresh }) => {
    // UAA rotating refresh tokens: without the lock the second refresh would spend a dead one
    uaa.rotateRefreshTokens = true;
    const expired = await uaa.mintExpired();
    const real = `${dir}/real-config`;
    await Deno.writeTextFile(
      real,
      configText({ url: director.url, ca: pki.caCert, access: expired, refresh }),
    );
    await Deno.symlink(real, configPath);
    const [a, b] = await Promise.all([
      boshAuth({ configPath, environment: "lab", env: NO_ENV }),
      boshAuth({ configPath, environment: "lab", env: NO_ENV }),
    ]);
    assertEquals([a.source, b.source].sort(), ["config", "refreshed"]);
    assertEquals(a.accessToken, b.accessToken);
    assertEquals(uaa.grantCounts.refresh_token, 1);
    assert((await Deno.lstat(configPath)).isSymlink, "the config is still a symlink");
    const saved = (await BoshConfig.load(real)).select("lab");
    assertEquals(saved.accessToken, a.accessToken);
    assertStringIncludes(await Deno.readTextFile(real), "x_unknown_field: [1, 2, 3]");
    // the saved (rotated) refresh token is the live one
    uaa.rotateRefreshTokens = true;
    const cfg = await BoshConfig.load(configPath);
    cfg.setTokens(saved.index, { accessToken: await uaa.mintExpired(), accessTokenType: "bearer" });
    await cfg.save();
    assertEquals(
      (await boshAuth({ configPath, environment: "lab", env: NO_ENV })).source,
      "refreshed",
    );
  });
});

Deno.test("auth: an unusable refresh token asks for bosh log-in and leaves the file alone", async () => {
  await withLab(async ({ uaa, director, configPath, pki, refresh }) => {
    const text = configText({
      url: director.url,
      ca: pki.caCert,
      access: await uaa.mintExpired(),
      refresh,
    });
    await Deno.writeTextFile(configPath, text);
    uaa.revokeRefreshTokens();
    const e = await assertRejects(
      () => boshAuth({ configPath, environment: "lab", env: NO_ENV }),
      AuthError,
      'run "bosh log-in"',
    );
    assert((e as AuthError).loginRequired);
    assert(!e.message.includes(refresh), "no token in the message");
    assertEquals(await Deno.readTextFile(configPath), text);
    // no refresh token at all
    await Deno.writeTextFile(configPath, text.replace(/ {2}refresh_token: .*\n/, ""));
    await assertRejects(
      () => boshAuth({ configPath, environment: "lab", env: NO_ENV }),
      AuthError,
      "log-in",
    );
  });
});

Deno.test("auth: the Director CA from the config is what makes TLS work", async () => {
  await withLab(async ({ uaa, director, configPath, refresh }) => {
    const other = await Pki.create(`${configPath}.otherca`);
    const text = configText({
      url: director.url,
      ca: other.caCert,
      access: await uaa.mintExpired(),
      refresh,
    });
    await Deno.writeTextFile(configPath, text);
    await assertRejects(
      () => boshAuth({ configPath, environment: "lab", env: NO_ENV, timeoutMs: 5000 }),
      AuthError,
      `cannot reach the BOSH Director at ${director.url}/info`,
    );
  });
});

Deno.test("auth: BOSH_CLIENT/BOSH_CLIENT_SECRET use client credentials and touch no file", async () => {
  await withLab(async ({ uaa, director, configPath, pki, refresh, dir }) => {
    const text = configText({
      url: director.url,
      ca: pki.caCert,
      access: await uaa.mintExpired(),
      refresh,
    });
    await Deno.writeTextFile(configPath, text);
    const mtime = (await Deno.stat(configPath)).mtime;
    const env = { BOSH_CLIENT: "ci", BOSH_CLIENT_SECRET: "s3cret" };
    const auth = await boshAuth({ configPath, environment: "lab", env });
    assertEquals(auth.source, "client-credentials");
    assertEquals(uaa.grantCounts.client_credentials, 1);
    assertEquals(uaa.grantCounts.refresh_token, 0);
    assertEquals(await Deno.readTextFile(configPath), text);
    assertEquals((await Deno.stat(configPath)).mtime, mtime);
    // without any config file: a URL plus BOSH_CA_CERT (a file name) is enough
    const caFile = `${dir}/ca.pem`;
    await Deno.writeTextFile(caFile, pki.caCert);
    const noFile = await boshAuth({
      configPath: `${dir}/missing`,
      environment: director.url,
      env: { ...env, BOSH_CA_CERT: caFile },
    });
    assertEquals(noFile.source, "client-credentials");
    assertMatch(noFile.authorization, /^Bearer ey/);
    const bad = await assertRejects(
      () =>
        boshAuth({ configPath, environment: "lab", env: { ...env, BOSH_CLIENT_SECRET: "wrong" } }),
      AuthError,
      "check BOSH_CLIENT and BOSH_CLIENT_SECRET",
    );
    assert(!bad.message.includes("wrong"));
  });
});
