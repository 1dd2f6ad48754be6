/**
 * The face every message schema of protocol/ shows (`Schema<T>`), and the compile-time check
 * that a zod schema produces exactly its hand-written interface, so the two cannot drift.
 *
 * @module
 */
/** One problem a schema found: where (`path`) and what (`message`). */
export interface ValidationIssue {
  /** a stable code such as `too_big`, `invalid_type` or `unrecognized_keys` */
  readonly code: string;
  /** the field, from the message's root */
  readonly path: readonly PropertyKey[];
  /** what is wrong, for people */
  readonly message: string;
  /** the unknown fields, with `unrecognized_keys` */
  readonly keys?: readonly string[];
}

/** Why a value did not validate. */
export interface ValidationError {
  /** every problem found, the first is the one reported */
  readonly issues: readonly ValidationIssue[];
}

/** The outcome of `Schema.safeParse`. */
export type ParseResult<T> = { success: true; data: T } | {
  success: false;
  error: ValidationError;
};

/** Validates untrusted input into a typed value (defaults applied). */
export interface Schema<T> {
  /** Validates `value`; never throws. */
  safeParse(value: unknown): ParseResult<T>;
  /** Validates `value`, throwing on invalid input (tests and trusted values only). */
  parse(value: unknown): T;
}

/** True when A and B are the same type (not merely assignable). */
export type Same<A, B> = (<X>() => X extends A ? 1 : 2) extends (<X>() => X extends B ? 1 : 2)
  ? true
  : false;
/** `schema` as a `Schema<T>`; `_same` is `true satisfies Same<T, z.output<typeof schema>>`. */
export function typed<T>(schema: Schema<T>, _same: true): Schema<T> {
  return schema;
}
