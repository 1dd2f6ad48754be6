// Container captures through the api on the lab's CF option, beyond the main scenario of
// cf_capture_test.ts:
// - each Diego cell has its own container store and runc root (as on a real foundation);
// - `-i lo` inside a container sees the loopback traffic of that container only, not that of a
//   sibling container of the same app, nor the cell's own loopback;
// - the agent process stays in its VM's namespace while a container capture runs, checked from
//   outside through /proc/<agent pid>/ns/net, while one of its threads is in the container's;
// - a developer of another space is told the app is not found;
// - hostile requests are refused with clear texts: path-like guids in the start request, and a
//   Cloud Controller that names another app's container or a path-like instance guid.
import { isRoot } from "../lab/netns.ts";
import { markerTokens, randomMarker } from "../lab/traffic.ts";
import { connect, countTokens, statusesOf } from "./support/api_harness.ts";
import { ccApp, cfStart, refusal, sendMarks, withCfLab } from "./support/cf_lab.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const ELSEWHERE = { guid: crypto.randomUUID(), name: "ops", orgGuid: ORG.guid };
const U = { dev: crypto.randomUUID(), ops: crypto.randomUUID() };
const N = 20;

const nsId = (path: string) => `net:[${Deno.statSync(path).ino}]`;

/** The network namespace of every thread of `pid` (tid → "net:[ino]"). */
function threadNamespaces(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      out.set(t.name, Deno.readLinkSync(`/proc/${pid}/task/${t.name}/ns/net`));
    } catch { /* thread ended meanwhile */ }
  }
  return out;
}

