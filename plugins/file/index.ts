// The `file` input: tails log files named by paths and globs, surviving rename and
// copytruncate rotation and restarts (checkpoints by content fingerprint).
import { z } from "zod";
import { defineInput, pathOption } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { FileTailer } from "./tailer.ts";
import { fileInputState } from "./state.ts";
import type { FileInputState } from "./state.ts";
import { ENCODINGS } from "./encoding.ts";

/** A regular expression option: compiled once here, so a bad one is a config error naming its key. */
const regex = () =>
  z.string().min(1).superRefine((source, ctx) => {
    try {
      new RegExp(source);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: `not a valid regular expression: ${err instanceof Error ? err.message : String(err)}` });
    }
  });

const multiline = z.object({
  start_pattern: regex()
    .describe("Regular expression (JavaScript syntax, unanchored unless it starts with ^) that a line beginning a new event matches; any other line is added to the event being built."),
  timeout: duration().prefault("1s")
    .describe("An event being built is sent once no line has arrived for its file for this long."),
}).strict();

const options = z.object({
  paths: z.array(pathOption("glob")).min(1)
    .describe("Files to follow: paths or globs (*, ?, [...], ** and {a,b}); relative ones are relative to the config file's folder. A glob whose folder does not exist yet is not an error."),
  exclude: z.array(pathOption("exclude")).default([])
    .describe("Globs of files not to follow; a pattern without \"/\" is matched against the file name (e.g. \"*.gz\"), a relative one with \"/\" is relative to the config file's folder."),
  start_at: z.enum(["beginning", "end"]).default("beginning")
    .describe("Where to start in a file found at startup that has no checkpoint; files appearing later are always read from the beginning."),
  format: z.enum(["text", "json"]).default("text")
    .describe("text: each line is a text event; json: each line is a JSON object event (a line that is not is sent as {\"message\", \"parse_error\"})."),
  glob_interval: duration().prefault("1s").describe("How often the globs are listed again to find new, renamed and deleted files."),
  poll_interval: duration().prefault("250ms").describe("How often files are checked for new data when none arrived."),
  max_line_bytes: size().prefault("1MiB").describe("Longest line kept whole; a longer one is cut into pieces of this size (counted in status as split_lines)."),
  read_bytes: size().prefault("1MiB").describe("Most bytes read from one file in one turn, so busy files cannot starve the others."),
  close_inactive: duration().prefault("5m")
    .describe("Close a file that has not grown for this long (it is reopened when it grows); a file renamed away is read until it is idle this long."),
  close_removed_after: duration().prefault("5s")
    .describe("A deleted file is read to its end; if a writer keeps appending, it is closed this long after its deletion was seen, once what it held then is read."),
  max_open_files: z.number().int().min(1).default(1024)
    .describe("Most files held open at once (at most half the process's open files limit); more files are read in turns."),
  encoding: z.enum(ENCODINGS).default("utf-8")
    .describe("Character encoding of the files: utf-8, latin1 (windows-1252) or utf-16le. Undecodable bytes become U+FFFD."),
  multiline: multiline.optional()
    .describe("Join lines into multiline events (stack traces): { start_pattern = \"<regex>\", timeout = \"1s\" }. With format = \"text\" each event is sent as JSON {\"message\": \"<lines joined with \\n>\"}; with format = \"json\" an event's lines are parsed as one JSON text."),
}).strict();

export default defineInput({
  type: "file",
  description: "Tail log files (paths and globs), surviving rotation and restarts",
  options,
  state: fileInputState,
  create(opts, ctx) {
    const tailer = new FileTailer(
      {
        ...opts,
        max_line_bytes: Math.max(opts.encoding === "utf-16le" ? 4 : 1, opts.max_line_bytes),
        read_bytes: Math.max(1024, opts.read_bytes),
      },
      ctx,
    );
    return { run: () => tailer.run() };
  },
});

export type { FileInputState };
