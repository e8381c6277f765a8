// The `misp_file` input: MISP events from JSON files (restSearch answers, single events, lists)
// dropped into a folder, or from a MISP feed folder (manifest.json + <uuid>.json).
import { z } from "zod";
import { defineInput, pathOption } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { intervalOption, maxSeenOption } from "../common/feed.ts";
import { MispFileInput, mispFileState } from "./input.ts";

const options = z.object({
  path: pathOption()
    .describe("A MISP JSON file, a drop folder (its *.json files, and its sub-folders holding a manifest.json as MISP feeds), or a MISP feed folder; a relative path is relative to the config file's folder."),
  interval: intervalOption("10s", "How often the path is scanned for new or changed files."),
  after: z.enum(["keep", "rename", "delete"]).default("keep")
    .describe("What happens to a dropped file once its events are durably spooled: keep it (a changed file is read again), rename it to <name>.done, or delete it. Feed folders are always kept."),
  settle: duration().prefault("2s")
    .describe("A file is read only once it has not been modified for this long, so a file still being written is not read half."),
  max_file_bytes: size().prefault("256MiB")
    .describe("Largest file read (each is parsed whole in memory); a larger file is an error and is left in place."),
  max_seen: maxSeenOption("Most events (and feed manifest entries) remembered to post each event version once; beyond it the least recently seen are forgotten."),
}).strict();

export type MispFileOptions = z.infer<typeof options>;

export default defineInput({
  type: "misp_file",
  description: "MISP events from JSON files in a drop folder or a MISP feed folder (manifest.json): posts each event version once",
  options,
  state: mispFileState,
  create(opts, ctx) {
    const input = new MispFileInput(opts, ctx);
    return { run: () => input.run() };
  },
});
