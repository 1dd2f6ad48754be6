/**
 * What a capture session needs of a capture engine (structural, so tests can inject fakes; the
 * real one is agent/capture_engine.ts).
 *
 * @example
 * ```ts
 * import type { EngineLike } from "./engine_like.ts";
 *
 * async function drain(engine: EngineLike): Promise<number> {
 *   let packets = 0;
 *   for (let b = await engine.next(); b; b = await engine.next()) packets += b.count;
 *   return packets;
 * }
 * ```
 *
 * @module
 */
import type { CaptureOptions, CaptureStats } from "./capture_engine.ts";
import type { OpenSteps } from "./open_steps.ts";

export interface EngineLike {
  readonly linkType: number;
  readonly snaplen: number;
  next(): Promise<{ count: number; records: Uint8Array } | null>;
  /**
   * Keeps the last batch past the next next() until the returned function is called (with the
   * batchRoom around it); absent in fakes: the session then copies every batch.
   */
  hold?(): () => void;
  /** Bytes of records in held batches not yet given back. */
  readonly heldBytes?: number;
  stats(): CaptureStats;
  stop(): Promise<void>;
  close(): void;
  /** Resolves once the engine has released its handle and thread (optional for fakes). */
  readonly finished?: Promise<void>;
  /** Where the start went on the capture thread (logged; optional for fakes). */
  readonly openSteps?: OpenSteps;
}

/** What the session passes to the engine: everything but the engine's own tuning knobs. */
export type EngineOpenOptions = Omit<CaptureOptions, "queueBytes" | "reader">;
export type OpenEngine = (opts: EngineOpenOptions) => Promise<EngineLike>;
