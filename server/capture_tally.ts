/**
 * Limit accounting of one client capture: counts what was delivered against the byte budget and
 * the client's max_packets, trims the batch that crosses max_packets, and says when a limit ends
 * the capture. Pure: the session acts on the verdicts.
 */
import { ApiError, ByteBudget, type EffectiveBounds } from "./limits.ts";
import { truncatePackets } from "../protocol/records.ts";

/** A limit the api enforces (LIMIT_REACHED), or a client limit that just stops the capture. */
export type TallyVerdict = { limit: ApiError } | { stop: string } | null;

export class CaptureTally {
  packets = 0;
  bytes = 0;
  #budget: ByteBudget;

  constructor(readonly bounds: EffectiveBounds, readonly maxPackets: number) {
    this.#budget = new ByteBudget(bounds);
  }

  /** The part of a batch the limits still admit (cut at max_packets), or null for none. */
  admit(payload: Uint8Array, count: number): { payload: Uint8Array; count: number } | null {
    const max = this.maxPackets;
    if (this.#budget.exhausted || (max > 0 && this.packets >= max)) return null;
    if (max > 0 && this.packets + count > max) {
      count = max - this.packets;
      payload = truncatePackets(payload, count);
    }
    return { payload, count };
  }

  /** Counts a delivered batch; says which limit, if any, it reached. */
  record(count: number, bytes: number): TallyVerdict {
    this.packets += count;
    this.bytes += bytes;
    const limit = this.#budget.add(bytes);
    if (limit) return { limit };
    if (this.#budget.exhausted) return { stop: `byte limit of ${this.bounds.bytes} reached` };
    if (this.maxPackets > 0 && this.packets >= this.maxPackets) {
      return { stop: `packet limit of ${this.maxPackets} reached` };
    }
    return null;
  }
}
