/**
 * HELLO, the first frame of every stream, and the version rules around it (docs/protocol.md
 * "Versioning"): each side announces its versions, and refuses a peer that is older than its
 * MIN_PEER_VERSION, or that needs a newer protocol than it speaks itself. Every message names
 * the side to upgrade.
 *
 * @example The api checks an agent's HELLO
 * ```ts
 * import { checkHello, makeHello } from "./hello.ts";
 *
 * const hello = makeHello("agent", "router/0");
 * const problem = checkHello(hello, { peer: "agent router/0", self: "api" });
 * console.log(problem); // null: same versions
 * ```
 *
 * @module
 */
import { type Hello, Hello as HelloSchema } from "./messages.ts";
import { checkPeerVersion, MIN_PEER_VERSION, PROTOCOL_VERSION } from "./version.ts";
import { VERSION } from "../version.ts";

export { checkPeerVersion } from "./version.ts";

/** Who speaks a HELLO. */
export type Component = Hello["component"];

/** How the two sides are named in a refusal. */
export interface HelloSides {
  /** the other side, e.g. `agent router/0 (…)`, `the pcap API` */
  peer: string;
  /** this side, e.g. `api` */
  self: string;
  /** what to upgrade when this side is too old; default `the <self>` */
  upgradeSelf?: string;
}

/** This build's HELLO as `component` with the given id. */
export function makeHello(component: Component, id: string): Hello {
  return {
    protocol_version: PROTOCOL_VERSION,
    min_protocol_version: MIN_PEER_VERSION,
    component,
    version: VERSION,
    id,
  };
}

/**
 * Null when this side can talk to the peer that sent `hello`, else a sentence for the user
 * naming the side to upgrade: the peer when it is too old, this side when the peer needs more.
 */
export function checkHello(hello: Hello, sides: HelloSides): string | null {
  const tooOld = checkPeerVersion(hello.protocol_version, sides.peer, sides.self);
  if (tooOld) return tooOld;
  if (hello.min_protocol_version > PROTOCOL_VERSION) {
    return `${sides.peer} needs protocol v${hello.min_protocol_version} but this ${sides.self} ` +
      `speaks v${PROTOCOL_VERSION}; upgrade ${sides.upgradeSelf ?? `the ${sides.self}`}`;
  }
  return null;
}

/** Validates a decoded HELLO payload and checks it: the HELLO, or why the peer is refused. */
export function readHello(
  json: unknown,
  sides: HelloSides,
): { hello: Hello } | { problem: string } {
  const parsed = HelloSchema.safeParse(json);
  if (!parsed.success) return { problem: `${sides.peer} sent an invalid HELLO` };
  const problem = checkHello(parsed.data, sides);
  return problem ? { problem } : { hello: parsed.data };
}
