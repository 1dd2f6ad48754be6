/**
 * Names what an upstream (Director, Cloud Controller) answered when reading its answer failed
 * although it was reached: a redirect (never followed: it could carry the user's token away) or a
 * body over the read limit. Null for real connection failures. Pure.
 */
export function answeredProblem(who: string, e: unknown, urlKey: string): string | null {
  const why = (e as Error)?.message ?? String(e);
  if (/redirect/i.test(why)) {
    return `${who} answered with a redirect, which the api never follows (it would carry the ` +
      `user's token elsewhere); set ${urlKey} to the service itself`;
  }
  if (/exceeds the \d+-byte limit/.test(why)) {
    return `${who} answered with a body too large to read (${why}); check that ${urlKey} ` +
      "names the right service";
  }
  return null;
}
