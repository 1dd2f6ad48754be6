/**
 * The capture stream's socket (server/agent_stream_tls.ts) against a mutual-TLS node:https server
 * like the agent's: a body nobody reads stays in TCP (the server's writes stall, the api holds
 * nothing), and is then read whole and intact; the server name, the configured CA and the client
 * certificate are what they are for the api's other agent requests.
 */
import { createServer, type Server } from "node:https";
import { X509Certificate } from "node:crypto";
import { type CertPair, Pki } from "../lab/pki.ts";
import { requestOverSocket, usable } from "../server/agent_stream_tls.ts";
import { issuedByOneOf } from "../lib/ca_only_tls.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./support/assert.ts";

const NAME = "pcap-agent.service.cf.internal";
const TOTAL = 64 * 1024 * 1024;
const CHUNK = 256 * 1024;

interface Fixture {
  dir: string;
  pki: Pki;
  agent: CertPair;
  client: CertPair;
}

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "agent-stream-tls-" });
  try {
    const pki = await Pki.create(dir, "stream-ca");
    // As BOSH issues them: the DNS name only, no IP SAN (the api dials the IP).
    const agent = await pki.issue("pcap-agent", { server: true, dns: [NAME] });
    const client = await pki.issue("pcap-api", { client: true });
    await fn({ dir, pki, agent, client });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A server streaming TOTAL bytes (a byte pattern) as a chunked body, honouring back-pressure;
 * with `cutAt` it destroys the connection once that many bytes are written.
 */
async function streamingServer(f: Fixture, cutAt = Infinity) {
  const state = { written: 0, finished: false, clientNames: [] as string[] };
  const server: Server = createServer({
    key: f.agent.key,
    cert: f.agent.cert,
    ca: f.pki.caCert,
    requestCert: true,
    rejectUnauthorized: true,
  }, (req, res) => {
    const peer = (req.socket as unknown as { getPeerCertificate(): { subject?: { CN?: string } } })
      .getPeerCertificate();
    state.clientNames.push(peer.subject?.CN ?? "");
    if (req.url !== "/captures") {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ type: "DRAINING", text: "the agent is shutting down" }));
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "x-pcap-capture-id": "c1" });
    const pump = () => {
      while (state.written < TOTAL) {
        const chunk = pattern(state.written, CHUNK);
        state.written += CHUNK;
        if (state.written > cutAt) return void res.write(chunk, () => res.socket?.destroy());
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end(() => state.finished = true);
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    state,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function pattern(offset: number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (offset + i) % 251;
  return b;
}

/**
 * Bytes the kernel holds on the connection to `port`: the client socket's receive queue plus the
 * server socket's send queue (on loopback either side may hold the backlog, depending on how the
 * receive window has grown).
 */
async function kernelQueued(port: number): Promise<number> {
  const out = await new Deno.Command("ss", {
    args: ["-tn", "state", "established", `( dport = :${port} or sport = :${port} )`],
  }).output();
  let total = 0;
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:(\d+)/.exec(line);
    if (!m) continue;
    // the client's socket: its Recv-Q; the server's (local port = port): its Send-Q
    total += Number(m[3]) === port ? Number(m[2]) : Number(m[1]);
  }
  return total;
}

Deno.test("agent stream socket: an unread body stays in TCP, then arrives whole", () =>
  withFixture(async (f) => {
    const srv = await streamingServer(f);
    const abort = new AbortController();
    try {
      const tls = { ca: f.pki.caCert, cert: f.client.cert, key: f.client.key, serverName: NAME };
      assert(usable({ ...tls, skipVerify: false }), "Deno's TLS hooks are available");
      const res = await requestOverSocket(
        "127.0.0.1",
        srv.port,
        { ...tls, skipVerify: false },
        { method: "POST", path: "/captures", body: "{}" },
        abort.signal,
      );
      assertEquals(res.status, 200);
      assertEquals(res.header("x-pcap-capture-id"), "c1");
      assertEquals(srv.state.clientNames, ["pcap-api"], "the client certificate was presented");
      const reader = res.body!.getReader({ mode: "byob" });
      let got = 0, bad = -1;
      const take = async () => {
        const r = await reader.read(new Uint8Array(64 * 1024));
        if (r.done) return false;
        const v = r.value!;
        for (let i = 0; i < v.byteLength && bad < 0; i++) {
          if (v[i] !== (got + i) % 251) bad = got + i;
        }
        got += v.byteLength;
        return true;
      };
      while (got < 1024 * 1024) await take();
      // Not reading: the server's writes must stall with the backlog in the kernel (the
      // connection's queues), not in the client's memory. A client that went on reading would let
      // the server finish its 64 MiB instead.
      const deadline = Date.now() + 30_000;
      let last = -1, still = 0;
      while (true) {
        const written = srv.state.written;
        const queued = await kernelQueued(srv.port);
        still = written === last ? still + 1 : 0;
        if (still >= 3 && queued > 64 * 1024) break;
        assert(!srv.state.finished, `the server wrote all ${TOTAL} bytes to a client not reading`);
        assert(Date.now() < deadline, `no stall: written ${written}, kernel queues ${queued}`);
        last = written;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert(!srv.state.finished, "the server finished while the client held the body back");
      assert(srv.state.written < TOTAL / 2, `the server wrote ${srv.state.written} bytes`);
      while (await take());
      assertEquals(bad, -1, `payload corrupted at byte ${bad}`);
      assertEquals(got, TOTAL);
    } finally {
      abort.abort();
      await srv.close();
    }
  }));

Deno.test("agent stream socket: the body read straight from the socket (chunks)", () =>
  withFixture(async (f) => {
    const tls = {
      ca: f.pki.caCert,
      cert: f.client.cert,
      key: f.client.key,
      serverName: NAME,
      skipVerify: false,
    };
    const req = { method: "POST" as const, path: "/captures", body: "{}" };
    // whole and intact, then null at the end of the chunked body
    const srv = await streamingServer(f);
    const abort = new AbortController();
    try {
      const res = await requestOverSocket("127.0.0.1", srv.port, tls, req, abort.signal);
      assertEquals(res.status, 200);
      const chunks = res.chunks!;
      let got = 0, bad = -1, reads = 0;
      for (let v = await chunks.read(); v !== null; v = await chunks.read()) {
        reads++;
        for (let i = 0; i < v.byteLength && bad < 0; i++) {
          if (v[i] !== (got + i) % 251) bad = got + i;
        }
        got += v.byteLength;
      }
      assertEquals(bad, -1, `payload corrupted at byte ${bad}`);
      assertEquals(got, TOTAL);
      assert(reads > TOTAL / (64 * 1024) / 2, `${reads} reads: views of a 64 KiB buffer`);
      assertEquals(await chunks.read(), null, "the end stays the end");
    } finally {
      abort.abort();
      await srv.close();
    }
    // a connection cut inside the body is an error, not an end
    const cut = await streamingServer(f, 4 * 1024 * 1024);
    const abort2 = new AbortController();
    try {
      const res = await requestOverSocket("127.0.0.1", cut.port, tls, req, abort2.signal);
      const chunks = res.chunks!;
      let got = 0;
      const e = await assertRejects(async () => {
        for (let v = await chunks.read(); v !== null; v = await chunks.read()) got += v.byteLength;
      });
      assertMatch(String(e), /closed before the body ended|reset|broken|eof/i);
      assert(got > 0 && got < TOTAL, `${got} bytes before the cut`);
    } finally {
      abort2.abort();
      await cut.close();
    }
  }));

Deno.test("agent stream socket: server name, CA only, error bodies, abort", () =>
  withFixture(async (f) => {
    const srv = await streamingServer(f);
    try {
      const base = { ca: f.pki.caCert, cert: f.client.cert, key: f.client.key, skipVerify: false };
      const abort = new AbortController();
      const post = (tls: typeof base & { serverName?: string }, path = "/captures") =>
        requestOverSocket(
          "127.0.0.1",
          srv.port,
          tls,
          { method: "POST", path, body: "{}" },
          abort.signal,
        );
      // The certificate names no IP: without server_name the dialled address fails verification.
      const e1 = await assertRejects(() => post(base));
      assertMatch(e1.message, /certificate/);
      const e2 = await assertRejects(() => post({ ...base, serverName: "other.internal" }));
      assertMatch(e2.message, /certificate not valid for name/);
      // Another CA: refused by the TLS library.
      const other = await Pki.create(`${f.dir}/other`, "other-ca");
      const e3 = await assertRejects(() => post({ ...base, ca: other.caCert, serverName: NAME }));
      assertMatch(e3.message, /certificate/);
      // A refusal's JSON body is readable like fetch's.
      const refused = await post({ ...base, serverName: NAME }, "/other");
      assertEquals(refused.status, 503);
      assertEquals((await new Response(refused.body).json()).type, "DRAINING");
      // An abort (the idle timer, the client gone) fails a pending read with the signal's reason.
      const res = await post({ ...base, serverName: NAME });
      const reader = res.body!.getReader();
      await reader.read();
      abort.abort(new DOMException("agent idle", "TimeoutError"));
      await assertRejects(async () => {
        while (!(await reader.read()).done);
      });
      await assertRejects(() => post({ ...base, serverName: NAME }), DOMException, "agent idle");
      // skip_verify cannot be expressed with Deno.connectTls: that stays on node:https.
      assert(!usable({ ...base, skipVerify: true }));
    } finally {
      await srv.close();
    }
  }));

Deno.test("issuedByOneOf: the leaf must be issued by a configured CA certificate", () =>
  withFixture(async (f) => {
    const other = await Pki.create(`${f.dir}/other`, "other-ca");
    const der = new Uint8Array(new X509Certificate(f.agent.cert).raw);
    const own = new X509Certificate(f.pki.caCert);
    const foreign = new X509Certificate(other.caCert);
    assert(issuedByOneOf(der, [own]));
    assert(issuedByOneOf(der, [foreign, own]), "any CA of the bundle");
    assert(!issuedByOneOf(der, [foreign]));
    assert(!issuedByOneOf(der, []));
    // A certificate that names the CA as issuer but is not signed by it.
    const impostor = await Pki.create(`${f.dir}/impostor`, "stream-ca");
    assert(!issuedByOneOf(der, [new X509Certificate(impostor.caCert)]), "same name, other key");
  }));
