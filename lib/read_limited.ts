/**
 * Reads a body as text, at most `max` bytes: a broken or hostile peer cannot make us buffer an
 * unbounded body. Shared by the agent (start requests) and the api (Director, UAA, agent errors).
 */

/** The body as UTF-8 text, or null when it is larger than `max` bytes (the rest is cancelled). */
export async function readTextLimited(
  body: ReadableStream<Uint8Array> | null,
  max: number,
): Promise<string | null> {
  if (!body) return "";
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    parts.push(value);
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.byteLength;
  }
  return new TextDecoder().decode(all);
}

/** A Response body as text; throws past `max` bytes so a broken peer cannot exhaust memory. */
export async function readLimited(res: Response, max: number): Promise<string> {
  const text = await readTextLimited(res.body, max);
  if (text === null) throw new Error(`response exceeds the ${max}-byte limit`);
  return text;
}
