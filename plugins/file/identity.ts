// Recognising a file again. Device+inode says which file an open descriptor or a path is
// now; a fingerprint of the file's first bytes says whether it still holds the same content,
// so a new file that reuses a deleted file's inode is not taken for the old one, and a copy
// of a file we were reading (copytruncate rotation) is recognised by what it contains.
import { createHash } from "node:crypto";

/** What readHead needs of an open file. */
export interface PositionalReader {
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
}

/** How many leading bytes identify a file; shorter files are fingerprinted by what they have. */
export const FINGERPRINT_BYTES = 1024;

export interface Fingerprint {
  /** 16 hex digits of the SHA-256 of the first `len` bytes. */
  hash: string;
  len: number;
}

export function fingerprintOf(bytes: Uint8Array): Fingerprint {
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  return { hash, len: bytes.length };
}

/** Reads up to `max` bytes from the start of the file (fewer if it is shorter). */
export async function readHead(fh: PositionalReader, max = FINGERPRINT_BYTES): Promise<Uint8Array> {
  const buf = new Uint8Array(max);
  let got = 0;
  while (got < max) {
    const { bytesRead } = await fh.read(buf, got, max - got, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** readHead inside a watch event, where the file may be renamed or truncated a moment later. */
export function readHeadSync(fh: { readSync(buf: Uint8Array, offset: number, length: number, position: number): number }, max = FINGERPRINT_BYTES): Uint8Array {
  const buf = new Uint8Array(max);
  let got = 0;
  while (got < max) {
    const n = fh.readSync(buf, got, max - got, got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/** Whether `head` (a file's first bytes) begins with the content `fp` was taken of. */
export function headMatches(head: Uint8Array, fp: Fingerprint): boolean {
  return head.length >= fp.len && fingerprintOf(head.subarray(0, fp.len)).hash === fp.hash;
}

/** The checkpoint key of a file: "<hash>:<len>", with ":<dev>:<ino>" when two files share a fingerprint. */
export function checkpointKey(fp: Fingerprint, dev: number, ino: number, taken: (key: string) => boolean): string {
  const key = `${fp.hash}:${fp.len}`;
  return taken(key) ? `${key}:${dev}:${ino}` : key;
}

export function parseCheckpointKey(key: string): Fingerprint | null {
  const m = /^([0-9a-f]{16}):(\d+)(?::\d+:\d+)?$/.exec(key);
  return m ? { hash: m[1]!, len: Number(m[2]) } : null;
}
