import { GlanceError } from "@glance/shared";
import { eq, isNull, or } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { promotions, stores } from "../../db/schema.ts";
import { Audience } from "../../promotions/trigger.ts";
import type { Services } from "../../services.ts";
import { assertStoreAccess, type Env, requireRole } from "../auth.ts";
import { newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreatePromotion = z.object({
  /** omitted or null: every store */
  storeId: z.string().min(1).nullable().optional(),
  /** "unknown": every non-member; "first-time" / "returning": pseudonymous visitors of stores in visitor mode */
  audience: Audience,
  title: z.string().trim().min(1).max(120),
  /** placeholders {firstName} and {displayName}, e.g. "Welcome back, {firstName} — 10% off today" */
  message: z.string().trim().min(1).max(500),
  durationMs: z.number().int().min(1000).max(120_000).default(8000),
  cooldownMs: z.number().int().nonnegative().default(3_600_000),
  active: z.boolean().default(true),
});
export type CreatePromotion = z.infer<typeof CreatePromotion>;

export function promotionsRouter(s: Services) {
  return new Hono<Env>()
    .post("/", requireRole(s.db, ["hq-admin", "store-manager"]), valid("json", CreatePromotion), async (c) => {
      const body = c.req.valid("json");
      const storeId = body.storeId ?? null;
      assertStoreAccess(c.get("principal"), storeId);
      if (storeId) {
        const found = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, storeId));
        if (found.length === 0) throw new GlanceError("NOT_FOUND", `Store ${storeId} does not exist.`);
      }
      const [row] = await s.db
        .insert(promotions)
        .values({
          id: newId(),
          storeId,
          audience: body.audience,
          title: body.title,
          messageTemplate: body.message,
          durationMs: body.durationMs,
          cooldownMs: body.cooldownMs,
          active: body.active,
        })
        .returning();
      return c.json(row, 201);
    })
    .get("/", requireRole(s.db, ["hq-admin", "store-manager", "auditor"]), async (c) => {
      const p = c.get("principal");
      const rows =
        p.role === "store-manager" && p.storeId
          ? await s.db
              .select()
              .from(promotions)
              .where(or(isNull(promotions.storeId), eq(promotions.storeId, p.storeId)))
          : await s.db.select().from(promotions);
      return c.json(rows);
    });
}
