// The cf CLI login as pcap-cf reads it, against the lab UAA over HTTPS with real tokens:
// CF_HOME, ConfigVersion, refresh only when needed, write-back keeping unknown fields with mode
// 0600, client-credentials and revoked logins with clear messages.
import { Pki } from "../lab/pki.ts";
import type { UaaSim } from "../lab/uaa_sim.ts";
import { cfLoginTokens, startDevUaa } from "./support/cf_uaa.ts";
import { cfAuth, CfConfig, cfConfigPath } from "../cli/cf_config.ts";
import { AuthError } from "../cli/uaa_token.ts";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "./support/assert.ts";

interface Lab {
  dir: string;
  uaa: UaaSim;
  caCert: string;
  refresh: string;
  write(fields: Record<string, unknown>): Promise<string>;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cf_config_test" });
  let uaa: UaaSim | undefined;
  try {
    const started = await startDevUaa(dir);
    uaa = started.uaa;
    const pki = started.pki;
    const refresh = (await cfLoginTokens(uaa, pki.caCert)).refresh_token;
    const u = uaa;
    const write = async (fields: Record<string, unknown>) => {
      await Deno.mkdir(`${dir}/home/.cf`, { recursive: true });
      const path = `${dir}/home/.cf/config.json`;
      await Deno.writeTextFile(
        path,
        JSON.stringify({
          ConfigVersion: 4,
          Target: "https://api.lab.invalid",
          APIVersion: "3.195.0",
          AuthorizationEndpoint: u.url,
          UaaEndpoint: u.url,
          UAAOAuthClient: "cf",
          UAAOAuthClientSecret: "",
          SSLDisabled: false,
          OrganizationFields: { GUID: "org-guid", Name: "acme" },
          SpaceFields: { GUID: "space-guid", Name: "dev", AllowSSH: true },
          PluginRepos: [{ Name: "CF-Community", URL: "https://plugins.cloudfoundry.org" }],
          ColorEnabled: "",
          Locale: "",
          ...fields,
        }),
        { mode: 0o644 },
      );
      return path;
    };
    await fn({ dir, uaa, caCert: pki.caCert, refresh, write });
  } finally {
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cf config: CF_HOME gets .cf appended, else HOME", () => {
  assertEquals(cfConfigPath({ CF_HOME: "/x/y/", HOME: "/home/u" }), "/x/y/.cf/config.json");
  assertEquals(cfConfigPath({ HOME: "/home/u" }), "/home/u/.cf/config.json");
  assertThrows(() => cfConfigPath({}), Error, "neither CF_HOME nor HOME");
  assertThrows(() => CfConfig.parse('{"ConfigVersion": 3}', "c.json"), Error, "ConfigVersion 3");
  assertThrows(() => CfConfig.parse("{", "c.json"), Error, "not valid JSON");
});

Deno.test("cf config: a valid token is used as is; no UAA request", async () => {
  await withLab(async ({ uaa, write, caCert }) => {
    const token = await uaa.mintValid({ clientId: "cf", scopes: ["cloud_controller.read"] });
    const path = await write({ AccessToken: `bearer ${token}`, RefreshToken: "r" });
    const a = await cfAuth({ configPath: path, caCert });
    assertEquals([a.source, a.accessToken, a.authorization], ["config", token, `bearer ${token}`]);
    assertEquals(a.login.space, { guid: "space-guid", name: "dev", allowSsh: true });
    assertEquals(a.login.org, { guid: "org-guid", name: "acme" });
    assertEquals(uaa.grantCounts.refresh_token, 0);
  });
});

Deno.test("cf config: an expiring token is refreshed and written back, every field kept, 0600", async () => {
  await withLab(async ({ uaa, write, caCert, refresh, dir }) => {
    // Expires in 30 s: within the cf CLI's one-minute margin.
    const soon = await uaa.mintValid({ clientId: "cf", ttlSec: 30 });
    const path = await write({
      AccessToken: `bearer ${soon}`,
      RefreshToken: refresh,
      FutureField: { x: [1] },
    });
    const before = JSON.parse(await Deno.readTextFile(path));
    // Found through CF_HOME like the cf CLI would.
    const a = await cfAuth({ configPath: cfConfigPath({ CF_HOME: `${dir}/home` }), caCert });
    assertEquals(a.source, "refreshed");
    assertEquals(uaa.grantCounts.refresh_token, 1);
    assert(a.accessToken !== soon);
    const after = JSON.parse(await Deno.readTextFile(path));
    assertEquals(after.AccessToken, `bearer ${a.accessToken}`);
    assert(typeof after.RefreshToken === "string" && after.RefreshToken.length > 0);
    for (const k of Object.keys(before)) {
      if (k !== "AccessToken" && k !== "RefreshToken") assertEquals(after[k], before[k], k);
    }
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    const leftovers = [...Deno.readDirSync(`${dir}/home/.cf`)].map((e) => e.name);
    assertEquals(leftovers, ["config.json"], "no temp file left");
    // The new token is good for a while: a second run does not refresh.
    assertEquals((await cfAuth({ configPath: path, caCert })).source, "config");
    assertEquals(uaa.grantCounts.refresh_token, 1);
  });
});

