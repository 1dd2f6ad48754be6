// api-side limits (concurrency per user and in total, duration and byte budgets) and the audit
// line written per capture (kept here: both are the api's capture bookkeeping).
import {
  ApiError,
  ByteBudget,
  ConcurrencyLimiter,
  durationLimitError,
  effectiveBounds,
} from "../server/limits.ts";
import { AuditLog, type AuditRecord, scrubSecrets } from "../server/audit.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

function limitErr(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (e) {
    assert(e instanceof ApiError, String(e));
    assertEquals(e.kind, "LIMIT_REACHED");
    return e;
  }
  throw new Error("expected LIMIT_REACHED");
}

Deno.test("limits: per-user limit hits first and names itself", () => {
  const l = new ConcurrencyLimiter({ global: 3, perUser: 2 });
  const a1 = l.acquire("alice");
  const a2 = l.acquire("alice");
  const e = limitErr(() => l.acquire("alice"));
  assertEquals(e.limit, { name: "per_user_concurrent_captures", value: 2 });
  assertMatch(e.message, /per-user limit is 2/);
  assertEquals(l.active, 2);
  assertEquals(l.activeFor("alice"), 2);
  // Another user still fits; then the global limit names itself.
  const b1 = l.acquire("bob");
  const g = limitErr(() => l.acquire("carol"));
  assertEquals(g.limit, { name: "concurrent_captures", value: 3 });
  assertEquals(l.activeFor("carol"), 0);
  // release is idempotent and frees exactly one slot.
  a1.release();
  a1.release();
  assertEquals(l.active, 2);
  assertEquals(l.activeFor("alice"), 1);
  const c1 = l.acquire("carol");
  for (const s of [a2, b1, c1]) s.release();
  assertEquals(l.active, 0);
  assertEquals(l.activeFor("alice"), 0);
});

Deno.test("limits: slots survive failures when released in finally", async () => {
  const l = new ConcurrencyLimiter({ global: 1, perUser: 1 });
  for (let i = 0; i < 3; i++) {
    const slot = l.acquire("alice");
    try {
      await Promise.reject(new Error("agent down"));
    } catch {
      /* the capture failed */
    } finally {
      slot.release();
    }
  }
  assertEquals(l.active, 0);
  let bad = false;
  try {
    new ConcurrencyLimiter({ global: 0, perUser: 1 });
  } catch {
    bad = true;
  }
  assert(bad, "a zero limit is a configuration error");
});

Deno.test("limits: effective duration and bytes are clamped to the api maxima", () => {
  const max = { maxDurationMs: 60_000, maxBytes: 1000 };
  assertEquals(effectiveBounds({ durationMs: 5000, bytes: 10 }, max), {
    durationMs: 5000,
    bytes: 10,
    durationLimit: undefined,
    bytesLimit: undefined,
  });
  const over = effectiveBounds({ durationMs: 120_000, bytes: 5000 }, max);
  assertEquals(over.durationMs, 60_000);
  assertEquals(over.durationLimit, { name: "max_duration", value: 60_000 });
  assertEquals(over.bytesLimit, { name: "max_bytes", value: 1000 });
  // No request (0/undefined = "until stopped") still gets the api maxima.
  const open = effectiveBounds({}, max);
  assertEquals([open.durationMs, open.bytes], [60_000, 1000]);
  // Unlimited api maxima leave the request alone.
  const free = effectiveBounds({ durationMs: 7 }, { maxDurationMs: 0, maxBytes: 0 });
  assertEquals([free.durationMs, free.bytes, free.durationLimit], [7, 0, undefined]);
  const d = durationLimitError(over)!;
  assertEquals(d.limit, { name: "max_duration", value: 60_000 });
  assertEquals(durationLimitError(free), null);
});

Deno.test("limits: byte budget trips exactly once at the api limit", () => {
  const b = new ByteBudget(effectiveBounds({}, { maxDurationMs: 0, maxBytes: 1000 }));
  assertEquals(b.add(600), null);
  const e = b.add(600);
  assert(e instanceof ApiError);
  assertEquals(e.limit, { name: "max_bytes", value: 1000 });
  assertEquals(b.add(1), null);
  assert(b.exhausted);
  assertEquals(b.used, 1201);
  // A client's own smaller limit is not an api limit: no LIMIT_REACHED, just exhausted.
  const own = new ByteBudget(effectiveBounds({ bytes: 10 }, { maxDurationMs: 0, maxBytes: 1000 }));
  assertEquals(own.add(11), null);
  assert(own.exhausted);
});

const TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJ1c2VyX25hbWUiOiJhbGljZSJ9.c2lnbmF0dXJl";

