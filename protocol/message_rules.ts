/**
 * The rules of protocol v1's messages that are not schemas: size and duration bounds, the
 * STATUS types, and the checks on deployment and interface names (docs/protocol.md "Messages").
 *
 * @module
 */
/** Bound on a user's filter. */
export const MAX_FILTER_LENGTH = 4096;
/** Bound on what reaches an agent: the user's filter plus the api's own-connection exclusion. */
export const MAX_AGENT_FILTER_LENGTH: number = MAX_FILTER_LENGTH + 512;
/** Bound on any JSON control message; larger ones are refused before parsing. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/**
 * Longest capture anyone may ask for or configure: 7 days. Timers fire at once for delays above
 * 2^31-1 ms (~24.8 days), so an unbounded duration would end a capture immediately.
 */
export const MAX_CAPTURE_DURATION_MS = 7 * 24 * 3600 * 1000;
/** What an agent accepts: the api adds a few seconds of safety margin to the capture duration. */
export const MAX_AGENT_DURATION_MS: number = MAX_CAPTURE_DURATION_MS + 60_000;

/**
 * BOSH deployment names: the Director's charset, and never "." or ".." (which would change the
 * Director path they are put into, dots survive encodeURIComponent).
 */
export function deploymentNameProblem(name: string): string | null {
  if (typeof name !== "string" || name.length === 0 || name.length > 255) {
    return "the deployment name must be 1..255 characters";
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    return `deployment name ${JSON.stringify(name.slice(0, 80))} may only contain letters, ` +
      "digits, '_', '.' and '-'";
  }
  if (name === "." || name === "..") return `deployment name "${name}" is not allowed`;
  return null;
}

/** Every STATUS type of protocol v1 (DESIGN §3). */
export const STATUS_TYPES = [
  "INSTANCE_UNAVAILABLE",
  "START_CAPTURE_FAILED",
  "INVALID_REQUEST",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "CONGESTED",
  "LIMIT_REACHED",
  "CAPTURE_STOPPED",
  "CONNECTION_ERROR",
] as const;
/** One of STATUS_TYPES: also the stable `type` of every error that ends up in a STATUS. */
export type StatusType = typeof STATUS_TYPES[number];

/**
 * libpcap devices that are not network interfaces: capturing them would read the host's D-Bus,
 * USB or Bluetooth traffic, or netfilter queues, none of which a network capture may expose.
 */
const PSEUDO_DEVICES = /^(dbus-|nflog|nfqueue|usbmon|bluetooth|rpcap)/;

/**
 * Linux dev_valid_name() (1..15 bytes, not "." or "..", no '/', ':' or whitespace), narrowed to
 * the printable ASCII names interfaces have in practice (letters, digits, '.', '_', '-'), and
 * no libpcap pseudo-device. `any` (every interface of the namespace) is allowed.
 */
export function interfaceNameProblem(name: string): string | null {
  if (name.length === 0) return "interface name is empty";
  const shown = JSON.stringify(name);
  if (new TextEncoder().encode(name).byteLength > 15) {
    return `interface name ${shown} is longer than 15 bytes`;
  }
  if (name === "." || name === "..") return `interface name ${shown} is not allowed`;
  if (/[\/:\s]/.test(name)) {
    return `interface name ${shown} contains '/', ':' or whitespace`;
  }
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return `interface name ${shown} has characters other than letters, digits, '.', '_' and '-'`;
  }
  if (PSEUDO_DEVICES.test(name)) {
    return `interface name ${shown} is a libpcap pseudo-device, not a network interface`;
  }
  return null;
}
