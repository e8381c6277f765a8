// The read side of the spool: a cursor walking the segments in order, the records handed out to
// the forwarder and not yet acked (in flight), and those handed back unsent (released).
//
// Memory stays small for huge backlogs: unread records are not held in memory; the cursor
// walks the segment files (the page cache makes re-reading cheap) and only records handed out
// get a small in-memory entry. A record that fails verification here (damage done after it was
// written or recovered) is skipped the way recovery skips it.
import type { Logger } from "../plugin.ts";
import type { WindowPool, ReadWindow } from "./windowpool.ts";
import type { Segment } from "./segment.ts";
import type { Ledger } from "./ledger.ts";
import { HEADER_BYTES, appendedAt, eventCount, kindOf, payloadLength, payloadStart } from "./record.ts";

export interface SpoolRecord {
  /** Unique within this process; used to ack. */
  id: number;
  /** Opaque grouping key (the forwarder keeps JSON route metadata here). */
  route: string;
  kind: "text" | "json";
  /** Number of events. */
  count: number;
  /**
   * The events, each ending in "\n". A view of a read buffer that is reused once the record
   * is acked or released: copy it to keep it longer.
   */
  payload: Uint8Array;
  /** ms since epoch when appended. */
  appendedAt: number;
  /**
   * Where the record is in the spool ("<segment>:<offset>"): the same for the same record in
   * every run, so an output can name what it sends in a way a resend after a crash repeats.
   */
  position: string;
}

/** A record handed out by read() and not yet acked. */
export interface InFlight {
  seg: Segment;
  /** The buffer its payload was handed out in (null once released). */
  win: ReadWindow | null;
  offset: number;
  total: number;
  count: number;
  appendedAt: number;
}

const MIN_READ_CHUNK = 256 << 10;

const decoder = new TextDecoder();

export class SpoolReader {
  private cursorSeg: Segment | null = null;
  private cursorPos = 0;
  private readChunk = MIN_READ_CHUNK;
  private nextId = 1;
  private inFlight = new Map<number, InFlight>();
  /** Handed out then released: read() returns these first, oldest first. */
  private released: InFlight[] = [];
  private dataWaiters: Array<() => void> = [];

  constructor(private readonly ledger: Ledger, private readonly pool: WindowPool, private readonly log: Logger) {}

  read(maxBytes: number): SpoolRecord[] {
    const out: SpoolRecord[] = [];
    let bytes = 0;
    while (this.released.length > 0) {
      const r = this.released[0]!;
      const payloadLen = this.payloadLengthOf(r);
      if (out.length > 0 && bytes + payloadLen > maxBytes) return out;
      this.released.shift();
      const rec = this.handOut(r.seg, r.offset, r.total);
      if (rec) {
        out.push(rec);
        bytes += rec.payload.length;
      }
    }
    this.readChunk = Math.max(MIN_READ_CHUNK, Math.min(maxBytes, 64 << 20) + (64 << 10));
    for (;;) {
      const total = this.locateNext();
      if (total <= 0) break;
      const seg = this.cursorSeg!;
      const payloadLen = payloadLength(seg.winView!, this.cursorPos - seg.winStart);
      if (out.length > 0 && bytes + payloadLen > maxBytes) break;
      out.push(this.recordFromWindow(seg, this.cursorPos, total));
      bytes += payloadLen;
      this.cursorPos += total;
    }
    return out;
  }

  private payloadLengthOf(r: InFlight): number {
    if (r.seg.deleted || !r.seg.ensure(r.offset, HEADER_BYTES, HEADER_BYTES)) return 0;
    return payloadLength(r.seg.winView!, r.offset - r.seg.winStart);
  }

  /** Re-read a released record; null if it no longer verifies. */
  private handOut(seg: Segment, offset: number, total: number): SpoolRecord | null {
    if (seg.deleted) return null;
    if (seg.probe(offset, total) !== total) {
      this.log.error("spool: record failed verification on re-read, skipped", { segment: seg.name, offset });
      this.ledger.noteSkipped(seg, offset, offset + total);
      return null;
    }
    return this.recordFromWindow(seg, offset, total);
  }

  private recordFromWindow(seg: Segment, offset: number, total: number): SpoolRecord {
    const buf = seg.winBuf!;
    const view = seg.winView!;
    const o = offset - seg.winStart;
    const payloadAt = payloadStart(view, o);
    const count = eventCount(view, o);
    const at = appendedAt(view, o);
    const id = this.nextId++;
    const win = seg.win!;
    win.refs++;
    this.inFlight.set(id, { seg, win, offset, total, count, appendedAt: at });
    return {
      id,
      route: decoder.decode(buf.subarray(o + HEADER_BYTES, payloadAt)),
      kind: kindOf(view, o),
      count,
      payload: buf.subarray(payloadAt, o + total),
      appendedAt: at,
      position: `${seg.id}:${offset}`,
    };
  }

