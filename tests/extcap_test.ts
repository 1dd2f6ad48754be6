/**
 * `pcap extcap` without the lab: the extcap sentences and command line (pure), the interfaces
 * found in bosh and cf configs, the way an interface's options become `pcap-bosh capture` /
 * `pcap-cf capture` options with extcap-worded errors, `--install` into a temporary HOME, and
 * Debian's real tshark using the launcher: it lists the interfaces, registers every option as a
 * preference, and shows our errors (no login, no api URL, a denied capture) without hanging.
 * One capture of a CF interface runs against a loopback WebSocket api speaking the api's
 * protocol; the file is read back with tshark.
 */
import {
  argSentences,
  dltSentence,
  type ExtcapArg,
  ExtcapUsageError,
  fieldValue,
  interfaceSentence,
  parseExtcapArgs,
  preferenceName,
  versionSentence,
} from "../cli/extcap_protocol.ts";
import {
  boshInterfaceName,
  boshInterfaces,
  type CfInterface,
  cfInterfaceName,
  discoverInterfaces,
} from "../cli/extcap_interfaces.ts";
import {
  boshArgs,
  boshCaptureOptions,
  cfArgs,
  cfCaptureOptions,
  combineFilters,
  ExtcapOptionError,
} from "../cli/extcap_options.ts";
import { LAUNCHER_NAME, launcherScript, parseFolders } from "../cli/extcap_install.ts";
import { runExtcapCapture } from "../cli/extcap_capture.ts";
import type { BoshInterface } from "../cli/extcap_interfaces.ts";
import type { CfLogin } from "../cli/cf_config.ts";
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { API_SOURCE } from "../server/merge.ts";
import { run } from "../lab/netns.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "./support/assert.ts";
import {
  homeEnv,
  installExtcap,
  pcapExtcap,
  tshark,
  tsharkInterfaces,
} from "./support/extcap_home.ts";
import { interfaces } from "./support/capture_readback.ts";

const SPACE_GUID = "6b4f2c1e-3a5d-4e8f-9b0a-1c2d3e4f5a6b";
const now = () => Math.floor(Date.now() / 1000);

function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) =>
    btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "RS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

const BOSH_IFACE: BoshInterface = {
  kind: "bosh",
  value: "pcap-bosh-prod",
  display: "pcap BOSH prod",
  configPath: "/home/u/.bosh/config",
  environment: "prod",
  directorUrl: "https://10.0.0.6:25555",
};

const LOGIN: CfLogin = {
  target: "https://api.sys.example.com",
  authorizationEndpoint: "https://login.sys.example.com",
  accessToken: "x",
  refreshToken: "r",
  client: "cf",
  clientSecret: "",
  grantType: "password",
  sslDisabled: false,
  org: { guid: "o", name: "o1" },
  space: { guid: SPACE_GUID, name: "s1" },
};
const CF_IFACE: CfInterface = {
  kind: "cf",
  value: "pcap-cf-api.sys.example.com",
  display: "pcap CF",
  configPath: "/home/u/.cf/config.json",
  login: LOGIN,
};

