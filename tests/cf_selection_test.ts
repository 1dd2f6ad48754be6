// CF instance selection (pure): indexes, non-RUNNING states, old-CC containers, malformed CC
// answers, the target limit, and the error when nothing is left.
import { requireTargets, selectInstances } from "../server/cf_selection.ts";
import { ApiError } from "../server/limits.ts";
import { assert, assertEquals, assertThrows } from "./support/assert.ts";

const apiError = (fn: () => unknown) => assertThrows(fn, ApiError) as ApiError;

const APP = { guid: "5b1f1a2c-0000-4000-8000-000000000001", name: "web" };
const req = (indexes: number[] = [], maxTargets = 10) => ({
  app: APP,
  process: "web",
  indexes,
  maxTargets,
});
const G0 = "6907c81e-99c4-4322-4594-ac1d";
const G1 = "7a07c81e-99c4-4322-4594-ac1e";

Deno.test("cf selection: RUNNING instances by index, others skipped with their state", () => {
  const stats = [
    { index: 1, state: "RUNNING", host: "198.18.0.11", instanceGuid: G1 },
    { index: 0, state: "RUNNING", host: "198.18.0.10", instanceGuid: G0 },
    { index: 2, state: "CRASHED", host: "", instanceGuid: "" },
    { index: 3, state: "STARTING", host: "198.18.0.10", instanceGuid: G0.replace("6", "8") },
  ];
  const all = selectInstances(stats, req());
  assertEquals(all.targets.map((t) => t.origin), [`web/0 (${G0})`, `web/1 (${G1})`]);
  assertEquals(all.skipped.map((s) => `${s.origin} ${s.state}`), [
    "web/2 CRASHED",
    "web/3 STARTING",
  ]);
  assertEquals(selectInstances(stats, req([1, 1])).targets.map((t) => t.index), [1]);
  const e = apiError(() => selectInstances(stats, req([9, 4])));
  assertEquals(e.kind, "INVALID_REQUEST");
  assert(/has no instance 4, 9; it has indexes 0, 1, 2, 3/.test(e.message), e.message);
  const lim = apiError(() => selectInstances(stats, req([], 1)));
  assertEquals([lim.kind, lim.limit], ["LIMIT_REACHED", { name: "max_targets", value: 1 }]);
});

Deno.test("cf selection: old CC, malformed guids and ips from the CC, nothing left", () => {
  const sel = selectInstances([
    { index: 0, state: "RUNNING", host: "198.18.0.10", internalIp: "198.19.0.5" },
    { index: 1, state: "RUNNING", host: "198.18.0.10", instanceGuid: "../../etc/passwd" },
    { index: 2, state: "RUNNING", host: "198.18.0.10", internalIp: "198.19.0.300" },
    { index: 3, state: "RUNNING", host: "198.18.0.10" },
    { index: 4, state: "RUNNING", host: "", instanceGuid: G0 },
  ], req());
  assertEquals(sel.targets.map((t) => [t.container, t.id]), [
    [{ app_guid: APP.guid, ip: "198.19.0.5" }, "ip:198.19.0.5"],
  ]);
  assertEquals(sel.skipped.map((s) => s.index), [1, 2, 3, 4]);
  assert(/malformed instance guid/.test(sel.skipped[0].reason));
  assert(/malformed container ip/.test(sel.skipped[1].reason));
  assert(/neither instance_guid nor instance_internal_ip/.test(sel.skipped[2].reason));
  assert(/names no cell/.test(sel.skipped[3].reason));

  const none = selectInstances([{ index: 0, state: "DOWN" }], req());
  const e = apiError(() => requireTargets(none, "web"));
  assertEquals(e.kind, "START_CAPTURE_FAILED");
  assert(/no instance of app 'web' can be captured: web\/0 is DOWN/.test(e.message), e.message);
  const empty = apiError(() => requireTargets(selectInstances([], req()), "web"));
  assert(/it has no instances/.test(empty.message));
});
