// The `file` input's options.
import { z } from "zod";
import { errorMessage } from "../../agent/errortext.ts";
import { pathOption } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { ENCODINGS } from "./encoding.ts";

/** A regular expression option: compiled once here, so a bad one is a config error naming its key. */
const regex = () =>
  z.string().min(1).superRefine((source, ctx) => {
    try {
      new RegExp(source);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: `not a valid regular expression: ${errorMessage(err)}` });
    }
  });

const multiline = z.object({
  start_pattern: regex()
    .describe("Regular expression (JavaScript syntax, unanchored unless it starts with ^) that a line beginning a new event matches; any other line is added to the event being built."),
  timeout: duration().prefault("1s")
    .describe("An event being built is sent once no line has arrived for its file for this long."),
}).strict();

export const options = z.object({
  paths: z.array(pathOption("glob")).min(1)
    .describe("Files to follow: paths or globs (*, ?, [...], ** and {a,b}); relative ones are relative to the config file's folder, never the agent's working directory (validate prints them resolved). A glob whose folder does not exist yet is not an error."),
  exclude: z.array(pathOption("exclude")).default([])
    .describe("Globs of files not to follow: a pattern without \"/\" is matched against the file's name (e.g. \"*.gz\"), one with \"/\" against its absolute path (e.g. \"/var/log/old/**\"; a relative one is relative to the config file's folder)."),
  start_at: z.enum(["beginning", "end"]).default("beginning")
    .describe("Where to start in a file that is there when the input starts and has no checkpoint (with \"end\": after its last complete line). A file that appears later, or is found at a path that had a checkpoint (rotated while the agent was stopped), is always read from its beginning."),
  format: z.enum(["text", "json"]).default("text")
    .describe("text: each line is a text event; json: each line is a JSON object event (a line that is not is sent as {\"message\", \"parse_error\"})."),
  glob_interval: duration().prefault("1s")
    .describe("How often the globs are listed again to find new, renamed and deleted files; the rotation of a file being read is noticed sooner."),
  poll_interval: duration().prefault("250ms")
    .describe("How often the open files are checked for new data when nothing arrived; a file that stays idle is checked less often."),
  max_line_bytes: size().prefault("1MiB")
    .describe("Longest line kept whole: a longer one is cut into pieces of at most this size (at character boundaries), each its own event, counted in status as split_lines. With multiline it also bounds an event."),
  read_bytes: size().prefault("1MiB")
    .describe("Most bytes read from one file in one turn: files are read round-robin, so a busy file cannot starve the others."),
  close_inactive: duration().prefault("5m")
    .describe("Close a file that has not grown for this long (its path is still watched; it is reopened when it grows); a file renamed away from the globs is read until it is idle this long."),
  close_removed_after: duration().prefault("5s")
    .describe("A deleted file is read to its end; if a writer keeps appending, it is closed this long after its deletion was seen, once what it held then is read, and later writes to it are not read (its disk space is freed only once every descriptor on it is closed)."),
  max_open_files: z.number().int().min(1).default(1024)
    .describe("Most files this input holds open at once, and never more than half the process's open files limit (ulimit -n); when more files have data, they are opened in turns, each keeping its position (status shows open_files and waiting_files)."),
  encoding: z.enum(ENCODINGS).default("utf-8")
    .describe("Character encoding of the files: utf-8, latin1 (windows-1252) or utf-16le. Undecodable bytes become U+FFFD."),
  multiline: multiline.optional()
    .describe("Join lines into multiline events (stack traces): { start_pattern = \"<regex>\", timeout = \"1s\" }. With format = \"text\" each event is sent as JSON {\"message\": \"<lines joined with \\n>\"}; with format = \"json\" an event's lines are parsed as one JSON text."),
}).strict();

export type FileOptions = z.infer<typeof options>;
