import assert from "node:assert/strict";
import { isRoot, Netns, newRunId, run } from "../lab/netns.ts";
import { DiegoCell } from "../lab/diego_containers.ts";

const ignore = !isRoot();

async function nsInode(path: string): Promise<number> {
  return (await Deno.stat(path)).ino!;
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT"); // harmless probe: throws if the pid is gone
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "containers: registered like Garden/runc + CNI; pid lives in its own netns; cleanup",
  ignore,
  fn: async () => {
    const netns = new Netns(newRunId());
    const root = await Deno.makeTempDir({ prefix: "pcap-cell-" });
    const cell = new DiegoCell({ netns, cellShort: "d0", root, cellNs: null });
    let cellNs: string | undefined;
    try {
      cellNs = await netns.addNamespace("cell0");
      const vm = new DiegoCell({ netns, cellShort: "d1", root, cellNs, subnet: 1 });
      const appId = crypto.randomUUID();
      const spaceId = crypto.randomUUID();
      const orgId = crypto.randomUUID();
      const [a, b] = await Promise.all([
        vm.addContainer({ appId, spaceId, orgId }),
        vm.addContainer({ appId, spaceId, orgId, handle: "fixed-handle-1", ip: "198.19.1.77" }),
      ]);
      assert.notEqual(a.handle, b.handle);
      assert.equal(b.ip, "198.19.1.77");

      // runc state.json
      for (const c of [a, b]) {
        const state = JSON.parse(await Deno.readTextFile(`${vm.runcRoot}/${c.handle}/state.json`));
        assert.equal(state.id, c.handle);
        assert.equal(state.init_process_pid, c.pid);
        assert.equal(state.status, "running");
        assert.ok(alive(state.init_process_pid), "state.json pid is a live process");
        const hostNs = await nsInode("/proc/self/ns/net");
        const ctrNs = await nsInode(`/proc/${state.init_process_pid}/ns/net`);
        assert.notEqual(ctrNs, hostNs, "container pid is in another network namespace");
        assert.equal(ctrNs, await nsInode(`/run/netns/${c.netnsName}`));
      }
      assert.notEqual(await nsInode(a.netnsPath), await nsInode(b.netnsPath));

      // CNI container-metadata store
      const store = JSON.parse(await Deno.readTextFile(vm.storePath));
      assert.deepEqual(Object.keys(store).sort(), [a.handle, b.handle].sort());
      assert.deepEqual(store[b.handle], {
        handle: b.handle,
        ip: "198.19.1.77",
        metadata: { policy_group_id: appId, app_id: appId, space_id: spaceId, org_id: orgId },
      });

      // eth0 inside the container carries the ip, and the cell reaches it over the veth.
      const addr = await run("ip", ["-n", a.netnsName, "-o", "addr", "show", "dev", "eth0"]);
      assert.match(addr.stdout, new RegExp(`inet ${a.ip.replaceAll(".", "\\.")}/32`));
      // No ping here: a TCP connect to a closed port that is answered with "refused" proves that
      // the container's kernel got the SYN and its RST came back.
      const probe = await netns.exec(
        cellNs,
        ["curl", "-sS", "--connect-timeout", "3", `http://${a.ip}:9/`],
        { allowFailure: true },
      );
      assert.match(probe.stderr, /Connection refused|Couldn't connect/, probe.stderr);
      assert.doesNotMatch(probe.stderr, /timed out|No route/, probe.stderr);
      const unreachable = await netns.exec(
        cellNs,
        ["curl", "-sS", "--connect-timeout", "1", "http://198.19.1.250:9/"],
        { allowFailure: true },
      );
      assert.doesNotMatch(unreachable.stderr, /Connection refused/, "control: no such container");

      // Stale registration: the process dies, state.json stays.
      await vm.killProcess(a.handle);
      assert.ok(!alive(a.pid));
      assert.ok((await Deno.stat(`${vm.runcRoot}/${a.handle}/state.json`)).isFile);

      // Garden-style destroy removes every trace.
      await vm.removeContainer(b.handle);
      assert.ok(!alive(b.pid));
      await assert.rejects(() => Deno.stat(`${vm.runcRoot}/${b.handle}`));
      await assert.rejects(() => Deno.stat(`/run/netns/${b.netnsName}`));
      assert.deepEqual(Object.keys(await vm.readStore()), [a.handle]);

      await vm.cleanup();
      assert.deepEqual(await vm.readStore(), {});
      await assert.rejects(() => Deno.stat(`/run/netns/${a.netnsName}`));

      // A cell without a VM namespace (host side) also works, and its host veth goes away.
      const h = await cell.addContainer({ appId, spaceId, orgId, ip: "198.19.0.200" });
      const link = await run("ip", ["-o", "link", "show", h.hostIfname]);
      assert.ok(link.stdout.includes(h.hostIfname));
      await cell.cleanup();
      const gone = await run("ip", ["-o", "link", "show", h.hostIfname], { allowFailure: true });
      assert.notEqual(gone.code, 0, "host veth removed with the container");
    } finally {
      await cell.cleanup().catch(() => {});
      await netns.cleanup();
      await Deno.remove(root, { recursive: true });
    }
    const left = await run("ip", ["netns", "list"]);
    assert.ok(!left.stdout.includes(netns.runId), "no namespaces left behind");
  },
});

Deno.test({
  name: "containers: a failed creation leaves nothing behind",
  ignore,
  fn: async () => {
    const netns = new Netns(newRunId());
    const root = await Deno.makeTempDir({ prefix: "pcap-cell-" });
    try {
      // cellNs that does not exist: the veth cannot be created.
      const cell = new DiegoCell({ netns, cellShort: "x", root, cellNs: `${netns.runId}nope` });
      await assert.rejects(
        () => cell.addContainer({ appId: "a", spaceId: "s", orgId: "o" }),
        /cannot create container/,
      );
      assert.deepEqual(cell.list(), []);
      const left = await run("ip", ["netns", "list"]);
      assert.ok(!left.stdout.includes(`${netns.runId}xc0`), left.stdout);
      assert.throws(() => new DiegoCell({ netns, cellShort: "BAD!", root, cellNs: null }));
    } finally {
      await netns.cleanup();
      await Deno.remove(root, { recursive: true });
    }
  },
});
