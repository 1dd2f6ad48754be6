/**
 * `pcap extcap`, the pure parts: the extcap sentences and command line, the interfaces found in
 * bosh and cf configs, the way an interface's options become `pcap-bosh capture` / `pcap-cf
 * capture` options with extcap-worded errors, the launcher script, and the FIFO output.
 * Debian's tshark runs the launcher in extcap_tshark_test.ts, the lab in extcap_capture_test.ts.
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
  type BoshInterface,
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
import { launcherScript, parseFolders } from "../cli/extcap_install.ts";
import type { CfLogin } from "../cli/cf_config.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "./support/assert.ts";
import { BufferedOutput, OutputError } from "../cli/capture_output.ts";
import { SPACE_GUID } from "./support/extcap_fixtures.ts";

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

Deno.test("BufferedOutput.openFifo: only a FIFO; once its reader has left, onReaderGone once and the rest discarded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "extcap-fifo-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "");
    await assertRejects(() => BufferedOutput.openFifo(`${dir}/file`), OutputError, "is not a FIFO");
    await assertRejects(
      () => BufferedOutput.openFifo(`${dir}/none`),
      OutputError,
      "cannot use FIFO",
    );
    const fifo = `${dir}/fifo`;
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert(mk.success);
    const reader = Deno.open(fifo, { read: true });
    let gone = 0;
    const out = await BufferedOutput.openFifo(fifo, {
      flushIntervalMs: 0,
      onReaderGone: () => gone++,
    });
    const r = await reader;
    out.write(new Uint8Array([1, 2, 3]));
    out.flush();
    const buf = new Uint8Array(8);
    assertEquals(await r.read(buf), 3);
    r.close();
    for (let i = 0; i < 3; i++) {
      out.write(new Uint8Array(100));
      out.flush(); // EPIPE: discarded, not thrown
    }
    out.close();
    await Promise.resolve();
    assertEquals(gone, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
