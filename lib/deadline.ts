/**
 * One bound on waiting: the single place that races a promise against a timer, and always clears
 * the timer, so that no caller leaves a pending timeout keeping the process alive.
 */

/** Marker returned by {@link deadline} when the time ran out first. */
export const TIMED_OUT: unique symbol = Symbol("timed out");

/** `work`'s value, or TIMED_OUT if it has not settled within `ms`; a rejection is passed on. */
export async function deadline<T>(work: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<typeof TIMED_OUT>((
    r,
  ) => (timer = setTimeout(() => r(TIMED_OUT), ms)));
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when `work` settled (resolved or rejected) within `ms`; never throws. */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  return (await deadline(work.then(() => true, () => true), ms)) !== TIMED_OUT;
}
