// The `syslog` input: UDP, TCP and TLS (RFC 5425) listeners that parse RFC 5424 / RFC 3164
// messages (and their real-world variants) into JSON events.
import { defineInput } from "../../agent/plugin.ts";
import { runSyslog } from "./input.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "syslog",
  description: "Syslog listeners (UDP, TCP, TLS): RFC 5424, RFC 3164 and common variants, octet counting or LF framing",
  options,
  listens: true,
  create(opts, ctx) {
    return { run: () => runSyslog(opts, ctx) };
  },
});
