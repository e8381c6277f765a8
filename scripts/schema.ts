// Writes agent.config.schema.json (JSON Schema of the config file, for editors) from the zod schemas.
import { writeFileSync } from "node:fs";
import { z } from "zod";
import { coreSchema, inputSchemaFor } from "../agent/config.ts";
import { inputPlugins } from "../plugins/index.ts";

export function configJsonSchema(): Record<string, unknown> {
  const core = z.toJSONSchema(coreSchema, { io: "input", unrepresentable: "any" }) as Record<string, any>;
  const variants = Object.values(inputPlugins).map((p) => {
    const s = z.toJSONSchema(inputSchemaFor(p), { io: "input", unrepresentable: "any" }) as Record<string, any>;
    delete s.$schema;
    s.properties.type = { const: p.type, description: p.description };
    return s;
  });
  core.properties.inputs = {
    type: "object",
    description: "One table per input; the table's key is the input's name.",
    additionalProperties: { oneOf: variants },
  };
  core.title = "cybexp-agent configuration";
  return core;
}

if (import.meta.main) {
  writeFileSync("agent.config.schema.json", JSON.stringify(configJsonSchema(), null, 2) + "\n");
  console.log("wrote agent.config.schema.json");
}
