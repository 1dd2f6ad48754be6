/**
 * `pcap bosh capture` without a lab: frame decoding, source names, record measuring and the
 * start request (pure), then the client as a process refusing bad flags, an existing output
 * file and a bad filter before it contacts the api.
 */
import { decodeApiMessage, webSocketUrl } from "../cli/api_session.ts";
import { sourceName } from "../cli/bosh_capture.ts";
import { ReorderWindow } from "../cli/reorder_window.ts";
import { indexedBytes } from "../cli/capture_writer.ts";
import { startRequest } from "../cli/bosh_main.ts";
import { parseBoshCaptureArgs } from "../cli/bosh_flags.ts";
import {
  DecodeError,
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { assertEquals, assertMatch, assertThrows } from "./support/assert.ts";
import { exitCode, fakeApi, startClient } from "./support/bosh_client.ts";

Deno.test("decodeApiMessage validates every frame kind", () => {
  const desc = { origin: "router/0 (x)", interface: "eth0", link_type: 1, snaplen: 100 };
  assertEquals(decodeApiMessage(encodeJsonFrame(FrameKind.SOURCE, 3, desc)), {
    kind: "source",
    source: 3,
    descriptor: desc,
  });
  const recs = encodeRecords([{ tsNs: 5n, data: new Uint8Array([1, 2, 3]) }]);
  const p = decodeApiMessage(encodePacketsFrame(1, 1, recs));
  assertEquals(p.kind === "packets" ? [p.count, p.records.length] : [], [1, 19]);
  assertEquals(decodeApiMessage(encodeFrame(FrameKind.END, 0xffff, new Uint8Array())).kind, "end");
  assertThrows(() => decodeApiMessage("text"), DecodeError, "binary");
  assertThrows(
    () => decodeApiMessage(encodeJsonFrame(FrameKind.STATUS, 0, { type: "NOPE", text: "" })),
    DecodeError,
    "invalid STATUS",
  );
  assertThrows(() => decodeApiMessage(encodePacketsFrame(0, 2, recs)), DecodeError, "truncated");
});

Deno.test("source names, record measuring, start request", () => {
  const d = { origin: "o", interface: "eth0", link_type: 1, snaplen: 9 };
  assertEquals(
    sourceName({ ...d, instance: { group: "diego-cell", index: 2, id: "abc" } }),
    "diego-cell/2 (abc) eth0",
  );
  assertEquals(sourceName(d), "o eth0");
  const recs = encodeRecords([1, 2, 3].map((n) => ({ tsNs: 1n, data: new Uint8Array(n) })));
  // --max-packets takes a prefix of a batch: its packet count and captured bytes
  const taken: number[] = [];
  const w = new ReorderWindow((_s, b, from, to) => taken.push(indexedBytes(b, from, to).length), {
    windowMs: 0,
  });
  assertEquals(w.pushRecords(0, recs, 0, 2), { packets: 2, bytes: 3 });
  assertEquals(w.pushRecords(1, recs, 0, 9), { packets: 3, bytes: 6 });
  w.flush();
  assertEquals(taken.reduce((a, b) => a + b, 0), 16 * 2 + 3 + recs.length);
  const o = parseBoshCaptureArgs(
    ["-d", "cf", "-g", "router", "router/1", "-o", "x", "--max-packets", "5", "-u", "a.b"],
    { HOME: "/h" },
  );
  assertEquals(startRequest(o), {
    type: "start",
    protocol_version: 1,
    bosh: { deployment: "cf", groups: ["router"], instances: ["router/1"] },
    interface: "eth0",
    snaplen: 65535,
    filter: "",
    limits: { max_packets: 5 },
  });
  assertEquals(webSocketUrl("https://a.b:8443", "/v1/x"), "wss://a.b:8443/v1/x");
});

Deno.test("flag errors exit 2 with a hint to --help", async () => {
  for (
    const args of [
      ["-g", "router", "-o", "x", "-u", "a"], // no -d
      ["-d", "cf", "-g", "router", "-o", "x", "-u", "a", "--snaplen", "0"],
      ["-d", "cf", "-g", "router", "-o", "x", "-u", "a", "--bogus"],
      ["-d", "cf", "-o", "x", "-u", "a"], // nothing selected
    ]
  ) {
    const c = startClient(args, { HOME: "/nonexistent" });
    assertEquals(await exitCode(c), 2, `exit code for ${args.join(" ")}: ${c.stderr()}`);
    assertMatch(c.stderr(), /--help/);
  }
  const help = startClient(["--help"], {});
  assertEquals(await exitCode(help), 0);
});

Deno.test("refused before contacting the api: existing file, bad filter", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap-bosh-test-" });
  const api = fakeApi();
  try {
    const existing = `${dir}/old.pcapng`;
    await Deno.writeTextFile(existing, "keep me");
    const base = ["-d", "cf", "-g", "router", "-u", api.url, "-c", `${dir}/no-config`];
    const a = startClient([...base, "-o", existing], { HOME: dir });
    assertEquals(await exitCode(a), 1, a.stderr());
    assertMatch(a.stderr(), /already exists.*-F/);
    assertEquals(await Deno.readTextFile(existing), "keep me");

    const b = startClient([...base, "-o", `${dir}/new.pcapng`, "-f", "tcp port ("], { HOME: dir });
    assertEquals(await exitCode(b), 1, b.stderr());
    assertMatch(b.stderr(), /filter "tcp port \(" is not valid/);
    assertEquals(await Deno.stat(`${dir}/new.pcapng`).then(() => true, () => false), false);
    // The api's filter rules, applied before any compile (so no DNS lookup here either).
    const named = startClient([...base, "-o", `${dir}/n.pcapng`, "-f", "host db.example"], {
      HOME: dir,
    });
    assertEquals(await exitCode(named), 1, named.stderr());
    assertMatch(named.stderr(), /names "db\.example".*use an IP address/);
    const ports = Array.from({ length: 431 }, (_, i) => i ? `${i + 1}` : "port 1").join(" or ");
    const complex = startClient([...base, "-o", `${dir}/c.pcapng`, "-f", ports], { HOME: dir });
    assertEquals(await exitCode(complex), 1, complex.stderr());
    assertMatch(complex.stderr(), /too complex: it has 431 primitives/);
    assertEquals(api.connections, 0, "the api was contacted");
  } finally {
    await api.close();
    await Deno.remove(dir, { recursive: true });
  }
});
