// Reading one restSearch page: the events of {"response":[{"Event":{...}}, ...]} (or of a bare
// [...] list, which some MISP versions answer), each with its exact JSON text (its version:
// eventVersion in agent/helpers/misp.ts).
import { jsonArrayBatches, type JsonElement } from "../common/jsonstream.ts";

const OPEN_BRACKET = 0x5b;

/**
 * The elements of a page, in batches. The shape is told by the first byte that is not
 * white space: `[` a bare list, anything else {"response":[...]}.
 */
export async function* pageEvents(body: ReadableStream<Uint8Array>, batchSize: number): AsyncGenerator<JsonElement[]> {
  const { first, stream } = await peekFirstByte(body);
  const path = first === OPEN_BRACKET ? undefined : ["response"];
  yield* jsonArrayBatches(stream, { path, batchSize });
}

/** The first non-white-space byte of `body` (undefined if none), and a stream that still yields all of it. */
async function peekFirstByte(body: ReadableStream<Uint8Array>): Promise<{ first: number | undefined; stream: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const held: Uint8Array[] = [];
  let first: number | undefined;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    held.push(r.value);
    const i = r.value.findIndex((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
    if (i !== -1) {
      first = r.value[i];
      break;
    }
  }
  const stream = new ReadableStream<Uint8Array>({
    async pull(c) {
      const next = held.shift();
      if (next) return c.enqueue(next);
      const r = await reader.read();
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return { first, stream };
}
