/**
 * What the api forwards of an agent's STATUS messages (pure): the text is truncated to
 * MAX_STATUS_TEXT characters and free-form limit fields are bounded, and each source may send
 * at most a burst of STATUS_BURST and then STATUS_PER_SECOND messages per second; the excess is
 * counted and the next forwarded message says how many were left out. The first
 * INSTANCE_UNAVAILABLE and the first CAPTURE_STOPPED of a source always pass: they say how the
 * source ended. A compromised VM can therefore neither flood a client with status text nor
 * make the api hold it.
 */
import type { StatusMessage } from "../protocol/messages.ts";

/** Characters of agent STATUS text forwarded to the client. */
export const MAX_STATUS_TEXT = 1024;
/** Characters kept of a LIMIT_REACHED's limit name (and a string value). */
const MAX_LIMIT_FIELD = 128;
export const STATUS_BURST = 20;
export const STATUS_PER_SECOND = 5;

/** Cuts `text` to `max` characters, saying how long it was. */
export function truncateText(text: string, max = MAX_STATUS_TEXT): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}… [truncated: the agent sent ${text.length} characters]`;
}

/** The STATUS with its free-form fields bounded. */
export function boundedStatus(m: StatusMessage): StatusMessage {
  const limit = m.limit && {
    name: m.limit.name.slice(0, MAX_LIMIT_FIELD),
    value: typeof m.limit.value === "string"
      ? m.limit.value.slice(0, MAX_LIMIT_FIELD)
      : m.limit.value,
  };
  return {
    ...m,
    text: truncateText(m.text),
    ...(limit ? { limit } : {}),
  };
}

/** The verdict on one STATUS of a source. */
export type StatusVerdict =
  | { forward: true; status: StatusMessage }
  | { forward: false; suppressed: number };

const TERMINAL = new Set(["INSTANCE_UNAVAILABLE", "CAPTURE_STOPPED"]);

/** Per-source token bucket over the STATUS messages of one agent stream. */
export class AgentStatusGate {
  #tokens = STATUS_BURST;
  #last: number;
  #suppressed = 0;
  readonly #terminalSeen = new Set<string>();

  constructor(private readonly now: () => number = Date.now) {
    this.#last = now();
  }

  /** messages left out so far and not yet reported */
  get suppressed(): number {
    return this.#suppressed;
  }

  /** Bounds the message and decides whether it is forwarded. */
  admit(m: StatusMessage): StatusVerdict {
    const t = this.now();
    this.#tokens = Math.min(
      STATUS_BURST,
      this.#tokens + ((t - this.#last) / 1000) * STATUS_PER_SECOND,
    );
    this.#last = t;
    const firstTerminal = TERMINAL.has(m.type) && !this.#terminalSeen.has(m.type);
    if (!firstTerminal && this.#tokens < 1) {
      this.#suppressed++;
      return { forward: false, suppressed: this.#suppressed };
    }
    if (firstTerminal) this.#terminalSeen.add(m.type);
    else this.#tokens -= 1;
    const status = boundedStatus(m);
    if (this.#suppressed > 0) {
      status.text += ` (${this.#suppressed} earlier status message(s) of this agent were ` +
        `left out: at most ${STATUS_PER_SECOND} per second are forwarded)`;
      this.#suppressed = 0;
    }
    return { forward: true, status };
  }
}
