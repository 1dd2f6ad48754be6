/// <reference lib="deno.worker" />
/**
 * The api's filter compiler thread (see filter_compiler.ts): compiles one filter at a time with
 * libpcap against a dead handle and answers. Off the main thread, so a slow compile never stalls
 * the event loop; the main thread terminates this worker when a compile passes its deadline.
 *
 * @module
 */
import { checkFilter } from "../ffi/filter_check.ts";
import { pcap } from "../ffi/libpcap.ts";

export interface CompileJob {
  id: number;
  filter: string;
  linkType: number;
  snaplen: number;
}

export type CompileReply =
  | { type: "ready" }
  | { type: "result"; id: number; ok: true }
  | { type: "result"; id: number; ok: false; error: string; unavailable?: boolean };

try {
  pcap(); // dlopen now, while idle, not on the first compile's deadline
} catch { /* the first compile reports it */ }
self.postMessage({ type: "ready" } satisfies CompileReply);

self.onmessage = (ev: MessageEvent<CompileJob>) => {
  const { id, filter, linkType, snaplen } = ev.data;
  let reply: CompileReply;
  try {
    const r = checkFilter(filter, linkType, snaplen);
    reply = r.ok
      ? { type: "result", id, ok: true }
      : { type: "result", id, ok: false, error: r.error };
  } catch (e) {
    // libpcap could not be loaded: the api's fault, not the filter's.
    reply = { type: "result", id, ok: false, error: (e as Error).message, unavailable: true };
  }
  self.postMessage(reply);
};
