import { isRoot, Netns, newRunId, removeLeftovers, run, runIsLive } from "../lab/netns.ts";

// Small local assertions (JSR @std is unreachable).
function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}
function assertEquals<T>(a: T, b: T): void {
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`${JSON.stringify(a)} !== ${JSON.stringify(b)}`);
  }
}
function assertMatch(s: string, re: RegExp): void {
  if (!re.test(s)) throw new Error(`${JSON.stringify(s)} does not match ${re}`);
}
async function assertRejects(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

const root = isRoot();

async function namespaces(): Promise<string[]> {
  const r = await run("ip", ["netns", "list"]);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
}

async function hostLinkExists(name: string): Promise<boolean> {
  const r = await run("ip", ["link", "show", name], { allowFailure: true });
  return r.code === 0;
}

function pidAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie counts as gone
  } catch {
    return false;
  }
}

Deno.test("newRunId has the lab prefix shape", () => {
  const ids = new Set(Array.from({ length: 50 }, newRunId));
  for (const id of ids) assertMatch(id, /^pc[0-9a-z]{4}$/);
  assert(ids.size > 40, "run ids should be random");
});

Deno.test("run throws naming the command and its stderr", async () => {
  const err = await assertRejects(() => run("ip", ["link", "show", "pcnoexist0"]));
  assertMatch(err.message, /ip link show pcnoexist0/);
  assertMatch(err.message, /does not exist/);
});

Deno.test({
  name: "Netns builds namespaces, veths, processes and cleanup removes all of it",
  ignore: !root,
  async fn() {
    const lab = new Netns(newRunId());
    let pid = 0;
    try {
      const a = await lab.addNamespace("a");
      const b = await lab.addNamespace("b");
      assertEquals(a, lab.runId + "a");
      await lab.addVethPair(`${lab.runId}h`, null, `${lab.runId}x`, a);
      await lab.addVethPair(`${lab.runId}y`, a, `${lab.runId}z`, b);
      await lab.addAddress(a, `${lab.runId}y`, "198.18.7.1/24");
      await lab.addAddress(b, `${lab.runId}z`, "198.18.7.2/24");
      await lab.setUp(a, `${lab.runId}y`);
      await lab.setUp(b, `${lab.runId}z`);
      // Connectivity a -> b: a UDP listener in b receives a datagram sent from a.
      const recv = lab.exec(b, [
        "timeout",
        "10",
        "python3",
        "-c",
        "import socket;s=socket.socket(2,2);s.bind(('198.18.7.2',9999));print(s.recv(64).decode())",
      ]);
      let got = "";
      recv.then((r) => got = r.stdout);
      for (let i = 0; i < 100 && !got; i++) {
        await lab.exec(a, ["bash", "-c", "echo hello-b >/dev/udp/198.18.7.2/9999"]);
        await new Promise((r) => setTimeout(r, 100));
      }
      assertMatch((await recv).stdout, /hello-b/);
      const child = lab.spawn(b, ["sleep", "60"]);
      pid = child.pid;
      assert(pidAlive(pid));
      const ns = await namespaces();
      assert(ns.includes(a) && ns.includes(b));
      assert(await hostLinkExists(`${lab.runId}h`));
    } finally {
      await lab.cleanup();
    }
    const ns = await namespaces();
    assert(!ns.some((n) => n.startsWith(lab.runId)), `left: ${ns}`);
    assert(!(await hostLinkExists(`${lab.runId}h`)));
    assert(!pidAlive(pid), "tracked process must be killed");
    await lab.cleanup(); // idempotent
  },
});

Deno.test({
  name: "cleanup after a throwing test body still removes everything",
  ignore: !root,
  async fn() {
    const lab = new Netns(newRunId());
    await assertRejects(async () => {
      try {
        await lab.addNamespace("a");
        await lab.addVethPair(`${lab.runId}h`, null, `${lab.runId}x`, lab.runId + "a");
        await lab.addAddress(null, `${lab.runId}h`, "not-a-cidr");
      } finally {
        await lab.cleanup();
      }
    });
    assert(!(await namespaces()).some((n) => n.startsWith(lab.runId)));
    assert(!(await hostLinkExists(`${lab.runId}h`)));
  },
});