  /**
   * Move the cursor to the next unread, unacked, valid record; returns its length with the
   * segment window covering it, or 0 if there is none yet.
   */
  private locateNext(): number {
    for (;;) {
      const seg = this.cursorSeg;
      if (seg === null || seg.deleted) return 0;
      const pos = this.cursorPos;
      if (pos >= seg.size) {
        if (seg.active) return 0;
        const segments = this.ledger.segments;
        const next = segments[segments.indexOf(seg) + 1];
        if (next === undefined) return 0;
        seg.releaseFd();
        this.cursorSeg = next;
        this.cursorPos = 0;
        continue;
      }
      const skipTo = seg.skips?.get(pos);
      if (skipTo !== undefined) {
        this.cursorPos = skipTo;
        continue;
      }
      const total = seg.probe(pos, this.readChunk);
      if (total <= 0) {
        // Verified when written or recovered, so this is damage done since: skip it like recovery would.
        const next = seg.resync(pos + 1, this.readChunk);
        const events = this.ledger.noteSkipped(seg, pos, next);
        this.log.error("spool: record failed verification on read, skipped", {
          segment: seg.name, dir: this.ledger.dir, offset: pos, bytes_skipped: next - pos, events_skipped: events,
        });
        (seg.skips ??= new Map()).set(pos, next);
        this.cursorPos = next;
        continue;
      }
      if (seg.acked?.has(pos)) {
        this.cursorPos = pos + total;
        continue;
      }
      return total;
    }
  }

  private hasUnread(): boolean {
    return this.released.length > 0 || this.locateNext() > 0;
  }

  waitForData(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted || this.hasUnread()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        signal?.removeEventListener("abort", done);
        const i = this.dataWaiters.indexOf(done);
        if (i >= 0) this.dataWaiters.splice(i, 1);
        resolve();
      };
      this.dataWaiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  /** Records were appended: wake whoever waits for data. */
  dataWritten(): void {
    if (this.dataWaiters.length > 0) this.wakeAll();
  }

  wakeAll(): void {
    const waiters = this.dataWaiters;
    this.dataWaiters = [];
    for (const w of waiters) w();
  }

  /** Take a handed-out record out of flight for its ack; undefined if unknown or already acked. */
  take(id: number): InFlight | undefined {
    const r = this.inFlight.get(id);
    if (r === undefined) return undefined;
    this.inFlight.delete(id);
    this.unref(r);
    return r;
  }

  /** The record's payload is no longer used by whoever read it. */
  private unref(r: InFlight): void {
    const w = r.win;
    if (w === null) return;
    r.win = null;
    w.refs--;
    this.pool.settle(w);
  }

  release(ids: number[]): void {
    let any = false;
    for (const id of ids) {
      const r = this.inFlight.get(id);
      if (r === undefined) continue;
      this.inFlight.delete(id);
      this.unref(r);
      if (r.seg.deleted) continue;
      this.released.push(r);
      any = true;
    }
    if (!any) return;
    this.released.sort((a, b) => a.seg.id - b.seg.id || a.offset - b.offset);
    if (this.dataWaiters.length > 0) this.wakeAll();
  }

  /** A segment was started: with no cursor yet, reading begins at the oldest segment. */
  segmentStarted(): void {
    if (this.cursorSeg === null) {
      this.cursorSeg = this.ledger.segments[0]!;
      this.cursorPos = 0;
    }
  }

  /** The segment at `index` was deleted: a cursor in it moves to the start of the next one. */
  segmentDeleted(seg: Segment, index: number): void {
    if (this.cursorSeg === seg) {
      this.cursorSeg = this.ledger.segments[index] ?? this.ledger.active;
      this.cursorPos = 0;
    }
  }

  /**
   * The segment is being dropped (drop_oldest): its released records are forgotten. Returns the
   * events of its records in flight: they are being delivered, so they do not count as dropped
   * (and their late acks are ignored).
   */
  dropSegment(seg: Segment): number {
    let inFlightEvents = 0;
    for (const r of this.inFlight.values()) if (r.seg === seg) inFlightEvents += r.count;
    this.released = this.released.filter((r) => r.seg !== seg);
    return inFlightEvents;
  }

  /** When the oldest unacked record still in reach was appended (Infinity if none). */
  oldestAppendedAt(): number {
    let oldest = Infinity;
    for (const r of this.inFlight.values()) if (!r.seg.deleted && r.appendedAt < oldest) oldest = r.appendedAt;
    for (const r of this.released) if (r.appendedAt < oldest) oldest = r.appendedAt;
    const total = this.locateNext();
    if (total > 0) {
      const seg = this.cursorSeg!;
      const at = appendedAt(seg.winView!, this.cursorPos - seg.winStart);
      if (at < oldest) oldest = at;
    }
    return oldest;
  }

  clear(): void {
    this.inFlight.clear();
    this.released = [];
  }
}
