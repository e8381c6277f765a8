// The stream sequences the relay has already spooled, so that a message JetStream delivers
// again (its acknowledgement was lost, or came too late) is acknowledged without being spooled
// a second time.
//
// Kept as sorted, disjoint ranges of sequences: one relay spools mostly consecutive sequences,
// so the set is a handful of ranges however many it holds (relays sharing a consumer take
// interleaved sequences; then it is more ranges, still bounded by max_seen). Sequences at or
// below the consumer's acknowledgement floor are never delivered again and are forgotten;
// beyond max_seen the lowest are forgotten first.
import { z } from "zod";

/** The saved form: [first, last] pairs, ascending, disjoint and not touching. */
export const seqRanges = z.array(z.tuple([z.number().int().positive(), z.number().int().positive()]))
  .superRefine((ranges, ctx) => {
    for (let i = 0; i < ranges.length; i++) {
      const [a, b] = ranges[i]!;
      if (b < a) ctx.addIssue({ code: "custom", path: [i], message: `range [${a}, ${b}] ends before it starts` });
      if (i > 0 && a <= ranges[i - 1]![1] + 1) ctx.addIssue({ code: "custom", path: [i], message: `range [${a}, ${b}] is not after the one before it` });
    }
  });

export class SeqSet {
  /** Flat [first0, last0, first1, last1, ...], ascending. */
  private r: number[] = [];
  private count = 0;

  constructor(private readonly max: number) {}

  static from(ranges: Array<[number, number]> | undefined, max: number): SeqSet {
    const s = new SeqSet(max);
    for (const [a, b] of ranges ?? []) {
      s.r.push(a, b);
      s.count += b - a + 1;
    }
    s.evict();
    return s;
  }

  /** Sequences held. */
  get size(): number {
    return this.count;
  }

  /** Ranges held (what a save writes). */
  get ranges(): number {
    return this.r.length / 2;
  }

  /** Index (of pairs) of the last range starting at or before seq, or -1. */
  private floorIndex(seq: number): number {
    let lo = 0;
    let hi = this.r.length / 2 - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.r[mid * 2]! <= seq) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  has(seq: number): boolean {
    const i = this.floorIndex(seq);
    return i >= 0 && seq <= this.r[i * 2 + 1]!;
  }

  add(seq: number): void {
    const r = this.r;
    const n = r.length / 2;
    // The common case: one past the last range.
    if (n > 0 && r[r.length - 1]! + 1 === seq) {
      r[r.length - 1] = seq;
      this.count++;
      this.evict();
      return;
    }
    const i = this.floorIndex(seq);
    if (i >= 0 && seq <= r[i * 2 + 1]!) return;
    const joinsLeft = i >= 0 && r[i * 2 + 1]! + 1 === seq;
    const joinsRight = i + 1 < n && r[(i + 1) * 2]! - 1 === seq;
    if (joinsLeft && joinsRight) {
      r[i * 2 + 1] = r[(i + 1) * 2 + 1]!;
      r.splice((i + 1) * 2, 2);
    } else if (joinsLeft) r[i * 2 + 1] = seq;
    else if (joinsRight) r[(i + 1) * 2] = seq;
    else r.splice((i + 1) * 2, 0, seq, seq);
    this.count++;
    this.evict();
  }

  /** Forgets every sequence at or below `floor` (the consumer's acknowledgement floor). */
  forgetUpTo(floor: number): void {
    const r = this.r;
    let drop = 0;
    while (drop < r.length && r[drop + 1]! <= floor) {
      this.count -= r[drop + 1]! - r[drop]! + 1;
      drop += 2;
    }
    if (drop > 0) r.splice(0, drop);
    if (r.length > 0 && r[0]! <= floor) {
      this.count -= floor - r[0]! + 1;
      r[0] = floor + 1;
    }
  }

  clear(): void {
    this.r = [];
    this.count = 0;
  }

  /** Beyond max, the lowest sequences go first. */
  private evict(): void {
    const over = this.count - this.max;
    if (over <= 0) return;
    // The sequence below which `over` sequences are held.
    let left = over;
    let floor = 0;
    for (let i = 0; i < this.r.length && left > 0; i += 2) {
      const len = this.r[i + 1]! - this.r[i]! + 1;
      if (len <= left) {
        left -= len;
        floor = this.r[i + 1]!;
      } else {
        floor = this.r[i]! + left - 1;
        left = 0;
      }
    }
    this.forgetUpTo(floor);
  }

  toJSON(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < this.r.length; i += 2) out.push([this.r[i]!, this.r[i + 1]!]);
    return out;
  }
}
