// V8 flags of every pcap process. build.sh embeds them in the executable (`deno compile
// --v8-flags`: a compiled binary ignores DENO_V8_FLAGS), and the lab and the benches pass them to
// `deno run`, so what runs from source is what ships. `deno run lib/v8_flags.ts` prints them as
// --v8-flags takes them.
//
// --no-memory-reducer: the reducer runs GCs some seconds after activity, in every agent at once
// after a fan-out, and those GCs landed on the next capture's start: 50 agents took 1.1–2.1 s to
// stream instead of 0.8–0.9 s (docs/benchmarks.md, "Fan-out"). V8 still collects on allocation;
// what is lost is only the shrinking of an idle heap, measured there over a long idle.
export const PCAP_V8_FLAGS: readonly string[] = ["--no-memory-reducer"];

/** The `deno run` / `deno compile` option that sets `flags` (none for an empty list). */
export function v8FlagsArgs(flags: readonly string[] = PCAP_V8_FLAGS): string[] {
  return flags.length ? [`--v8-flags=${flags.join(",")}`] : [];
}

if (import.meta.main) console.log(PCAP_V8_FLAGS.join(","));
