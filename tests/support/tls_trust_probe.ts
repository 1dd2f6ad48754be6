/**
 * Run by tests/tls_trust_test.ts in a process whose default roots hold a second lab CA
 * (DENO_TLS_CA_STORE=system, SSL_CERT_FILE=that CA): a stand-in for a publicly trusted CA. It
 * connects every client path that takes a configured CA to a server whose certificate that
 * "system" CA signed, and to one the configured CA signed, and prints one JSON line of results.
 *
 *   deno run -A tests/support/tls_trust_probe.ts '{"ca": PEM, "other": port, "good": port}'
 */
import { createTlsFetch, tlsTransport } from "../../lib/tls_fetch.ts";
import { fetchTrusting } from "../../cli/uaa_token.ts";
import { ApiSession } from "../../cli/api_session.ts";
import { TlsWebSocket } from "../../cli/tls_websocket.ts";
import { requestOverSocket } from "../../server/agent_stream_tls.ts";

interface Args {
  ca: string;
  other: number;
  good: number;
}

type Outcome = { ok: true; detail: string } | { ok: false; error: string };

async function outcome(f: () => Promise<string>): Promise<Outcome> {
  try {
    return { ok: true, detail: await f() };
  } catch (e) {
    const err = e as Error & { code?: string; cause?: Error };
    return { ok: false, error: [err.message, err.code, err.cause?.message].join(" | ") };
  }
}

async function body(res: Response): Promise<string> {
  return `${res.status} ${await res.text()}`;
}

/** Opens a WebSocket; resolves with how it ended (the servers close it with 4000 once open). */
function wsOutcome(url: string, client?: Deno.HttpClient): Promise<Outcome> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, client ? { client } : undefined);
    let opened = false;
    ws.onopen = () => (opened = true);
    ws.onerror = () => {};
    ws.onclose = (ev) =>
      resolve(
        opened ? { ok: true, detail: `closed ${ev.code}` } : { ok: false, error: "not opened" },
      );
  });
}

async function sessionOutcome(url: string, ca: string): Promise<Outcome> {
  const s = new ApiSession(
    {
      apiUrl: url,
      path: "/ws",
      authorization: "Bearer probe",
      caCert: ca,
      connectTimeoutMs: 20_000,
    },
    { onEvent() {}, onProtocolError() {} },
  );
  const c = await s.closed;
  return c.opened ? { ok: true, detail: `closed ${c.code}` } : { ok: false, error: c.error ?? "" };
}

/** The CLI's WebSocket over its node:tls fallback transport. */
function tlsWsOutcome(url: string, ca: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const ws = new TlsWebSocket(new URL(url), ca, { Authorization: "Bearer probe" }, {
      transport: "node:tls",
    });
    let opened = false, error = "";
    ws.onopen = () => (opened = true);
    ws.onerror = (e) => error ||= e.message;
    ws.onclose = (ev) =>
      resolve(opened ? { ok: true, detail: `closed ${ev.code}` } : { ok: false, error });
  });
}

if (import.meta.main) {
  const a = JSON.parse(Deno.args[0]) as Args;
  const other = `https://localhost:${a.other}`;
  const good = `https://localhost:${a.good}`;
  const results: Record<string, Outcome | string> = {};
  // controls: the second CA is trusted by default here, and caCerts only adds to it
  results.control_default_fetch = await outcome(async () => body(await fetch(`${other}/`)));
  const additive = Deno.createHttpClient({ caCerts: [a.ca] });
  results.control_caCerts_fetch = await outcome(async () =>
    body(await fetch(`${other}/`, { client: additive }))
  );
  results.control_caCerts_websocket = await wsOutcome(`wss://localhost:${a.other}/ws`, additive);
  additive.close();
  // the code paths with a configured CA
  results.transport = tlsTransport({ ca: a.ca });
  const tls = createTlsFetch({ ca: a.ca });
  results.tls_fetch_other = await outcome(async () => body(await tls.fetch(`${other}/`)));
  results.tls_fetch_good = await outcome(async () => body(await tls.fetch(`${good}/`)));
  tls.close();
  const cli = fetchTrusting(a.ca);
  results.cli_fetch_other = await outcome(async () => body(await cli.fetch(`${other}/`)));
  results.cli_fetch_good = await outcome(async () => body(await cli.fetch(`${good}/`)));
  cli.close();
  // the api's agent capture streams: Deno.connectTls, whose caCerts add to the default roots
  results.control_connectTls_other = await outcome(async () => {
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port: a.other, caCerts: [a.ca] });
    await conn.handshake();
    conn.close();
    return "handshake done";
  });
  const stream = async (port: number) => {
    const tls = { ca: a.ca, cert: "", key: "", skipVerify: false };
    const req = { method: "GET" as const, path: "/" };
    const res = await requestOverSocket("127.0.0.1", port, tls, req, new AbortController().signal);
    return body(new Response(res.body, { status: res.status }));
  };
  results.agent_stream_other = await outcome(() => stream(a.other));
  results.agent_stream_good = await outcome(() => stream(a.good));
  // the CLI's WebSocket: Deno.connectTls and the issuer check, and its node:tls fallback
  results.cli_session_other = await sessionOutcome(other, a.ca);
  results.cli_session_good = await sessionOutcome(good, a.ca);
  results.cli_ws_node_other = await tlsWsOutcome(`wss://localhost:${a.other}/ws`, a.ca);
  results.cli_ws_node_good = await tlsWsOutcome(`wss://localhost:${a.good}/ws`, a.ca);
  console.log(JSON.stringify(results));
}
