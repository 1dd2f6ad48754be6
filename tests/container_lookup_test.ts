// The agent's container lookup on a simulated Diego cell (real namespaces, real runc-style state
// and CNI store): found by instance guid and by app + ip; refused for another app's container,
// a missing one, a dead or reused pid, path-trick guids, and a store that stays partial.
import { isRoot, Netns, newRunId } from "../lab/netns.ts";
import { DiegoCell } from "../lab/diego_containers.ts";
import {
  type ContainerLookupOptions,
  lookupContainer,
  validateContainerRequest,
} from "../agent/container_lookup.ts";
import { parseRuncState, parseStore, procStartTicks } from "../agent/container_records.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./support/assert.ts";

const APP = crypto.randomUUID();
const OTHER_APP = crypto.randomUUID();
const ids = { spaceId: crypto.randomUUID(), orgId: crypto.randomUUID() };

Deno.test("container records: store, runc state and /proc stat parsing", () => {
  assert(!parseStore("").ok && !parseStore('{"a": {"handle"').ok && !parseStore("[]").ok);
  const s = parseStore(
    JSON.stringify({ h1: { handle: "h1", ip: "198.19.0.2", metadata: { app_id: APP } } }),
  );
  assert(s.ok);
  assertEquals(s.value.get("h1"), { handle: "h1", ip: "198.19.0.2", appId: APP });
  assertEquals(parseRuncState('{"init_process_pid": 42, "init_process_start": 123}'), {
    ok: true,
    value: { pid: 42, startTicks: "123" },
  });
  for (
    const bad of [
      '{"init_process_pid": "42", "init_process_start": 1}',
      '{"init_process_pid": 1}',
      "{",
    ]
  ) {
    assert(!parseRuncState(bad).ok, bad);
  }
  const stat =
    "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
  assertEquals(procStartTicks(stat), "987654");
  assertEquals(procStartTicks("garbage"), null);
});

Deno.test("container lookup: identifiers are validated before any file is read", async () => {
  const reads: string[] = [];
  const o: ContainerLookupOptions = {
    containerStore: "/nonexistent/store.json",
    runcRoot: "/nonexistent",
    readText: (p) => {
      reads.push(p);
      return Promise.resolve("{}");
    },
  };
  const tricks = [
    "../../../etc/passwd",
    "6907c81e-99c4-4322-4594-ac1d/../x",
    "6907c81e-99c4-4322-4594-ac1d\0",
    ".",
    "",
    "6907C81E-99C4-4322-4594-AC1D",
    "6907c81e-99c4-4322-4594-ac1d7777777", // a full UUID is not an instance guid
  ];
  for (const g of tricks) {
    await assertRejects(
      () => lookupContainer({ app_guid: APP, instance_guid: g }, o),
      Error,
      "not of the Diego form",
    );
  }
  assertThrows(
    () => validateContainerRequest({ app_guid: "../x", ip: "198.19.0.2" }),
    Error,
    "app guid",
  );
  assertThrows(
    () => validateContainerRequest({ app_guid: APP, ip: "198.19.0.2/../x" }),
    Error,
    "not an IPv4",
  );
  assertEquals(reads, [], "nothing was read for an invalid request");
});

Deno.test("container lookup: a store caught mid-rewrite is retried, a partial one refused", async () => {
  const handle = "6907c81e-99c4-4322-4594-ac1d";
  const good = JSON.stringify({
    [handle]: { handle, ip: "198.19.0.2", metadata: { app_id: APP } },
  });
  let storeReads = 0;
  const seq = ["", good.slice(0, 20), good];
  const o = (texts: string[]): ContainerLookupOptions => ({
    containerStore: "/cell/store.json",
    runcRoot: "/cell/runc",
    retryDelayMs: 1,
    storeAttempts: 3,
    readText: (p) => {
      if (p === "/cell/store.json") {
        return Promise.resolve(texts[Math.min(storeReads++, texts.length - 1)]);
      }
      throw new Deno.errors.NotFound(p);
    },
  });
  // Third read is complete: the lookup goes on to the runc state (absent here).
  await assertRejects(
    () => lookupContainer({ app_guid: APP, instance_guid: handle }, o(seq)),
    Error,
    "has no runc state",
  );
  assertEquals(storeReads, 3);
  storeReads = 0;
  await assertRejects(
    () => lookupContainer({ app_guid: APP, instance_guid: handle }, o(["", good.slice(0, 20)])),
    Error,
    "stayed unreadable after 3 reads: the store is not complete JSON",
  );
  assertEquals(storeReads, 3, "bounded retries");
});

Deno.test({
  name: "container lookup: real containers — found, another app's refused, dead and reused pids",
  ignore: !isRoot(),
  fn: async () => {
    const netns = new Netns(newRunId());
    const root = await Deno.makeTempDir({ prefix: "pcap-lookup-" });
    const cell = new DiegoCell({ netns, cellShort: "l0", root, cellNs: null });
    try {
      const [mine, theirs, dying] = await Promise.all([
        cell.addContainer({ appId: APP, ...ids, ip: "198.19.7.2" }),
        cell.addContainer({ appId: OTHER_APP, ...ids, ip: "198.19.7.3" }),
        cell.addContainer({ appId: APP, ...ids, ip: "198.19.7.4" }),
      ]);
      assertEquals(mine.handle.length, 28);
      const o = { containerStore: cell.storePath, runcRoot: cell.runcRoot };
      const found = await lookupContainer({ app_guid: APP, instance_guid: mine.handle }, o);
      assertEquals(found, {
        handle: mine.handle,
        ip: mine.ip,
        pid: mine.pid,
        netns: `/proc/${mine.pid}/ns/net`,
      });
      assertEquals(
        Deno.statSync(found.netns).ino,
        Deno.statSync(`/run/netns/${mine.netnsName}`).ino,
      );
      const byIp = await lookupContainer({ app_guid: APP, ip: mine.ip }, o);
      assertEquals(byIp.handle, mine.handle);

      await assertRejects(
        () => lookupContainer({ app_guid: APP, instance_guid: theirs.handle }, o),
        Error,
        "does not belong to app",
      );
      await assertRejects(
        () => lookupContainer({ app_guid: APP, ip: theirs.ip }, o),
        Error,
        "does not belong to app",
      );
      await assertRejects(
        () =>
          lookupContainer({
            app_guid: APP,
            instance_guid: "00000000-0000-4000-8000-000000000000".slice(0, 28),
          }, o),
        Error,
        "no container",
      );
      await assertRejects(
        () => lookupContainer({ app_guid: APP, ip: "198.19.7.99" }, o),
        Error,
        "no container with ip",
      );

      // Reused pid: runc recorded another start time than the live process has.
      const statePath = `${cell.runcRoot}/${mine.handle}/state.json`;
      const state = JSON.parse(await Deno.readTextFile(statePath));
      await Deno.writeTextFile(
        statePath,
        JSON.stringify({ ...state, init_process_start: state.init_process_start - 1 }),
      );
      await assertRejects(
        () => lookupContainer({ app_guid: APP, instance_guid: mine.handle }, o),
        Error,
        "the pid was reused by another process",
      );
      // Dead: the process is gone, its registration stays.
      await cell.killProcess(dying.handle);
      await assertRejects(
        () => lookupContainer({ app_guid: APP, instance_guid: dying.handle }, o),
        Error,
        `its init process ${dying.pid} is dead`,
      );
    } finally {
      await cell.cleanup().catch(() => {});
      await netns.cleanup();
      await Deno.remove(root, { recursive: true });
    }
  },
});
