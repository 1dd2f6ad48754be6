/**
 * Identifiers of Cloud Foundry objects as they travel between api and agent (DESIGN §2, CF).
 * They end up in file paths on a Diego cell (runc state, the CNI store's keys), so each has one
 * strict textual form and anything else is refused; none of them may ever be a path component
 * other than itself. Pure.
 */

/**
 * A Diego instance guid (ActualLRP instance guid == Garden handle): the first 28 characters of a
 * lower-case v4 UUID, e.g. `6907c81e-99c4-4322-4594-ac1d`.
 */
export const INSTANCE_GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$/;

/** A CC resource guid (apps, spaces, orgs): a lower-case UUID. */
export const RESOURCE_GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function shown(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v.slice(0, 80)) : String(v);
}

/** Null when `v` is a Diego instance guid, otherwise why not. */
export function instanceGuidProblem(v: unknown): string | null {
  if (typeof v === "string" && INSTANCE_GUID_RE.test(v)) return null;
  return `instance guid ${shown(v)} is not of the Diego form xxxxxxxx-xxxx-xxxx-xxxx-xxxx ` +
    "(28 lower-case hex characters and dashes)";
}

/** Null when `v` is a CC resource guid (UUID), otherwise why not; `what` names it. */
export function resourceGuidProblem(v: unknown, what = "guid"): string | null {
  if (typeof v === "string" && RESOURCE_GUID_RE.test(v)) return null;
  return `${what} ${shown(v)} is not a Cloud Controller guid (a lower-case UUID)`;
}

/** Null when `v` is a dotted-quad IPv4 address (a container's overlay address). */
export function ipv4Problem(v: unknown): string | null {
  if (typeof v === "string") {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(v);
    if (m && m.slice(1).every((p) => Number(p) <= 255 && (p === "0" || !p.startsWith("0")))) {
      return null;
    }
  }
  return `container ip ${shown(v)} is not an IPv4 address`;
}
