// cli/tls_websocket.ts when the api refuses the upgrade: the status in Deno's wording (what
// api_session.ts reads), and the api's own `{type, text}` reason from a small JSON body (a 502
// names the upstream that failed). A body that is not the api's, or one over the 8 KiB bound, is
// not read as a reason; either way the close event follows.
import { Pki } from "../lab/pki.ts";
import { TlsWebSocket } from "../cli/tls_websocket.ts";
import { assertEquals } from "./support/assert.ts";

async function refused(
  answer: () => Response,
): Promise<{ error: string; refusal: TlsWebSocket["refusal"] }> {
  const dir = await Deno.makeTempDir({ prefix: "tls_websocket" });
  const pki = await Pki.create(`${dir}/pki`);
  const leaf = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
  const { promise, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: leaf.cert,
    key: leaf.key,
    onListen: (a) => resolve(a.port),
  }, answer);
  try {
    const port = await promise;
    const ws = new TlsWebSocket(new URL(`wss://127.0.0.1:${port}/v1/capture/cf`), pki.caCert, {
      Authorization: "bearer x",
    });
    let error = "";
    ws.onerror = (e) => error ||= e.message;
    await new Promise<void>((r) => ws.onclose = () => r());
    return { error, refusal: ws.refusal };
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tls websocket: a refused upgrade's status, and the api's reason from its JSON body", async () => {
  const text =
    "the Cloud Controller at https://cc did not answer within 2000 ms; check that it is up";
  const r = await refused(() => Response.json({ type: "CONNECTION_ERROR", text }, { status: 502 }));
  assertEquals(r, {
    error: "Invalid status code: 502",
    refusal: { type: "CONNECTION_ERROR", text },
  });
  const html = await refused(() => new Response("<html>bad gateway</html>", { status: 502 }));
  assertEquals(html, { error: "Invalid status code: 502", refusal: undefined });
  const big = await refused(() =>
    Response.json({ type: "CONNECTION_ERROR", text: "x".repeat(9000) }, { status: 502 })
  );
  assertEquals(big, { error: "Invalid status code: 502", refusal: undefined });
  const empty = await refused(() => new Response(null, { status: 401 }));
  assertEquals(empty, { error: "Invalid status code: 401", refusal: undefined });
});
