// Token verification against the lab's simulated UAA and Director over real HTTPS, with real
// RS256 JWTs: the full matrix of good and bad tokens, key refetch with its rate limit, and the
// connection failures. Every error text is checked for token leakage.
import { UaaSim } from "../lab/uaa_sim.ts";
import { buildClaims, generateSigningKey, type SigningKey, signRs256 } from "../lab/token_mint.ts";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { DirectorClient } from "../server/director_client.ts";
import { AuthError, type AuthErrorKind, TokenVerifier } from "../server/token_verifier.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { type BoshSims, rejectsWith, withBoshSims } from "./support/bosh_sims.ts";

interface Lab extends BoshSims {
  verifier: TokenVerifier;
  /** advances the verifier's clock (ms) */
  advance(ms: number): void;
  newVerifier(opts?: { timeoutMs?: number }): TokenVerifier;
}

function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  return withBoshSims({
    prefix: "pcap_tv_",
    uaaTls: true,
    clientTimeoutMs: 3000,
    director: ({ pki }) => ({ uaaCaCert: pki.caCert }),
  }, async (sims) => {
    let offset = 0;
    const c = sims.client;
    const make = (o: { timeoutMs?: number } = {}) =>
      new TokenVerifier({
        source: c,
        requiredScope: "bosh.admin",
        timeoutMs: o.timeoutMs ?? 3000,
        fetch: c.uaaFetch,
        now: () => Date.now() + offset,
      });
    await fn({ ...sims, verifier: make(), advance: (ms) => (offset += ms), newVerifier: make });
  });
}

function rejects(
  p: Promise<unknown>,
  kind: AuthErrorKind,
  re: RegExp,
  token?: string,
): Promise<AuthError> {
  // Neither the token nor any of its segments may leak into the text.
  const parts = token ? token.split(".").filter((s) => s.length > 8) : [];
  return rejectsWith(p, AuthError, kind, re, parts);
}

Deno.test("token verifier: valid user and client tokens; Director-uuid scope", async () => {
  await withLab(async ({ uaa, director, verifier }) => {
    const v = await verifier.verify(await uaa.mintValid({ userName: "alice" }));
    assertEquals(v.user, "alice");
    assertEquals(v.clientId, "bosh_cli");
    assert(v.scopes.includes("bosh.admin"));
    assertEquals(v.claims.iss, uaa.issuer);

    const c = await verifier.verify(
      await uaa.mintValid({ clientId: "ci-bot", scopes: ["bosh.admin"] }),
    );
    assertEquals(c.user, "ci-bot");

    const d = await verifier.verify(
      await uaa.mintValid({ scopes: ["openid", `bosh.${director.uuid}.admin`] }),
    );
    assertEquals(d.scopes, ["openid", `bosh.${director.uuid}.admin`]);
    // Exactly one key fetch for all of that.
    assertEquals(verifier.fetchCount, 1);
  });
});

Deno.test("token verifier: expired, not yet valid, leeway", async () => {
  await withLab(async ({ uaa, verifier }) => {
    const expired = await uaa.mintExpired({}, 3600);
    await rejects(verifier.verify(expired), "UNAUTHENTICATED", /expired/, expired);
    // 10 s past exp is inside the 30 s leeway.
    const v = await verifier.verify(await uaa.mintExpired({}, 10));
    assertEquals(v.user, "admin");
    const future = await uaa.mintNotYetValid();
    await rejects(verifier.verify(future), "UNAUTHENTICATED", /not valid yet|future/, future);
  });
});

Deno.test("token verifier: iat in the future without nbf is rejected", async () => {
  await withLab(async ({ uaa, verifier, advance }) => {
    const token = await uaa.mintValid({ ttlSec: 7200 });
    advance(-3600 * 1000); // the api's clock is an hour behind the token's iat
    await rejects(verifier.verify(token), "UNAUTHENTICATED", /future \(iat\)/, token);
  });
});

Deno.test("token verifier: forged tokens", async () => {
  await withLab(async ({ uaa, verifier }) => {
    const wrongSig = await uaa.mintWrongKey();
    await rejects(verifier.verify(wrongSig), "UNAUTHENTICATED", /signature/, wrongSig);
    const fetches = verifier.fetchCount;
    const none = uaa.mintAlgNone();
    await rejects(verifier.verify(none), "UNAUTHENTICATED", /algorithm "none"/, none);
    const hs = uaa.mintHs256WithPublicKey();
    await rejects(verifier.verify(hs), "UNAUTHENTICATED", /algorithm "HS256"/, hs);
    // Refused from the header alone: no key traffic.
    assertEquals(verifier.fetchCount, fetches);
    const wrongIss = await uaa.mintWrongIssuer();
    await rejects(verifier.verify(wrongIss), "UNAUTHENTICATED", /iss/, wrongIss);
    const garbage = UaaSim.garbageToken();
    await rejects(verifier.verify(garbage), "UNAUTHENTICATED", /not a JWT/, garbage);
    await rejects(verifier.verify(""), "UNAUTHENTICATED", /missing/);
    await rejects(verifier.verify("a".repeat(20_000)), "UNAUTHENTICATED", /oversized/);
  });
});

