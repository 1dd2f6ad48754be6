/**
 * From a CF capture request to the instances to capture, asking the Cloud Controller with the
 * user's token (DESIGN §2, CF): the app (by guid, or by name in a space given by guid or by
 * org/space names), its permissions (`read_sensitive_data` is required: the same bar CC sets for
 * env and ssh, while stats are visible to every space role), `ssh_enabled` when the api requires
 * it, then the process stats and the selection by index.
 */
import { ApiError } from "./limits.ts";
import type { CcApp, CcClient, CcOrg, CcSpace } from "./cc_client.ts";
import { type CfSelection, selectInstances } from "./cf_selection.ts";

export interface CfLookupRequest {
  app?: string;
  app_guid?: string;
  org?: string;
  space?: string;
  space_guid?: string;
  process: string;
  indexes: number[];
}

export interface CfLookupPolicy {
  /** cf.require_ssh_enabled (default true) */
  requireSshEnabled: boolean;
  maxTargets: number;
}

export interface CfLookup {
  app: CcApp;
  space: CcSpace;
  org: CcOrg;
  process: string;
  selection: CfSelection;
  apiVersion?: string;
}

/** Why the user may not capture, or null (pure). */
export function captureDenial(
  who: { user: string; app: string; space: string },
  perms: { readSensitive: boolean },
  ssh: { enabled: boolean; reason: string } | null,
): string | null {
  if (!perms.readSensitive) {
    return `user '${who.user}' may see app '${who.app}' but not capture it: capturing needs the ` +
      `Space Developer role in space '${who.space}' (or admin / admin_read_only); ask a space ` +
      "manager to grant it ('cf set-space-role USER ORG SPACE SpaceDeveloper')";
  }
  if (ssh && !ssh.enabled) {
    const reason = ssh.reason || "ssh is disabled";
    return `capturing app '${who.app}' needs SSH to be enabled for it, and the Cloud Controller ` +
      `says: ${reason}. ${sshRemedy(reason, who.app, who.space)}`;
  }
  return null;
}

function sshRemedy(reason: string, app: string, space: string): string {
  if (/globally/i.test(reason)) {
    return "An operator must allow SSH for the foundation (cc.allow_app_ssh_access).";
  }
  if (/space/i.test(reason)) {
    return `A space manager can allow it with 'cf allow-space-ssh ${space}'.`;
  }
  return `Enable it with 'cf enable-ssh ${app}' and restart the app.`;
}

async function findApp(cc: CcClient, req: CfLookupRequest, token: string): Promise<CcApp> {
  if (req.app_guid) {
    const app = await cc.appByGuid(req.app_guid, token).catch(
      notVisible("app", req.app_guid, "check it with 'cf app NAME --guid'"),
    );
    if (req.app && app.name !== req.app) {
      throw new ApiError(
        "INVALID_REQUEST",
        `app guid ${req.app_guid} is app '${app.name}', not '${req.app}'; give one of them`,
      );
    }
    return app;
  }
  if (!req.app) throw new ApiError("INVALID_REQUEST", "name the app (cf.app) or its guid");
  let spaceGuid = req.space_guid;
  if (!spaceGuid) {
    if (!req.org || !req.space) {
      throw new ApiError(
        "INVALID_REQUEST",
        `app '${req.app}' is looked up in a space: give space_guid, or org and space ` +
          "('cf target -o ORG -s SPACE', or --org/--space)",
      );
    }
    spaceGuid = (await cc.spaceByName(req.org, req.space, token)).guid;
  }
  return await cc.appByName(req.app, spaceGuid, token);
}

/** A 404 on a lookup by guid reads better with the guid the user gave. */
function notVisible(what: string, id: string, hint: string) {
  return (e: unknown): never => {
    if (e instanceof ApiError && e.kind === "INVALID_REQUEST" && /not found/.test(e.message)) {
      throw new ApiError(
        "INVALID_REQUEST",
        `${[what, id].filter(Boolean).join(" ")} not found, or not visible to you; ${hint}`,
      );
    }
    throw e;
  };
}

export async function lookupCfTargets(
  cc: CcClient,
  req: CfLookupRequest,
  token: string,
  user: string,
  policy: CfLookupPolicy,
): Promise<CfLookup> {
  const root = await cc.root();
  const app = await findApp(cc, req, token);
  const [perms, ssh, space] = await Promise.all([
    cc.permissions(app.guid, token),
    policy.requireSshEnabled ? cc.sshEnabled(app.guid, token) : Promise.resolve(null),
    cc.space(app.spaceGuid, token),
  ]);
  const denial = captureDenial({ user, app: app.name, space: space.name }, perms, ssh);
  if (denial) throw new ApiError("PERMISSION_DENIED", denial);
  const [org, stats] = await Promise.all([
    cc.org(space.orgGuid, token),
    cc.processStats(app.guid, req.process, token).catch(
      notVisible(
        `process '${req.process}' of app '${app.name}'`,
        "",
        "see 'cf app NAME' for its processes",
      ),
    ),
  ]);
  const selection = selectInstances(stats, {
    app: { guid: app.guid, name: app.name },
    process: req.process,
    indexes: req.indexes,
    maxTargets: policy.maxTargets,
  });
  return { app, space, org, process: req.process, selection, apiVersion: root.apiVersion };
}
