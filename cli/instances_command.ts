/**
 * The client side of `instances` and `capture --dry-run` (both clients): ask the api's listing
 * route with the capture's own start request, print the table; and the list of selected targets
 * a capture prints on stderr before it starts (as `bosh pcap` does).
 *
 * @module
 */
import { fetchInstances, InstancesError, type InstancesRequest } from "./instances_client.ts";
import { formatInstancesTable } from "./instances_table.ts";
import { sanitize } from "./progress.ts";

/** What to ask and how the sources are named (the capture's interface). */
export interface TargetsQuery extends InstancesRequest {
  interface: string;
}

/** How long the list before a capture may delay its start. */
export const PREVIEW_TIMEOUT_MS = 20_000;

/**
 * `instances` / `--dry-run`: the table on `write` (stdout), 0; or the api's refusal on
 * `writeErr` as `<product>: …`, 1. `refresh`, when given, is asked once for a fresh
 * Authorization value after the api refused the token (UNAUTHENTICATED), and the listing is
 * asked again with it.
 */
export async function listTargets(
  q: TargetsQuery,
  write: (s: string) => void,
  writeErr: (s: string) => void,
  product: string,
  refresh?: () => Promise<string>,
): Promise<number> {
  try {
    let answer;
    try {
      answer = await fetchInstances(q);
    } catch (e) {
      if (!refresh || !(e instanceof InstancesError) || e.type !== "UNAUTHENTICATED") throw e;
      let authorization: string;
      try {
        authorization = await refresh();
      } catch (r) {
        throw new Error(
          `the pcap API refused the token (${e.message}), and refreshing it failed: ` +
            (r as Error).message,
        );
      }
      answer = await fetchInstances({ ...q, authorization });
    }
    write(formatInstancesTable(answer, q.interface));
    return 0;
  } catch (e) {
    writeErr(`${product}: ${sanitize((e as Error).message)}\n`);
    return 1;
  }
}

/**
 * Before a capture: the selected targets on stderr. Never fails the capture: when the api cannot
 * list (an older api, a refusal the capture will report itself), nothing is shown (with -v, why).
 * The agents are not probed: the capture reports one that is down itself, so a down agent does
 * not delay the start twice.
 */
export async function previewTargets(
  q: TargetsQuery,
  message: (s: string) => void,
  verbose: boolean,
): Promise<void> {
  try {
    const answer = await fetchInstances({
      ...q,
      probe: false,
      timeoutMs: q.timeoutMs ?? PREVIEW_TIMEOUT_MS,
    });
    message(`selected targets:\n${formatInstancesTable(answer, q.interface).trimEnd()}`);
  } catch (e) {
    if (verbose) message(`cannot list the targets first: ${(e as Error).message}`);
  }
}
