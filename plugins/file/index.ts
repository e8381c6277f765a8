// The `file` input: tails log files named by paths and globs, surviving rename and
// copytruncate rotation and restarts (checkpoints by content fingerprint).
import { defineInput } from "../../agent/plugin.ts";
import { options } from "./options.ts";
import { fileInputState } from "./state.ts";
import { FileTailer } from "./tailer.ts";

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
