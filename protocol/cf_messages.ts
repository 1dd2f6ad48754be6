/**
 * Client → api, first WebSocket text message of a CF capture (`/v1/capture/cf`): the app by
 * name (in a space given by guid or by org/space names) or by guid, the process type and the
 * instance indexes (none = all). The other fields are those of a BOSH capture.
 */
import { z } from "zod";
import { CaptureLimits, Filter, InterfaceName, Snaplen } from "./messages.ts";
import { RESOURCE_GUID_RE } from "./cf_ids.ts";

const Name = z.string().min(1).max(255);
const Guid = z.string().regex(RESOURCE_GUID_RE, "must be a Cloud Controller guid (a UUID)");

export const CfTarget = z.strictObject({
  app: Name.optional(),
  app_guid: Guid.optional(),
  org: Name.optional(),
  space: Name.optional(),
  space_guid: Guid.optional(),
  process: z.string().regex(/^[A-Za-z0-9_-]{1,255}$/, "process type: letters, digits, _ and -")
    .default("web"),
  indexes: z.array(z.number().int().nonnegative()).max(1024).default([]),
}).refine((c) => c.app !== undefined || c.app_guid !== undefined, {
  message: "name the app (app) or give its guid (app_guid)",
});

export const CfStartRequest = z.strictObject({
  type: z.literal("start"),
  protocol_version: z.number().int().nonnegative(),
  cf: CfTarget,
  interface: InterfaceName.default("eth0"),
  snaplen: Snaplen.default(65535),
  filter: Filter.default(""),
  limits: CaptureLimits.default({}),
});
export type CfStartRequest = z.output<typeof CfStartRequest>;
