// Recovery at open: what an earlier run (stopped cleanly or not) left in the spool directory.
//
// Every record of every segment is verified (magic, fields, checksum). Records whose offsets
// are in the segment's ack file were delivered and are skipped; torn or corrupt ranges (an
// interrupted write at the tail, damage in the middle) are skipped up to the next valid record,
// logged and counted, and never handed out. Segments left with nothing to deliver are deleted,
// and so are ack files whose segment is gone. Nothing is rewritten: the next appends go to a
// fresh segment.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "../plugin.ts";
import { Segment, SPOOL_FILE_NAME, SHORT, ackFileName, unlinkIfExists } from "./segment.ts";
import { eventCount } from "./record.ts";
import { readAckFile } from "./acks.ts";
import type { Ledger } from "./ledger.ts";

const RECOVERY_CHUNK = 1 << 20;

/** Put the segments of the ledger's directory that hold unacked records into the ledger. */
export function recover(ledger: Ledger, log: Logger): void {
  const dir = ledger.dir;
  const segIds: number[] = [];
  const ackIds = new Set<number>();
  for (const name of fs.readdirSync(dir)) {
    const m = SPOOL_FILE_NAME.exec(name);
    if (!m) continue;
    const id = Number(m[1]);
    if (m[2] === "seg") segIds.push(id);
    else ackIds.add(id);
    ledger.nextSegmentId = Math.max(ledger.nextSegmentId, id + 1);
  }
  segIds.sort((a, b) => a - b);
  // An ack file without its segment is what a crash between the two unlinks leaves behind.
  for (const id of ackIds) if (!segIds.includes(id)) unlinkIfExists(path.join(dir, ackFileName(id)));

  let records = 0;
  let skippedBytes = 0;
  for (const id of segIds) {
    const seg = new Segment(id, dir, ledger.pool);
    skippedBytes += recoverSegment(seg, ledger, log);
    if (seg.liveRecords === 0) {
      ledger.removeFiles(seg, false);
      continue;
    }
    records += seg.liveRecords;
    ledger.adopt(seg);
  }
  if (segIds.length > 0) {
    log.info("spool recovered", {
      dir, segments: ledger.segments.length, records, events: ledger.totalEvents,
      bytes: ledger.totalBytes, skipped_bytes: skippedBytes,
    });
  }
}

/** Verify every record of a segment; returns the number of bytes skipped as torn or corrupt. */
function recoverSegment(seg: Segment, ledger: Ledger, log: Logger): number {
  const fd = seg.openFd();
  seg.size = fs.fstatSync(fd).size;
  const ackedBefore = readAckFile(seg);
  const acked = new Set<number>();
  let skipped = 0;
  let pos = 0;
  while (pos < seg.size) {
    const total = seg.probe(pos, RECOVERY_CHUNK);
    if (total > 0) {
      if (ackedBefore.has(pos)) {
        acked.add(pos);
      } else {
        seg.liveRecords++;
        seg.liveEvents += eventCount(seg.winView!, pos - seg.winStart);
        seg.liveBytes += total;
      }
      pos += total;
      continue;
    }
    const next = seg.resync(pos + 1, RECOVERY_CHUNK);
    const atTail = next >= seg.size;
    const what = !atTail
      ? "corrupt record skipped"
      : total === SHORT
        ? "torn record at segment tail skipped (interrupted write)"
        : "corrupt data at segment tail skipped";
    const events = ledger.noteSkipped(seg, pos, next);
    log.warn(`spool: ${what}`, { segment: seg.name, dir: ledger.dir, offset: pos, bytes_skipped: next - pos, events_skipped: events });
    (seg.skips ??= new Map()).set(pos, next);
    skipped += next - pos;
    pos = next;
  }
  seg.acked = acked.size > 0 ? acked : null;
  seg.releaseFd();
  return skipped;
}
