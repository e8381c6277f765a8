// The `nats` input's options: where the NATS cluster is (the connection options the `nats`
// output takes too), which stream and durable consumer to read, and how much to take at once.
import { z } from "zod";
import { NATS_DEFAULTS, natsConnectionShape } from "../../agent/nats.ts";
import { pathOption } from "../../agent/plugin.ts";
import { duration } from "../../agent/units.ts";

/** A stream or consumer name as JetStream accepts it: no spaces, dots, wildcards or path separators. */
const jetStreamName = (what: string) =>
  z.string().min(1).max(255).regex(/^[^\s.*>/\\]+$/, { message: `expected a ${what} name without spaces, ".", "*", ">", "/" or "\\"` });

/** A subject filter: dot-separated tokens, "*" for one token and a final ">" for the rest. */
const subjectFilter = () =>
  z.string().min(1).refine((s) => {
    const tokens = s.split(".");
    return tokens.every((t, i) => t !== "" && !/\s/.test(t) && (t === ">" ? i === tokens.length - 1 : t === "*" || !/[*>]/.test(t)));
  }, { message: 'expected a NATS subject filter like "cybexp.raw.>" (tokens split by ".", "*" for one token, ">" only at the end)' });

export const options = z.object({
  ...natsConnectionShape,
  creds_file: pathOption("readable").optional().describe(natsConnectionShape.creds_file.description!),
  tls_ca: pathOption("readable").optional().describe(natsConnectionShape.tls_ca.description!),
  stream: jetStreamName("stream").default(NATS_DEFAULTS.stream)
    .describe("The JetStream stream the edge agents' `nats` output publishes to (their [output.nats] stream)."),
  consumer: jetStreamName("consumer").default("cybexp-relay")
    .describe("The durable pull consumer's name. Relays with the same name share the work: each message goes to one of them."),
  filter_subject: subjectFilter().default(`${NATS_DEFAULTS.subjectPrefix}.>`)
    .describe("Which of the stream's subjects the consumer takes when this input creates it (`<subject_prefix>.<orgid>.<typetag>`; e.g. \"cybexp.raw.myorg.>\" for one organisation)."),
  fetch_batch: z.number().int().min(1).max(10_000).default(100)
    .describe("Messages asked for in one pull (each message is one batch of one edge input). Not the common `batch` key, which limits the uploads this agent sends."),
  max_ack_pending: z.number().int().min(1).default(1000)
    .describe("When this input creates the consumer: most messages delivered and not yet acknowledged, over all relays sharing it; at least fetch_batch."),
  ack_wait: duration().prefault("30s").refine((ms) => ms >= 1000, { message: "expected at least 1s" })
    .describe("When this input creates the consumer: how long the server waits for an acknowledgement before it delivers a message again. While the spool is full the input tells the server it is still working on the messages it holds."),
  create_consumer: z.boolean().default(true)
    .describe("Create the durable consumer when the stream has none of this name (explicit acknowledgements, filter_subject, max_ack_pending, ack_wait, from the stream's first message); an existing one is used as it is. false: wait, retrying, until someone creates it."),
  max_seen: z.number().int().min(1000).default(100_000)
    .describe("Most stream sequences remembered as already spooled (at least 1000), so that a message the server delivers again is acknowledged without being spooled twice; saved in the input's state."),
}).strict().superRefine((o, ctx) => {
  if (o.max_ack_pending < o.fetch_batch) {
    ctx.addIssue({ code: "custom", path: ["max_ack_pending"], message: `expected at least fetch_batch (${o.fetch_batch}), got ${o.max_ack_pending}` });
  }
  if (o.user === undefined && o.password !== undefined) {
    ctx.addIssue({ code: "custom", path: ["password"], message: "password without user" });
  }
});

export type NatsInputOptions = z.infer<typeof options>;
