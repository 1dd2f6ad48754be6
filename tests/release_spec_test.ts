/**
 * Job specs: they parse, every property has a description and a typed default where it has
 * one, TLS material has none, every property a template reads is declared, and every declared
 * property is read by some template.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { type Job, propertiesUsed, readSpec, ROOT } from "./support/release_render.ts";

const JOBS: Job[] = ["pcap-agent", "pcap-api"];

function templatesOf(job: Job): Map<string, string> {
  const spec = readSpec(job);
  return new Map(
    Object.keys(spec.templates).map((
      t,
    ) => [t, Deno.readTextFileSync(`${ROOT}/release/jobs/${job}/templates/${t}`)]),
  );
}

for (const job of JOBS) {
  Deno.test(`${job} spec: parses, every property described, typed defaults`, () => {
    const spec = readSpec(job);
    assertEquals(spec.name, job);
    assertEquals(spec.packages, ["pcap"]);
    for (const [name, p] of Object.entries(spec.properties)) {
      assert(name.startsWith(`${job}.`), `${name} is outside the ${job} namespace`);
      assert((p.description ?? "").trim().length > 10, `${name} has no description`);
      if (/\.(certificate|private_key|client_cas|ca)$/.test(name)) {
        assertEquals(p.default, undefined, `${name} is TLS material and must have no default`);
      }
      if (
        /(port|size|limit|timeout|timeout_ms|captures|targets|bytes|duration|open_files)$/.test(
          name,
        ) &&
        !name.endsWith("memory_limit") && p.default !== undefined
      ) {
        assertEquals(typeof p.default, "number", `${name} default must be a number`);
      }
      if (/\.(enabled|skip_verify|require_ssh_enabled)$/.test(name) && p.default !== undefined) {
        assertEquals(typeof p.default, "boolean", `${name} default must be a boolean`);
      }
    }
  });

  Deno.test(`${job} spec: templates read only declared properties, and all of them`, () => {
    const spec = readSpec(job);
    const declared = new Set(Object.keys(spec.properties));
    const used = new Set<string>();
    for (const [t, text] of templatesOf(job)) {
      for (const name of propertiesUsed(text)) {
        assert(declared.has(name), `${t} reads ${name}, which the spec does not declare`);
        used.add(name);
      }
    }
    const unused = [...declared].filter((n) => !used.has(n));
    assertEquals(unused, [], "declared but read by no template");
  });

  Deno.test(`${job}: every template file is listed in the spec, and exists`, () => {
    const spec = readSpec(job);
    const files = [...Deno.readDirSync(`${ROOT}/release/jobs/${job}/templates`)].map((e) => e.name)
      .sort();
    assertEquals(files, Object.keys(spec.templates).sort());
    assert(Deno.statSync(`${ROOT}/release/jobs/${job}/monit`).isFile);
    const monit = Deno.readTextFileSync(`${ROOT}/release/jobs/${job}/monit`);
    assert(monit.includes(`/var/vcap/sys/run/bpm/${job}/${job}.pid`), "monit watches bpm's pid");
    assert(monit.includes(`bpm start ${job}`) && monit.includes(`bpm stop ${job}`));
  });
}

Deno.test("propertiesUsed finds p(), p(default), p([names]) and if_p names", () => {
  assertEquals(
    propertiesUsed(`<%= p("a.b") %> p("c.d", nil) p(["e.f", "g.h"], 1) if_p("i.j", "k.l") { }`),
    ["a.b", "c.d", "e.f", "g.h", "i.j", "k.l"],
  );
});
