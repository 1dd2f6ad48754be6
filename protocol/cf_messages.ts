/**
 * Client → api, first WebSocket text message of a CF capture (`/v1/capture/cf`): the app by
 * name (in a space given by guid or by org/space names) or by guid, the process type and the
 * instance indexes (none = all). The other fields are those of a BOSH capture.
 *
 * @module
 */
import { z } from "zod";
import { CaptureLimits, Filter, InterfaceName, Snaplen } from "./message_schemas.ts";
import type { CaptureLimits as Limits } from "./messages.ts";
import { RESOURCE_GUID_RE } from "./cf_ids.ts";
import { type Same, type Schema, typed } from "./schema_check.ts";

const Name = z.string().min(1).max(255);
const Guid = z.string().regex(RESOURCE_GUID_RE, "must be a Cloud Controller guid (a UUID)");

const CfTargetSchema = z.strictObject({
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

const CfStartRequestSchema = z.strictObject({
  type: z.literal("start"),
  protocol_version: z.number().int().nonnegative(),
  cf: CfTargetSchema,
  interface: InterfaceName.default("eth0"),
  snaplen: Snaplen.default(65535),
  filter: Filter.default(""),
  limits: CaptureLimits.default({}),
});

/** A validated CF start request (defaults applied). */
export interface CfStartRequest {
  /** always "start" */
  type: "start";
  /** the client's protocol version */
  protocol_version: number;
  /** the app and its instances; `app` or `app_guid` is given */
  cf: {
    /** the app's name, looked up in the space */
    app?: string;
    /** the app's guid (then no lookup by name) */
    app_guid?: string;
    /** the org's name, with `space` */
    org?: string;
    /** the space's name, in `org` */
    space?: string;
    /** the space's guid */
    space_guid?: string;
    /** process type (default web) */
    process: string;
    /** instance indexes ([] = all) */
    indexes: number[];
  };
  /** interface inside each container (default eth0; lo sees the plain text behind Envoy) */
  interface: string;
  /** bytes kept of each packet (default 65535) */
  snaplen: number;
  /** libpcap filter ("" = everything) */
  filter: string;
  /** the client's limits */
  limits: Limits;
}
/** Validates a CF start request. */
export const CfStartRequest: Schema<CfStartRequest> = typed(
  CfStartRequestSchema,
  true satisfies Same<CfStartRequest, z.output<typeof CfStartRequestSchema>>,
);
