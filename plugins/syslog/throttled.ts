// A problem that can repeat thousands of times a second (refused connections, dropped
// datagrams, a spool refusing writes) must show in the log without flooding it: the first
// occurrence is reported at once, later ones at most once per interval as a count, and a count
// still pending when the input stops is reported then, so every occurrence is in some line.

export class Throttled {
  private pending = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `report(count)` writes one line for `count` occurrences. */
  constructor(private readonly report: (count: number) => void, private readonly everyMs = 10_000) {}

  /** Counts `n` occurrences; reports now unless a line was written less than everyMs ago. */
  hit(n = 1): void {
    this.pending += n;
    if (this.timer === null) this.flush();
  }

  /** Reports what is pending and stops the timer. */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending > 0) this.flush(false);
  }

  private flush(rearm = true): void {
    if (this.pending === 0) {
      this.timer = null;
      return;
    }
    const n = this.pending;
    this.pending = 0;
    this.report(n);
    this.timer = rearm ? setTimeout(() => this.flush(), this.everyMs) : null;
  }
}
