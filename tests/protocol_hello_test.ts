import { checkHello, makeHello, readHello } from "../protocol/hello.ts";
import { MIN_PEER_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { assert, assertEquals } from "./support/assert.ts";

const sides = { peer: "agent r/0", self: "api" };

Deno.test("hello: same versions pass, a too-old peer and a too-new peer are refused", () => {
  const h = makeHello("agent", "r/0");
  assertEquals(h.protocol_version, PROTOCOL_VERSION);
  assertEquals(checkHello(h, sides), null);
  const old = checkHello({ ...h, protocol_version: MIN_PEER_VERSION - 1 }, sides);
  assert(old?.includes("upgrade agent r/0"), old ?? "");
  const newer = checkHello({ ...h, min_protocol_version: PROTOCOL_VERSION + 1 }, sides);
  assert(newer?.includes(`needs protocol v${PROTOCOL_VERSION + 1}`), newer ?? "");
  assert(newer?.endsWith("upgrade the api"), newer ?? "");
});

Deno.test("hello: readHello refuses a payload that is not a HELLO", () => {
  assertEquals(readHello({ nope: 1 }, sides), { problem: "agent r/0 sent an invalid HELLO" });
  const ok = readHello(makeHello("api", "x"), sides);
  assert("hello" in ok && ok.hello.component === "api");
});
