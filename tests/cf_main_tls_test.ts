// pcap-cf's TLS to the UAA it refreshes the cf login at: SSLDisabled in the cf CLI config
// (`cf api --skip-ssl-validation`) refreshes without verifying, with one loud warning per run,
// even with -q; --uaa-ca-cert names the UAA's CA apart from the pcap API's --ca-cert and then
// wins over SSLDisabled; a bad --uaa-ca-cert file is refused by its flag's name. The lab UAA runs
// on TLS with a CA no system trusts; the pcap API is a closed loopback port, so every run ends
// with exit 1 after the login part this test is about.
import { Pki } from "../lab/pki.ts";
import { UaaSim } from "../lab/uaa_sim.ts";
import { freePort } from "../lab/lab_api.ts";
import { runCf } from "../cli/cf_main.ts";
import { fetchTrusting } from "../cli/uaa_token.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

Deno.test("pcap-cf: SSLDisabled refreshes at an unverified UAA with one warning; --uaa-ca-cert verifies it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cf_main_tls" });
  let uaa: UaaSim | undefined;
  try {
    const pki = await Pki.create(`${dir}/pki`);
    const other = await Pki.create(`${dir}/other`);
    const leaf = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
    uaa = await UaaSim.start({
      tls: { cert: leaf.cert, key: leaf.key },
      users: [{ username: "dev", password: "pw", scopes: ["openid", "cloud_controller.read"] }],
    });
    await Deno.writeTextFile(`${dir}/uaa-ca.pem`, pki.caCert);
    await Deno.writeTextFile(`${dir}/other-ca.pem`, other.caCert);
    await Deno.writeTextFile(`${dir}/not-a-ca.pem`, "hello\n");
    const t = fetchTrusting(pki.caCert);
    const grant = await t.fetch(`${uaa.url}/oauth/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${btoa("cf:")}`,
      },
      body: "grant_type=password&username=dev&password=pw",
    }).then((r) => r.json()).finally(() => t.close());
    const configPath = `${dir}/.cf/config.json`;
    await Deno.mkdir(`${dir}/.cf`);
    const writeConfig = async (sslDisabled: boolean) =>
      await Deno.writeTextFile(
        configPath,
        JSON.stringify({
          ConfigVersion: 4,
          Target: "https://api.sys.example.com",
          AuthorizationEndpoint: uaa!.url,
          AccessToken: `bearer ${await uaa!.mintExpired({ clientId: "cf", userName: "dev" })}`,
          RefreshToken: grant.refresh_token,
          UAAOAuthClient: "cf",
          SSLDisabled: sslDisabled,
          OrganizationFields: { GUID: crypto.randomUUID(), Name: "acme" },
          SpaceFields: { GUID: crypto.randomUUID(), Name: "dev" },
        }),
      );
    const api = `http://127.0.0.1:${freePort()}`;
    const capture = async (...flags: string[]) => {
      let stderr = "";
      const code = await runCf([
        "capture",
        "my-app",
        "-o",
        `${dir}/out.pcapng`,
        "-u",
        api,
        ...flags,
      ], {
        env: { CF_HOME: dir },
        writeErr: (s) => (stderr += s),
        stderrIsTty: false,
        stdoutIsTty: false,
        signals: [],
      });
      return { code, stderr, stored: JSON.parse(await Deno.readTextFile(configPath)) };
    };
    const before = (await writeConfig(false), JSON.parse(await Deno.readTextFile(configPath)));

    // Verified by default: the UAA's CA is unknown, so the refresh fails and says where.
    let r = await capture("-q");
    assertEquals(r.code, 1);
    assertStringIncludes(r.stderr, `cannot reach the UAA at ${uaa.url}`);
    assertEquals(r.stored.AccessToken, before.AccessToken, "nothing written");

    // SSLDisabled: refreshed without verification, written back; the warning once, despite -q.
    await writeConfig(true);
    const expired = JSON.parse(await Deno.readTextFile(configPath)).AccessToken;
    r = await capture("-q");
    assertEquals(r.code, 1, "the pcap API is not there");
    assert(r.stored.AccessToken !== expired, "the token was refreshed and written back");
    assertEquals(r.stderr.split("WARNING").length - 1, 1, r.stderr);
    assertStringIncludes(r.stderr, "pcap-cf: WARNING: ");
    assertStringIncludes(r.stderr, "does NOT verify the certificate of the UAA");
    assert(!r.stderr.includes("cannot reach the UAA"), r.stderr);

    // --uaa-ca-cert wins over SSLDisabled: a CA that did not sign the UAA is refused...
    await writeConfig(true);
    r = await capture("--uaa-ca-cert", `${dir}/other-ca.pem`);
    assertEquals(r.code, 1);
    assertStringIncludes(r.stderr, `cannot reach the UAA at ${uaa.url}`);
    assertStringIncludes(r.stderr, "is verified against it");
    assert(!r.stderr.includes("WARNING"), r.stderr);
    // ...the UAA's own CA works, apart from the pcap API's --ca-cert (another CA here)
    const stale = r.stored.AccessToken;
    r = await capture("--uaa-ca-cert", `${dir}/uaa-ca.pem`, "--ca-cert", `${dir}/other-ca.pem`);
    assertEquals(r.code, 1, "the pcap API is not there");
    assert(!r.stderr.includes("cannot reach the UAA"), r.stderr);
    assert(r.stored.AccessToken !== stale, "refreshed through the verified UAA");

    // A file that is not a CA is refused under its own flag's name.
    r = await capture("--uaa-ca-cert", `${dir}/not-a-ca.pem`);
    assertEquals(r.code, 1);
    assertStringIncludes(r.stderr, `cannot use --uaa-ca-cert ${dir}/not-a-ca.pem`);
    assert(!(await Deno.stat(`${dir}/out.pcapng`).then(() => true, () => false)), "no file");
  } finally {
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
