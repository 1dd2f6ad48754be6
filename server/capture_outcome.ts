/**
 * How a client capture ended, from the per-source summaries of the fan-out (pure apart from
 * the metrics it is handed): drop counters per stage, the refusal when nothing started, and the
 * outcome and detail when sources failed.
 */
import type { ApiMetrics } from "./metrics.ts";
import type { SourceSummary } from "./fanout.ts";
import { ApiError, type ApiErrorKind } from "./limits.ts";

/**
 * How a capture ended: clean stop, a limit, every source failed, the client left, or the
 * refusal (an ApiError's type) that ended it before it ran.
 */
export type Outcome =
  | "CAPTURE_STOPPED"
  | "LIMIT_REACHED"
  | "INSTANCE_UNAVAILABLE"
  | "CLIENT_GONE"
  | ApiErrorKind;

/** An ApiError as it is; anything else is an internal START_CAPTURE_FAILED. */
export function asApiError(e: unknown): ApiError {
  return e instanceof ApiError
    ? e
    : new ApiError("START_CAPTURE_FAILED", `internal error: ${(e as Error)?.message ?? e}`);
}

/** Adds each source's kernel, agent and api drops to the drop counters. */
export function recordDrops(
  metrics: ApiMetrics,
  resolver: string,
  summaries: SourceSummary[],
  apiDropped: (source: number) => number,
): void {
  for (const s of summaries) {
    const st = s.stats;
    if (!st) continue;
    const m = metrics.drops;
    m.inc({ resolver, stage: "kernel" }, st.dropped + st.if_dropped);
    m.inc({ resolver, stage: "agent" }, st.engine_dropped + st.agent_dropped);
    m.inc({ resolver, stage: "api" }, apiDropped(s.source));
  }
}

/** The refusal when no source started capturing. */
export function noneStarted(summaries: SourceSummary[]): ApiError {
  const reasons = summaries.map((s) => s.error).filter(Boolean).join("; ");
  return new ApiError("START_CAPTURE_FAILED", `no instance could start capturing: ${reasons}`);
}

/**
 * A clean stop with unavailable sources says how many failed (INSTANCE_UNAVAILABLE when all
 * did); any other outcome stands as it is.
 */
export function endOutcome(
  outcome: Outcome,
  summaries: SourceSummary[],
): { outcome: Outcome; detail?: string; failed: number } {
  const failed = summaries.filter((s) => s.outcome === "unavailable");
  if (outcome !== "CAPTURE_STOPPED" || failed.length === 0) {
    return { outcome, failed: failed.length };
  }
  return {
    outcome: failed.length === summaries.length ? "INSTANCE_UNAVAILABLE" : outcome,
    detail: `${failed.length} of ${summaries.length} source(s) unavailable: ` +
      failed.map((s) => `${s.origin}: ${s.error ?? "failed"}`).join("; ").slice(0, 1000),
    failed: failed.length,
  };
}
