/**
 * Frames as typed events: the one decoder both the api (reading agent streams) and the clients
 * (reading the api's WebSocket) use, so that JSON payloads are validated with the protocol's
 * schemas at the edge and PACKETS are checked record by record before anyone reads them.
 *
 * @example Decode one WebSocket message
 * ```ts
 * import { encodeJsonFrame, FrameKind } from "./frame_codec.ts";
 * import { decodeMessageEvent } from "./events.ts";
 *
 * const msg = encodeJsonFrame(FrameKind.STATUS, 0xffff, {
 *   type: "CAPTURE_STOPPED", text: "done", origin: "api",
 * });
 * const event = decodeMessageEvent(msg);
 * if (event.kind === "status") console.log(event.status.type); // CAPTURE_STOPPED
 * ```
 *
 * @module
 */
import { DecodeError } from "./decode_error.ts";
import {
  decodeJson,
  decodeSingleFrame,
  type Frame,
  FrameKind,
  frameKindName,
} from "./frame_codec.ts";
import { validatePackets } from "./records.ts";
import {
  describeZodError,
  Hello,
  type Schema,
  SourceDescriptor,
  SourceStats,
  StatusMessage,
} from "./messages.ts";

/** One frame, decoded and validated. `source` is the frame's source field. */
export type StreamEvent =
  | { kind: "hello"; source: number; hello: Hello }
  | { kind: "source"; source: number; descriptor: SourceDescriptor }
  | {
    kind: "packets";
    source: number;
    count: number;
    /** the records, a view into `payload` */
    records: Uint8Array;
    /** the whole PACKETS payload (count + records), as received */
    payload: Uint8Array;
  }
  | { kind: "status"; source: number; status: StatusMessage }
  | { kind: "stats"; source: number; stats: SourceStats }
  | { kind: "ping"; source: number }
  | { kind: "end"; source: number };

function parseJson<T>(frame: Frame, schema: Schema<T>): T {
  const parsed = schema.safeParse(decodeJson(frame));
  if (!parsed.success) {
    throw new DecodeError(
      `invalid ${frameKindName(frame.kind)} message: ${describeZodError(parsed.error)}`,
    );
  }
  return parsed.data;
}

/** One frame → one typed event. Throws DecodeError for anything malformed. Pure. */
export function decodeEvent(frame: Frame): StreamEvent {
  const source = frame.source;
  switch (frame.kind) {
    case FrameKind.HELLO:
      return { kind: "hello", source, hello: parseJson(frame, Hello) };
    case FrameKind.SOURCE:
      return { kind: "source", source, descriptor: parseJson(frame, SourceDescriptor) };
    case FrameKind.PACKETS: {
      const { count, records } = validatePackets(frame.payload);
      return { kind: "packets", source, count, records, payload: frame.payload };
    }
    case FrameKind.STATUS:
      return { kind: "status", source, status: parseJson(frame, StatusMessage) };
    case FrameKind.STATS:
      return { kind: "stats", source, stats: parseJson(frame, SourceStats) };
    case FrameKind.PING:
      return { kind: "ping", source };
    case FrameKind.END:
      return { kind: "end", source };
  }
  throw new DecodeError(`unexpected frame kind ${frameKindName(frame.kind)}`);
}

/**
 * One WebSocket message (exactly one binary frame) → one typed event. Throws DecodeError.
 * `peer` names the sender in the error for a text message.
 */
export function decodeMessageEvent(
  data: ArrayBuffer | Uint8Array | string,
  peer = "the api",
): StreamEvent {
  if (typeof data === "string") {
    throw new DecodeError(`${peer} sent a text message; frames must be binary messages`);
  }
  return decodeEvent(decodeSingleFrame(data instanceof Uint8Array ? data : new Uint8Array(data)));
}
