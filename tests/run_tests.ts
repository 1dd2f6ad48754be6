/**
 * Runs the whole suite with `deno test` and ends with the pytest-style line
 * "N passed, N failed[, N skipped]" that CI reads. Extra arguments go to `deno test`
 * (e.g. a file or `--filter`).
 */
const args = Deno.args.length ? Deno.args : ["tests/"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", "--no-prompt", ...args],
  stdout: "piped",
  stderr: "inherit",
  env: { NO_COLOR: "1" },
}).spawn();

let tail = "";
const decoder = new TextDecoder();
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
}
const { code } = await child.status;

// deno test ends with e.g. "ok | 12 passed (3 steps) | 0 failed | 1 ignored (4s)".
const summary = tail.split("\n").reverse().find((l) => /\d+ passed.*\d+ failed/.test(l));
const num = (re: RegExp) => Number(summary?.match(re)?.[1] ?? 0);
const passed = num(/(\d+) passed/);
let failed = num(/(\d+) failed/);
const skipped = num(/(\d+) ignored/);
if (!summary || (code !== 0 && failed === 0)) {
  console.error(`deno test exited with code ${code} before reporting results`);
  failed = Math.max(failed, 1);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
Deno.exit(code === 0 && failed === 0 ? 0 : 1);
