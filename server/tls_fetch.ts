/**
 * Moved to lib/tls_fetch.ts (the CLI uses it too); re-exported for the api's modules.
 *
 * @module
 */
export * from "../lib/tls_fetch.ts";
