// Prometheus text exposition: HELP/TYPE lines, label rendering and escaping, validation of names,
// counters that refuse to go down, and the api's standard metric set.
import { createApiMetrics, escapeLabelValue, Registry } from "../server/metrics.ts";
import { assert, assertEquals } from "./support/assert.ts";

function throwsType(fn: () => unknown): boolean {
  try {
    fn();
  } catch (e) {
    return e instanceof TypeError || e instanceof RangeError;
  }
  return false;
}

// One sample line of the 0.0.4 text format: name, optional {k="v",...}, value.
const SAMPLE =
  /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (NaN|[+-]Inf|-?\d+(\.\d+)?(e[+-]?\d+)?)$/;

Deno.test("metrics: exact exposition text", () => {
  const r = new Registry();
  const g = r.gauge("pcap_api_active_captures", "Captures currently running.", ["resolver"]);
  const c = r.counter("pcap_api_packets_total", "Packets forwarded.\nSecond line \\ here.");
  const e = r.counter("pcap_api_agent_errors_total", "Agent errors.", ["kind", "agent"]);
  g.set({ resolver: "bosh" }, 2);
  g.inc({ resolver: "cf" });
  g.dec({ resolver: "bosh" });
  c.inc({}, 10);
  c.inc();
  e.inc({ kind: "tls", agent: 'router/0 "x"\\y\nz' });
  assertEquals(
    r.render(),
    [
      "# HELP pcap_api_active_captures Captures currently running.",
      "# TYPE pcap_api_active_captures gauge",
      'pcap_api_active_captures{resolver="bosh"} 1',
      'pcap_api_active_captures{resolver="cf"} 1',
      "# HELP pcap_api_packets_total Packets forwarded.\\nSecond line \\\\ here.",
      "# TYPE pcap_api_packets_total counter",
      "pcap_api_packets_total 11",
      "# HELP pcap_api_agent_errors_total Agent errors.",
      "# TYPE pcap_api_agent_errors_total counter",
      'pcap_api_agent_errors_total{kind="tls",agent="router/0 \\"x\\"\\\\y\\nz"} 1',
      "",
    ].join("\n"),
  );
  for (const line of r.render().trim().split("\n")) {
    if (!line.startsWith("#")) assert(SAMPLE.test(line), `not a valid sample line: ${line}`);
  }
});

Deno.test("metrics: a hostile label value cannot forge a series", () => {
  const r = new Registry();
  const c = r.counter("pcap_x_total", "x", ["deployment"]);
  c.inc({ deployment: 'cf"} 999\npcap_x_total{deployment="evil' });
  const lines = r.render().trim().split("\n");
  assertEquals(lines.length, 3, "one HELP, one TYPE, one sample");
  assert(SAMPLE.test(lines[2]), lines[2]);
  assert(lines[2].endsWith(" 1"));
  assertEquals(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
});

Deno.test("metrics: label sets, names and counters are validated", () => {
  const r = new Registry();
  const c = r.counter("ok_total", "ok", ["a"]);
  assert(throwsType(() => c.inc({})), "missing label");
  assert(throwsType(() => c.inc({ a: "1", b: "2" })), "extra label");
  assert(throwsType(() => c.inc({ a: "1" }, -1)), "counters never decrease");
  assert(throwsType(() => c.inc({ a: "1" }, NaN)), "NaN increments refused");
  assert(throwsType(() => r.counter("ok_total", "again")), "duplicate registration");
  assert(throwsType(() => r.gauge("bad-name", "x")));
  assert(throwsType(() => r.gauge("g1", "x", ["__reserved"])));
  assert(throwsType(() => r.gauge("g2", "x", ["a", "a"])));
  assert(throwsType(() => r.gauge("g3", "x", ["a-b"])));
  assertEquals(c.get({ a: "1" }), 0);
  c.inc({ a: "1" }, 2.5);
  assertEquals(c.get({ a: "1" }), 2.5);
  c.remove({ a: "1" });
  assertEquals(r.render(), "# HELP ok_total ok\n# TYPE ok_total counter\n");
  const g = r.gauge("inf_gauge", "x");
  g.set({}, Infinity);
  assert(r.render().includes("inf_gauge +Inf\n"));
});

Deno.test("metrics: the api metric set renders with HELP and TYPE for each", () => {
  const m = createApiMetrics();
  m.activeCaptures.inc({ resolver: "bosh" });
  m.captures.inc({ resolver: "bosh", outcome: "CAPTURE_STOPPED" });
  m.packets.inc({ resolver: "bosh" }, 100);
  m.bytes.inc({ resolver: "bosh" }, 6400);
  m.drops.inc({ resolver: "bosh", stage: "kernel" }, 3);
  m.congestion.inc({ resolver: "bosh" });
  m.agentErrors.inc({ kind: "connect" });
  m.authFailures.inc({ type: "UNAUTHENTICATED" });
  const text = m.registry.render();
  const names = [...text.matchAll(/^# TYPE (\S+) (counter|gauge)$/gm)].map((x) => x[1]);
  assertEquals(names, [
    "pcap_api_active_captures",
    "pcap_api_captures_total",
    "pcap_api_packets_total",
    "pcap_api_bytes_total",
    "pcap_api_dropped_packets_total",
    "pcap_api_congestion_events_total",
    "pcap_api_agent_errors_total",
    "pcap_api_auth_failures_total",
    "pcap_api_audit_write_errors_total",
    "pcap_api_sources_failed_total",
  ]);
  for (const n of names) assert(text.includes(`# HELP ${n} `), `HELP for ${n}`);
  assert(text.includes('pcap_api_active_captures{resolver="bosh"} 1\n'));
  assert(text.includes('pcap_api_dropped_packets_total{resolver="bosh",stage="kernel"} 3\n'));
  for (const line of text.trim().split("\n")) {
    if (!line.startsWith("#")) assert(SAMPLE.test(line), line);
  }
});