Deno.test({
  name: "removeLeftovers removes only our prefix",
  ignore: !root,
  async fn() {
    const id = newRunId();
    const foreign = `zz${id.slice(2)}keep`;
    await run("ip", ["netns", "add", id + "old"]);
    await run("ip", ["netns", "add", foreign]);
    await run("ip", ["link", "add", id + "l", "type", "veth", "peer", "name", id + "m"]);
    // A process left behind inside the namespace is killed too.
    const orphan = new Deno.Command("ip", {
      args: ["netns", "exec", id + "old", "sleep", "60"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const removed = await removeLeftovers();
      assert(removed.includes(id + "old"), `removed: ${removed}`);
      assert(removed.includes(id + "l") || removed.includes(id + "m"));
      const ns = await namespaces();
      assert(!ns.includes(id + "old"));
      assert(ns.includes(foreign), "foreign namespace must stay");
      assert(!(await hostLinkExists(id + "l")));
      await orphan.status;
    } finally {
      await run("ip", ["netns", "del", foreign], { allowFailure: true });
      await run("ip", ["netns", "del", id + "old"], { allowFailure: true });
      await run("ip", ["link", "del", id + "l"], { allowFailure: true });
      try {
        orphan.kill("SIGKILL");
      } catch { /* already gone */ }
      await orphan.status;
    }
  },
});

Deno.test("Netns rejects run ids outside the prefix and long interface names", async () => {
  let threw = false;
  try {
    new Netns("eth0");
  } catch {
    threw = true;
  }
  assert(threw);
  const lab = new Netns(newRunId());
  await assertRejects(() => lab.addVethPair("a-very-long-ifname", null, "b", null));
  await lab.cleanup();
});

Deno.test({
  name: "removeLeftovers spares the namespaces of a run whose owner is alive",
  ignore: !root,
  async fn() {
    const lab = new Netns(newRunId());
    try {
      const ns = await lab.addNamespace("live");
      const removed = await removeLeftovers();
      assert(!removed.includes(ns), `live run's namespace was removed: ${removed}`);
      assert((await namespaces()).includes(ns));
    } finally {
      await lab.cleanup();
    }
    assert(!runIsLive(lab.runId), "cleanup unregisters the run");
  },
});

/** Starts a process that builds a lab with a bare Netns and reports its names on stdout. */
function spawnLabChild(runId: string): Deno.ChildProcess {
  const netnsUrl = new URL("../lab/netns.ts", import.meta.url).href;
  const code = `import { Netns } from ${JSON.stringify(netnsUrl)};
const lab = new Netns(${JSON.stringify(runId)});
const ns = await lab.addNamespace("s");
await lab.addVethPair("${runId}h", null, "${runId}n", ns);
const sleeper = lab.spawn(ns, ["sleep", "60"]);
console.log(JSON.stringify({ ns, pid: sleeper.pid, guarded: lab.signalGuarded }));
await new Promise(() => {}); // wait for the signal`;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function firstLine(stream: ReadableStream<Uint8Array>, ms: number): Promise<string> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no line from the lab child in ${ms} ms`)), ms);
  });
  try {
    while (!text.includes("\n")) {
      const { done, value } = await Promise.race([reader.read(), expired]);
      if (done) break;
      text += value;
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
  return text.split("\n")[0];
}

Deno.test({
  name: "SIGINT/SIGTERM to a process holding a bare Netns removes its lab, exit 130/143",
  ignore: !root,
  async fn() {
    for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
      const runId = newRunId();
      const child = spawnLabChild(runId);
      const stderr = new Response(child.stderr).text();
      let status: Deno.CommandStatus | null = null;
      try {
        const line = await firstLine(child.stdout, 20_000).catch(async (e) => {
          child.kill("SIGKILL");
          throw new Error(`${e.message}: ${await stderr}`);
        });
        const info = JSON.parse(line) as { ns: string; pid: number; guarded: boolean };
        assert(info.guarded, "a Netns holding resources is guarded");
        assert((await namespaces()).includes(info.ns), "namespace exists before the signal");
        assert(await hostLinkExists(`${runId}h`), "host link exists before the signal");
        assert(pidAlive(info.pid), "tracked process runs before the signal");
        child.kill(signal);
        status = await child.status;
        assertEquals([signal, status.code], [signal, code]);
        assert(!(await namespaces()).includes(info.ns), `${signal}: namespace ${info.ns} left`);
        assert(!(await hostLinkExists(`${runId}h`)), `${signal}: host link left`);
        assert(!pidAlive(info.pid), `${signal}: tracked process ${info.pid} left`);
        assert(!runIsLive(runId), `${signal}: run still registered as live`);
        assertMatch(await stderr, new RegExp(`lab: ${signal}: removing 1 lab run`));
      } finally {
        if (!status) {
          try {
            child.kill("SIGKILL");
          } catch {
            // already gone
          }
          await child.status;
        }
        await stderr.catch(() => "");
        // Whatever a failed child left: only this run's names.
        await run("ip", ["netns", "del", `${runId}s`], { allowFailure: true });
        await run("ip", ["link", "del", `${runId}h`], { allowFailure: true });
      }
    }
  },
});

Deno.test("a Netns holds no signal listeners before it has resources and after cleanup", async () => {
  const lab = new Netns(newRunId());
  assert(!lab.signalGuarded, "no resources yet");
  await lab.cleanup();
  assert(!lab.signalGuarded, "cleaned up");
  const child = lab.spawn(null, ["sleep", "30"]);
  assert(lab.signalGuarded, "a tracked process is a resource");
  lab.releaseSignalGuard();
  assert(!lab.signalGuarded, "released to an owner");
  await Promise.all([lab.cleanup(), lab.cleanup()]); // concurrent calls share one removal
  assert(!pidAlive(child.pid));
});
