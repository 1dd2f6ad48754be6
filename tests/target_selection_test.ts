// Target selection rules (pure): groups, qualified and bare selectors, unknowns, VM-less
// instances and the max_targets limit. Instances come from the lab Director's JSON builder so
// their shape matches what the Director really answers.
import { instanceJson, makeGroup } from "../lab/director_sim.ts";
import { type Instance, instanceSchema } from "../server/director_client.ts";
import { selectTargets } from "../server/target_selection.ts";
import { ApiError } from "../server/limits.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

const cells = makeGroup("diego-cell", 3, "198.18.0.10");
const routers = makeGroup("router", 2, "198.18.0.20");
const errandId = crypto.randomUUID();
const INSTANCES: Instance[] = [
  ...routers,
  ...cells,
  { job: "smoke-tests", index: 0, id: errandId, ips: [], expectsVm: false },
].map((i) => instanceSchema.parse(instanceJson(i)));

function names(sel: { targets: { group: string; index: number | null }[] }): string[] {
  return sel.targets.map((t) => `${t.group}/${t.index}`);
}

function fails(fn: () => unknown, kind: string, ...res: RegExp[]): ApiError {
  try {
    fn();
  } catch (e) {
    assert(e instanceof ApiError, String(e));
    assertEquals(e.kind, kind, e.message);
    for (const re of res) assertMatch(e.message, re);
    return e;
  }
  throw new Error("expected a failure");
}

Deno.test("selection: whole groups, in request order, sorted by index", () => {
  const s = selectTargets(INSTANCES, { groups: ["router", "diego-cell"] }, 100);
  assertEquals(names(s), ["router/0", "router/1", "diego-cell/0", "diego-cell/1", "diego-cell/2"]);
  const t = s.targets[2];
  assertEquals(t.ip, "198.18.0.10");
  assertEquals(t.id, cells[0].id);
  assertEquals(t.origin, `diego-cell/0 (${cells[0].id})`);
  assertEquals(s.skipped, []);
});

Deno.test("selection: qualified selectors by index and id; implicit group", () => {
  const s = selectTargets(INSTANCES, {
    groups: ["diego-cell"],
    instances: ["diego-cell/2", `diego-cell/${cells[0].id}`],
  }, 100);
  assertEquals(names(s), ["diego-cell/0", "diego-cell/2"]);
  // A qualified selector selects its group without -g.
  assertEquals(names(selectTargets(INSTANCES, { groups: [], instances: ["router/1"] }, 100)), [
    "router/1",
  ]);
  // Selectors narrow only their own group: all routers plus cell 1.
  assertEquals(
    names(
      selectTargets(
        INSTANCES,
        { groups: ["router", "diego-cell"], instances: ["diego-cell/1"] },
        100,
      ),
    ),
    ["router/0", "router/1", "diego-cell/1"],
  );
});

Deno.test("selection: bare index applies to every selected group; bare id finds its group", () => {
  assertEquals(
    names(selectTargets(INSTANCES, { groups: ["router", "diego-cell"], instances: ["1"] }, 100)),
    ["router/1", "diego-cell/1"],
  );
  // Index 2 exists only among the cells; that is fine, the selector matched somewhere.
  assertEquals(
    names(selectTargets(INSTANCES, { groups: ["router", "diego-cell"], instances: ["2"] }, 100)),
    ["diego-cell/2"],
  );
  assertEquals(
    names(
      selectTargets(
        INSTANCES,
        { groups: ["router", "diego-cell"], instances: [routers[1].id] },
        100,
      ),
    ),
    ["router/1"],
  );
  // A bare id needs no group: ids are unique in a deployment.
  assertEquals(
    names(selectTargets(INSTANCES, { groups: [], instances: [cells[2].id, routers[0].id] }, 100)),
    ["diego-cell/2", "router/0"],
  );
  fails(
    () => selectTargets(INSTANCES, { groups: [], instances: ["1"] }, 100),
    "INVALID_REQUEST",
    /name at least one instance group/,
  );
  // Duplicates collapse.
  const dup = selectTargets(INSTANCES, {
    groups: ["router"],
    instances: ["0", "router/0", routers[0].id],
  }, 100);
  assertEquals(names(dup), ["router/0"]);
});

Deno.test("selection: every unknown group and selector is named, with the available groups", () => {
  const e = fails(
    () =>
      selectTargets(INSTANCES, {
        groups: ["router", "nats", "uaa"],
        instances: ["router/7", "9", "router/0"],
      }, 100),
    "INVALID_REQUEST",
    /unknown instance group\(s\): nats, uaa/,
    /no instance matches: router\/7, 9 in the selected group\(s\) router/,
    /available groups: router \(2\), diego-cell \(3\), smoke-tests \(1\)/,
  );
  assert(!e.message.includes("router/0,"));
  fails(
    () => selectTargets(INSTANCES, { groups: [] }, 100),
    "INVALID_REQUEST",
    /at least one instance group/,
    /available groups/,
  );
  fails(
    () => selectTargets(INSTANCES, { groups: ["router"], instances: ["a/b/c"] }, 100),
    "INVALID_REQUEST",
    /'a\/b\/c' is malformed/,
  );
  fails(
    () => selectTargets([], { groups: ["router"] }, 100),
    "INVALID_REQUEST",
    /the deployment has no instances/,
  );
});

Deno.test("selection: instances without IPs are skipped with a reason", () => {
  const s = selectTargets(INSTANCES, { groups: ["smoke-tests", "router"] }, 100);
  assertEquals(names(s), ["router/0", "router/1"]);
  assertEquals(s.skipped.length, 1);
  assertEquals(s.skipped[0].origin, `smoke-tests/0 (${errandId})`);
  assertMatch(s.skipped[0].reason, /no VM/);
  const detached: Instance = { ...INSTANCES[0], ips: [], cid: "vm-1", expects_vm: true };
  const d = selectTargets([detached], { groups: ["router"] }, 100);
  assertEquals(d.targets, []);
  assertMatch(d.skipped[0].reason, /no IP address/);
});

Deno.test("selection: max_targets exceeded → LIMIT_REACHED naming the limit", () => {
  assertEquals(selectTargets(INSTANCES, { groups: ["diego-cell"] }, 3).targets.length, 3);
  const e = fails(
    () => selectTargets(INSTANCES, { groups: ["diego-cell"] }, 2),
    "LIMIT_REACHED",
    /3 targets, the api allows at most 2 \(limits\.max_targets\)/,
  );
  assertEquals(e.limit, { name: "max_targets", value: 2 });
  // Skipped instances do not count.
  assertEquals(
    selectTargets(INSTANCES, { groups: ["router", "smoke-tests"] }, 2).targets.length,
    2,
  );
});
