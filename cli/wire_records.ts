/**
 * Appends a batch of wire packet records to a writer's builder all or nothing: the records are
 * walked (and checked) by the protocol's walkRecords, and on a malformed record the builder is
 * reset, so no half-written batch reaches the sink.
 */
import type { ByteBuilder } from "./capture_output.ts";
import { type RecordVisitor, walkRecords } from "../protocol/frame_codec.ts";

/** Calls `visit` for every record; throws DecodeError (after resetting `b`) on a malformed one. */
export function appendRecords(b: ByteBuilder, records: Uint8Array, visit: RecordVisitor): number {
  try {
    return walkRecords(records, visit);
  } catch (e) {
    b.reset();
    throw e;
  }
}