Deno.test("token verifier: keys come from the Director's UAA, never from jku", async () => {
  await withLab(async ({ uaa, verifier }) => {
    // An attacker's key server; the forged token claims the real issuer and kid and points its
    // jku header there. The verifier must never contact it.
    let hits = 0;
    const rogue = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
      hits++;
      return Response.json({ keys: [] });
    });
    try {
      const key = await generateSigningKey(uaa.signingKid);
      const token = await signRs256(
        uaa.claims(),
        key,
        `http://127.0.0.1:${rogue.addr.port}/token_keys`,
      );
      await rejects(verifier.verify(token), "UNAUTHENTICATED", /signature/, token);
      assertEquals(hits, 0);
    } finally {
      await rogue.shutdown();
    }
  });
});

Deno.test("token verifier: scope checks", async () => {
  await withLab(async ({ uaa, verifier }) => {
    const noScope = await uaa.mintValid({ userName: "bob", scopes: ["openid", "bosh.read"] });
    const e = await rejects(
      verifier.verify(noScope),
      "PERMISSION_DENIED",
      /user 'bob' lacks a required scope \(one of bosh\.admin, bosh\.[0-9a-f-]+\.admin\)/,
      noScope,
    );
    assert(!e.message.includes("bosh.read"));
    const otherDirector = await uaa.mintValid({
      scopes: [`bosh.${crypto.randomUUID()}.admin`],
    });
    await rejects(verifier.verify(otherDirector), "PERMISSION_DENIED", /lacks/, otherDirector);
  });
});

Deno.test("token verifier: unknown kid refetches once, rate-limited; rotation", async () => {
  await withLab(async ({ uaa, verifier, advance }) => {
    await verifier.verify(await uaa.mintValid());
    assertEquals(verifier.fetchCount, 1);
    // The first fetch just happened, so an unknown kid inside 30 s does not refetch.
    advance(31_000);
    const unknown = await uaa.mintUnknownKid();
    await rejects(verifier.verify(unknown), "UNAUTHENTICATED", /"unknown-kid"/, unknown);
    assertEquals(verifier.fetchCount, 2); // one refetch
    await rejects(verifier.verify(unknown), "UNAUTHENTICATED", /"unknown-kid"/, unknown);
    await rejects(verifier.verify(await uaa.mintUnknownKid()), "UNAUTHENTICATED", /does not/);
    assertEquals(verifier.fetchCount, 2); // rate-limited: no more traffic

    // Key rotation: the new kid is refused until the rate limit allows a refetch ...
    const newKid = await uaa.rotate();
    const rotated = await uaa.mintValid();
    await rejects(verifier.verify(rotated), "UNAUTHENTICATED", new RegExp(newKid), rotated);
    assertEquals(verifier.fetchCount, 2);
    // ... and accepted afterwards; the old key keeps working from the same fetch.
    advance(31_000);
    assertEquals((await verifier.verify(rotated)).user, "admin");
    assertEquals(verifier.fetchCount, 3);
  });
});

Deno.test("token verifier: UAA or Director down or slow → CONNECTION_ERROR", async () => {
  await withLab(async ({ uaa, director, newVerifier }) => {
    const token = await uaa.mintValid();
    await uaa.setDown(true);
    await rejects(newVerifier().verify(token), "CONNECTION_ERROR", /token_keys/, token);
    await uaa.setDown(false);

    uaa.faults.delayMs = 2000;
    const t0 = Date.now();
    await rejects(
      newVerifier({ timeoutMs: 300 }).verify(token),
      "CONNECTION_ERROR",
      /no answer within 300 ms/,
      token,
    );
    assert(Date.now() - t0 < 1900, "the timeout must cut the slow UAA short");
    uaa.faults.delayMs = 0;

    // Director down while /info is not cached yet.
    await director.setDown(true);
    const fresh = new DirectorClient({ url: director.url, timeoutMs: 1000 });
    try {
      const v = new TokenVerifier({ source: fresh, requiredScope: "bosh.admin", timeoutMs: 1000 });
      await rejects(v.verify(token), "CONNECTION_ERROR", /cannot reach the Director/, token);
    } finally {
      fresh.close();
    }
  });
});

