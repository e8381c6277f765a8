// Frames received from the server and not yet taken by the spool: the memory the websocket
// input holds. Reading stops above a high-water mark and starts again once the spool has taken
// the backlog, so what is held stays bounded whatever the server sends.

/** Reading pauses once this many bytes of frames are held... */
export const HOLD_MAX_BYTES = 1 << 20;
/** ...or this many frames (many tiny frames cost more than their bytes). */
export const HOLD_MAX_FRAMES = 8192;

export interface Batch {
  frames: string[];
  bytes: number;
}

export class HeldFrames {
  private queue: string[] = [];
  private queueBytes = 0;
  /** Held frames: the queue plus batches handed to the spool that it has not taken yet. */
  frames = 0;
  bytes = 0;
  framesMax = 0;
  bytesMax = 0;

  constructor(
    private readonly maxBytes = HOLD_MAX_BYTES,
    private readonly maxFrames = HOLD_MAX_FRAMES,
  ) {}

  /** Frames waiting to be handed to the spool. */
  get queued(): number {
    return this.queue.length;
  }

  add(frame: string, bytes: number): void {
    this.queue.push(frame);
    this.queueBytes += bytes;
    this.frames++;
    this.bytes += bytes;
    if (this.frames > this.framesMax) this.framesMax = this.frames;
    if (this.bytes > this.bytesMax) this.bytesMax = this.bytes;
  }

  /** Everything queued, as one batch for the spool; it stays held until release(). */
  take(): Batch {
    const batch = { frames: this.queue, bytes: this.queueBytes };
    this.queue = [];
    this.queueBytes = 0;
    return batch;
  }

  /** The spool took (or gave up on) the batch. */
  release(batch: Batch): void {
    this.frames -= batch.frames.length;
    this.bytes -= batch.bytes;
  }

  aboveHighWaterMark(): boolean {
    return this.bytes >= this.maxBytes || this.frames >= this.maxFrames;
  }

  /** Half the mark: a paused reader resumes only once the spool has caught up, not per batch. */
  belowResumeMark(): boolean {
    return this.bytes < this.maxBytes / 2 && this.frames < this.maxFrames / 2;
  }
}
