// An open file held by its descriptor number. A new file is opened synchronously inside the
// watch event that announced it, before a fast rotation can rename it away, and
// node:fs/promises cannot wrap a descriptor opened that way in a FileHandle; so every file
// the input follows is held as one of these, whichever way it was opened.
import { close, closeSync, fstat, fstatSync, open, openSync, read, readSync } from "node:fs";
import type { Stats } from "node:fs";

export class FileFd {
  private closed = false;

  private constructor(readonly fd: number) {}

  static open(path: string): Promise<FileFd> {
    return new Promise((resolve, reject) => open(path, "r", (err, fd) => (err ? reject(err) : resolve(new FileFd(fd)))));
  }

  static openSync(path: string): FileFd {
    return new FileFd(openSync(path, "r"));
  }

  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return new Promise((resolve, reject) =>
      read(this.fd, buf, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve({ bytesRead }))),
    );
  }

  readSync(buf: Uint8Array, offset: number, length: number, position: number): number {
    return readSync(this.fd, buf, offset, length, position);
  }

  stat(): Promise<Stats> {
    return new Promise((resolve, reject) => fstat(this.fd, (err, st) => (err ? reject(err) : resolve(st))));
  }

  statSync(): Stats {
    return fstatSync(this.fd);
  }

  /** Closes the descriptor once; later calls do nothing (a descriptor number is reused at once). */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => close(this.fd, () => resolve()));
  }

  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      closeSync(this.fd);
    } catch {
      // nothing to do about a failed close
    }
  }
}