Deno.test("token verifier: cached keys expire; a key the UAA withdrew stops being trusted", async () => {
  await withLab(async ({ uaa, verifier, advance }) => {
    const oldToken = await uaa.mintValid({ ttlSec: 7200 });
    await verifier.verify(oldToken);
    assertEquals(verifier.fetchCount, 1);
    // The UAA rotates and withdraws the old key (e.g. it leaked).
    await uaa.rotate(false);
    advance(5 * 60_000);
    // Still inside the 10 min lifetime: served from the cache, no traffic.
    await verifier.verify(oldToken);
    assertEquals(verifier.fetchCount, 1);
    advance(6 * 60_000);
    // Past the lifetime the keys are fetched again and the withdrawn one is gone.
    await rejects(verifier.verify(oldToken), "UNAUTHENTICATED", /does not publish/, oldToken);
    assertEquals(verifier.fetchCount, 2);
    // Tokens signed with the new key work from that same fetch (minted on the verifier's clock).
    assertEquals((await verifier.verify(await uaa.mintValid({ ttlSec: 7200 }))).user, "admin");
    assertEquals(verifier.fetchCount, 2);
  });
});

Deno.test("token verifier: a failed key fetch is remembered for the refetch interval", async () => {
  await withLab(async ({ uaa, newVerifier, advance }) => {
    const v = newVerifier();
    await uaa.setDown(true);
    try {
      // Every new token while the UAA is down would otherwise be one more fetch.
      for (let i = 0; i < 5; i++) {
        const t = await uaa.mintValid({ userName: `u${i}` });
        await rejects(v.verify(t), "CONNECTION_ERROR", /token_keys/, t);
      }
      assertEquals(v.fetchCount, 1);
      advance(31_000);
      const t = await uaa.mintValid();
      await rejects(v.verify(t), "CONNECTION_ERROR", /token_keys/, t);
      assertEquals(v.fetchCount, 2);
    } finally {
      await uaa.setDown(false);
    }
    // Back up, but the last failure is still fresh: no fetch until the interval passed.
    const t = await uaa.mintValid();
    await rejects(v.verify(t), "CONNECTION_ERROR", /token_keys/, t);
    assertEquals(v.fetchCount, 2);
    advance(31_000);
    assertEquals((await v.verify(t)).user, "admin");
    assertEquals(v.fetchCount, 3);
  });
});

Deno.test("token verifier: identity key is user_id (+ origin), not the reusable user_name", async () => {
  await withLab(async ({ uaa, verifier }) => {
    const a = await verifier.verify(await uaa.mintValid({ userName: "alice" }));
    const b = await verifier.verify(
      await uaa.mintValid({
        userName: "alice",
        extra: { origin: "ldap", user_id: "ldap-alice-id", sub: "ldap-alice-id" },
      }),
    );
    assertEquals([a.user, b.user], ["alice", "alice"]);
    assertEquals(b.key, "ldap/ldap-alice-id");
    assertEquals(b.origin, "ldap");
    assert(a.key !== b.key, "two alices from two origins are two users");
    assertMatch(a.key, /^uaa\/[0-9a-f-]{36}$/);
    const c = await verifier.verify(
      await uaa.mintValid({ clientId: "ci-bot", scopes: ["bosh.admin"] }),
    );
    assertEquals(c.user, "ci-bot");
    assert(c.key.endsWith("ci-bot"), c.key);
  });
});

/**
 * A stand-in UAA on loopback whose /token_keys the test controls (a sim cannot publish RS384
 * keys or serve broken key sets), with the Director sim pointing at it.
 */
function withKeyServer(
  fn: (o: {
    verifier: TokenVerifier;
    key: SigningKey;
    issuer: string;
    keys: { body: () => Response };
  }) => Promise<void>,
): Promise<void> {
  const keys = { body: () => Response.json({ keys: [] }) };
  const { promise, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: (a) => resolve(a.port) },
    (req) =>
      new URL(req.url).pathname === "/token_keys" ? keys.body() : new Response(null, {
        status: 404,
      }),
  );
  return promise.then(async (port) => {
    const url = `http://127.0.0.1:${port}`;
    try {
      await withBoshSims({
        prefix: "pcap_tv_keys_",
        clientTimeoutMs: 3000,
        director: () => ({ uaaUrl: url }),
      }, async ({ client }) => {
        const verifier = new TokenVerifier({
          source: client,
          requiredScope: "bosh.admin",
          timeoutMs: 3000,
          fetch: client.uaaFetch,
        });
        await fn({ verifier, key: await generateSigningKey(), issuer: `${url}/oauth/token`, keys });
      });
    } finally {
      await server.shutdown();
    }
  });
}

const b64 = (s: string) => btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

function sign(
  alg: string,
  claims: Record<string, unknown>,
  key: CryptoKey,
  header: Record<string, unknown>,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT", ...header }).sign(key);
}