Deno.test("extcap command line: Wireshark's calls, --name=value, and what is missing", () => {
  assertEquals(parseExtcapArgs(["--extcap-interfaces", "--extcap-version=4.0"]), {
    kind: "interfaces",
  });
  assertEquals(parseExtcapArgs(["--extcap-version"]), { kind: "version" });
  assertEquals(parseExtcapArgs(["--extcap-config", "--extcap-interface", "pcap-bosh-a"]), {
    kind: "config",
    iface: "pcap-bosh-a",
  });
  assertEquals(parseExtcapArgs(["--extcap-interface=pcap-bosh-a", "--extcap-dlts"]), {
    kind: "dlts",
    iface: "pcap-bosh-a",
  });
  assertEquals(
    parseExtcapArgs(["--extcap-interface", "pcap-bosh-a", "--extcap-capture-filter", "tcp"]),
    { kind: "check-filter", iface: "pcap-bosh-a", filter: "tcp" },
  );
  const capture = parseExtcapArgs([
    "--capture",
    "--extcap-interface",
    "pcap-bosh-a",
    "--extcap-capture-filter",
    "udp port 53",
    "--fifo",
    "/tmp/f",
    "--deployment",
    "cf",
    "--groups=router, diego-cell",
  ]);
  assertEquals(capture, {
    kind: "capture",
    iface: "pcap-bosh-a",
    fifo: "/tmp/f",
    captureFilter: "udp port 53",
    values: new Map([["--deployment", "cf"], ["--groups", "router, diego-cell"]]),
  });
  assertEquals(parseExtcapArgs(["--install", "--dir", "/x"]), {
    kind: "install",
    dir: "/x",
    force: false,
  });
  assertThrows(() => parseExtcapArgs([]), ExtcapUsageError, "nothing to do");
  assertThrows(() => parseExtcapArgs(["--extcap-config"]), ExtcapUsageError, "--extcap-interface");
  assertThrows(
    () => parseExtcapArgs(["--capture", "--extcap-interface", "a"]),
    ExtcapUsageError,
    "--fifo PATH",
  );
  assertThrows(() => parseExtcapArgs(["--deployment"]), ExtcapUsageError, "needs a value");
  assertThrows(() => parseExtcapArgs(["cf"]), ExtcapUsageError, 'unexpected argument "cf"');
});

Deno.test("extcap sentences: fields in order, braces and line breaks never reach Wireshark", () => {
  assertEquals(versionSentence("0.1.0"), "extcap {version=0.1.0}");
  assertEquals(
    interfaceSentence({ value: "pcap-bosh-a", display: "pcap {BOSH}\na" }),
    "interface {value=pcap-bosh-a}{display=pcap BOSH a}",
  );
  assertEquals(fieldValue("a}{b\r\nc"), "ab c");
  assertEquals(
    dltSentence({ number: 1, name: "EN10MB", display: "Ethernet" }),
    "dlt {number=1}{name=EN10MB}{display=Ethernet}",
  );
  const args: ExtcapArg[] = [
    {
      call: "--snaplen",
      display: "Snapshot length",
      type: "unsigned",
      default: "65535",
      range: [1, 262144],
      tooltip: "t",
      group: "Capture",
    },
    { call: "--ca", display: "CA", type: "fileselect", mustExist: true, tooltip: "c", group: "C" },
  ];
  assertEquals(argSentences(args), [
    "arg {number=0}{call=--snaplen}{display=Snapshot length}{type=unsigned}{default=65535}" +
    "{range=1,262144}{tooltip=t}{group=Capture}",
    "arg {number=1}{call=--ca}{display=CA}{type=fileselect}{mustexist=true}{tooltip=c}{group=C}",
  ]);
  for (const line of argSentences([...boshArgs({}), ...cfArgs(CF_IFACE, {})])) {
    // every field closes where it should: no brace inside a value
    assertMatch(line, /^arg (\{[a-z]+=[^{}]*\})+$/);
  }
  assertEquals(preferenceName("pcap-bosh-lab.1", "--ca-cert"), "extcap.pcap_bosh_lab_1.cacert");
});

