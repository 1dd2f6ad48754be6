// glibc's thresholds as every mode sets them (ffi/malloc_tuning.ts), checked on glibc itself: a
// chunk glibc mapped on its own carries IS_MMAPPED (0x2) in the size word in front of it.
import { assertEquals } from "./support/assert.ts";

const MODULE = new URL("../ffi/malloc_tuning.ts", import.meta.url).href;

const PROBE = `
import { mallocTuningSummary, tuneMalloc } from ${JSON.stringify(MODULE)};
if (Deno.args[0] === "tune-only") {
  console.log(JSON.stringify({ result: tuneMalloc(), summary: mallocTuningSummary() }));
  Deno.exit(0);
}
const lib = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["usize"], result: "pointer" },
  free: { parameters: ["pointer"], result: "void" },
});
function mapped(bytes) {
  const p = lib.symbols.malloc(BigInt(bytes));
  const size = new Deno.UnsafePointerView(Deno.UnsafePointer.offset(p, -8)).getBigUint64();
  lib.symbols.free(p);
  return (size & 2n) !== 0n;
}
const before = mapped(1 << 20);
const result = tuneMalloc();
console.log(JSON.stringify({
  before, result, summary: mallocTuningSummary(), after1m: mapped(1 << 20), after8m: mapped(8 << 20),
}));
`;

async function runProbe(
  args: string[],
  env: Record<string, string> = {},
  probeArgs: string[] = [],
) {
  const dir = await Deno.makeTempDir({ prefix: "pcap-malloc-test-" });
  try {
    const file = `${dir}/probe.mjs`;
    await Deno.writeTextFile(file, PROBE);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...args, file, ...probeArgs],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tuneMalloc serves a 1 MiB buffer from the heap, which glibc's default would map", async () => {
  // glibc's default threshold, fixed (not raised by earlier frees) so that "before" is known.
  const r = await runProbe(["-A"], { GLIBC_TUNABLES: "glibc.malloc.mmap_threshold=131072" });
  assertEquals(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assertEquals(got.before, true, "with the default threshold 1 MiB is mapped on its own");
  assertEquals(got.result.applied, true, JSON.stringify(got.result));
  assertEquals(got.after1m, false, "after tuning, 1 MiB comes from the heap");
  assertEquals(got.after8m, true, "above the 4 MiB threshold, a buffer still gets its own mapping");
  assertEquals(got.summary, "mmap threshold 4 MiB, trim threshold 32 MiB");
});

Deno.test("without FFI permission tuneMalloc changes nothing, says why, and does not prompt", async () => {
  const r = await runProbe(["--allow-read"], {}, ["tune-only"]);
  assertEquals(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assertEquals(got.result, { applied: false, reason: "no FFI permission" });
  assertEquals(got.summary, "glibc defaults (no FFI permission)");
});
