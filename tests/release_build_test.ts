/**
 * `make release` (scripts/make_release.sh) and the pcap package's packaging script. Without a
 * denort the release stops with a clear message and writes nothing; with DENORT_BIN set (a real
 * denort) it builds the release directory. No binary is ever faked.
 */
import { parse } from "yaml";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { pcapWrapper, ROOT } from "./support/release_render.ts";

const dec = new TextDecoder();
const denort = Deno.env.get("DENORT_BIN");

async function makeRelease(env: Record<string, string>) {
  const home = await Deno.makeTempDir();
  const out = `${home}/release-out`;
  try {
    const r = await new Deno.Command("sh", {
      args: [`${ROOT}/scripts/make_release.sh`],
      cwd: ROOT,
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: home, RELEASE_OUT: out, ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    let written = false;
    try {
      written = Deno.statSync(out).isDirectory;
    } catch { /* not written */ }
    const blobs = written ? Deno.readTextFileSync(`${out}/config/blobs.yml`) : "";
    return {
      code: r.code,
      stderr: dec.decode(r.stderr),
      stdout: dec.decode(r.stdout),
      written,
      blobs,
    };
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test("make release without a denort names DENORT_BIN and writes no release", async () => {
  const r = await makeRelease({ DENO_DIR: "/nonexistent-deno-dir" });
  assertEquals(r.code, 1);
  assertStringIncludes(r.stderr, "Set DENORT_BIN to a local denort binary");
  assertStringIncludes(r.stderr, "release: no release directory written");
  assertEquals(r.written, false);
});

Deno.test("make release with a DENORT_BIN that is not executable says which path", async () => {
  const r = await makeRelease({ DENORT_BIN: "/nonexistent/denort" });
  assertEquals(r.code, 1);
  assertStringIncludes(r.stderr, "DENORT_BIN=/nonexistent/denort is not an executable file");
  assertEquals(r.written, false);
});

Deno.test({
  name: "make release with DENORT_BIN writes a release directory with the blob" +
    (denort ? "" : " (ignored: no DENORT_BIN)"),
  ignore: !denort,
  async fn() {
    const r = await makeRelease({ DENORT_BIN: denort! });
    assertEquals(r.code, 0, r.stderr);
    const blobs = parse(r.blobs) as Record<string, { size: number; sha: string }>;
    assert(blobs["pcap/pcap-linux-amd64"].size > 1_000_000);
    assert(blobs["pcap/pcap-linux-amd64"].sha.startsWith("sha256:"));
  },
});

Deno.test("packages/pcap installs the executable as bin/pcap with pcap-bosh and pcap-cf", async () => {
  const dir = await Deno.makeTempDir({ prefix: "packaging-" });
  try {
    // The blob as BOSH unpacks it; here this checkout's launcher stands in for the compiled one.
    await Deno.mkdir(`${dir}/src/pcap`, { recursive: true });
    await Deno.copyFile(await pcapWrapper(dir), `${dir}/src/pcap/pcap-linux-amd64`);
    const r = await new Deno.Command("bash", {
      args: [`${ROOT}/release/packages/pcap/packaging`],
      cwd: `${dir}/src`,
      env: { BOSH_INSTALL_TARGET: `${dir}/target` },
      stderr: "piped",
    }).output();
    assertEquals(r.code, 0, dec.decode(r.stderr));
    assertEquals(Deno.statSync(`${dir}/target/bin/pcap`).mode! & 0o777, 0o755);
    assertEquals(Deno.readLinkSync(`${dir}/target/bin/pcap-bosh`), "pcap");
    assertEquals(Deno.readLinkSync(`${dir}/target/bin/pcap-cf`), "pcap");
    const v = await new Deno.Command(`${dir}/target/bin/pcap`, {
      args: ["version"],
      stdout: "piped",
    })
      .output();
    assertStringIncludes(dec.decode(v.stdout), "pcap ");
    const spec = parse(Deno.readTextFileSync(`${ROOT}/release/packages/pcap/spec`)) as {
      name: string;
      files: string[];
    };
    assertEquals(
      spec,
      { name: "pcap", dependencies: [], files: ["pcap/pcap-linux-amd64"] } as never,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("release config: final.yml names the release, blobs.yml is empty in git", () => {
  const final = parse(Deno.readTextFileSync(`${ROOT}/release/config/final.yml`)) as {
    name: string;
  };
  assertEquals(final.name, "pcap");
  assertEquals(parse(Deno.readTextFileSync(`${ROOT}/release/config/blobs.yml`)), {});
});