Deno.test({
  name: "cf via the api: own store per cell; lo in one container; agent stays home; " +
    "other space and hostile requests refused",
  ignore: !isRoot(),
  fn: () =>
    withCfLab({
      orgs: [ORG],
      spaces: [SPACE, ELSEWHERE],
      roles: [
        { userId: U.dev, type: "space_developer", target: SPACE.guid },
        { userId: U.ops, type: "space_developer", target: ELSEWHERE.guid },
      ],
    }, async ({ lab, cells, cc, token, startApi, addContainer }) => {
      const netns = lab.topology.netns;
      const APP = crypto.randomUUID();
      const OTHER = crypto.randomUUID();
      const [v0, v1] = [cells[0].vm, cells[1].vm];
      const c0 = await addContainer(0, APP, SPACE);
      const c1 = await addContainer(1, APP, SPACE);
      const sibling = await addContainer(0, APP, SPACE);
      const theirs = await addContainer(0, OTHER, SPACE);
      const web = ccApp({ guid: APP, name: "web", spaceGuid: SPACE.guid }, [
        { container: c0, vm: v0 },
        { container: c1, vm: v1 },
        { container: sibling, vm: v0 },
      ]);
      cc.apps.push(
        web,
        ccApp({ guid: OTHER, name: "other", spaceGuid: SPACE.guid }, [
          { container: theirs, vm: v0 },
        ]),
      );

      // 1. Each cell registers its own containers only, in its own files.
      const [s0, s1] = await Promise.all(cells.map((c) => c.cell.readStore()));
      assertEquals(Object.keys(s0).sort(), [c0.handle, sibling.handle, theirs.handle].sort());
      assertEquals(Object.keys(s1), [c1.handle]);
      assert(cells[0].cell.storePath !== cells[1].cell.storePath, "one store per cell");
      assert(cells[0].cell.runcRoot !== cells[1].cell.runcRoot, "one runc root per cell");
      for (const { vm, cell } of cells) {
        const yml = await Deno.readTextFile(`${lab.dir}/${lab.agentLogName(vm)}.yml`);
        assertStringIncludes(yml, `container_store: ${cell.storePath}`);
        assertStringIncludes(yml, `runc_root: ${cell.runcRoot}`);
      }

      const api = await startApi();
      const devToken = await token(U.dev);

      // 2. lo inside instance 0: its own loopback traffic only.
      const ws = connect(lab, api.url, devToken, "/v1/capture/cf");
      try {
        cfStart(ws, { app_guid: APP, indexes: [0] }, "lo");
        await ws.waitFor("web/0 SOURCE", (r) => r.sources.length >= 1, 30_000);
        assertEquals(ws.got.sources.length, 1, JSON.stringify(ws.got.sources));
        const src = ws.got.sources[0];
        assertStringIncludes(String(src.origin), c0.handle);

        // 3. While it runs: the agent process is in its VM's namespace, from outside; one of its
        // threads (the capture's) is in the container's, so the check could fail.
        const pid = lab.agentPid(v0);
        assert(pid, "the agent of diego-cell/0 runs");
        const vmNs = nsId(`/run/netns/${v0.netns}`);
        const containerNs = nsId(`/run/netns/${c0.netnsName}`);
        assertEquals(Deno.readLinkSync(`/proc/${pid}/ns/net`), vmNs, "agent process stays home");
        const threads = threadNamespaces(pid);
        assertEquals(threads.get(String(pid)), vmNs, "the agent's main thread stays home");
        assert(
          [...threads.values()].includes(containerNs),
          `a capture thread is in the container's namespace ${containerNs}: ` +
            JSON.stringify([...threads]),
        );
        assertEquals(
          [...threads.values()].filter((n) => n !== vmNs && n !== containerNs),
          [],
          "no thread is in any other namespace",
        );

        const mine = markerTokens(randomMarker(), N);
        const sib = markerTokens(randomMarker(), N);
        const cellLo = markerTokens(randomMarker(), N);
        const eth0 = markerTokens(randomMarker(), N);
        await sendMarks(netns, c0.netnsName, "127.0.0.1", mine);
        await sendMarks(netns, sibling.netnsName, "127.0.0.1", sib);
        await sendMarks(netns, v0.netns, "127.0.0.1", cellLo);
        await sendMarks(netns, v0.netns, c0.ip, eth0);
        await ws.waitFor("the container's loopback marks", (r) => {
          const got = r.tokens.get(src.source) ?? [];
          return mine.every((t) => got.includes(t));
        }, 30_000);
        // The marks after ours went out later on other paths; a last own mark fences them.
        const fence = markerTokens(randomMarker(), 1);
        await sendMarks(netns, c0.netnsName, "127.0.0.1", fence);
        await ws.waitFor("the fence mark", (r) => {
          return (r.tokens.get(src.source) ?? []).includes(fence[0]);
        }, 30_000);
        assertEquals(Deno.readLinkSync(`/proc/${pid}/ns/net`), vmNs, "still home after traffic");
        ws.send({ type: "stop" });
        await ws.closed;
        const counts = countTokens(ws.got.tokens.get(src.source) ?? []);
        for (const t of mine) assertEquals(counts.get(t), 1, `${t} once on lo`);
        assertEquals(counts.size, N + 1, "only the container's own loopback marks");
        const all = [...ws.got.tokens.values()].flat();
        for (const [what, marks] of [["sibling", sib], ["cell lo", cellLo], ["eth0", eth0]]) {
          assertEquals(all.filter((t) => marks.includes(t)), [], `no marks of ${what}`);
        }
      } finally {
        ws.close();
      }
      assertEquals(
        Deno.readLinkSync(`/proc/${lab.agentPid(v0)}/ns/net`),
        nsId(
          `/run/netns/${v0.netns}`,
        ),
      );

      // 4. A developer of another space: the app is not visible, by guid or by name.
      const opsToken = await token(U.ops);
      for (const cf of [{ app_guid: APP }, { app: "web", space_guid: SPACE.guid }]) {
        const s = await refusal(lab, api.url, opsToken, cf);
        assertStringIncludes(String(s.text), "not found", JSON.stringify([cf, s]));
        assertStringIncludes(String(s.text), "or not visible to you", JSON.stringify([cf, s]));
      }
      // ...and the space is not theirs to name by org/space either
      const byName = await refusal(lab, api.url, opsToken, {
        app: "web",
        org: ORG.name,
        space: SPACE.name,
      });
      assertStringIncludes(String(byName.text), "not found", JSON.stringify(byName));

      // 5. Path-like guids in the start request never reach the CC or an agent.
      const ccBefore = cc.requestCount;
      const tricks: Array<[Record<string, unknown>, string]> = [
        [{ app_guid: "../../../proc/1/ns/net" }, "app_guid"],
        [{ app_guid: `${APP}/../${OTHER}` }, "app_guid"],
        [{ app: "web", space_guid: "../../etc" }, "space_guid"],
        [{ app_guid: APP, process: "../web" }, "process"],
      ];
      for (const [cf, field] of tricks) {
        const s = await refusal(lab, api.url, devToken, cf);
        assertEquals(s.type, "INVALID_REQUEST", JSON.stringify([cf, s]));
        assertStringIncludes(String(s.text), field, JSON.stringify(cf));
      }
      assertEquals(cc.requestCount, ccBefore, "refused before any Cloud Controller request");

      // 6. A Cloud Controller that names another app's container for this app (stale or
      // tampered data): the cell's agent refuses it; a path-like instance guid is refused by the
      // api before any agent is asked.
      const LIAR = crypto.randomUUID();
      const liar = ccApp({ guid: LIAR, name: "liar", spaceGuid: SPACE.guid }, [
        { container: theirs, vm: v0 },
        { container: { ...c1, handle: "../../../proc/1/ns/net" }, vm: v1 },
      ]);
      cc.apps.push(liar);
      const h = connect(lab, api.url, devToken, "/v1/capture/cf");
      try {
        cfStart(h, { app_guid: LIAR });
        await h.closed;
        const text = JSON.stringify(h.got.statuses);
        assertEquals(h.got.packets, 0, text);
        assertStringIncludes(text, `does not belong to app ${LIAR}`);
        const unavailable = statusesOf(h.got, "INSTANCE_UNAVAILABLE");
        const of = (origin: string) => unavailable.find((u) => String(u.origin).startsWith(origin));
        assertEquals(unavailable.length, 2, text);
        assertStringIncludes(String(of("liar/1")?.text), "malformed instance guid");
        assertStringIncludes(String(of("liar/0")?.text), "refusing to capture another app's");
        assertEquals(statusesOf(h.got, "START_CAPTURE_FAILED").length, 1, text);
        assertEquals(h.got.sources, [], "no source was opened");
        const theirTokens = [...h.got.tokens.values()].flat();
        assertEquals(theirTokens, [], "nothing captured from the other app's container");
      } finally {
        h.close();
      }
    }),
});
