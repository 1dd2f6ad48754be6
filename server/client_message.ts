/**
 * Reads one message from the capture WebSocket client (pure): size and type checks, JSON, and
 * the start or stop request schema, with a problem text that says what to send instead.
 */
import {
  describeZodError,
  MAX_CONTROL_MESSAGE_BYTES,
  type Schema,
  StopRequest,
} from "../protocol/messages.ts";

export type ClientMessage<R> =
  | { kind: "start"; request: R }
  | { kind: "stop" }
  | { kind: "invalid"; problem: string };

const enc = new TextEncoder();

/**
 * `awaitingStart`: only a start request (of the route's `startRequest` schema) is valid;
 * afterwards only a stop request.
 */
export function readClientMessage<R>(
  data: unknown,
  awaitingStart: boolean,
  startRequest: Schema<R>,
): ClientMessage<R> {
  const text = typeof data === "string" ? data : null;
  const size = text === null ? (data as ArrayBuffer)?.byteLength ?? 0 : enc.encode(text).byteLength;
  if (size > MAX_CONTROL_MESSAGE_BYTES) {
    return invalid(`message of ${size} bytes exceeds the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`);
  }
  if (text === null) return invalid("binary messages are not accepted; send JSON text messages");
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return invalid("message is not JSON; send a JSON start or stop request");
  }
  const type = (msg as { type?: unknown })?.type;
  if (awaitingStart) {
    if (type !== "start") {
      return invalid(`expected a start request first, got message type ${JSON.stringify(type)}`);
    }
    const parsed = startRequest.safeParse(msg);
    return parsed.success
      ? { kind: "start", request: parsed.data }
      : invalid(`invalid start request: ${describeZodError(parsed.error)}`);
  }
  if (type === "stop" && StopRequest.safeParse(msg).success) return { kind: "stop" };
  return invalid(
    `unexpected message type ${JSON.stringify(type)}; only {"type":"stop"} is ` +
      "accepted after the start request",
  );
}

function invalid(problem: string): { kind: "invalid"; problem: string } {
  return { kind: "invalid", problem };
}
