import { GlanceError } from "@glance/shared";
import { bodyLimit } from "hono/body-limit";
import { validator } from "hono/validator";
import type { z } from "zod";

type Target = "json" | "form" | "query" | "param";

/**
 * The most a JSON request body may hold: the largest one we take (a node's CSR, 8 KiB) with room to spare. Checked
 * before the body is read, so nobody (the certificate renewal route has no token) makes the server buffer and parse
 * an arbitrarily large body only for zod to refuse it. Photo uploads (form) carry their own limit.
 */
export const MAX_JSON_BODY_BYTES = 64 * 1024;

const jsonLimit = bodyLimit({
  maxSize: MAX_JSON_BODY_BYTES,
  onError: () => {
    throw new GlanceError("PAYLOAD_TOO_LARGE", `A JSON body may hold at most ${MAX_JSON_BODY_BYTES / 1024} KiB.`);
  },
});

/**
 * Paths of the strings holding a NUL character: Postgres text cannot store one, so such a value would fail the query
 * (a 500) instead of being refused as invalid input.
 */
function nulPaths(value: unknown, path: string[] = []): string[] {
  if (typeof value === "string") return value.includes("\u0000") ? [path.join(".") || "(root)"] : [];
  if (Array.isArray(value)) return value.flatMap((v, i) => nulPaths(v, [...path, String(i)]));
  if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.entries(value).flatMap(([k, v]) => nulPaths(v, [...path, k]));
  }
  return [];
}

/** zod at the route edge: the handler reads `c.req.valid(target)`, already typed and checked. */
export function valid<T extends Target, S extends z.ZodType>(target: T, schema: S) {
  const invalid = (issues: string[]) =>
    new GlanceError("VALIDATION_FAILED", `Request ${target} is invalid; fix the listed fields and retry.`, {
      issues: issues.slice(0, 10),
    });
  const check = validator(target, (value): z.output<S> => {
    const result = schema.safeParse(value);
    if (!result.success) throw invalid(result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`));
    const nul = nulPaths(result.data);
    if (nul.length > 0) throw invalid(nul.map((p) => `${p}: contains a NUL character`));
    return result.data;
  });
  if (target !== "json") return check;
  // the validator only ever throws or passes on, so nothing it returns is lost
  const limited = (async (c: Parameters<typeof check>[0], next: Parameters<typeof check>[1]) =>
    jsonLimit(c, async () => {
      await check(c, next);
    })) as typeof check;
  return limited;
}
