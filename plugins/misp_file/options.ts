// The `misp_file` input's options.
import { z } from "zod";
import { pathOption } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { intervalOption, maxSeenOption } from "../common/options.ts";

export const options = z.object({
  path: pathOption()
    .describe("A MISP JSON file, a drop folder (its *.json files, and its sub-folders holding a manifest.json as MISP feeds), or a MISP feed folder; a relative path is relative to the config file's folder. It may not exist yet: that is reported once and the input waits for it."),
  interval: intervalOption("10s", "How often the path is scanned for new or changed files."),
  after: z.enum(["keep", "rename", "delete"]).default("keep")
    .describe("What happens to a dropped file once its events are durably spooled: keep it (read again only if it changes), rename it to <name>.done (<name>.<n>.done when that name is taken), or delete it. Feed folders are never renamed or deleted."),
  settle: duration().prefault("2s")
    .describe("A file is read only once it has not been modified for this long, so a file still being written is not read half."),
  max_file_bytes: size().prefault("256MiB")
    .describe("Largest file read (each is parsed whole in memory); a larger file is an error (named in last_error) and is left in place."),
  max_seen: maxSeenOption("Most event uuids (and feed manifest entries) remembered to post each event version once; beyond it the least recently seen are forgotten, and such an event, read again, is posted again."),
}).strict();

export type MispFileOptions = z.infer<typeof options>;
