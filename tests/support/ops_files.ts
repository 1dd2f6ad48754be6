/**
 * A small implementation of BOSH's ops-file semantics (go-patch), enough to check that every
 * path of our ops files resolves: `replace` and `remove`; path tokens `key`, array index,
 * `name=value` selectors, `-` (append) and a `?` suffix that makes that token and all later ones
 * optional (created when missing). A missing non-optional token is an error naming the path.
 */
export type Doc = null | boolean | number | string | Doc[] | { [k: string]: Doc };
export interface Op {
  type: "replace" | "remove";
  path: string;
  value?: Doc;
}

type Token =
  | { kind: "key"; key: string; optional: boolean }
  | { kind: "index"; index: number; optional: boolean }
  | { kind: "match"; key: string; value: string; optional: boolean }
  | { kind: "append" };

export function parsePath(path: string): Token[] {
  if (!path.startsWith("/")) throw new Error(`ops path ${path}: must start with /`);
  let optional = false;
  return path.slice(1).split("/").map((raw): Token => {
    if (raw === "-") return { kind: "append" };
    let t = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (t.endsWith("?")) {
      optional = true;
      t = t.slice(0, -1);
    }
    const eq = t.indexOf("=");
    if (eq > 0) return { kind: "match", key: t.slice(0, eq), value: t.slice(eq + 1), optional };
    if (/^\d+$/.test(t)) return { kind: "index", index: Number(t), optional };
    return { kind: "key", key: t, optional };
  });
}

const isMap = (d: Doc | undefined): d is { [k: string]: Doc } =>
  d !== null && typeof d === "object" && !Array.isArray(d);

/** Applies one op to doc (mutating it); returns the doc (a new one for path "/"). */
export function applyOp(doc: Doc, op: Op): Doc {
  const tokens = parsePath(op.path);
  const fail = (i: number, why: string): never => {
    throw new Error(
      `${op.type} ${op.path}: ${why} at /${op.path.slice(1).split("/").slice(0, i + 1).join("/")}`,
    );
  };
  let node: Doc = doc;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    const last = i === tokens.length - 1;
    if (t.kind === "append") {
      if (!Array.isArray(node)) fail(i, "append to something that is not an array");
      if (!last) fail(i, "'-' must be the last token");
      if (op.type === "remove") fail(i, "cannot remove '-'");
      (node as Doc[]).push(structuredClone(op.value!));
      return doc;
    }
    if (t.kind === "key") {
      if (!isMap(node)) fail(i, "key into something that is not a map");
      const map = node as { [k: string]: Doc };
      if (last) {
        if (op.type === "replace") map[t.key] = structuredClone(op.value!);
        else if (t.key in map) delete map[t.key];
        else if (!t.optional) fail(i, `key '${t.key}' not found`);
        return doc;
      }
      if (!(t.key in map) || map[t.key] === null) {
        if (!t.optional || op.type === "remove") {
          if (op.type === "remove" && t.optional) return doc;
          fail(i, `key '${t.key}' not found`);
        }
        map[t.key] = tokens[i + 1].kind === "key" ? {} : [];
      }
      node = map[t.key];
      continue;
    }
    if (!Array.isArray(node)) fail(i, "index into something that is not an array");
    const arr = node as Doc[];
    let at = -1;
    if (t.kind === "index") at = t.index < arr.length ? t.index : -1;
    else at = arr.findIndex((e) => isMap(e) && String(e[t.key]) === t.value);
    if (at < 0) {
      if (op.type === "remove" && t.optional) return doc;
      if (!t.optional || t.kind === "index") fail(i, `no element ${JSON.stringify(t)}`);
      if (t.kind === "match") {
        if (last) {
          arr.push(structuredClone(op.value!));
          return doc;
        }
        arr.push({ [t.key]: t.value });
        at = arr.length - 1;
      }
    }
    if (last) {
      if (op.type === "replace") arr[at] = structuredClone(op.value!);
      else arr.splice(at, 1);
      return doc;
    }
    node = arr[at];
  }
  if (op.type === "replace") return structuredClone(op.value!);
  throw new Error(`remove /: cannot remove the whole document`);
}

export function applyOps(doc: Doc, ops: Op[]): Doc {
  return ops.reduce((d, op) => applyOp(d, op), structuredClone(doc));
}

/** Every ((variable)) name a document references (without the leading / of absolute names). */
export function variablesIn(doc: Doc): string[] {
  const names = new Set<string>();
  for (const m of JSON.stringify(doc).matchAll(/\(\(([!/]?[A-Za-z0-9_./-]+)\)\)/g)) names.add(m[1]);
  return [...names];
}