Deno.test("cf config: client credentials, revoked refresh token, not logged in", async () => {
  await withLab(async ({ uaa, write, caCert, refresh }) => {
    const expired = await uaa.mintExpired({ clientId: "ci", scopes: ["cloud_controller.admin"] });
    let path = await write({
      AccessToken: `bearer ${expired}`,
      RefreshToken: "",
      UAAGrantType: "client_credentials",
    });
    const e = await assertRejects(
      () => cfAuth({ configPath: path, caCert }),
      AuthError,
      "run `cf auth` again",
    );
    assert((e as AuthError).loginRequired);
    assert(!e.message.includes(expired.split(".")[2]), "no token in the message");

    uaa.revokeRefreshTokens();
    path = await write({ AccessToken: `bearer ${expired}`, RefreshToken: refresh });
    const before = await Deno.readTextFile(path);
    await assertRejects(() => cfAuth({ configPath: path, caCert }), AuthError, 'run "cf login"');
    assertEquals(await Deno.readTextFile(path), before, "a failed refresh leaves the file alone");

    path = await write({ AccessToken: "", RefreshToken: "" });
    await assertRejects(() => cfAuth({ configPath: path, caCert }), AuthError, "not logged in");
    await assertRejects(
      () => cfAuth({ configPath: `${path}.missing`, caCert }),
      Error,
      'run "cf api URL" and "cf login"',
    );
  });
});

Deno.test("cf config: SSLDisabled refreshes without verifying the UAA, warning loudly; a UAA CA given explicitly is verified", async () => {
  await withLab(async ({ uaa, write, caCert, refresh, dir }) => {
    const expired = await uaa.mintExpired({ clientId: "cf" });
    // Verified (the default): the lab CA is no system root, so the refresh cannot happen.
    let path = await write({ AccessToken: `bearer ${expired}`, RefreshToken: refresh });
    const warnings: string[] = [];
    const warn = (l: string) => warnings.push(l);
    await assertRejects(
      () => cfAuth({ configPath: path, warn }),
      AuthError,
      "cannot reach the UAA",
    );
    assertEquals(warnings, [], "no warning without SSLDisabled");

    // SSLDisabled, as `cf api --skip-ssl-validation` leaves it: refreshed, with the warning.
    path = await write({
      AccessToken: `bearer ${expired}`,
      RefreshToken: refresh,
      SSLDisabled: true,
    });
    const a = await cfAuth({ configPath: path, warn });
    assertEquals(a.source, "refreshed");
    assertEquals(warnings.length, 1);
    assertStringIncludes(warnings[0], "WARNING");
    assertStringIncludes(warnings[0], "SSLDisabled");
    assertStringIncludes(warnings[0], `does NOT verify the certificate of the UAA at ${uaa.url}`);
    assertStringIncludes(warnings[0], "--uaa-ca-cert");
    assert(!warnings[0].includes(a.accessToken.split(".")[2]), "no token in the warning");
    assertEquals(JSON.parse(await Deno.readTextFile(path)).SSLDisabled, true, "field kept");
    // Still warned when no refresh is needed: the login's trust setting is the news.
    await cfAuth({ configPath: path, warn });
    assertEquals(warnings.length, 2);

    // An explicit UAA CA wins over SSLDisabled: a CA that did not sign the UAA's certificate
    // is refused, the right one works; the message is a note, not the warning.
    const other = await Pki.create(`${dir}/other-pki`);
    path = await write({
      AccessToken: `bearer ${expired}`,
      RefreshToken: (await cfAuth({ configPath: path, caCert })).login.refreshToken,
      SSLDisabled: true,
    });
    warnings.length = 0;
    await assertRejects(
      () => cfAuth({ configPath: path, caCert: other.caCert, caCertForUaa: true, warn }),
      AuthError,
      "cannot reach the UAA",
    );
    assertStringIncludes(warnings[0], "is verified against it");
    assert(!warnings[0].includes("WARNING"), warnings[0]);
    const b = await cfAuth({ configPath: path, caCert, caCertForUaa: true, warn });
    assertEquals(b.source, "refreshed");
  });
});
