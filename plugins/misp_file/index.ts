// The `misp_file` input: MISP events from JSON files (restSearch answers, single events, lists)
// dropped into a folder, or from a MISP feed folder (manifest.json + <uuid>.json).
import { defineInput } from "../../agent/plugin.ts";
import { MispFileInput, mispFileState } from "./input.ts";
import { options } from "./options.ts";

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
