import { GlanceError } from "@glance/shared";
import { validator } from "hono/validator";
import type { z } from "zod";

type Target = "json" | "form" | "query" | "param";

/** zod at the route edge: the handler reads `c.req.valid(target)`, already typed and checked. */
export function valid<T extends Target, S extends z.ZodType>(target: T, schema: S) {
  return validator(target, (value): z.output<S> => {
    const result = schema.safeParse(value);
    if (!result.success) {
      throw new GlanceError("VALIDATION_FAILED", `Request ${target} is invalid; fix the listed fields and retry.`, {
        issues: result.error.issues.slice(0, 10).map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`),
      });
    }
    return result.data;
  });
}
