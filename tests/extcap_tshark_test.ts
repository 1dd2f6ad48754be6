/**
 * `pcap extcap` with Debian's real tshark, without the lab: `--install` writes the launcher into
 * a temporary HOME, and tshark run from there lists the interfaces, registers every option as a
 * preference under the names we print, and shows our errors (no login, no api URL, a bad filter)
 * without hanging. A CF capture runs against a loopback api speaking the api's protocol and is
 * read back with tshark; a denied capture reaches tshark with the api's message. An in-process
 * test plays the order in which Wireshark stops an extcap: its reader leaves, then SIGTERM comes
 * while the capture drains.
 */
import { preferenceName } from "../cli/extcap_protocol.ts";
import { type CfInterface, discoverInterfaces } from "../cli/extcap_interfaces.ts";
import { boshArgs, cfArgs } from "../cli/extcap_options.ts";
import { LAUNCHER_NAME, parseFolders } from "../cli/extcap_install.ts";
import { runExtcapCapture } from "../cli/extcap_capture.ts";
import { run } from "../lab/netns.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import {
  homeEnv,
  installExtcap,
  pcapExtcap,
  tshark,
  tsharkInterfaces,
} from "./support/extcap_home.ts";
import {
  cfLogin,
  drainingApi,
  jwt,
  loopbackApi,
  makeHome,
  now,
  SPACE_GUID,
} from "./support/extcap_fixtures.ts";
import { interfaces } from "./support/capture_readback.ts";

