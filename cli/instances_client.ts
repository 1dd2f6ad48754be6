/**
 * Asks the api's listing route what a capture would capture (`POST /v1/instances/<platform>`
 * with the capture's own start request), for `instances` and `capture --dry-run`. Bounded by a
 * deadline; the answer is validated before it is shown.
 *
 * @module
 */
import type { BoshStartRequest } from "../protocol/messages.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";
import { InstancesAnswer, instancesRoutePath, PROBE_PARAM } from "../protocol/instances.ts";
import { readLimited } from "../lib/read_limited.ts";
import { fetchTrusting } from "./uaa_token.ts";

/** How long the whole listing may take (the api probes agents within its own, shorter bound). */
export const INSTANCES_TIMEOUT_MS = 60_000;

/** The api refused or could not answer; `type` is the api's error type when it sent one. */
export class InstancesError extends Error {
  constructor(message: string, readonly type?: string, readonly status?: number) {
    super(message);
    this.name = "InstancesError";
  }
}

export interface InstancesRequest {
  apiUrl: string;
  /** "bosh" or "cf" */
  platform: string;
  authorization: string;
  caCert?: string;
  request: BoshStartRequest | CfStartRequest;
  timeoutMs?: number;
  /** false: the api does not ask the agents (their state is `unprobed`) */
  probe?: boolean;
}

/** The targets and their agents' state; throws InstancesError. */
export async function fetchInstances(r: InstancesRequest): Promise<InstancesAnswer> {
  const url = `${r.apiUrl}${instancesRoutePath(r.platform)}` +
    (r.probe === false ? `?${PROBE_PARAM}=false` : "");
  // --ca-cert is trusted alone, as for the capture's WebSocket (not added to the system roots)
  const trusting = fetchTrusting(r.caCert);
  const timeoutMs = r.timeoutMs ?? INSTANCES_TIMEOUT_MS;
  try {
    let res: Response;
    let text: string;
    try {
      res = await trusting.fetch(url, {
        method: "POST",
        headers: { authorization: r.authorization, "content-type": "application/json" },
        body: JSON.stringify(r.request),
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await readLimited(res, 4 * 1024 * 1024);
    } catch (e) {
      const why = (e as Error).name === "TimeoutError"
        ? `no answer within ${timeoutMs / 1000} s`
        : (e as Error).message;
      throw new InstancesError(
        `cannot reach the pcap API at ${url}: ${why}; check -u and --ca-cert`,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (!res.ok) {
      const err = body as { type?: unknown; text?: unknown } | undefined;
      if (typeof err?.type === "string" && typeof err.text === "string") {
        throw new InstancesError(`${err.type}: ${err.text}`, err.type, res.status);
      }
      throw new InstancesError(
        res.status === 404
          ? `the pcap API at ${r.apiUrl} has no ${instancesRoutePath(r.platform)} route; ` +
            "it is older than this client (upgrade the api)"
          : `the pcap API answered HTTP ${res.status} to ${url}`,
        undefined,
        res.status,
      );
    }
    const parsed = InstancesAnswer.safeParse(body);
    if (!parsed.success) {
      throw new InstancesError(`the pcap API sent a malformed instances answer (${url})`);
    }
    return parsed.data;
  } finally {
    trusting.close();
  }
}
