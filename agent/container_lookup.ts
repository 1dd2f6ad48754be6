/**
 * Finds the network namespace of an app instance's container on a Diego cell (DESIGN §2, CF).
 *
 * The api names the container by instance guid (== Garden handle) plus app guid, or, for CCs
 * before 3.191.0, by app guid plus the container's ip. The agent then:
 * 1. validates every identifier's exact form before it goes near a path;
 * 2. reads the CNI store, retrying a bounded number of times while silk rewrites it in place;
 * 3. requires the entry's `metadata.app_id` to equal the requested app: an api cannot be tricked
 *    into capturing another app's container by a mismatched pair;
 * 4. reads runc's state.json and checks the pid's start time (/proc/<pid>/stat field 22) against
 *    `init_process_start`, so a dead container whose pid was reused is refused;
 * 5. returns `/proc/<pid>/ns/net`, which the capture worker enters on its own thread only.
 */
import { instanceGuidProblem, ipv4Problem, resourceGuidProblem } from "../protocol/cf_ids.ts";
import {
  parseRuncState,
  parseStore,
  procStartTicks,
  SAFE_HANDLE_RE,
  type StoreEntry,
} from "./container_records.ts";

export type ContainerRequest =
  | { app_guid: string; instance_guid: string }
  | { app_guid: string; ip: string };

export interface ContainerLookupOptions {
  /** cf.container_store, default /var/vcap/data/container-metadata/store.json */
  containerStore: string;
  /** cf.runc_root, default /run/containerd/runc/garden */
  runcRoot: string;
  /** reads of a store that is empty or partial before giving up (default 5) */
  storeAttempts?: number;
  /** pause before the first retry, doubled each time (default 20 ms) */
  retryDelayMs?: number;
  /** file reader (tests inject one to model a store caught mid-rewrite) */
  readText?: (path: string) => Promise<string>;
}

export interface FoundContainer {
  handle: string;
  ip: string;
  pid: number;
  /** `/proc/<pid>/ns/net` */
  netns: string;
}

/** A refusal; the message says which container and why, and is safe to send to the api. */
export class ContainerLookupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ContainerLookupError";
  }
}

const refuse = (m: string): never => {
  throw new ContainerLookupError(m);
};

/** The request's identifiers in their exact forms, or the refusal (pure). */
export function validateContainerRequest(req: ContainerRequest): void {
  const app = resourceGuidProblem(req.app_guid, "app guid");
  if (app) refuse(app);
  if ("instance_guid" in req) {
    const p = instanceGuidProblem(req.instance_guid);
    if (p) refuse(p);
  } else {
    const p = ipv4Problem(req.ip);
    if (p) refuse(p);
  }
}

async function readStore(o: ContainerLookupOptions): Promise<Map<string, StoreEntry>> {
  const read = o.readText ?? Deno.readTextFile;
  const attempts = Math.max(1, o.storeAttempts ?? 5);
  let delay = o.retryDelayMs ?? 20;
  let why = "";
  for (let i = 0; i < attempts; i++) {
    if (i > 0) {
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
    let text: string;
    try {
      text = await read(o.containerStore);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        refuse(
          `the container store ${o.containerStore} does not exist; is this a Diego cell ` +
            "(cf.container_store)?",
        );
      }
      throw new ContainerLookupError(
        `cannot read the container store ${o.containerStore}: ${(e as Error).message}`,
      );
    }
    const parsed = parseStore(text);
    if (parsed.ok) return parsed.value;
    why = parsed.why;
  }
  return refuse(
    `the container store ${o.containerStore} stayed unreadable after ${attempts} reads: ${why}`,
  );
}

function findEntry(store: Map<string, StoreEntry>, req: ContainerRequest): StoreEntry {
  if ("instance_guid" in req) {
    const e = store.get(req.instance_guid);
    if (!e) {
      return refuse(`no container ${req.instance_guid} on this cell (not in the container store)`);
    }
    if (e.appId !== req.app_guid) {
      return refuse(
        `container ${req.instance_guid} does not belong to app ${req.app_guid}; refusing to ` +
          "capture another app's container",
      );
    }
    return e;
  }
  const all = [...store.entries()].filter(([, e]) => e.ip === req.ip);
  if (all.length === 0) return refuse(`no container with ip ${req.ip} on this cell`);
  const mine = all.filter(([, e]) => e.appId === req.app_guid);
  if (mine.length === 0) {
    return refuse(
      `the container with ip ${req.ip} does not belong to app ${req.app_guid}; refusing to ` +
        "capture another app's container",
    );
  }
  if (mine.length > 1) {
    return refuse(`${mine.length} containers of app ${req.app_guid} claim ip ${req.ip}`);
  }
  const [key, e] = mine[0];
  return { ...e, handle: key };
}

export async function lookupContainer(
  req: ContainerRequest,
  o: ContainerLookupOptions,
): Promise<FoundContainer> {
  validateContainerRequest(req);
  const entry = findEntry(await readStore(o), req);
  const handle = entry.handle;
  // The handle becomes a path component below the runc root.
  if (!SAFE_HANDLE_RE.test(handle)) {
    refuse(`the container store names an unsafe handle ${JSON.stringify(handle.slice(0, 80))}`);
  }
  const read = o.readText ?? Deno.readTextFile;
  const statePath = `${o.runcRoot}/${handle}/state.json`;
  let stateText: string;
  try {
    stateText = await read(statePath);
  } catch (e) {
    return refuse(
      e instanceof Deno.errors.NotFound
        ? `container ${handle} has no runc state (${statePath}); it is not running`
        : `cannot read ${statePath}: ${(e as Error).message}`,
    );
  }
  const state = parseRuncState(stateText);
  if (!state.ok) return refuse(`container ${handle}: ${state.why}`);
  const { pid, startTicks } = state.value;
  let stat: string;
  try {
    stat = await read(`/proc/${pid}/stat`);
  } catch {
    return refuse(`container ${handle}: its init process ${pid} is dead; it is not running`);
  }
  const ticks = procStartTicks(stat);
  if (ticks !== startTicks) {
    return refuse(
      `container ${handle}: pid ${pid} was started at ${ticks ?? "?"} ticks, not at ` +
        `${startTicks} as runc recorded; the pid was reused by another process, refusing`,
    );
  }
  return { handle, ip: entry.ip, pid, netns: `/proc/${pid}/ns/net` };
}