Deno.test("extcap with tshark: --install into HOME, tshark -D and its preferences, direct calls", async () => {
  const home = await makeHome(cfLogin(jwt({ user_name: "dev", exp: now() + 3600 })));
  try {
    const installed = await installExtcap(home);
    const folders = (await run("tshark", ["-G", "folders"], { env: homeEnv(home) })).stdout;
    const f = parseFolders(folders);
    const expected = f.personalExtcap ?? `${f.personalConfig}/extcap`;
    assertEquals(installed.launcher, `${expected}/${LAUNCHER_NAME}`);
    assertStringIncludes(installed.installOutput, "restart Wireshark (or run tshark -D) to see: ");
    assertEquals((await Deno.stat(installed.launcher)).mode! & 0o777, 0o755);
    const env = installed.env;

    const list = await tsharkInterfaces(env);
    assertMatch(list, /\d+\. pcap-bosh-lab \(pcap BOSH lab \(https:\/\/127\.0\.0\.1:1\)\)/);
    assertMatch(
      list,
      /\d+\. pcap-cf-api\.sys\.example\.com \(pcap CF https:\/\/api\.sys\.example\.com \(org o1, space s1\)\)/,
    );

    // tshark registered every option of both interfaces as a preference, under the names we print
    const prefs = (await run("tshark", ["-G", "currentprefs"], { env })).stdout;
    const [, cfIface] = (await discoverInterfaces({ HOME: home })).interfaces as [
      unknown,
      CfInterface,
    ];
    for (
      const [iface, args] of [["pcap-bosh-lab", boshArgs({})], [
        cfIface.value,
        cfArgs(cfIface, {}),
      ]] as const
    ) {
      for (const a of args) {
        assertMatch(
          prefs,
          new RegExp(
            `^#${preferenceName(iface, a.call).replace(/\./g, "\\.")}: ${a.default ?? ""}$`,
            "m",
          ),
        );
      }
    }
    assertMatch(
      prefs,
      /^#extcap\.pcap_cf_api_sys_example_com\.pcapapiurl: https:\/\/pcap\.sys\.example\.com$/m,
    );

    const version = await pcapExtcap(["--extcap-version"], env);
    assertMatch(version.stdout, /^extcap \{version=\d+\.\d+\.\d+\}\n$/);
    const dlts = await pcapExtcap(["--extcap-interface", "pcap-bosh-lab", "--extcap-dlts"], env);
    assertMatch(dlts.stdout, /^dlt \{number=1\}\{name=EN10MB\}/);
    const unknown = await pcapExtcap(["--extcap-interface", "pcap-bosh-x", "--extcap-config"], env);
    assertEquals(unknown.code, 1);
    assertStringIncludes(
      unknown.stderr,
      'no pcap interface "pcap-bosh-x" (known: pcap-bosh-lab, pcap-cf-',
    );
    const good = await pcapExtcap([
      "--extcap-interface",
      "pcap-bosh-lab",
      "--extcap-capture-filter",
      "udp port 53",
    ], env);
    assertEquals([good.code, good.stderr], [0, ""]);
    const bad = await pcapExtcap([
      "--extcap-interface",
      "pcap-bosh-lab",
      "--extcap-capture-filter",
      "udp port",
    ], env);
    assertEquals(bad.code, 1);
    assertStringIncludes(bad.stderr, 'pcap extcap: filter "udp port" is not valid');
    const usage = await pcapExtcap(["--frob"], env);
    assertEquals(usage.code, 2);
    assertStringIncludes(usage.stderr, "pcap extcap: --frob needs a value");

    // a second install replaces our launcher; a foreign file is left alone
    assertEquals((await pcapExtcap(["--install"], env)).code, 0);
    await Deno.writeTextFile(installed.launcher, "#!/bin/sh\necho mine\n");
    const foreign = await pcapExtcap(["--install"], env);
    assertEquals(foreign.code, 1);
    assertStringIncludes(
      foreign.stderr,
      "exists and is not a pcap launcher; remove it or pass --force",
    );
    assertEquals(await Deno.readTextFile(installed.launcher), "#!/bin/sh\necho mine\n");
    const elsewhere = await pcapExtcap(["--install", "--dir", `${home}/other`], env);
    assertEquals(elsewhere.code, 0, elsewhere.stderr);
    assertStringIncludes(elsewhere.stdout, `${home}/other/${LAUNCHER_NAME}`);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("extcap with tshark: no login, no api URL, a bad filter: our message, exit ≠ 0, no hang", async () => {
  const home = await makeHome({ ConfigVersion: 4, Target: "https://api.sys.example.com" });
  try {
    const { env } = await installExtcap(home);
    const capture = (opts: string[], extra: string[] = []) =>
      tshark([
        "-i",
        "pcap-bosh-lab",
        ...opts.flatMap((o) => ["-o", `extcap.pcap_bosh_lab.${o}`]),
        ...extra,
        "-a",
        "duration:60",
        "-w",
        `${home}/out.pcapng`,
      ], env);
    const noApi = await capture(["deployment:cf", "groups:router"]);
    assert(noApi.code !== 0);
    assertStringIncludes(
      noApi.stderr,
      'Error by extcap pipe: pcap extcap: no pcap API URL: set "pcap API URL"',
    );
    const noLogin = await capture([
      "deployment:cf",
      "groups:router",
      "pcapapiurl:https://127.0.0.1:2",
    ]);
    assert(noLogin.code !== 0);
    assertStringIncludes(noLogin.stderr, "not logged in to BOSH environment lab");
    assertStringIncludes(noLogin.stderr, 'run "bosh -e lab log-in"');
    const badFilter = await capture([
      "deployment:cf",
      "groups:router",
      "pcapapiurl:https://127.0.0.1:2",
      "filter:tcp port",
    ], ["-f", "udp"]);
    assert(badFilter.code !== 0);
    assertStringIncludes(badFilter.stderr, 'filter "(tcp port) and (udp)" is not valid');
    const cfNoLogin = await tshark([
      "-i",
      "pcap-cf-api.sys.example.com",
      "-o",
      "extcap.pcap_cf_api_sys_example_com.app:a",
      "-a",
      "duration:60",
      "-w",
      `${home}/cf.pcapng`,
    ], env);
    assert(cfNoLogin.code !== 0);
    assertStringIncludes(
      cfNoLogin.stderr,
      'not logged in to https://api.sys.example.com; run "cf login"',
    );
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("extcap with tshark: a CF capture into tshark, stopped by tshark; a denied capture", async () => {
  const token = jwt({ user_name: "dev", exp: now() + 3600 });
  const home = await makeHome(cfLogin(token));
  const api = loopbackApi();
  const denying = loopbackApi("user dev may not capture app my-app");
  try {
    const { env } = await installExtcap(home);
    const iface = "pcap-cf-api.sys.example.com";
    const opt = (call: string, v: string) => ["-o", `${preferenceName(iface, call)}:${v}`];
    const file = `${home}/cf.pcapng`;
    // -c 2: tshark stops after both packets, and stops the extcap with SIGTERM
    const r = await tshark([
      "-i",
      iface,
      ...opt("--app", "my-app"),
      ...opt("--index", "0,2"),
      ...opt("--pcap-api-url", api.url),
      "-c",
      "2",
      "-w",
      file,
    ], env);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(api.seen.path, "/v1/capture/cf");
    assertEquals((api.seen.start as { cf: unknown }).cf, {
      app: "my-app",
      space_guid: SPACE_GUID,
      process: "web",
      indexes: [0, 2],
    });
    assertEquals((await interfaces(file)).map((i) => [i.name, i.packets]).sort(), [
      ["my-app/0 (guid-0) eth0", 1],
      ["my-app/2 (guid-2) eth0", 1],
    ]);
    const until = Date.now() + 30_000;
    while (!api.seen.stopped && Date.now() < until) await new Promise((res) => setTimeout(res, 50));
    assert(api.seen.stopped, "the extcap asked the api for a clean stop");
    assert(!r.stderr.includes(token), "the token is never printed");

    const denied = await tshark([
      "-i",
      iface,
      ...opt("--app", "my-app"),
      ...opt("--pcap-api-url", denying.url),
      "-a",
      "duration:60",
      "-w",
      `${home}/denied.pcapng`,
    ], env);
    // tshark's own exit code follows its reader (0 packets, clean end); the extcap's is ours
    assertStringIncludes(
      denied.stderr,
      "Error by extcap pipe: api (PERMISSION_DENIED): user dev may not capture app my-app",
    );
    const fifo = `${home}/fifo`;
    await run("mkfifo", [fifo]);
    const reading = Deno.open(fifo, { read: true }).then(async (f) => {
      for await (const _ of f.readable) { /* drain like dumpcap */ }
    });
    const direct = await pcapExtcap([
      "--capture",
      "--extcap-interface",
      iface,
      "--fifo",
      fifo,
      "--app",
      "my-app",
      "--pcap-api-url",
      denying.url,
    ], env);
    await reading;
    assertEquals(direct.code, 1, direct.stderr);
    assertStringIncludes(
      direct.stderr,
      "pcap-cf: capture failed: PERMISSION_DENIED: user dev may not capture app my-app",
    );
  } finally {
    await api.close();
    await denying.close();
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("extcap capture: the reader leaves, then SIGTERM comes during the drain: the drain completes, exit 0, nothing on stderr", async () => {
  const home = await makeHome(cfLogin(jwt({ user_name: "dev", exp: now() + 3600 })));
  const api = drainingApi();
  let stderr = "";
  let sigterm: () => void = () => {};
  try {
    const fifo = `${home}/fifo`;
    await run("mkfifo", [fifo]);
    const reader = Deno.open(fifo, { read: true });
    const code = runExtcapCapture(
      {
        iface: "pcap-cf-api.sys.example.com",
        fifo,
        values: new Map([["--app", "my-app"], ["--pcap-api-url", api.url]]),
      },
      { env: { HOME: home }, writeErr: (s) => stderr += s, stderrIsTty: false, stdoutIsTty: false },
    );
    // read the header and some packets as Wireshark would, then leave like Wireshark does
    const f = await reader;
    const buf = new Uint8Array(64 * 1024);
    for (let got = 0; got < 4000;) got += (await f.read(buf)) ?? 0;
    f.close();
    const until = Date.now() + 30_000;
    while (!api.seen.stopped && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert(api.seen.stopped, `the client asked for a stop once its reader was gone; ${stderr}`);
    // now Wireshark's SIGTERM: every listener of this process runs in the same dispatch, so
    // once ours has run, the extcap's has too
    const delivered = new Promise<void>((r) => sigterm = r);
    Deno.addSignalListener("SIGTERM", sigterm);
    Deno.kill(Deno.pid, "SIGTERM");
    await delivered;
    api.releaseEnd();
    assertEquals(await code, 0, stderr);
    assertEquals(stderr, "", "Wireshark would show anything on stderr as an error");
    assert(!api.seen.clientClosedFirst, "the SIGTERM cut the drain short");
  } finally {
    Deno.removeSignalListener("SIGTERM", sigterm);
    await api.close();
    await Deno.remove(home, { recursive: true });
  }
});
