// The rotation policy (pure): when a file is switched, what the files are called, what a ring drops.
import { assertEquals } from "./support/assert.ts";
import {
  ringExpired,
  rotationDecision,
  rotationFileName,
  rotationProblem,
  splitOutputName,
} from "../cli/rotation_policy.ts";

Deno.test("rotationDecision: by size once the file holds the size, never an empty file", () => {
  const p = { sizeBytes: 1000 };
  assertEquals(rotationDecision(p, { bytes: 999, packets: 3, sinceMs: 0 }, 10), "keep");
  assertEquals(rotationDecision(p, { bytes: 1000, packets: 3, sinceMs: 0 }, 10), "rotate");
  assertEquals(rotationDecision(p, { bytes: 5000, packets: 3, sinceMs: 0 }, 10), "rotate");
  // headers alone past the size (many sources, a small size): no file without packets
  assertEquals(rotationDecision(p, { bytes: 5000, packets: 0, sinceMs: 0 }, 10), "keep");
});

Deno.test("rotationDecision: by time; an interval without packets restarts the clock", () => {
  const p = { everyMs: 60_000 };
  assertEquals(rotationDecision(p, { bytes: 10, packets: 1, sinceMs: 1000 }, 60_999), "keep");
  assertEquals(rotationDecision(p, { bytes: 10, packets: 1, sinceMs: 1000 }, 61_000), "rotate");
  assertEquals(
    rotationDecision(p, { bytes: 10, packets: 0, sinceMs: 1000 }, 61_000),
    "restart-clock",
  );
  assertEquals(rotationDecision(p, { bytes: 10, packets: 0, sinceMs: 1000 }, 2000), "keep");
  // size and time together: whichever comes first
  const both = { everyMs: 60_000, sizeBytes: 100 };
  assertEquals(rotationDecision(both, { bytes: 100, packets: 1, sinceMs: 0 }, 1), "rotate");
  assertEquals(rotationDecision(both, { bytes: 99, packets: 1, sinceMs: 0 }, 60_000), "rotate");
  assertEquals(rotationDecision(both, { bytes: 99, packets: 1, sinceMs: 0 }, 59_999), "keep");
});

Deno.test("splitOutputName: the extension of the file name, else the format's", () => {
  assertEquals(splitOutputName("cells.pcapng", "pcapng"), { stem: "cells", ext: ".pcapng" });
  assertEquals(splitOutputName("/tmp/a.b/cells.cap", "pcap"), {
    stem: "/tmp/a.b/cells",
    ext: ".cap",
  });
  assertEquals(splitOutputName("/tmp/a.b/cells", "pcap"), { stem: "/tmp/a.b/cells", ext: ".pcap" });
  assertEquals(splitOutputName(".hidden", "pcapng"), { stem: ".hidden", ext: ".pcapng" });
  assertEquals(splitOutputName("trailing.", "pcapng"), { stem: "trailing.", ext: ".pcapng" });
});

Deno.test("rotationFileName: dumpcap's STEM_NNNNN_YYYYmmddHHMMSS.EXT in local time", () => {
  const at = new Date(2026, 0, 2, 3, 4, 5); // local time
  const name = { stem: "/tmp/cells", ext: ".pcapng" };
  assertEquals(rotationFileName(name, 1, at), "/tmp/cells_00001_20260102030405.pcapng");
  assertEquals(rotationFileName(name, 123456, at), "/tmp/cells_123456_20260102030405.pcapng");
});

Deno.test("ringExpired: all but the newest N complete files; nothing without a ring", () => {
  assertEquals(ringExpired(["a", "b", "c"], 3), []);
  assertEquals(ringExpired(["a", "b", "c", "d"], 3), ["a"]);
  assertEquals(ringExpired(["a", "b", "c", "d", "e"], 2), ["a", "b", "c"]);
  assertEquals(ringExpired(["a", "b", "c", "d"], undefined), []);
});

Deno.test("rotationProblem: stdout, --keep alone and too small values are refused", () => {
  assertEquals(rotationProblem({}, "-"), undefined);
  assertEquals(rotationProblem({ sizeBytes: 1e6, keep: 3 }, "x.pcapng"), undefined);
  const stdout = rotationProblem({ everyMs: 60_000 }, "-")!;
  assertEquals(stdout.includes("cannot rotate standard output (-o -)"), true, stdout);
  assertEquals(rotationProblem({ keep: 3 }, "x")!.includes("--keep needs --rotate-size"), true);
  assertEquals(rotationProblem({ sizeBytes: 999 }, "x")!.includes("at least 1000 bytes"), true);
  assertEquals(rotationProblem({ everyMs: 999 }, "x")!.includes("at least 1 s"), true);
});
