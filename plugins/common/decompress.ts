// Undoing gzip, bzip2 and zip on a byte stream, so a compressed feed dump (PhishTank's
// online-valid.json.bz2 / .gz, a zipped export) is read as it downloads, never held whole.
//
//   const { compression, body } = await decompress(res.body, { zipEntry: "feed.json" });
//
// The format is decided by the data's magic bytes (gzip 1f 8b, zip "PK\3\4", bzip2 "BZh"
// + level + block or end-of-stream magic), which no text or JSON body can start with. What
// the Content-Encoding / Content-Type headers or the URL's extension announce
// (compressionFromHints) is only a hint: fetch already undoes `Content-Encoding: gzip`, so
// a ".gz" URL served that way arrives as plain bytes and is passed through unchanged.
//
// gzip: DecompressionStream (native) under Bun; elsewhere fflate's Gunzip, because Deno's
// DecompressionStream rejects multi-member gzip (pigz, concatenated files). Both accept
// several members. zip: fflate's streaming Unzip; the first file entry or the one named by
// `zipEntry` (full name or base name); deflate and stored entries. Compressed bytes of the
// entries before the wanted one are held until it starts, so name an early entry in big
// archives. bzip2: the bzip2 helper (several streams back to back are accepted).
import type { Gunzip, Unzip, UnzipFile } from "fflate";

// fflate is loaded on first use: most agents never decompress anything.
const loadFflate = () => import("fflate");
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { concat } from "../../agent/bytes.ts";
import { errorMessageOrName } from "../../agent/errortext.ts";
import { isBun } from "../../agent/runtime/detect.ts";
import { bunzip2Stream } from "./bzip2.ts";

export type Compression = "none" | "gzip" | "bzip2" | "zip";

export interface DecompressOptions {
  /** The zip entry to read (full name, or base name); default: the first file. */
  zipEntry?: string;
}

export interface Decompressed {
  /** What was undone ("none": the bytes are passed through). */
  compression: Compression;
  body: ReadableStream<Uint8Array>;
}

/** The compressed data is corrupt, truncated, or not what the caller asked for (zip entry). */
export class DecompressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecompressError";
  }
}

/** Bytes needed to recognise every format (bzip2: "BZh" + level + 6-byte magic). */
const SNIFF_BYTES = 10;

/**
 * The format of data starting with `head`, by magic bytes; null if `head` is too short to
 * tell and more data may follow (`complete` false).
 */
export function sniffCompression(head: Uint8Array, complete = false): Compression | null {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && (head[2] === 3 || head[2] === 5) && head[3] === head[2] + 1) return "zip";
  if (isBzip2(head)) return "bzip2";
  if (head.length < SNIFF_BYTES && !complete && couldStillBe(head)) return null;
  return "none";
}

function isBzip2(h: Uint8Array): boolean {
  if (h.length < SNIFF_BYTES || h[0] !== 0x42 || h[1] !== 0x5a || h[2] !== 0x68 || h[3]! < 0x31 || h[3]! > 0x39) return false;
  const block = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
  const end = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
  return block.every((b, i) => h[4 + i] === b) || end.every((b, i) => h[4 + i] === b);
}

/** A prefix of a magic number: only then is waiting for more bytes worth it. */
function couldStillBe(h: Uint8Array): boolean {
  if (h.length === 0) return true;
  if (h[0] === 0x1f) return h.length < 2;
  if (h[0] === 0x50) return h.length < 4 && (h.length < 2 || h[1] === 0x4b);
  if (h[0] === 0x42) return (h.length < 2 || h[1] === 0x5a) && (h.length < 3 || h[2] === 0x68);
  return false;
}

/** What the response headers or the URL's extension announce. */
export function compressionFromHints(hints: { contentEncoding?: string | null; contentType?: string | null; url?: string | null }): Compression {
  const enc = (hints.contentEncoding ?? "").toLowerCase();
  if (/\b(x-)?gzip\b/.test(enc)) return "gzip";
  if (/\b(x-)?bzip2\b/.test(enc)) return "bzip2";
  const type = (hints.contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type === "application/gzip" || type === "application/x-gzip") return "gzip";
  if (type === "application/x-bzip2" || type === "application/x-bzip") return "bzip2";
  if (type === "application/zip" || type === "application/x-zip-compressed") return "zip";
  let path = "";
  try {
    path = hints.url ? new URL(hints.url).pathname.toLowerCase() : "";
  } catch {
    path = "";
  }
  if (path.endsWith(".gz") || path.endsWith(".tgz")) return "gzip";
  if (path.endsWith(".bz2")) return "bzip2";
  if (path.endsWith(".zip")) return "zip";
  return "none";
}

/**
 * Reads the first bytes of `input` to recognise its format and returns the decompressed
 * stream (or the bytes unchanged). Errors of `input` itself (network, timeouts, aborts) come
 * out of `body` as they are; errors of the compressed data come out as DecompressError.
 */
