/**
 * An exclusive advisory lock (flock) beside a file, held while `fn` runs: two pcap clients that
 * refresh the same login at once take turns instead of both spending one refresh token, which a
 * UAA that rotates refresh tokens honours only once.
 */

/** `dir/.name.pcap-lock` next to the file a link points at, so a symlinked config locks once. */
export async function lockPathFor(path: string): Promise<string> {
  let target = path;
  try {
    target = await Deno.realPath(path);
  } catch { /* not there yet: lock where asked */ }
  const slash = target.lastIndexOf("/");
  const dir = slash < 0 ? "." : target.slice(0, slash) || "/";
  return `${dir}/.${target.slice(slash + 1)}.pcap-lock`;
}

/** Runs `fn` holding the lock of `path`; the lock file stays (empty, 0600) for the next run. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const lockPath = await lockPathFor(path);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  } catch (e) {
    throw new Error(`cannot lock ${path} (lock file ${lockPath}): ${(e as Error).message}`, {
      cause: e,
    });
  }
  try {
    await file.lock(true);
    return await fn();
  } finally {
    file.close(); // closing releases the flock
  }
}