function record(over: Partial<AuditRecord> = {}): AuditRecord {
  return {
    user: "alice",
    clientId: "bosh_cli",
    resolver: "bosh",
    deployment: "cf",
    targets: ["router/0 (abc)", "router/1 (def)"],
    interface: "eth0",
    filter: "port 443",
    snaplen: 65535,
    start: new Date("2026-01-01T00:00:00Z"),
    end: new Date("2026-01-01T00:01:00Z"),
    packets: 12,
    bytes: 3456,
    outcome: "CAPTURE_STOPPED",
    ...over,
  };
}

Deno.test("audit: one JSON line per capture with every field, never a token", async () => {
  const lines: string[] = [];
  const log = await AuditLog.open({ enabled: true, sink: (l) => lines.push(l) });
  log.write(record());
  log.write(record({
    outcome: "START_CAPTURE_FAILED",
    filter: `host 1.2.3.4 and ${TOKEN}`,
    detail: `agent said: Authorization: Bearer ${TOKEN}`,
  }));
  log.close();
  assertEquals(lines.length, 2);
  const a = JSON.parse(lines[0]);
  assertEquals(a.component, "audit");
  assertEquals(a.event, "capture");
  assertEquals(a.user, "alice");
  assertEquals(a.deployment, "cf");
  assertEquals(a.targets, ["router/0 (abc)", "router/1 (def)"]);
  assertEquals([a.interface, a.filter, a.snaplen], ["eth0", "port 443", 65535]);
  assertEquals([a.start, a.end, a.duration_ms], [
    "2026-01-01T00:00:00.000Z",
    "2026-01-01T00:01:00.000Z",
    60_000,
  ]);
  assertEquals([a.packets, a.bytes, a.outcome], [12, 3456, "CAPTURE_STOPPED"]);
  for (const line of lines) {
    for (const part of TOKEN.split(".")) assert(!line.includes(part), `token leaked: ${line}`);
  }
  assertMatch(JSON.parse(lines[1]).filter, /host 1\.2\.3\.4 and \[redacted-token\]/);
  assertEquals(scrubSecrets("Bearer abc.def"), "Bearer [redacted]");
});

Deno.test("audit: appends to a file; disabled writes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pcap_audit_" });
  try {
    const path = `${dir}/audit.log`;
    for (let i = 0; i < 2; i++) {
      const log = await AuditLog.open({ enabled: true, file: path });
      log.write(record({ packets: i }));
      log.close();
    }
    const lines = (await Deno.readTextFile(path)).trim().split("\n");
    assertEquals(lines.map((l) => JSON.parse(l).packets), [0, 1]);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o640);

    const off = await AuditLog.open({ enabled: false, file: `${dir}/off.log` });
    off.write(record());
    off.close();
    let exists = true;
    await Deno.stat(`${dir}/off.log`).catch(() => (exists = false));
    assert(!exists);

    let err = "";
    await AuditLog.open({ enabled: true, file: `${dir}/missing/audit.log` }).catch((e) =>
      err = e.message
    );
    assertMatch(err, /cannot open audit file .*missing\/audit\.log/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit: a failing sink (disk full) never throws; the error is reported", async () => {
  const errors: Error[] = [];
  // /dev/full fails every write with ENOSPC, as a full log partition does.
  const log = await AuditLog.open({
    enabled: true,
    file: "/dev/full",
    onError: (e) => errors.push(e),
  });
  try {
    log.write(record());
    log.write(record({ outcome: "LIMIT_REACHED" }));
  } finally {
    log.close();
  }
  assertEquals(errors.length, 2);
  assertMatch(errors[0].message, /No space left|ENOSPC|space/i);
  // A throwing error reporter does not escape either.
  const again = await AuditLog.open({
    enabled: true,
    file: "/dev/full",
    onError: () => {
      throw new Error("reporter broke");
    },
  });
  again.write(record());
  again.close();
});

Deno.test("audit: refusals of unauthenticated sessions are aggregated per window", async () => {
  const lines: Record<string, unknown>[] = [];
  let now = 0;
  const log = await AuditLog.open({
    enabled: true,
    sink: (l) => lines.push(JSON.parse(l)),
    now: () => now,
  });
  const refused = (outcome = "UNAUTHENTICATED") =>
    log.writeUnauthenticated(record({ user: "(unauthenticated)", outcome, remote: "10.1.1.1" }));
  for (let i = 0; i < 100; i++) refused();
  refused("LIMIT_REACHED"); // another outcome has its own window
  assertEquals(lines.map((l) => l.outcome), ["UNAUTHENTICATED", "LIMIT_REACHED"]);
  now += 10_000;
  refused();
  assertEquals(lines.length, 3);
  assertEquals(lines[2].suppressed, 99, "the next line says how many were not written");
  // Authenticated captures are always written, one line each.
  for (let i = 0; i < 3; i++) log.write(record());
  assertEquals(lines.length, 6);
  log.close();
});
