/**
 * The rendering harness (tests/release/render.rb) keeps BOSH's semantics: spec defaults and
 * manifest overrides, p(name, default), p([names]), if_p/else, spec.*, no links, undeclared
 * properties invisible (p raises), executables under bin/.
 */
import { assertEquals, assertStringIncludes } from "./support/assert.ts";
import { ROOT } from "./support/release_render.ts";

const dec = new TextDecoder();

async function render(properties: unknown, spec: unknown = {}) {
  const dir = await Deno.makeTempDir({ prefix: "harness-" });
  await Deno.writeTextFile(`${dir}/ctx.json`, JSON.stringify({ properties, spec }));
  const out = await new Deno.Command("ruby", {
    args: [
      `${ROOT}/tests/release/render.rb`,
      `${ROOT}/tests/release/fixture-job`,
      `${dir}/ctx.json`,
      `${dir}/out`,
    ],
    stderr: "piped",
  }).output();
  const read = (f: string) => Deno.readTextFileSync(`${dir}/out/${f}`);
  return { code: out.code, stderr: dec.decode(out.stderr), read, dir };
}

Deno.test("harness: defaults, fallbacks, if_p else, no links, spec fields", async () => {
  const r = await render({ not: { declared: "hidden" } });
  try {
    assertEquals(r.code, 1, "the undeclared template must fail");
    assertEquals(
      r.read("config/all.txt"),
      "default=5\nfallback=fb\nlist=x\nfirst_set=second-default\nif_p=else\nlink=none\n" +
        "spec=pcap|00000000-0000-0000-0000-000000000000|0|10.0.0.10|10.0.0.10|pcap|true\n",
    );
    // Declared in the manifest but not in the spec: invisible, as in BOSH.
    assertStringIncludes(r.stderr, "undeclared.erb: Can't find property 'not.declared'");
    assertEquals(Deno.statSync(`${r.dir}/out/bin/script`).mode! & 0o777, 0o755);
    assertEquals(Deno.statSync(`${r.dir}/out/config/all.txt`).mode! & 0o777, 0o644);
  } finally {
    await Deno.remove(r.dir, { recursive: true });
  }
});

Deno.test("harness: manifest values override defaults, nested names, instance spec", async () => {
  const r = await render(
    { a: { default: 7, nodefault: "set", nested: { list: ["p", "q"] } }, b: { first: "one" } },
    {
      name: "router",
      id: "abc",
      index: 2,
      address: "r.bosh",
      ip: "10.1.1.1",
      deployment: "cf",
      bootstrap: false,
    },
  );
  try {
    assertEquals(
      r.read("config/all.txt"),
      "default=7\nfallback=set\nlist=p,q\nfirst_set=one\nif_p=set\nlink=none\n" +
        "spec=router|abc|2|r.bosh|10.1.1.1|cf|false\n",
    );
  } finally {
    await Deno.remove(r.dir, { recursive: true });
  }
});
