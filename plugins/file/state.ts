// The state the file input saves: per file, where reading resumes and how to recognise the
// file. Declared as the plugin's `state`, so a saved file of another shape fails the input
// with an error naming the file instead of being half-read.
import { z } from "zod";

/** A byte offset or size: a non-negative safe integer. */
const offset = z.number().int().min(0);
/** Device and inode numbers as the runtime reports them: a large inode may be past 2^53, where numbers lose precision but stay integers. */
const fileId = z.number().min(0).refine(Number.isInteger, "expected an integer");

export const fileCheckpoint = z.object({
  path: z.string().min(1),
  /** Next byte to read. */
  offset,
  dev: fileId,
  ino: fileId,
  /** The file's size when the state was saved. */
  size: offset,
  /**
   * The offset is inside a line cut for max_line_bytes (its first pieces were sent): resume
   * exactly there. Without it, an offset inside a line resumes at the next line.
   */
  cut: z.literal(true).optional(),
}).strict();

export const fileInputState = z.object({
  /** Keyed by content fingerprint, "<16 hex digits>:<length>" (with ":<dev>:<ino>" when two files share one). */
  files: z.record(z.string().regex(/^[0-9a-f]{16}:\d+(?::\d+:\d+)?$/, "not a file fingerprint key"), fileCheckpoint),
}).strict();

/** What is saved per file. */
export type FileCheckpoint = z.infer<typeof fileCheckpoint>;
/** The input's checkpoint. */
export type FileInputState = z.infer<typeof fileInputState>;
