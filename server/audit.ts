/**
 * One structured audit line per capture (DESIGN §5): who (from the verified token), what
 * (deployment, targets, interface, filter, snaplen), when, how much, and how it ended. The record
 * type has no place for a token, and free-text fields are scrubbed of anything JWT-shaped in case
 * a user pasted one into a filter or an upstream error echoed one.
 */
import { createLogger, type Logger } from "../lib/log.ts";

export interface AuditRecord {
  /** user_name or client id from the verified token (for people to read) */
  user: string;
  /** user_id (or sub) claim: the stable identity; user names repeat across origins */
  userId?: string;
  /** the token's identity-provider origin (uaa, ldap, ...) */
  origin?: string;
  clientId?: string;
  /** the TargetResolver's name ("bosh", "cf") */
  resolver: string;
  deployment?: string;
  /** origins, e.g. "router/0 (uuid)" */
  targets: string[];
  interface: string;
  filter: string;
  snaplen: number;
  start: Date;
  end: Date;
  packets: number;
  bytes: number;
  /** e.g. "CAPTURE_STOPPED", "LIMIT_REACHED", "START_CAPTURE_FAILED", "UNAUTHENTICATED" */
  outcome: string;
  /** short reason for a failed outcome */
  detail?: string;
  /** TCP peer address (gorouter's, behind a route) */
  remote?: string;
  /** X-Forwarded-For as the client or proxy sent it; informational, never trusted */
  forwardedFor?: string;
}

// Three base64url segments starting like a JSON header: a JWT (signature may be empty: alg none).
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
const BEARER = /bearer\s+\S+/gi;

export function scrubSecrets(text: string): string {
  return text.replace(JWT_LIKE, "[redacted-token]").replace(BEARER, "Bearer [redacted]");
}

/** The JSON fields of an audit line (pure; exported for tests). */
export function auditFields(r: AuditRecord): Record<string, unknown> {
  return {
    event: "capture",
    user: scrubSecrets(r.user),
    user_id: r.userId,
    origin: r.origin,
    client_id: r.clientId,
    resolver: r.resolver,
    deployment: r.deployment,
    targets: r.targets,
    interface: r.interface,
    filter: scrubSecrets(r.filter),
    snaplen: r.snaplen,
    start: r.start.toISOString(),
    end: r.end.toISOString(),
    duration_ms: r.end.getTime() - r.start.getTime(),
    packets: r.packets,
    bytes: r.bytes,
    outcome: r.outcome,
    detail: r.detail === undefined ? undefined : scrubSecrets(r.detail),
    remote: r.remote,
    forwarded_for: r.forwardedFor === undefined ? undefined : scrubSecrets(r.forwardedFor),
  };
}

export interface AuditOptions {
  enabled: boolean;
  /** append JSON lines here; default: the stderr log stream, component "audit" */
  file?: string;
  /** test hook: receives each line instead of stderr/file */
  sink?: (line: string) => void;
  /** a line could not be written (disk full, ...); the api keeps serving */
  onError?: (e: Error) => void;
  /** window in which refusals of unauthenticated sessions are aggregated (default 10 s) */
  unauthenticatedWindowMs?: number;
  now?: () => number;
}

export class AuditLog {
  #logger: Logger | null = null;
  #fileHandle: Deno.FsFile | null = null;
  readonly #windows = new Map<string, { start: number; suppressed: number }>();

  private constructor(readonly opts: AuditOptions) {}

  /** Opens the audit file (append, 0640) if configured; throws with the path on failure. */
  static async open(opts: AuditOptions): Promise<AuditLog> {
    const log = new AuditLog(opts);
    if (!opts.enabled) return log;
    let sink = opts.sink;
    if (!sink && opts.file) {
      const path = opts.file;
      try {
        log.#fileHandle = await Deno.open(path, { append: true, create: true, mode: 0o640 });
      } catch (e) {
        throw new Error(`cannot open audit file ${path}: ${(e as Error).message}`);
      }
      const fh = log.#fileHandle;
      const enc = new TextEncoder();
      sink = (line) => {
        const bytes = enc.encode(line + "\n");
        // One write per line; O_APPEND keeps lines whole across processes.
        let off = 0;
        while (off < bytes.length) off += fh.writeSync(bytes.subarray(off));
      };
    }
    log.#logger = createLogger({ component: "audit", level: "info", sink });
    return log;
  }

  /** Writes one line. Never throws: a failing audit sink must not crash a capture's end. */
  write(record: AuditRecord, extra: Record<string, unknown> = {}): void {
    try {
      this.#logger?.info("capture", { ...auditFields(record), ...extra });
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      try {
        this.opts.onError?.(err);
      } catch { /* the error reporter must not throw either */ }
    }
  }

  /**
   * Refusals of sessions that never authenticated (no token, bad token, too many waiting):
   * the first of each outcome per window is written, the rest are counted and reported as
   * `suppressed` on the next line written, so a flood of junk connections cannot fill the disk.
   */
  writeUnauthenticated(record: AuditRecord): void {
    const now = (this.opts.now ?? Date.now)();
    const windowMs = this.opts.unauthenticatedWindowMs ?? 10_000;
    const w = this.#windows.get(record.outcome);
    if (w && now - w.start < windowMs) {
      w.suppressed++;
      return;
    }
    this.#windows.set(record.outcome, { start: now, suppressed: 0 });
    this.write(record, w?.suppressed ? { suppressed: w.suppressed } : {});
  }

  close(): void {
    this.#fileHandle?.close();
    this.#fileHandle = null;
    this.#logger = null;
  }
}
