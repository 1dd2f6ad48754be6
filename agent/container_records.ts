/**
 * The records a Diego cell keeps about its containers, parsed strictly (pure; DESIGN §2, CF):
 * - the CNI container-metadata store: `{ "<handle>": {handle, ip, metadata{app_id, ...}} }`;
 * - runc's `state.json`: `init_process_pid` (a host pid) and `init_process_start`;
 * - `/proc/<pid>/stat` field 22, the process start time that `init_process_start` records.
 */

export interface StoreEntry {
  handle: string;
  ip: string;
  appId: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; why: string };

/** Garden handles as used in paths below the runc root: a safe charset, never "." or "..". */
export const SAFE_HANDLE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** The store file's text → its entries; empty or partial text (silk rewrites it) is an error. */
export function parseStore(text: string): Parsed<Map<string, StoreEntry>> {
  if (text.trim() === "") return { ok: false, why: "the store is empty" };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, why: `the store is not complete JSON (${(e as Error).message})` };
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return { ok: false, why: "the store is not a JSON object of handle → entry" };
  }
  const out = new Map<string, StoreEntry>();
  for (const [key, v] of Object.entries(raw as Record<string, unknown>)) {
    const e = v as { handle?: unknown; ip?: unknown; metadata?: { app_id?: unknown } } | null;
    if (!e || typeof e !== "object") continue;
    const appId = e.metadata && typeof e.metadata === "object" ? e.metadata.app_id : undefined;
    out.set(key, {
      handle: typeof e.handle === "string" ? e.handle : key,
      ip: typeof e.ip === "string" ? e.ip : "",
      appId: typeof appId === "string" ? appId : "",
    });
  }
  return { ok: true, value: out };
}

export interface RuncState {
  pid: number;
  /** start time in clock ticks since boot, as in /proc/<pid>/stat field 22 */
  startTicks: string;
}

/** runc's state.json → the init process's pid and start time. */
export function parseRuncState(text: string): Parsed<RuncState> {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, why: `state.json is not JSON (${(e as Error).message})` };
  }
  const pid = raw?.init_process_pid;
  const start = raw?.init_process_start;
  if (typeof pid !== "number" || !Number.isSafeInteger(pid) || pid < 2) {
    return { ok: false, why: `state.json has no valid init_process_pid (${String(pid)})` };
  }
  if (
    !((typeof start === "number" && Number.isSafeInteger(start) && start >= 0) ||
      (typeof start === "string" && /^\d{1,20}$/.test(start)))
  ) {
    return { ok: false, why: "state.json has no valid init_process_start" };
  }
  return { ok: true, value: { pid, startTicks: String(start) } };
}

/**
 * Field 22 (starttime) of a /proc/<pid>/stat line. The command name (field 2) is in
 * parentheses and may contain spaces and ')', so fields are counted after the LAST ')'.
 */
export function procStartTicks(stat: string): string | null {
  const close = stat.lastIndexOf(")");
  if (close < 0) return null;
  const rest = stat.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state); field 22 is rest[19].
  const v = rest[19];
  return v !== undefined && /^\d+$/.test(v) ? v : null;
}
