// Read buffers of the spool, kept for reuse.
//
// A segment reads its records through a window: a buffer holding a stretch of the file.
// Payloads handed to the forwarder are views of that buffer, so a buffer is reused only once it
// no longer backs a segment's window and every record read from it was acked or released:
// reading a backlog at hundreds of MB/s would otherwise leave a buffer of garbage per refill
// for the collector to free late.
import { Buffer } from "node:buffer";

/** Read buffers kept for reuse: at most this many, each at most WINDOW_KEEP_BYTES. */
const WINDOW_POOL_SIZE = 8;
const WINDOW_KEEP_BYTES = 4 << 20;

/** A read buffer and the records handed out of it. */
export interface ReadWindow {
  buf: Uint8Array;
  /** Records handed out of this buffer, not yet acked or released. */
  refs: number;
  /** Still some segment's window (more records may be handed out of it). */
  current: boolean;
}

/** Read buffers no longer in use, for the next window. */
export class WindowPool {
  private free: Uint8Array[] = [];

  take(bytes: number): ReadWindow {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i]!.length;
      if (len >= bytes && (best === -1 || len < this.free[best]!.length)) best = i;
    }
    const buf = best === -1 ? Buffer.allocUnsafeSlow(bytes) : this.free.splice(best, 1)[0]!;
    return { buf, refs: 0, current: true };
  }

  /** A window is done with once it is neither current nor backing a handed-out record. */
  settle(w: ReadWindow): void {
    if (w.current || w.refs > 0 || w.buf.length > WINDOW_KEEP_BYTES) return;
    if (this.free.length >= WINDOW_POOL_SIZE) {
      // Keep the larger buffers: they serve any refill.
      let smallest = 0;
      for (let i = 1; i < this.free.length; i++) if (this.free[i]!.length < this.free[smallest]!.length) smallest = i;
      if (this.free[smallest]!.length >= w.buf.length) return;
      this.free.splice(smallest, 1);
    }
    this.free.push(w.buf);
  }

  clear(): void {
    this.free = [];
  }
}
