// Token verification against the lab's simulated UAA and Director over real HTTPS, with real
// RS256 JWTs: the full matrix of good and bad tokens, key refetch with its rate limit, and the
// connection failures. Every error text is checked for token leakage.
import { UaaSim } from "../lab/uaa_sim.ts";
import { generateSigningKey, signRs256 } from "../lab/token_mint.ts";
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
