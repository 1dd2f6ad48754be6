/**
 * The one error type protocol decoding raises, in a module of its own so that the framing and
 * the record walker can both throw it without importing each other.
 *
 * @module
 */

/** Thrown for any malformed input; the only error type decoding ever raises. */
export class DecodeError extends Error {
  /** An error whose message says what was malformed, and where. */
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}
