// The `openphish` input: OpenPhish's feed of phishing URLs (the public feed.txt, or the
// premium JSON-lines feed), posting each URL once.
import { defineInput } from "../../agent/plugin.ts";
import { feedState } from "../common/feed.ts";
import { OpenphishInput } from "./input.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "openphish",
  description: "OpenPhish's phishing URL feed (public feed.txt or the premium JSON lines): posts each URL once",
  options,
  state: feedState,
  create(opts, ctx) {
    const input = new OpenphishInput(opts, ctx);
    return { run: () => input.run() };
  },
});