Deno.test("token verifier: claim and header matrix", async () => {
  await withLab(async ({ uaa, verifier, newVerifier }) => {
    // the sim keeps its signing key private; the test needs it to sign odd headers and claims
    const key = (uaa as unknown as { active(): SigningKey }).active();
    const kid = uaa.signingKid;
    const claims = () => uaa.claims();
    const rs = (c: Record<string, unknown>, h: Record<string, unknown> = { kid }) =>
      sign("RS256", c, key.privateKey, h);

    const noExp = claims();
    delete noExp.exp;
    const t1 = await rs(noExp);
    await rejects(verifier.verify(t1), "UNAUTHENTICATED", /exp/, t1);
    const noIss = claims();
    delete noIss.iss;
    const t2 = await rs(noIss);
    await rejects(verifier.verify(t2), "UNAUTHENTICATED", /iss/, t2);
    const noScope = claims();
    delete noScope.scope;
    const t3 = await rs(noScope);
    await rejects(verifier.verify(t3), "PERMISSION_DENIED", /lacks a required scope/, t3);
    // A space-delimited string (RFC 8693 style) is read as a scope list, as UAA's own checks do.
    const v = await verifier.verify(await rs({ ...claims(), scope: "openid bosh.admin" }));
    assertEquals(v.scopes, ["openid", "bosh.admin"]);
    const t4 = await rs({ ...claims(), scope: "openid bosh.read" });
    await rejects(verifier.verify(t4), "PERMISSION_DENIED", /lacks a required scope/, t4);

    // No kid: accepted while the UAA publishes exactly one key, refused once there are two.
    assertEquals((await verifier.verify(await rs(claims(), {}))).user, "admin");
    await uaa.addKey();
    const t5 = await rs(claims(), {});
    // (a fresh verifier: the first one cached the one-key set)
    const fresh = newVerifier();
    await rejects(fresh.verify(t5), "UNAUTHENTICATED", /no kid/, t5);

    // RSA-PSS with the UAA's own key and ECDSA are refused from the header alone.
    const pss = await generateKeyPair("PS256");
    const ps = await sign("PS256", claims(), pss.privateKey, { kid });
    await rejects(verifier.verify(ps), "UNAUTHENTICATED", /algorithm "PS256"/, ps);
    const ec = await generateKeyPair("ES256");
    const es = await sign("ES256", claims(), ec.privateKey, { kid });
    await rejects(verifier.verify(es), "UNAUTHENTICATED", /algorithm "ES256"/, es);

    // Not three segments, payload not JSON.
    const good = await rs(claims());
    const [h, p, s] = good.split(".");
    await rejects(verifier.verify(`${h}.${p}`), "UNAUTHENTICATED", /not a JWT/);
    await rejects(verifier.verify(`${h}.${p}.${s}.${s}`), "UNAUTHENTICATED", /not a JWT/);
    const notJson = `${h}.${b64("not json {")}.${s}`;
    const e = await rejects(verifier.verify(notJson), "UNAUTHENTICATED", /\w+/, notJson);
    assert(!/internal|TypeError|SyntaxError/.test(e.message), e.message);
  });
});

Deno.test("token verifier: RS384 from the UAA's key set is accepted", async () => {
  await withKeyServer(async ({ verifier, key, issuer, keys }) => {
    // WebCrypto keys are bound to one hash: an RS384 key pair, published as UAA does
    const rs384 = await generateKeyPair("RS384", { extractable: true });
    const jwk = await exportJWK(rs384.publicKey);
    const published = { kty: "RSA", use: "sig", kid: key.kid, alg: "RS384", n: jwk.n, e: jwk.e };
    keys.body = () => Response.json({ keys: [published] });
    const c = buildClaims({
      issuer,
      clientId: "bosh_cli",
      scopes: ["openid", "bosh.admin"],
      grantType: "password",
      userName: "carol",
    });
    const v = await verifier.verify(await sign("RS384", c, rs384.privateKey, { kid: key.kid }));
    assertEquals(v.user, "carol");
  });
});

Deno.test("token verifier: key endpoint answering 500, garbage or no keys: CONNECTION_ERROR", async () => {
  for (
    const [name, body, kind, re] of [
      ["500", () => new Response("boom", { status: 500 }), "CONNECTION_ERROR", /500/],
      ["garbage", () => new Response("<html>", { status: 200 }), "CONNECTION_ERROR", /token_keys/],
      ["keys: []", () => Response.json({ keys: [] }), "CONNECTION_ERROR", /no usable RSA/],
    ] as const
  ) {
    await withKeyServer(async ({ verifier, key, issuer, keys }) => {
      keys.body = body;
      const c = buildClaims({
        issuer,
        clientId: "bosh_cli",
        scopes: ["bosh.admin"],
        grantType: "password",
        userName: "dave",
      });
      const token = await sign("RS256", c, key.privateKey, { kid: key.kid });
      const e = await rejects(verifier.verify(token), kind, re, token);
      assert(e.message.length > 20, `${name}: ${e.message}`);
    });
  }
});
