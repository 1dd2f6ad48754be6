/**
 * Server-side limits of the api (DESIGN §5): concurrent captures in total and per user, and the
 * per-capture duration and byte budgets. Pure bookkeeping; the client session acquires a slot
 * before fan-out and releases it when the capture ends, whatever the outcome.
 */

import { ApiError, type LimitInfo, limitReached } from "./errors.ts";

// The api's errors live in errors.ts; these names stay for existing importers.
export { ApiError, type ApiErrorKind, type LimitInfo, limitReached } from "./errors.ts";

/** A held capture slot; release() is idempotent so `finally` blocks can call it freely. */
export interface CaptureSlot {
  readonly user: string;
  release(): void;
}

export interface ConcurrencyLimits {
  /** concurrent_captures: all users together */
  global: number;
  /** limits.per_user_concurrent_captures */
  perUser: number;
}

export class ConcurrencyLimiter {
  #total = 0;
  readonly #perUser = new Map<string, number>();

  constructor(readonly limits: ConcurrencyLimits) {
    if (limits.global < 1 || limits.perUser < 1) throw new RangeError("limits must be >= 1");
  }

  get active(): number {
    return this.#total;
  }

  activeFor(user: string): number {
    return this.#perUser.get(user) ?? 0;
  }

  /** Takes a slot for `user` or throws LIMIT_REACHED naming the limit that was hit. */
  acquire(user: string): CaptureSlot {
    const mine = this.activeFor(user);
    // Per-user first: a user at their own limit should learn that, not blame others.
    if (mine >= this.limits.perUser) {
      throw limitReached(
        "per_user_concurrent_captures",
        this.limits.perUser,
        `you already run ${mine} capture(s), the per-user limit is ${this.limits.perUser}; ` +
          "stop one and retry",
      );
    }
    if (this.#total >= this.limits.global) {
      throw limitReached(
        "concurrent_captures",
        this.limits.global,
        `the api already runs ${this.#total} capture(s), its limit is ${this.limits.global}; ` +
          "retry later",
      );
    }
    this.#total++;
    this.#perUser.set(user, mine + 1);
    let released = false;
    return {
      user,
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const left = this.activeFor(user) - 1;
        if (left > 0) this.#perUser.set(user, left);
        else this.#perUser.delete(user);
      },
    };
  }
}

export interface CaptureBounds {
  /** 0 = unlimited */
  maxDurationMs: number;
  /** 0 = unlimited */
  maxBytes: number;
}

export interface EffectiveBounds {
  /** 0 = unlimited */
  durationMs: number;
  /** 0 = unlimited */
  bytes: number;
  /** Which api limit shortens the request (for the LIMIT_REACHED message when it hits). */
  durationLimit?: LimitInfo;
  bytesLimit?: LimitInfo;
}

function clamp(requested: number | undefined, max: number, name: string) {
  const req = requested && requested > 0 ? requested : 0;
  if (max === 0) return { value: req };
  if (req === 0 || req > max) return { value: max, limit: { name, value: max } };
  return { value: req };
}

/**
 * Applies the api maxima to what the client asked for. A request above a maximum is clamped
 * (not refused): the capture runs and ends with LIMIT_REACHED naming the limit.
 */
export function effectiveBounds(
  requested: { durationMs?: number; bytes?: number },
  bounds: CaptureBounds,
): EffectiveBounds {
  const d = clamp(requested.durationMs, bounds.maxDurationMs, "max_duration");
  const b = clamp(requested.bytes, bounds.maxBytes, "max_bytes");
  return { durationMs: d.value, bytes: b.value, durationLimit: d.limit, bytesLimit: b.limit };
}

/**
 * Counts bytes forwarded for one capture. `add` returns the ApiError to send once the budget is
 * exhausted (exactly once), null otherwise. Only api-side limits produce an error: a client's
 * own smaller byte limit ends the capture as CAPTURE_STOPPED, which the caller handles.
 */
export class ByteBudget {
  #used = 0;
  #tripped = false;
  constructor(readonly bounds: EffectiveBounds) {}

  get used(): number {
    return this.#used;
  }

  get exhausted(): boolean {
    return this.bounds.bytes > 0 && this.#used >= this.bounds.bytes;
  }

  add(n: number): ApiError | null {
    this.#used += n;
    if (this.#tripped || !this.exhausted || !this.bounds.bytesLimit) return null;
    this.#tripped = true;
    const { name, value } = this.bounds.bytesLimit;
    return limitReached(name, value, `capture reached the api's byte limit ${name}=${value}`);
  }
}

/** The error to send when the api's duration limit ends a capture. */
export function durationLimitError(bounds: EffectiveBounds): ApiError | null {
  if (!bounds.durationLimit) return null;
  const { name, value } = bounds.durationLimit;
  return limitReached(name, value, `capture reached the api's duration limit ${name}=${value} ms`);
}
