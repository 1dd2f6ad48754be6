/**
 * Config value schemas shared by `pcap agent` and `pcap api`, so that a duration, a size or a
 * path is accepted, and refused, with the same message by both services.
 */
import { z } from "zod";
import { MAX_CAPTURE_DURATION_MS } from "../protocol/messages.ts";
import { parseByteSize, parseDuration } from "./units.ts";

/** Seconds or "500ms", "90s", "5m", "1h30m" → milliseconds; at most 7 days; 0 allowed. */
export const durationMs = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === null) {
    ctx.addIssue({
      code: "custom",
      message: `invalid duration ${JSON.stringify(v)}: not a duration; use seconds (e.g. 3600) ` +
        `or a string like "500ms", "90s", "5m", "1h30m"`,
    });
    return z.NEVER;
  }
  if (ms > MAX_CAPTURE_DURATION_MS) {
    // Timers fire at once above 2^31-1 ms, which would end every capture immediately.
    ctx.addIssue({
      code: "custom",
      message: `duration ${JSON.stringify(v)} is longer than 7 days (the maximum)`,
    });
    return z.NEVER;
  }
  return ms;
});

/** A duration that must be longer than zero. */
export const positiveDurationMs = durationMs.refine((ms) => ms > 0, { message: "must be > 0" });

/** Bytes or "512MiB", "1GB" → bytes. */
export const byteSize = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const bytes = parseByteSize(v);
  if (bytes === null) {
    ctx.addIssue({
      code: "custom",
      message: `invalid size ${JSON.stringify(v)}: use bytes or e.g. "512MiB", "1GB"`,
    });
    return z.NEVER;
  }
  return bytes;
});

/** A configured file path. */
export const filePath = z.string().min(1, "must be a non-empty file path");
