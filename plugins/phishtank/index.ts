// The `phishtank` input: PhishTank's hourly dump of online, verified phishes
// (online-valid.json.bz2), read as it downloads, posting each record that is new or changed.
import { defineInput } from "../../agent/plugin.ts";
import { feedState } from "../common/feed.ts";
import { PhishtankInput } from "./input.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "phishtank",
  description: "PhishTank's hourly dump of verified online phishes: posts each new or changed record",
  options,
  state: feedState,
  create(opts, ctx) {
    const input = new PhishtankInput(opts, ctx);
    return { run: () => input.run() };
  },
});
