/**
 * Hysteresis for a slow reader, as pcap-release's buffer manager does it: the stream queue is
 * counted in PACKETS frames waiting for the socket. Once it reaches `upperLimit`, packet batches
 * are discarded until the queue has fallen to `lowerLimit`; then sending resumes and the episode's
 * counts are reported. Status and stats frames are never subject to this. Pure, no I/O.
 */
import { type BufferLimits, Hysteresis } from "../lib/hysteresis.ts";

export type { BufferLimits };

export interface CongestionCounts {
  /** Packets discarded in this episode. */
  packets: number;
  /** Packet batches (frames) discarded in this episode. */
  batches: number;
  /** Bytes of packet data discarded in this episode. */
  bytes: number;
}

export type Transition =
  | { kind: "congested"; queued: number }
  | { kind: "cleared"; queued: number; counts: CongestionCounts };

export interface OfferResult {
  accept: boolean;
  /** Set when this offer changed the state. */
  transition?: Transition;
}

export class Backpressure {
  #episode: CongestionCounts = { packets: 0, batches: 0, bytes: 0 };
  #total: CongestionCounts = { packets: 0, batches: 0, bytes: 0 };
  #episodes = 0;

  readonly #hysteresis: Hysteresis;

  constructor(readonly limits: BufferLimits) {
    this.#hysteresis = new Hysteresis(limits);
  }

  get congested(): boolean {
    return this.#hysteresis.congested;
  }

  /** Everything discarded since the start. */
  get total(): Readonly<CongestionCounts> {
    return this.#total;
  }

  /** Number of congestion episodes so far. */
  get episodes(): number {
    return this.#episodes;
  }

  /** Counts of the running episode (zero when not congested). */
  get current(): Readonly<CongestionCounts> {
    return this.#episode;
  }

  /**
   * Decides about one packet batch, given how many packet frames are queued right now.
   * A discarded batch is counted here.
   */
  offer(queued: number, packets: number, bytes: number): OfferResult {
    const transition = this.observe(queued) ?? undefined;
    if (!this.congested) return { accept: true, transition };
    this.#episode.packets += packets;
    this.#episode.batches += 1;
    this.#episode.bytes += bytes;
    this.#total.packets += packets;
    this.#total.batches += 1;
    this.#total.bytes += bytes;
    return { accept: false, transition };
  }

  /** Applies the hysteresis to the current queue length (also call it when the queue shrinks). */
  observe(queued: number): Transition | null {
    const change = this.#hysteresis.observe(queued);
    if (change === "congested") {
      this.#episodes++;
      this.#episode = { packets: 0, batches: 0, bytes: 0 };
      return { kind: "congested", queued };
    }
    if (change === "cleared") {
      const counts = this.#episode;
      this.#episode = { packets: 0, batches: 0, bytes: 0 };
      return { kind: "cleared", queued, counts };
    }
    return null;
  }
}
