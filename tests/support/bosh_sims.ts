/**
 * Shared fixture of the Director client and token verifier tests: a per-run PKI, the UAA and
 * Director simulators over HTTPS and a DirectorClient trusting the lab CA, all torn down after
 * the test; and the check that a promise rejects with a given error kind without leaking a token.
 */
import { Pki } from "../../lab/pki.ts";
import { UaaSim } from "../../lab/uaa_sim.ts";
import { DirectorSim, type DirectorSimConfig } from "../../lab/director_sim.ts";
import { DirectorClient } from "../../server/director_client.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";

export interface BoshSims {
  uaa: UaaSim;
  director: DirectorSim;
  client: DirectorClient;
  pki: Pki;
  tls: { cert: string; key: string };
}

export interface BoshSimsOptions {
  /** temp dir prefix */
  prefix: string;
  /** the UAA speaks HTTPS too (default: plain http) */
  uaaTls?: boolean;
  clientTimeoutMs: number;
  /** merged into the Director simulator's config */
  director?: (s: { uaa: UaaSim; pki: Pki }) => Partial<DirectorSimConfig>;
}

export async function withBoshSims(
  o: BoshSimsOptions,
  fn: (sims: BoshSims) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: o.prefix });
  const pki = await Pki.create(dir);
  const cert = await pki.issue("127.0.0.1", { server: true, ips: ["127.0.0.1"] });
  const tls = { cert: cert.cert, key: cert.key };
  let uaa: UaaSim | undefined;
  let director: DirectorSim | undefined;
  let client: DirectorClient | undefined;
  try {
    uaa = await UaaSim.start(o.uaaTls ? { tls } : {});
    director = await DirectorSim.start({ tls, uaaUrl: uaa.url, ...o.director?.({ uaa, pki }) });
    client = new DirectorClient({
      url: director.url,
      caCert: pki.caCert,
      timeoutMs: o.clientTimeoutMs,
    });
    await fn({ uaa, director, client, pki, tls });
  } finally {
    client?.close();
    await director?.stop();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Awaits `p`, which must reject with an instance of `cls` of `kind` whose message matches `re`
 * and contains none of `secrets`; returns the error.
 */
export async function rejectsWith<E extends Error & { kind: string }>(
  p: Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => E,
  kind: E["kind"],
  re: RegExp,
  secrets: string[] = [],
): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assertEquals(e.kind, kind, e.message);
    assertMatch(e.message, re);
    for (const s of secrets) {
      assert(!e.message.includes(s), `error text leaks the token: ${e.message}`);
    }
    return e;
  }
  throw new Error(`expected ${kind}, but the promise resolved`);
}
