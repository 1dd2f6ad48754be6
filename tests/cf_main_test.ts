/**
 * `pcap-cf capture`: flags and cf login → CfStartRequest (pure), the login errors (missing,
 * not targeted, expired client credentials) with their messages and exit codes, help, and one
 * run of the command against a loopback WebSocket server speaking the api's protocol: the route,
 * the bearer token, the start request, and the file read back with tshark (interface names
 * `APP/INDEX (GUID) IFACE`, SHB comment naming org, space and app).
 */
import { cfStartRequest, CfTargetError, describeCfTarget, runCf } from "../cli/cf_main.ts";
import { parseCfCaptureArgs } from "../cli/cf_flags.ts";
import type { CfLogin } from "../cli/cf_config.ts";
import { CfStartRequest } from "../protocol/cf_messages.ts";
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { API_SOURCE } from "../server/merge.ts";
import { run } from "../lab/netns.ts";
import type { UaaSim } from "../lab/uaa_sim.ts";
import { devCfHome } from "./support/cf_uaa.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "./support/assert.ts";

const SPACE_GUID = "6b4f2c1e-3a5d-4e8f-9b0a-1c2d3e4f5a6b";
const APP_GUID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const INSTANCE_GUID = "5c7d9e1f-2a3b-4c5d-6e7f";

const LOGIN: CfLogin = {
  target: "https://api.sys.example.com",
  authorizationEndpoint: "https://login.sys.example.com",
  accessToken: "x",
  refreshToken: "r",
  client: "cf",
  clientSecret: "",
  grantType: "password",
  sslDisabled: false,
  org: { guid: "1b4f2c1e-3a5d-4e8f-9b0a-1c2d3e4f5a6b", name: "o1" },
  space: { guid: SPACE_GUID, name: "s1" },
};

const flags = (...a: string[]) => parseCfCaptureArgs(["capture", ...a, "-o", "x.pcapng"], {});

Deno.test("cf start request: app in the targeted space, process, indexes, filter and limits", () => {
  const req = cfStartRequest(
    flags(
      "my-app",
      "--process",
      "worker",
      "--index",
      "2",
      "--index",
      "0",
      "-i",
      "lo",
      "-f",
      "tcp",
      "--max-packets",
      "5",
      "--duration",
      "30s",
    ),
    LOGIN,
  );
  assertEquals(req, {
    type: "start",
    protocol_version: req.protocol_version,
    cf: { app: "my-app", space_guid: SPACE_GUID, process: "worker", indexes: [0, 2] },
    interface: "lo",
    snaplen: 65535,
    filter: "tcp",
    limits: { duration_ms: 30_000, max_packets: 5 },
  });
  // what the client sends is what the api's schema accepts, unchanged
  assertEquals(CfStartRequest.parse(req), req);
});

Deno.test("cf start request: --org/--space names, --space alone takes the targeted org, --app-guid alone needs no space", () => {
  assertEquals(
    cfStartRequest(flags("a", "--org", "o2", "--space", "s2"), LOGIN).cf,
    { app: "a", org: "o2", space: "s2", process: "web", indexes: [] },
  );
  assertEquals(
    cfStartRequest(flags("a", "--space", "s2"), LOGIN).cf,
    { app: "a", org: "o1", space: "s2", process: "web", indexes: [] },
  );
  const untargeted = { ...LOGIN, org: undefined, space: undefined };
  assertEquals(
    cfStartRequest(flags("--app-guid", APP_GUID), untargeted).cf,
    { app_guid: APP_GUID, process: "web", indexes: [] },
  );
  assertThrows(() => cfStartRequest(flags("a"), untargeted), CfTargetError, "cf target -o ORG");
  assertThrows(
    () => cfStartRequest(flags("a", "--space", "s2"), untargeted),
    CfTargetError,
    "pass --org",
  );
  for (const req of [cfStartRequest(flags("--app-guid", APP_GUID), untargeted)]) {
    assertEquals(CfStartRequest.parse(req), req);
  }
});

Deno.test("cf file comment names org, space and app", () => {
  assertEquals(
    describeCfTarget(flags("my-app", "--index", "1"), LOGIN),
    "org o1, space s1, app my-app, process web, instances 1",
  );
  assertEquals(
    describeCfTarget(flags("my-app", "--org", "o2", "--space", "s2"), LOGIN),
    "org o2, space s2, app my-app, process web",
  );
  assertEquals(
    describeCfTarget(flags("--app-guid", APP_GUID), LOGIN),
    `app guid ${APP_GUID}, process web`,
  );
});

function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) =>
    btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "RS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

interface Run {
  code: number;
  stderr: string;
  dir: string;
}