export async function decompress(input: ReadableStream<Uint8Array>, opts: DecompressOptions = {}): Promise<Decompressed> {
  const reader = input.getReader();
  const parts: Uint8Array[] = [];
  let have = 0;
  let ended = false;
  let kind: Compression | null = null;
  try {
    while ((kind = sniffCompression(concat(parts, have), ended)) === null) {
      const r = await reader.read();
      if (r.done) ended = true;
      else if (r.value.byteLength > 0) {
        parts.push(r.value);
        have += r.value.byteLength;
      }
    }
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  }
  const head = concat(parts, have);
  let inputError: unknown = undefined;
  const source = new ReadableStream<Uint8Array>(
    {
      start(c) {
        if (head.byteLength > 0) c.enqueue(head);
        if (ended) c.close();
      },
      async pull(c) {
        try {
          const r = await reader.read();
          if (r.done) c.close();
          else c.enqueue(r.value);
        } catch (err) {
          inputError = err;
          throw err;
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  if (kind === "none") return { compression: "none", body: source };
  const out = source.pipeThrough(transformFor(kind, opts));
  return { compression: kind, body: labelErrors(out, kind, (err) => err === inputError) };
}

/** decompress() over a local file. */
export function decompressFile(path: string, opts: DecompressOptions = {}): Promise<Decompressed> {
  const stream = Readable.toWeb(createReadStream(path, { highWaterMark: 256 * 1024 })) as unknown as ReadableStream<Uint8Array>;
  return decompress(stream, opts);
}

function transformFor(kind: Exclude<Compression, "none">, opts: DecompressOptions): ReadableWritablePair<Uint8Array, Uint8Array> {
  switch (kind) {
    case "gzip":
      return isBun() ? (new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>) : gunzipTransform();
    case "bzip2":
      return bunzip2Stream();
    case "zip":
      return unzipTransform(opts.zipEntry);
  }
}

/** fflate's streaming Gunzip as a TransformStream (several members in a row are fine). */
export function gunzipTransform(): TransformStream<Uint8Array, Uint8Array> {
  let gunzip: Gunzip;
  return new TransformStream<Uint8Array, Uint8Array>({
    async start(controller) {
      const { Gunzip } = await loadFflate();
      gunzip = new Gunzip((data) => {
        if (data.byteLength > 0) controller.enqueue(data);
      });
    },
    transform(chunk) {
      gunzip.push(chunk, false);
    },
    flush() {
      gunzip.push(new Uint8Array(0), true);
    },
  });
}

/** The content of one zip entry (the first file, or `entry`) as a TransformStream. */
export function unzipTransform(entry?: string): TransformStream<Uint8Array, Uint8Array> {
  let unzip: Unzip;
  let chosen: UnzipFile | null = null;
  let done = false;
  let failure: Error | null = null;
  const names: string[] = [];
  const wanted = (name: string) => entry === undefined || name === entry || name.slice(name.lastIndexOf("/") + 1) === entry;
  return new TransformStream<Uint8Array, Uint8Array>({
    async start(controller) {
      const { Unzip, UnzipInflate } = await loadFflate();
      unzip = new Unzip((file) => {
        if (names.length < 20) names.push(file.name);
        if (chosen || file.name.endsWith("/") || !wanted(file.name)) return;
        chosen = file;
        file.ondata = (err, data, final) => {
          if (err) {
            failure ??= new DecompressError(`zip entry ${file.name}: ${err.message}`);
            return;
          }
          if (data && data.byteLength > 0) controller.enqueue(data);
          if (final) done = true;
        };
        if (file.compression !== 0 && file.compression !== 8) {
          failure = new DecompressError(`zip entry ${file.name} uses compression method ${file.compression} (only stored and deflate are supported)`);
          return;
        }
        file.start();
      });
      unzip.register(UnzipInflate);
    },
    transform(chunk, controller) {
      if (done) return;
      unzip.push(chunk, false);
      if (failure) throw failure;
      // The rest of the archive is not needed: stop the download.
      if (done) controller.terminate();
    },
    flush() {
      if (done) return;
      unzip.push(new Uint8Array(0), true);
      if (failure) throw failure;
      if (done) return;
      if (!chosen) {
        const listed = names.length > 0 ? ` (entries: ${names.join(", ")})` : " (no entries)";
        throw new DecompressError(entry === undefined ? `the zip archive holds no file${listed}` : `the zip archive has no entry ${entry}${listed}`);
      }
      throw new DecompressError(`zip entry ${(chosen as UnzipFile).name} is truncated`);
    },
  });
}

/** Errors of the decompressor become DecompressError; errors of the input pass unchanged. */
function labelErrors(stream: ReadableStream<Uint8Array>, kind: Compression, fromInput: (err: unknown) => boolean): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        let r: Awaited<ReturnType<typeof reader.read>>;
        try {
          r = await reader.read();
        } catch (err) {
          if (fromInput(err) || err instanceof DecompressError) throw err;
          const why = errorMessageOrName(err);
          throw new DecompressError(`${kind} data is corrupt or truncated: ${why}`);
        }
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
