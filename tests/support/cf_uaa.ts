/**
 * The lab UAA as the cf CLI meets it in tests: over HTTPS with a certificate of its own lab CA,
 * the user "dev" (cloud_controller.read), and the password grant `cf login` makes with the public
 * client `cf:`, so that a test holds a real access and refresh token.
 */
import { Pki } from "../../lab/pki.ts";
import { UaaSim } from "../../lab/uaa_sim.ts";
import { fetchTrusting } from "../../cli/uaa_token.ts";

export interface DevUaa {
  uaa: UaaSim;
  pki: Pki;
}

/** Starts the UAA with its CA under `dir`/pki. */
export async function startDevUaa(dir: string): Promise<DevUaa> {
  const pki = await Pki.create(`${dir}/pki`);
  const leaf = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
  const uaa = await UaaSim.start({
    tls: { cert: leaf.cert, key: leaf.key },
    users: [{ username: "dev", password: "pw", scopes: ["openid", "cloud_controller.read"] }],
  });
  return { uaa, pki };
}

/** The tokens of `cf login` as dev (password grant, client `cf:`). */
export async function cfLoginTokens(
  uaa: UaaSim,
  caCert: string,
): Promise<{ access_token: string; refresh_token: string }> {
  const t = fetchTrusting(caCert);
  try {
    const res = await t.fetch(`${uaa.url}/oauth/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${btoa("cf:")}`,
      },
      body: "grant_type=password&username=dev&password=pw",
    });
    if (!res.ok) throw new Error(`the lab UAA refused the password grant: ${res.status}`);
    return await res.json();
  } finally {
    t.close();
  }
}

/** `home`/.cf/config.json (ConfigVersion 4, mode 0600) with `fields`; returns its path. */
export async function writeCfConfig(
  home: string,
  fields: Record<string, unknown>,
): Promise<string> {
  await Deno.mkdir(`${home}/.cf`, { recursive: true, mode: 0o700 });
  const path = `${home}/.cf/config.json`;
  await Deno.writeTextFile(path, JSON.stringify({ ConfigVersion: 4, ...fields }), { mode: 0o600 });
  return path;
}

/**
 * A CF_HOME in `dir` logged in as dev at a fresh lab UAA, as `cf login` leaves it (access and
 * refresh token, client `cf`, the space `space` targeted), and the UAA's CA in `dir`/ca.pem.
 */
export async function devCfHome(
  dir: string,
  space: { GUID: string; Name: string },
): Promise<
  DevUaa & { tokens: { access_token: string; refresh_token: string }; configPath: string }
> {
  const started = await startDevUaa(dir);
  const tokens = await cfLoginTokens(started.uaa, started.pki.caCert);
  await Deno.writeTextFile(`${dir}/ca.pem`, started.pki.caCert);
  const configPath = await writeCfConfig(dir, {
    Target: "https://api.sys.example.com",
    AuthorizationEndpoint: started.uaa.url,
    AccessToken: `bearer ${tokens.access_token}`,
    RefreshToken: tokens.refresh_token,
    UAAOAuthClient: "cf",
    UAAOAuthClientSecret: "",
    SpaceFields: space,
  });
  return { ...started, tokens, configPath };
}
