/**
 * pcap protocol v1, the wire format agent, api and clients share (docs/protocol.md). One module
 * per concept:
 *
 * - `frame_codec.ts`: frames, the stream assembler, single-message decoding;
 * - `records.ts`: packet records (the only place that knows their layout);
 * - `messages.ts`: the JSON messages as interfaces, each with a `Schema<T>`;
 * - `events.ts`: a frame as a typed event;
 * - `hello.ts`: HELLO and the version rules;
 * - `status_errors.ts`: errors with a stable type, as STATUS messages and HTTP answers;
 * - `version.ts`: the version numbers.
 *
 * @example Encode a batch of packets and read it back as an event
 * ```ts
 * import { decodeMessageEvent, encodePacketsFrame, encodeRecords } from "./mod.ts";
 *
 * const records = encodeRecords([{ tsNs: 1_700_000_000_000_000_000n, data: new Uint8Array(64) }]);
 * const event = decodeMessageEvent(encodePacketsFrame(0, 1, records));
 * if (event.kind === "packets") console.log(event.count); // 1
 * ```
 *
 * @module
 */
export * from "./decode_error.ts";
export {
  type AssembledFrame,
  decodeJson,
  decodeSingleFrame,
  enclosingFrame,
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameAssembler,
  FrameDecoder,
  FrameKind,
  frameKindName,
  MAX_PAYLOAD_BYTES,
  setFrameSource,
} from "./frame_codec.ts";
export * from "./records.ts";
export * from "./messages.ts";
export * from "./events.ts";
export * from "./hello.ts";
export * from "./status_errors.ts";
export { MIN_PEER_VERSION, PROTOCOL_VERSION } from "./version.ts";
