/**
 * The few pieces of HTTP/1.1 a client needs to speak to one known server over a raw socket
 * (server/agent_stream_tls.ts): the request bytes, the response head, and the body's framing
 * (content-length, chunked, or until the connection closes). Pure: bytes in, values out.
 */

/** Bound of a response head (status line and headers); agents send a few hundred bytes. */
export const MAX_HEAD_BYTES = 16 * 1024;

export class HttpWireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HttpWireError";
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A request with a body (or none), `connection: close`: one request per connection. */
export function formatRequest(
  method: "GET" | "POST",
  hostHeader: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Uint8Array {
  const bytes = body === undefined ? undefined : enc.encode(body);
  const lines = [`${method} ${path} HTTP/1.1`, `host: ${hostHeader}`, "connection: close"];
  for (const [k, v] of Object.entries(headers)) {
    if (/[\r\n]/.test(k + v)) throw new HttpWireError(`header ${k}: line breaks are not allowed`);
    lines.push(`${k}: ${v}`);
  }
  if (bytes) lines.push(`content-length: ${bytes.byteLength}`);
  const head = enc.encode(lines.join("\r\n") + "\r\n\r\n");
  if (!bytes) return head;
  const out = new Uint8Array(head.byteLength + bytes.byteLength);
  out.set(head);
  out.set(bytes, head.byteLength);
  return out;
}

export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

export interface ResponseHead {
  status: number;
  headers: Headers;
  framing: BodyFraming;
  /** bytes of `input` the head took; what follows belongs to the body */
  consumed: number;
}

/**
 * Parses the response head at the start of `input`, or returns null when it is not complete
 * yet. Throws HttpWireError on a malformed or oversized head.
 */
export function parseResponseHead(input: Uint8Array, method: string): ResponseHead | null {
  const end = indexOfCrlfCrlf(input);
  if (end < 0) {
    if (input.byteLength > MAX_HEAD_BYTES) {
      throw new HttpWireError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
    }
    return null;
  }
  if (end > MAX_HEAD_BYTES) {
    throw new HttpWireError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
  }
  const [statusLine, ...lines] = dec.decode(input.subarray(0, end)).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) throw new HttpWireError(`not an HTTP/1.1 status line: ${statusLine.slice(0, 80)}`);
  const status = Number(m[1]);
  const headers = new Headers();
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i <= 0) throw new HttpWireError(`malformed header line: ${line.slice(0, 80)}`);
    try {
      headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
    } catch {
      throw new HttpWireError(`malformed header line: ${line.slice(0, 80)}`);
    }
  }
  return { status, headers, framing: framingOf(status, headers, method), consumed: end + 4 };
}

function framingOf(status: number, headers: Headers, method: string): BodyFraming {
  if (method === "HEAD" || status === 204 || status === 304 || (status >= 100 && status < 200)) {
    return { kind: "none" };
  }
  const te = headers.get("transfer-encoding");
  if (te !== null) {
    if (te.trim().toLowerCase() !== "chunked") {
      throw new HttpWireError(`unsupported transfer-encoding: ${te.slice(0, 40)}`);
    }
    return { kind: "chunked" };
  }
  const cl = headers.get("content-length");
  if (cl !== null) {
    if (!/^\d{1,15}$/.test(cl.trim())) throw new HttpWireError(`bad content-length: ${cl}`);
    return { kind: "length", length: Number(cl.trim()) };
  }
  return { kind: "close" };
}

function indexOfCrlfCrlf(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.byteLength; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/** Bound of a chunk-size line or a trailer line. */
const MAX_LINE = 1024;

/**
 * Decodes a body's framing incrementally: push() takes the next bytes from the socket and
 * returns the body's payload in them as views into that input (valid while it is).
 */
export class BodyDecoder {
  readonly #framing: BodyFraming;
  #remaining: number;
  /** chunked: "size" line, "data" of a chunk, its "crlf", "trailer" lines, or "done" */
  #state: "size" | "data" | "crlf" | "trailer" | "done";
  #line = "";

  constructor(framing: BodyFraming) {
    this.#framing = framing;
    this.#remaining = framing.kind === "length" ? framing.length : 0;
    this.#state = framing.kind === "none" || (framing.kind === "length" && framing.length === 0)
      ? "done"
      : framing.kind === "chunked"
      ? "size"
      : "data";
  }

  /** The body ended (a close-delimited body ends only with the connection: see atClose). */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Whether the connection closing now is the body's proper end. */
  atClose(): boolean {
    return this.#state === "done" || this.#framing.kind === "close";
  }

  push(input: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    const f = this.#framing;
    if (f.kind === "close") {
      if (input.byteLength) out.push(input);
      return out;
    }
    if (f.kind === "length") {
      if (this.#state === "done") return out;
      const n = Math.min(this.#remaining, input.byteLength);
      if (n) out.push(input.subarray(0, n));
      this.#remaining -= n;
      if (this.#remaining === 0) this.#state = "done";
      return out;
    }
    let i = 0;
    while (i < input.byteLength && this.#state !== "done") {
      if (this.#state === "data") {
        const n = Math.min(this.#remaining, input.byteLength - i);
        out.push(input.subarray(i, i + n));
        i += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#state = "crlf";
        continue;
      }
      // size, crlf and trailer states read lines
      const nl = input.indexOf(10, i);
      const stop = nl < 0 ? input.byteLength : nl + 1;
      this.#line += dec.decode(input.subarray(i, stop));
      i = stop;
      if (this.#line.length > MAX_LINE) throw new HttpWireError("chunked body: line too long");
      if (nl < 0) continue;
      const line = this.#line.replace(/\r?\n$/, "");
      this.#line = "";
      this.#onLine(line);
    }
    return out;
  }

  #onLine(line: string): void {
    if (this.#state === "crlf") {
      if (line !== "") throw new HttpWireError("chunked body: missing CRLF after a chunk");
      this.#state = "size";
    } else if (this.#state === "size") {
      const m = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line.trim());
      if (!m) throw new HttpWireError(`chunked body: bad chunk size ${line.slice(0, 40)}`);
      this.#remaining = parseInt(m[1], 16);
      this.#state = this.#remaining === 0 ? "trailer" : "data";
    } else if (this.#state === "trailer" && line === "") {
      this.#state = "done";
    }
  }
}
