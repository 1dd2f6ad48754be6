/**
 * Fixtures of the extcap tests: an unsigned JWT with given claims (the client only reads it), a
 * HOME with a bosh config and optionally a cf login, and loopback apis for the CF route that speak
 * the api's protocol.
 */
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../../protocol/frame_codec.ts";
import { API_SOURCE } from "../../server/merge.ts";

export const SPACE_GUID = "6b4f2c1e-3a5d-4e8f-9b0a-1c2d3e4f5a6b";
export const now = () => Math.floor(Date.now() / 1000);

export function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) =>
    btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "RS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

/** A HOME with a bosh config (environment "lab", no login) and optionally a cf login. */
export async function makeHome(cf?: Record<string, unknown>): Promise<string> {
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

export const cfLogin = (token: string) => ({
  ConfigVersion: 4,
  Target: "https://api.sys.example.com",
  AuthorizationEndpoint: "https://login.sys.example.com",
  AccessToken: `bearer ${token}`,
  RefreshToken: "",
  OrganizationFields: { GUID: "o", Name: "o1" },
  SpaceFields: { GUID: SPACE_GUID, Name: "s1" },
});

function hello(socket: WebSocket, id: string): void {
  socket.send(encodeJsonFrame(FrameKind.HELLO, API_SOURCE, {
    protocol_version: 1,
    min_protocol_version: 1,
    component: "api",
    version: "test",
    id,
  }));
}

/** SOURCE of instance `index` of my-app, named `my-app/INDEX (guid-INDEX) eth0` in the file. */
function source(socket: WebSocket, index: number): void {
  socket.send(encodeJsonFrame(FrameKind.SOURCE, index, {
    origin: `my-app/${index}`,
    interface: "eth0",
    link_type: 1,
    snaplen: 65535,
    instance: { group: "my-app", index, id: `guid-${index}` },
  }));
}

/** One packet of `size` bytes, stamped now. */
function packet(socket: WebSocket, index: number, size: number): void {
  const data = new Uint8Array(size).fill(0x40 + index);
  const tsNs = BigInt(Date.now()) * 1_000_000n;
  socket.send(encodePacketsFrame(index, 1, encodeRecords([{ tsNs, data }])));
}

/** A loopback api for the CF route: 2 sources with a packet each, END after the client's stop. */
/** The client's END: the api ends a capture with it and then closes the socket. */
function end(socket: WebSocket): void {
  socket.send(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
  socket.close(1000, "capture ended");
}

/**
 * A loopback api for the CF route: instances 0 and 2 of my-app with a packet each, END after the
 * client's stop; with `deny`, PERMISSION_DENIED instead. `seen` has the route, start and stop.
 */
export function loopbackApi(deny?: string) {
  const seen: { path?: string; start?: Record<string, unknown>; stopped: boolean } = {
    stopped: false,
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen.path = new URL(req.url).pathname;
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.type === "stop") {
        seen.stopped = true;
        return end(socket);
      }
      seen.start = msg;
      hello(socket, "extcap-test-api");
      if (deny) {
        socket.send(encodeJsonFrame(FrameKind.STATUS, API_SOURCE, {
          type: "PERMISSION_DENIED",
          text: deny,
          origin: "api",
        }));
        socket.close(1008, "permission denied");
        return;
      }
      for (const index of [0, 2]) {
        source(socket, index);
        packet(socket, index, 60);
      }
    };
    return response;
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

/**
 * A loopback CF api that streams packets of instance 0 until the client's stop, then holds END
 * back until `releaseEnd()`, so that a test can act while the client drains.
 */
export function drainingApi() {
  let socket: WebSocket | undefined;
  let endSent = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const seen = { stopped: false, clientClosedFirst: false };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const up = Deno.upgradeWebSocket(req);
    const ws = socket = up.socket;
    ws.onclose = () => {
      clearInterval(timer);
      if (!endSent) seen.clientClosedFirst = true;
    };
    ws.onmessage = (ev) => {
      if (JSON.parse(String(ev.data)).type === "stop") {
        seen.stopped = true;
        clearInterval(timer);
        return;
      }
      hello(ws, "extcap-drain-api");
      source(ws, 0);
      timer = setInterval(() => packet(ws, 0, 1000), 10);
    };
    return up.response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    releaseEnd() {
      endSent = true;
      end(socket!);
    },
    close: () => server.shutdown(),
  };
}
