// The spool's on-disk record: its layout and the code that writes and checks a header.
// Every byte offset of the format is declared here, once; the rest of the spool reads and
// writes header fields only through these functions.
//
// A record holds events of one route and one kind; its payload is exactly the bytes of a future
// upload body (each event followed by "\n"), so the forwarder only concatenates payloads.
//
// Record layout (little-endian): a header of HEADER_BYTES, then the route (UTF-8), then the payload.
//   0  u32 magic          FE FF 53 31 on disk; 0xFE/0xFF never occur in UTF-8 text, so event
//                         data cannot imitate the start of a header
//   4  u32 payload length
//   8  u32 checksum       CRC-32 of every byte after this field (rest of header + route + payload)
//  12  f64 appendedAt     ms since epoch
//  20  u32 event count
//  24  u8  kind           0 text, 1 json
//  25  u8  flags          0 (reserved)
//  26  u16 route length
import { crc32 } from "./crc32.ts";

/** Where each header field starts, in bytes from the start of the record. */
export const RecordField = {
  magic: 0,
  payloadLength: 4,
  checksum: 8,
  appendedAt: 12,
  eventCount: 20,
  kind: 24,
  flags: 25,
  routeLength: 26,
} as const;

export const HEADER_BYTES = 28;
/** The checksum covers the record from the field after it to the record's end. */
const CHECKSUMMED_FROM = RecordField.appendedAt;

const MAGIC = 0x3153fffe;
/** The first byte of MAGIC on disk: a resync after damage looks for it. */
export const MAGIC_FIRST_BYTE = 0xfe;

export const KIND_TEXT = 0;
export const KIND_JSON = 1;

/** Largest payload a record may declare; keeps offsets and lengths inside u32 arithmetic. */
export const MAX_PAYLOAD = 0x7fff0000;

/** Returned by recordLength() for a header that cannot start a record. */
export const NOT_A_HEADER = -1;

/**
 * Write the header of a record starting at `at`, except its checksum: sealRecord() adds that
 * once the route and payload are in place.
 */
export function writeHeader(
  view: DataView, at: number, payloadLength: number, appendedAt: number, eventCount: number, kindCode: number, routeLength: number,
): void {
  view.setUint32(at + RecordField.magic, MAGIC, true);
  view.setUint32(at + RecordField.payloadLength, payloadLength, true);
  view.setFloat64(at + RecordField.appendedAt, appendedAt, true);
  view.setUint32(at + RecordField.eventCount, eventCount, true);
  view.setUint8(at + RecordField.kind, kindCode);
  view.setUint8(at + RecordField.flags, 0);
  view.setUint16(at + RecordField.routeLength, routeLength, true);
}

/** Checksum the whole record [at, at + total) of `buf` (viewed by `view`) into its header. */
export function sealRecord(buf: Uint8Array, view: DataView, at: number, total: number): void {
  view.setUint32(at + RecordField.checksum, crc32(buf.subarray(at + CHECKSUMMED_FROM, at + total)), true);
}

/**
 * The whole length (header + route + payload) that the header at `at` declares, or NOT_A_HEADER
 * for a wrong magic or impossible fields. The checksum is not looked at: see checksumMatches().
 */
export function recordLength(view: DataView, at: number): number {
  if (view.getUint32(at + RecordField.magic, true) !== MAGIC) return NOT_A_HEADER;
  const payloadLen = view.getUint32(at + RecordField.payloadLength, true);
  if (payloadLen > MAX_PAYLOAD || view.getUint8(at + RecordField.kind) > KIND_JSON || view.getUint8(at + RecordField.flags) !== 0)
    return NOT_A_HEADER;
  return HEADER_BYTES + view.getUint16(at + RecordField.routeLength, true) + payloadLen;
}

/** The record [at, at + total) of `buf` (viewed by `view`) has the checksum its header holds. */
export function checksumMatches(buf: Uint8Array, view: DataView, at: number, total: number): boolean {
  return crc32(buf.subarray(at + CHECKSUMMED_FROM, at + total)) === view.getUint32(at + RecordField.checksum, true);
}

export function payloadLength(view: DataView, at: number): number {
  return view.getUint32(at + RecordField.payloadLength, true);
}

export function eventCount(view: DataView, at: number): number {
  return view.getUint32(at + RecordField.eventCount, true);
}

export function appendedAt(view: DataView, at: number): number {
  return view.getFloat64(at + RecordField.appendedAt, true);
}

export function kindOf(view: DataView, at: number): "text" | "json" {
  return view.getUint8(at + RecordField.kind) === KIND_JSON ? "json" : "text";
}

/** Where the payload of the record at `at` starts: after the header and the route. */
export function payloadStart(view: DataView, at: number): number {
  return at + HEADER_BYTES + view.getUint16(at + RecordField.routeLength, true);
}

/**
 * The events a damaged record held as far as its header tells: its count if the magic is right
 * and every event could have at least its newline, else 0.
 */
export function believableEventCount(view: DataView, at: number): number {
  if (view.getUint32(at + RecordField.magic, true) !== MAGIC) return 0;
  const count = view.getUint32(at + RecordField.eventCount, true);
  const payloadLen = view.getUint32(at + RecordField.payloadLength, true);
  return count > 0 && count <= payloadLen ? count : 0;
}