/** runs `pcap-cf capture ARGS` with CF_HOME holding `config` (undefined: none). */
async function cf(
  config: Record<string, unknown> | undefined,
  args: string[],
  check: (r: Run) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cf_main_test" });
  try {
    if (config) {
      await Deno.mkdir(`${dir}/.cf`);
      await Deno.writeTextFile(`${dir}/.cf/config.json`, JSON.stringify(config));
    }
    let stderr = "";
    const code = await runCf(["capture", ...args, "-o", `${dir}/out.pcapng`], {
      env: { CF_HOME: dir },
      writeErr: (s) => (stderr += s),
      stderrIsTty: false,
      stdoutIsTty: false,
      signals: [],
    });
    await check({ code, stderr, dir });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const now = () => Math.floor(Date.now() / 1000);
const baseConfig = (token: string, extra: Record<string, unknown> = {}) => ({
  ConfigVersion: 4,
  Target: "https://api.sys.example.com",
  AuthorizationEndpoint: "https://login.sys.example.com",
  AccessToken: `bearer ${token}`,
  RefreshToken: "",
  ...extra,
});

async function assertNoFile(dir: string) {
  const exists = await Deno.stat(`${dir}/out.pcapng`).then(() => true, () => false);
  assert(!exists, "no output file is left after a refusal");
}

Deno.test("pcap-cf: no cf login, not logged in, not targeted → exit 1 with what to run", async () => {
  await cf(undefined, ["my-app"], async ({ code, stderr, dir }) => {
    assertEquals(code, 1);
    assertMatch(stderr, /^pcap-cf: cf config .*config\.json does not exist; run "cf api URL"/);
    await assertNoFile(dir);
  });
  await cf({ ConfigVersion: 4, Target: "https://api.x.com" }, ["my-app"], ({ code, stderr }) => {
    assertEquals(code, 1);
    assertStringIncludes(stderr, 'not logged in to https://api.x.com; run "cf login"');
  });
  const valid = jwt({ user_name: "dev", exp: now() + 3600 });
  await cf(baseConfig(valid), ["my-app"], async ({ code, stderr, dir }) => {
    assertEquals(code, 1);
    assertStringIncludes(stderr, "no space is targeted in the cf login");
    assertStringIncludes(stderr, '"cf target -o ORG -s SPACE"');
    assert(!stderr.includes(valid), "the token is never printed");
    await assertNoFile(dir);
  });
});

Deno.test("pcap-cf: an expired client-credentials login says to run `cf auth` again (exit 1)", async () => {
  const expired = jwt({ client_id: "ci", exp: now() - 60 });
  const config = baseConfig(expired, {
    UAAGrantType: "client_credentials",
    SpaceFields: { GUID: SPACE_GUID, Name: "s1" },
  });
  await cf(config, ["my-app"], async ({ code, stderr, dir }) => {
    assertEquals(code, 1);
    assertStringIncludes(stderr, "client-credentials token for https://api.sys.example.com");
    assertStringIncludes(stderr, "run `cf auth` again");
    await assertNoFile(dir);
  });
});

async function pcapCf(args: string[]) {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "cf", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("pcap-cf: usage errors exit 2; help exits 0 and explains login and targets", async () => {
  const help = await pcapCf(["capture", "--help"]);
  assertEquals(help.code, 0, help.stderr);
  for (
    const text of ["--app-guid", "--index", "cf target -o ORG -s SPACE", 'run "cf auth" again']
  ) {
    assertStringIncludes(help.stdout, text);
  }
  const noFile = await pcapCf(["capture", "my-app"]);
  assertEquals(noFile.code, 2);
  assertStringIncludes(noFile.stderr, "pcap-cf capture: missing -o/--file");
  const unknown = await pcapCf(["frobnicate"]);
  assertEquals(unknown.code, 2);
  assertStringIncludes(unknown.stderr, 'pcap-cf: unknown command "frobnicate"');
  assertEquals((await pcapCf([])).code, 2);
  assertEquals((await pcapCf(["help", "capture"])).code, 0);
});

Deno.test("pcap-cf: against a loopback api: route, bearer token, start request; the file names APP/INDEX (GUID) IFACE and org/space/app", async () => {
  const token = jwt({ user_name: "dev", exp: now() + 3600 });
  let seen: { path: string; auth: string | null; start?: unknown } | undefined;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen = { path: new URL(req.url).pathname, auth: req.headers.get("authorization") };
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      const msg = JSON.parse(ev.data);
      if (msg.type !== "start") return;
      seen!.start = msg;
      socket.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
        protocol_version: 1,
        min_protocol_version: 1,
        component: "api",
        version: "test",
        id: "cf-test-api",
      }));
      for (const index of [0, 2]) {
        socket.send(encodeJsonFrame(FrameKind.SOURCE, index, {
          origin: `my-app/${index}`,
          interface: "eth0",
          link_type: 1,
          snaplen: 65535,
          instance: { group: "my-app", index, id: `${INSTANCE_GUID}-${index}` },
        }));
        const pkt = new Uint8Array(60).fill(0x40 + index);
        socket.send(
          encodePacketsFrame(index, 1, encodeRecords([{ tsNs: 1_000_000_000n, data: pkt }])),
        );
      }
      socket.send(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
      socket.close(1000, "capture ended"); // as the api does after END
    };
    return response;
  });
  try {
    await cf(
      baseConfig(token, {
        OrganizationFields: { GUID: LOGIN.org!.guid, Name: "o1" },
        SpaceFields: { GUID: SPACE_GUID, Name: "s1" },
      }),
      ["my-app", "--index", "0", "--index", "2", "-u", `http://127.0.0.1:${server.addr.port}`],
      async ({ code, stderr, dir }) => {
        assertEquals(code, 0, stderr);
        assertEquals(seen?.path, "/v1/capture/cf");
        assertEquals(seen?.auth, `bearer ${token}`);
        assertEquals((seen?.start as CfStartRequest).cf, {
          app: "my-app",
          space_guid: SPACE_GUID,
          process: "web",
          indexes: [0, 2],
        });
        const file = `${dir}/out.pcapng`;
        const names = await run("tshark", [
          "-r",
          file,
          "-T",
          "fields",
          "-e",
          "frame.interface_name",
        ]);
        assertEquals(names.stdout.trim().split("\n").sort(), [
          `my-app/0 (${INSTANCE_GUID}-0) eth0`,
          `my-app/2 (${INSTANCE_GUID}-2) eth0`,
        ]);
        const info = await run("capinfos", ["-k", file]);
        assertStringIncludes(info.stdout, "org o1, space s1, app my-app, process web");
        assert(!stderr.includes(token), "the token is never printed");
      },
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("pcap-cf: a token the api refuses is refreshed at the lab UAA once, written back, and the capture retried", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cf_main_retry" });
  let uaa: UaaSim | undefined;
  let auths: (string | null)[] = [];
  let refusals = 1;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    // only capture attempts count: the targets list before a capture is a plain POST
    if (req.headers.get("upgrade") !== "websocket") return new Response(null, { status: 404 });
    auths.push(req.headers.get("authorization"));
    const attempt = auths.length;
    // The api refuses a token at the upgrade (401, no socket); a STATUS refusal on the socket
    // (older apis) is retried the same way: the first attempt sees the one, later ones the other.
    if (attempt === 1) {
      return Response.json({ type: "UNAUTHENTICATED", text: "the token was revoked" }, {
        status: 401,
      });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (ev) => {
      if (typeof ev.data !== "string" || JSON.parse(ev.data).type !== "start") return;
      socket.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
        protocol_version: 1,
        min_protocol_version: 1,
        component: "api",
        version: "test",
        id: "cf-retry-api",
      }));
      if (attempt <= refusals) {
        socket.send(encodeJsonFrame(FrameKind.STATUS, API_SOURCE, {
          type: "UNAUTHENTICATED",
          text: "the token was revoked",
          origin: "api",
        }));
      } else {
        socket.send(encodeJsonFrame(FrameKind.SOURCE, 0, {
          origin: "my-app/0",
          interface: "eth0",
          link_type: 1,
          snaplen: 65535,
          instance: { group: "my-app", index: 0, id: INSTANCE_GUID },
        }));
        const pkt = new Uint8Array(60).fill(0x41);
        socket.send(encodePacketsFrame(0, 1, encodeRecords([{ tsNs: 1_000_000_000n, data: pkt }])));
      }
      socket.send(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
      socket.close(1000, "done");
    };
    return response;
  });
  try {
    const home = await devCfHome(dir, { GUID: SPACE_GUID, Name: "s1" });
    uaa = home.uaa;
    const { tokens, configPath } = home;
    const capture = async () => {
      let stderr = "";
      const code = await runCf([
        "capture",
        "my-app",
        "-o",
        `${dir}/out.pcapng`,
        "-u",
        `http://127.0.0.1:${server.addr.port}`,
        "--ca-cert",
        `${dir}/ca.pem`,
      ], {
        env: { CF_HOME: dir },
        writeErr: (s) => (stderr += s),
        stderrIsTty: false,
        stdoutIsTty: false,
        signals: [],
      });
      return { code, stderr };
    };
    const { code, stderr } = await capture();
    assertEquals(code, 0, stderr);
    assertEquals(auths.length, 2, "one retry");
    assertEquals(auths[0], `bearer ${tokens.access_token}`);
    const stored = JSON.parse(await Deno.readTextFile(configPath)).AccessToken;
    assert(stored !== `bearer ${tokens.access_token}`, "the refreshed token is written back");
    assertEquals(auths[1], stored);
    assertStringIncludes(stderr, "refreshing it and retrying");
    assert(!stderr.includes("capture failed"), stderr);
    const names = await run("tshark", [
      "-r",
      `${dir}/out.pcapng`,
      "-T",
      "fields",
      "-e",
      "frame.interface_name",
    ]);
    assertEquals(names.stdout.trim(), `my-app/0 (${INSTANCE_GUID}) eth0`);
    // refused again after the refresh: reported, not retried forever, no file left
    await Deno.remove(`${dir}/out.pcapng`);
    auths = [];
    refusals = 2;
    const again = await capture();
    assertEquals(again.code, 1);
    assertEquals(auths.length, 2, "exactly one retry");
    assertStringIncludes(
      again.stderr,
      "pcap-cf: capture failed: UNAUTHENTICATED: the token was revoked",
    );
    assert(!(await Deno.stat(`${dir}/out.pcapng`).then(() => true, () => false)));
  } finally {
    await server.shutdown();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
