// Truncated TLS, plain HTTP and random bytes on the agent's and the api's TLS ports never crash
// them: each bad connection is dropped and both keep serving real clients (DESIGN §5).
import { isRoot, Landscape } from "../lab/landscape.ts";
import { assertEquals } from "./support/assert.ts";

// The first bytes of a TLS 1.2 ClientHello record, cut off: a peer that hangs up mid-handshake.
const HALF_CLIENT_HELLO = new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]);
const GARBAGE: [string, Uint8Array][] = [
  ["half a ClientHello", HALF_CLIENT_HELLO],
  ["plain HTTP", new TextEncoder().encode("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")],
  ["random bytes", crypto.getRandomValues(new Uint8Array(4096))],
  ["nothing at all", new Uint8Array(0)],
];

async function sendGarbage(hostname: string, port: number, bytes: Uint8Array): Promise<void> {
  const conn = await Deno.connect({ hostname, port });
  try {
    if (bytes.byteLength) await conn.write(bytes);
    // Read whatever the server answers (an alert, or nothing) until it closes, bounded in time.
    const buf = new Uint8Array(1024);
    const deadline = setTimeout(() => conn.close(), 3000);
    try {
      while ((await conn.read(buf)) !== null) { /* drain */ }
    } catch { /* closed by us at the deadline or reset by the server: both fine */ }
    clearTimeout(deadline);
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

Deno.test({
  name: "garbage on the agent's and the api's TLS ports is dropped; both keep serving" +
    (isRoot() ? "" : " (ignored: needs root for the lab)"),
  ignore: !isRoot(),
  async fn() {
    const lab = await Landscape.start({ groups: { router: 1 } });
    try {
      const vm = lab.vms[0];
      const api = new URL(await lab.startApi());
      const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
      try {
        for (const [what, bytes] of GARBAGE) {
          await sendGarbage(vm.ip, vm.agentPort, bytes);
          const agent = await lab.fetchAgent(vm, "/health");
          assertEquals(agent.status, 200, `agent after ${what}`);
          await agent.body?.cancel();
          await sendGarbage(api.hostname, Number(api.port), bytes);
          const health = await fetch(new URL("/health", api), { client });
          assertEquals(health.status, 200, `api after ${what}`);
          await health.body?.cancel();
        }
      } finally {
        client.close();
      }
    } finally {
      await lab.stop();
    }
  },
});
