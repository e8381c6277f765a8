// Ack files: which records of a segment were acknowledged, so that a restart does not deliver
// them again. Read by recovery, appended to as acks come in.
//
// One sidecar file per segment (NNNNNNNN.ack) holding (offset, ~offset) u32 pairs, little-endian:
// the complement makes a zero-filled or torn tail harmless. A lost ack only means a
// re-delivery, so the file is never fsynced, and acks of one turn of the event loop are written
// together.
import * as fs from "node:fs";
import type { Logger } from "../plugin.ts";
import { errorMessage } from "../errortext.ts";
import { type Segment, writeFully } from "./segment.ts";

/** An entry: the record's offset in the segment, then its complement. */
const ACK_ENTRY_BYTES = 8;
const OFFSET_AT = 0;
const COMPLEMENT_AT = 4;

/** Offsets of the records of `seg` its ack file says were acked; a torn last entry is cut off. */
export function readAckFile(seg: Segment): Set<number> {
  const offsets = new Set<number>();
  let data: Uint8Array;
  try {
    data = fs.readFileSync(seg.ackFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return offsets;
    throw err;
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const whole = data.byteLength - (data.byteLength % ACK_ENTRY_BYTES);
  // A torn last entry would misalign every entry appended after it.
  if (whole !== data.byteLength) fs.truncateSync(seg.ackFile, whole);
  for (let i = 0; i < whole; i += ACK_ENTRY_BYTES) {
    const off = view.getUint32(i + OFFSET_AT, true);
    if ((~off >>> 0) === view.getUint32(i + COMPLEMENT_AT, true)) offsets.add(off);
  }
  return offsets;
}

/** Appends acks to the segments' ack files, once per turn of the event loop. */
export class AckWriter {
  private flushScheduled = false;
  private writesFailing = false;
  /** Segments with acks (in their pendingAcks) not yet written. */
  private segs = new Set<Segment>();

  constructor(private readonly log: Logger) {}

  /** The record at `offset` of `seg` was acked. */
  add(seg: Segment, offset: number): void {
    seg.pendingAcks.push(offset);
    this.segs.add(seg);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** The segment is being deleted: its acks need not be written. */
  forget(seg: Segment): void {
    this.segs.delete(seg);
    seg.pendingAcks = [];
  }

  flush(): void {
    this.flushScheduled = false;
    for (const seg of this.segs) {
      const offsets = seg.pendingAcks;
      seg.pendingAcks = [];
      if (seg.deleted || offsets.length === 0) continue;
      const buf = new Uint8Array(offsets.length * ACK_ENTRY_BYTES);
      const view = new DataView(buf.buffer);
      for (let i = 0; i < offsets.length; i++) {
        view.setUint32(i * ACK_ENTRY_BYTES + OFFSET_AT, offsets[i]!, true);
        view.setUint32(i * ACK_ENTRY_BYTES + COMPLEMENT_AT, ~offsets[i]! >>> 0, true);
      }
      try {
        seg.ackFd ??= fs.openSync(seg.ackFile, "a");
        writeFully(seg.ackFd, buf, buf.length, null);
        if (this.writesFailing) {
          this.writesFailing = false;
          this.log.info("spool: acks are recorded again", { segment: seg.name });
        }
      } catch (err) {
        // Only costs a re-delivery after a crash; said once, not for every upload (a full disk
        // fails every ack write until there is room again).
        if (!this.writesFailing) this.log.warn("spool: cannot record acks (after a crash these events would be sent again)", { segment: seg.name, error: errorMessage(err) });
        this.writesFailing = true;
      }
    }
    this.segs.clear();
  }
}
