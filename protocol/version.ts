/**
 * Protocol versioning. Every peer announces PROTOCOL_VERSION and refuses peers older than
 * MIN_PEER_VERSION, so an old api cannot silently misread a newer agent's stream (and vice versa).
 */
/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;
/** The oldest peer version this build accepts. */
export const MIN_PEER_VERSION = 1;

/**
 * Returns null when `peerVersion` is acceptable, else a sentence for the user.
 * `peer` names the other side (e.g. "api", "agent diego-cell/0").
 */
export function checkPeerVersion(peerVersion: unknown, peer: string, self: string): string | null {
  if (typeof peerVersion !== "number" || !Number.isInteger(peerVersion) || peerVersion < 0) {
    return `${peer} did not announce a valid protocol version; upgrade ${peer}`;
  }
  if (peerVersion < MIN_PEER_VERSION) {
    return `${peer} speaks protocol v${peerVersion} but this ${self} needs at least ` +
      `v${MIN_PEER_VERSION}; upgrade ${peer}`;
  }
  return null;
}