Deno.test("extcap interfaces: one per BOSH environment, unique names; the cf target's", async () => {
  assertEquals(boshInterfaceName({ alias: "prod", url: "https://x" }), "pcap-bosh-prod");
  assertEquals(
    boshInterfaceName({ url: "https://10.0.0.6:25555" }),
    "pcap-bosh-10.0.0.6-25555",
  );
  assertEquals(boshInterfaceName({ alias: "my env/1", url: "x" }), "pcap-bosh-my-env-1");
  assertEquals(cfInterfaceName("https://api.sys.example.com"), "pcap-cf-api.sys.example.com");
  const envs = [
    { index: 0, url: "https://a:25555", alias: "x y" },
    { index: 1, url: "https://b:25555", alias: "x-y" },
    { index: 2, url: "" },
  ];
  assertEquals(boshInterfaces(envs, "/c").map((i) => i.value), [
    "pcap-bosh-x-y",
    "pcap-bosh-x-y-2",
  ]);

  const home = await Deno.makeTempDir({ prefix: "extcap-ifaces-" });
  try {
    assertEquals(await discoverInterfaces({ HOME: home }), { interfaces: [], warnings: [] });
    await Deno.mkdir(`${home}/.bosh`);
    await Deno.writeTextFile(`${home}/.bosh/config`, "environments: [unclosed");
    await Deno.mkdir(`${home}/.cf`);
    await Deno.writeTextFile(
      `${home}/.cf/config.json`,
      JSON.stringify({ ConfigVersion: 4, Target: "https://api.sys.example.com" }),
    );
    const broken = await discoverInterfaces({ HOME: home });
    assertEquals(broken.interfaces.map((i) => i.value), ["pcap-cf-api.sys.example.com"]);
    assertEquals(broken.warnings.length, 1);
    assertMatch(broken.warnings[0], /BOSH config .* is not valid YAML/);
    await Deno.writeTextFile(
      `${home}/.bosh/config`,
      "environments:\n- url: https://10.0.0.6:25555\n  alias: prod\n- url: https://10.0.1.6:25555\n",
    );
    const ok = await discoverInterfaces({ HOME: home, BOSH_CONFIG: undefined });
    assertEquals(ok.warnings, []);
    assertEquals(ok.interfaces.map((i) => [i.value, i.display]), [
      ["pcap-bosh-prod", "pcap BOSH prod (https://10.0.0.6:25555)"],
      ["pcap-bosh-10.0.1.6-25555", "pcap BOSH https://10.0.1.6:25555"],
      ["pcap-cf-api.sys.example.com", "pcap CF https://api.sys.example.com"],
    ]);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("extcap BOSH options → pcap-bosh capture options; errors name the preference", () => {
  const values = (o: Record<string, string>) => new Map(Object.entries(o));
  const o = boshCaptureOptions(
    BOSH_IFACE,
    values({
      "--deployment": "cf",
      "--groups": "diego-cell, router",
      "--instances": "router/0 diego-cell/abc",
      "--interface": "eth1",
      "--filter": "tcp port 443",
      "--snaplen": "128",
      "--pcap-api-url": "pcap.example.com",
      "--ca-cert": "/ca.pem",
    }),
    "host 10.0.0.1",
    { HOME: "/home/u" },
  );
  assertEquals(o.deployment, "cf");
  assertEquals(o.groups, ["diego-cell", "router"]);
  assertEquals(o.instances.map((i) => i.raw), ["router/0", "diego-cell/abc"]);
  assertEquals(o.interface, "eth1");
  assertEquals(o.filter, "(tcp port 443) and (host 10.0.0.1)");
  assertEquals(o.snaplen, 128);
  assertEquals(o.pcapApiUrl, "https://pcap.example.com");
  assertEquals(o.caCert, "/ca.pem");
  assertEquals([o.boshConfig, o.boshEnvironment], ["/home/u/.bosh/config", "prod"]);
  assertEquals([o.output, o.quiet, o.format], ["-", true, "pcapng"]);
  // PCAP_API fills an empty option
  const fromEnv = boshCaptureOptions(
    BOSH_IFACE,
    values({ "--deployment": "cf", "--groups": "router" }),
    undefined,
    { PCAP_API: "https://pcap.env.example.com" },
  );
  assertEquals([fromEnv.pcapApiUrl, fromEnv.filter], ["https://pcap.env.example.com", undefined]);

  const refused = (v: Record<string, string>, text: string) =>
    assertThrows(
      () => boshCaptureOptions(BOSH_IFACE, values(v), undefined, {}),
      ExtcapOptionError,
      text,
    );
  const api = { "--pcap-api-url": "https://pcap.example.com" };
  refused({ ...api, "--groups": "router" }, "-o extcap.pcap_bosh_prod.deployment:VALUE");
  refused(
    { ...api, "--deployment": "cf" },
    'nothing selected in pcap-bosh-prod: set "Instance groups"',
  );
  refused({ "--deployment": "cf", "--groups": "router" }, 'no pcap API URL: set "pcap API URL"');
  refused(
    { ...api, "--deployment": "cf", "--groups": "router", "--frob": "1" },
    "has no option --frob",
  );
  const e = refused(
    { ...api, "--deployment": "cf", "--groups": "router", "--snaplen": "0" },
    "snaplen must be 1..",
  );
  assert(!e.message.includes("--help"), e.message);
  refused(
    { ...api, "--deployment": "cf", "--groups": "ro uter/x/y" },
    "is not an instance group name",
  );
  refused({ ...api, "--deployment": "cf", "--instances": "router/0/1" }, 'instance "router/0/1"');
  refused(
    { "--deployment": "cf", "--groups": "router", "--pcap-api-url": "http://pcap.example.com" },
    "clear text",
  );
  assertEquals(combineFilters(" ", "udp"), "udp");
  assertEquals(combineFilters(undefined, undefined), undefined);
});

Deno.test("extcap CF options → pcap-cf capture options", () => {
  const o = cfCaptureOptions(
    CF_IFACE,
    new Map([["--app", "my-app"], ["--index", "2, 0,2"], ["--process", "worker"]]),
    "tcp",
    {},
  );
  assertEquals([o.app, o.indexes, o.process, o.filter], ["my-app", [0, 2], "worker", "tcp"]);
  assertEquals([o.pcapApiUrl, o.output, o.quiet], [undefined, "-", true]);
  const withSpace = cfCaptureOptions(
    CF_IFACE,
    new Map([["--app", "-odd name"], ["--org", "o2"], ["--space", "s2"]]),
    undefined,
    { PCAP_API: "https://pcap.x.com" },
  );
  assertEquals([withSpace.app, withSpace.org, withSpace.space], ["-odd name", "o2", "s2"]);
  assertEquals(withSpace.pcapApiUrl, "https://pcap.x.com");
  assertThrows(
    () => cfCaptureOptions(CF_IFACE, new Map(), undefined, {}),
    ExtcapOptionError,
    "-o extcap.pcap_cf_api_sys_example_com.app:VALUE",
  );
  assertThrows(
    () => cfCaptureOptions(CF_IFACE, new Map([["--app", "a"], ["--index", "x"]]), undefined, {}),
    ExtcapOptionError,
    "index must be a whole number",
  );
  assertThrows(
    () =>
      cfCaptureOptions(CF_IFACE, new Map([["--app", "a"], ["--deployment", "x"]]), undefined, {}),
    ExtcapOptionError,
    "has no option --deployment",
  );
  const api = cfArgs(CF_IFACE, {}).find((a) => a.call === "--pcap-api-url")!;
  assertEquals(api.default, "https://pcap.sys.example.com");
});

Deno.test("extcap install: folders from tshark -G folders; the launcher script", () => {
  assertEquals(
    parseFolders(
      "Temp:\t/tmp\nPersonal configuration:\t/h/.config/wireshark\n" +
        "Personal Extcap path:\t/h/.local/lib/wireshark/extcap\n",
    ),
    { personalConfig: "/h/.config/wireshark", personalExtcap: "/h/.local/lib/wireshark/extcap" },
  );
  assertEquals(parseFolders("Extcap path:\t/usr/lib/x/extcap\n"), {
    personalConfig: undefined,
    personalExtcap: undefined,
  });
  const script = launcherScript({
    argv: ["/opt/de no/deno", "run", "/it's/main.ts"],
    denoDir: "/c",
  });
  assertEquals(
    script.split("\n").slice(-3),
    [
      'export DENO_DIR="${DENO_DIR:-/c}"',
      `exec '/opt/de no/deno' 'run' '/it'\\''s/main.ts' extcap "$@"`,
      "",
    ],
  );
  assert(script.startsWith("#!/bin/sh\n"));
});

/** A HOME with a bosh config (environment "lab", no login) and optionally a cf login. */
async function makeHome(cf?: Record<string, unknown>): Promise<string> {
  const home = await Deno.makeTempDir({ prefix: "extcap-home-" });
  await Deno.mkdir(`${home}/.bosh`);
  await Deno.writeTextFile(
    `${home}/.bosh/config`,
    "environments:\n- url: https://127.0.0.1:1\n  alias: lab\n",
  );
  if (cf) {
    await Deno.mkdir(`${home}/.cf`);
    await Deno.writeTextFile(`${home}/.cf/config.json`, JSON.stringify(cf));
  }
  return home;
}

const cfLogin = (token: string) => ({
  ConfigVersion: 4,
  Target: "https://api.sys.example.com",
  AuthorizationEndpoint: "https://login.sys.example.com",
  AccessToken: `bearer ${token}`,
  RefreshToken: "",
  OrganizationFields: { GUID: "o", Name: "o1" },
  SpaceFields: { GUID: SPACE_GUID, Name: "s1" },
});

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
    const cfIface = { ...CF_IFACE, value: "pcap-cf-api.sys.example.com" };
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

/** A loopback api for the CF route: 2 sources with a packet each, END after the client's stop. */
function loopbackApi(deny?: string) {
  const seen: { path?: string; start?: Record<string, unknown>; stopped: boolean } = {
    stopped: false,
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen.path = new URL(req.url).pathname;
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      const msg = JSON.parse(ev.data);
      if (msg.type === "stop") {
        seen.stopped = true;
        socket.send(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
        socket.close(1000, "capture ended");
        return;
      }
      if (msg.type !== "start") return;
      seen.start = msg;
      socket.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
        protocol_version: 1,
        min_protocol_version: 1,
        component: "api",
        version: "test",
        id: "extcap-test-api",
      }));
      if (deny) {
        socket.send(
          encodeJsonFrame(FrameKind.STATUS, API_SOURCE, {
            type: "PERMISSION_DENIED",
            text: deny,
            origin: "api",
          }),
        );
        socket.close(1008, "permission denied");
        return;
      }
      for (const index of [0, 2]) {
        socket.send(encodeJsonFrame(FrameKind.SOURCE, index, {
          origin: `my-app/${index}`,
          interface: "eth0",
          link_type: 1,
          snaplen: 65535,
          instance: { group: "my-app", index, id: `guid-${index}` },
        }));
        const pkt = new Uint8Array(60).fill(0x40 + index);
        socket.send(
          encodePacketsFrame(
            index,
            1,
            encodeRecords([{ tsNs: BigInt(Date.now()) * 1_000_000n, data: pkt }]),
          ),
        );
      }
    };
    return response;
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

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

/**
 * A loopback CF api that streams packets until the client's stop, then holds END back until
 * `releaseEnd()`, so that a test can act while the client drains.
 */
function drainingApi() {
  let socket: WebSocket | undefined;
  let endSent = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const seen = { stopped: false, clientClosedFirst: false };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const up = Deno.upgradeWebSocket(req);
    socket = up.socket;
    socket.onclose = () => {
      clearInterval(timer);
      if (!endSent) seen.clientClosedFirst = true;
    };
    socket.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.type === "stop") {
        seen.stopped = true;
        clearInterval(timer);
        return;
      }
      socket!.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
        protocol_version: 1,
        min_protocol_version: 1,
        component: "api",
        version: "test",
        id: "extcap-drain-api",
      }));
      socket!.send(encodeJsonFrame(FrameKind.SOURCE, 0, {
        origin: "my-app/0",
        interface: "eth0",
        link_type: 1,
        snaplen: 65535,
        instance: { group: "my-app", index: 0, id: "guid-0" },
      }));
      timer = setInterval(() => {
        const pkt = new Uint8Array(1000).fill(0x41);
        const tsNs = BigInt(Date.now()) * 1_000_000n;
        socket!.send(encodePacketsFrame(0, 1, encodeRecords([{ tsNs, data: pkt }])));
      }, 10);
    };
    return up.response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    releaseEnd() {
      endSent = true;
      socket!.send(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
      socket!.close(1000, "capture ended");
    },
    close: () => server.shutdown(),
  };
}

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
