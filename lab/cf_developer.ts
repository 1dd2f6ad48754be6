// A CF developer's view of the lab's foundation (option `cf`): an app deployed as containers on
// chosen cells and registered with the CC simulator, and a cf CLI login of a space developer
// written where CF_HOME can point (never ~/.cf), as `cf api` + `cf login` + `cf target` leave it.
import type { Landscape } from "./landscape.ts";
import type { LabCf } from "./lab_cf.ts";
import type { Container } from "./diego_containers.ts";
import type { CcApp, CcOrg, CcSpace } from "./cc_sim.ts";

export const CF_USER_SCOPES = ["openid", "cloud_controller.read", "cloud_controller.write"];

export interface DeployedApp {
  app: CcApp;
  /** by instance index */
  containers: Container[];
  /** cell index of each instance */
  cells: number[];
}

/** Creates one container per entry of `placement` (a cell index) and registers the app. */
export async function deployApp(
  cf: LabCf,
  o: { name: string; space: CcSpace; placement: number[]; guid?: string },
): Promise<DeployedApp> {
  const guid = o.guid ?? crypto.randomUUID();
  const containers: Container[] = [];
  for (const cell of o.placement) containers.push(await cf.addContainer(cell, guid, o.space));
  const app: CcApp = {
    guid,
    name: o.name,
    spaceGuid: o.space.guid,
    sshEnabled: true,
    processes: [{
      guid: crypto.randomUUID(),
      type: "web",
      instances: containers.map((c, index) => ({
        index,
        instanceGuid: c.handle,
        host: cf.cells[o.placement[index]].vm.ip,
        state: "RUNNING",
        internalIp: c.ip,
      })),
    }],
  };
  cf.cc.apps.push(app);
  return { app, containers, cells: o.placement };
}

/**
 * Adds a UAA user, logs it in as `cf login` does (password grant, client cf) and writes
 * `<lab dir>/cf-home/.cf/config.json` (mode 0600). With `expired`, the stored access token has
 * expired already, so a client has to refresh it. Returns the CF_HOME to use.
 */
export async function writeCfLogin(
  lab: Landscape,
  o: { username: string; userId: string; org: CcOrg; space: CcSpace; expired?: boolean },
): Promise<string> {
  const cf = lab.cf;
  if (!cf) throw new Error(`lab ${lab.runId} has no CF foundation (start it with cf: true)`);
  const password = crypto.randomUUID();
  lab.uaa.users.push({
    username: o.username,
    password,
    userId: o.userId,
    scopes: CF_USER_SCOPES,
  });
  const res = await lab.fetchLab(`${lab.uaa.url}/oauth/token`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa("cf:")}`,
      accept: "application/json",
    },
    body: new URLSearchParams({ grant_type: "password", username: o.username, password }),
  });
  const grant = await res.json();
  if (!res.ok || typeof grant.refresh_token !== "string") {
    throw new Error(`cf login to the lab UAA failed: HTTP ${res.status} ${grant.error ?? ""}`);
  }
  const access = o.expired
    ? await lab.uaa.mintExpired({ clientId: "cf", userName: o.username, scopes: CF_USER_SCOPES })
    : grant.access_token;
  const home = `${lab.dir}/cf-home`;
  await Deno.mkdir(`${home}/.cf`, { recursive: true, mode: 0o700 });
  const config = {
    ConfigVersion: 4,
    Target: cf.cc.url,
    APIVersion: cf.cc.apiVersion,
    AuthorizationEndpoint: lab.uaa.url,
    UaaEndpoint: lab.uaa.url,
    AccessToken: `bearer ${access}`,
    RefreshToken: grant.refresh_token,
    UAAOAuthClient: "cf",
    UAAOAuthClientSecret: "",
    UAAGrantType: "",
    SSLDisabled: false,
    OrganizationFields: { GUID: o.org.guid, Name: o.org.name },
    SpaceFields: { GUID: o.space.guid, Name: o.space.name, AllowSSH: true },
  };
  await Deno.writeTextFile(`${home}/.cf/config.json`, JSON.stringify(config, null, 2), {
    mode: 0o600,
  });
  return home;
}
