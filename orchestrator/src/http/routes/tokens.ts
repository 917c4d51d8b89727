import { GlanceError } from "@glance/shared";
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { hashSecret, newSecret } from "../../auth/secrets.ts";
import { apiTokens, roles, screens, stores } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreateToken = z
  .object({
    role: z.enum(roles),
    label: z.string().trim().min(1).max(200),
    storeId: z.string().optional(),
    screenId: z.string().optional(),
  })
  .refine((t) => t.role !== "store-manager" || t.storeId, {
    message: "a store-manager token needs storeId",
    path: ["storeId"],
  })
  .refine((t) => t.role !== "signage-screen" || t.screenId, {
    message: "a signage-screen token needs screenId",
    path: ["screenId"],
  });
export type CreateToken = z.infer<typeof CreateToken>;

/** HQ hands out role tokens; the plaintext is in this response only. */
export function tokensRouter(s: Services) {
  return new Hono<Env>().post("/", requireRole(s.db, ["hq-admin"]), valid("json", CreateToken), async (c) => {
    const body = c.req.valid("json");
    let storeId = body.storeId ?? null;
    if (body.screenId) {
      const [screen] = await s.db.select().from(screens).where(eq(screens.id, body.screenId));
      if (!screen) throw new GlanceError("NOT_FOUND", `Screen ${body.screenId} does not exist.`);
      storeId = screen.storeId;
    } else if (storeId) {
      const found = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, storeId));
      if (found.length === 0) throw new GlanceError("NOT_FOUND", `Store ${storeId} does not exist.`);
    }
    const token = newSecret("gl_");
    const id = newId();
    await s.db.insert(apiTokens).values({
      id,
      tokenHash: hashSecret(token),
      role: body.role,
      storeId,
      screenId: body.screenId ?? null,
      label: body.label,
    });
    return c.json({ id, role: body.role, storeId, screenId: body.screenId ?? null, token }, 201);
  });
}
