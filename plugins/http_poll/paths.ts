// Finding things in an API's answer: a value by dotted path ("data.next", "meta.paging.next"),
// and the next page's URL in an RFC 8288 Link header.

/**
 * The value at `path` in `doc`: a key spelled exactly as `path` (dots included) wins; else
 * the dot-separated steps, each an object key or an array index. undefined if absent.
 */
export function valueAt(doc: unknown, path: string): unknown {
  if (isObject(doc) && Object.hasOwn(doc, path)) return doc[path];
  let v: unknown = doc;
  for (const step of path.split(".")) {
    if (Array.isArray(v)) {
      if (!/^\d+$/.test(step)) return undefined;
      v = v[Number(step)];
    } else if (isObject(v) && Object.hasOwn(v, step)) {
      v = v[step];
    } else {
      return undefined;
    }
  }
  return v;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The target of the first link with relation "next" in a Link header value (RFC 8288 §3:
 * `<uri-reference>; param=value; rel="next prev", <...>; ...`), as written; null if none.
 */
export function nextLink(header: string | null): string | null {
  if (!header) return null;
  let i = 0;
  const n = header.length;
  while (i < n) {
    const open = header.indexOf("<", i);
    if (open === -1) return null;
    const close = header.indexOf(">", open + 1);
    if (close === -1) return null;
    const target = header.slice(open + 1, close).trim();
    // Parameters run to the next comma outside quotes.
    let j = close + 1;
    let inQuotes = false;
    for (; j < n; j++) {
      const c = header[j];
      if (c === '"' && header[j - 1] !== "\\") inQuotes = !inQuotes;
      else if (c === "," && !inQuotes) break;
    }
    const params = header.slice(close + 1, j);
    for (const m of params.matchAll(/;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/gi)) {
      const rels = (m[1] ?? m[2] ?? "").toLowerCase().split(/\s+/);
      if (rels.includes("next")) return target;
    }
    i = j + 1;
  }
  return null;
}
