// The `manual` input: threat data submitted by hand through the control server
// (POST /inputs/:name/events) or `cybexp-agent post`.
import { defineInput } from "../../agent/plugin.ts";
import { ManualInput } from "./input.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "manual",
  description: "Threat data submitted by hand: a JSON object, a JSON array, NDJSON, text lines, or a form (multipart or urlencoded) holding them",
  options,
  listens: true,
  create(opts, ctx) {
    const input = new ManualInput(opts, ctx);
    return {
      run: () => input.run(),
      submit: (body, contentType) => input.submit(body, contentType),
      preview: (body, contentType) => input.preview(body, contentType),
    };
  },
});
