/**
 * Writes a capture stream straight to the response's TLS socket: node:http writes the head and,
 * at the end, the last chunk (so keep-alive, 'finish' and 'close' stay node's); in between, every
 * chunk the session hands out (already framed, agent/http_chunks.ts) is one socket.write(). That
 * skips node:http's chunked write, whose writev Deno joins into a copy of every frame.
 *
 * Back-pressure is the socket's: the next chunk is taken only once write() returned true or
 * 'drain' came, so what the session still queues is exactly what the reader has not taken (its
 * hysteresis discards and counts the excess, as with any other writer).
 */
import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "../lib/log.ts";

/** What the writer needs from a capture session. */
export interface ChunkSource {
  /** the next framed chunk, or null once the stream is over (END sent, or aborted) */
  nextChunk(): Promise<Uint8Array | null>;
  /** the socket is done with `chunk` (its write callback): its memory may be reused */
  release(chunk: Uint8Array): void;
  abort(reason: string): void;
}

/**
 * Sends `status`/`headers` with chunked transfer coding, then the source's chunks, then the last
 * chunk. Resolves once the response finished or the connection is gone (never rejects); a
 * connection that closes first aborts the source (client disconnected).
 */
export async function writeChunkedStream(
  source: ChunkSource,
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  log: Logger,
): Promise<void> {
  try {
    // node:http picks chunked coding itself (HTTP/1.1, no content-length), as it did before.
    res.writeHead(status, headers);
    res.flushHeaders();
    const socket = res.socket;
    const chunked = (res as unknown as { chunkedEncoding?: boolean }).chunkedEncoding;
    if (!socket || chunked !== true) {
      // A pipelined request (another response still owns the socket) or an HTTP/1.0 client
      // (no chunked coding): raw chunks would corrupt the connection.
      log.warn("capture stream cannot be written to this connection; closing it", {
        reason: socket
          ? "response is not chunked (an HTTP/1.0 request?)"
          : "pipelined request: the socket is busy",
        hint: "send each capture request with HTTP/1.1 on its own connection",
      });
      source.abort("connection unusable for the capture stream");
      res.destroy();
      return;
    }
    // Gone while the session waits for packets: release the capture now (after a normal end,
    // the session is closed already and ignores this).
    res.once("close", () => source.abort("client disconnected"));
    for (;;) {
      if (res.destroyed || socket.destroyed) return source.abort("client disconnected");
      const chunk = await source.nextChunk();
      if (chunk === null) break;
      if (res.destroyed || socket.destroyed) return source.abort("client disconnected");
      if (!socket.write(chunk, () => source.release(chunk)) && !await drained(socket)) {
        return source.abort("client disconnected");
      }
    }
    // An abort destroyed the response already (the session's onAbort hook); else end it.
    if (res.destroyed) return;
    await new Promise<void>((resolve) => {
      res.once("close", resolve);
      res.end(resolve);
    });
  } catch (e) {
    log.warn("capture stream write failed; closing the connection", { error: e });
    source.abort(`stream write failed: ${(e as Error).message}`);
    res.destroy();
  }
}

/** Resolves true on 'drain', false if the socket closes first. */
function drained(socket: Socket): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      socket.off("drain", onDrain);
      socket.off("close", onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    socket.on("drain", onDrain);
    socket.on("close", onClose);
  });
}
