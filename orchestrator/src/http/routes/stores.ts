import { GlanceError } from "@glance/shared";
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { stores } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { Id, newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreateStore = z.object({ id: Id.optional(), name: z.string().trim().min(1).max(200) });
export type CreateStore = z.infer<typeof CreateStore>;

export function storesRouter(s: Services) {
  return new Hono<Env>()
    .post("/", requireRole(s.db, ["hq-admin"]), valid("json", CreateStore), async (c) => {
      const body = c.req.valid("json");
      const id = body.id ?? newId();
      const existing = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, id));
      if (existing.length > 0) throw new GlanceError("CONFLICT", `Store ${id} already exists.`);
      const [store] = await s.db.insert(stores).values({ id, name: body.name }).returning();
      return c.json(store, 201);
    })
    .get("/", requireRole(s.db, ["hq-admin", "auditor", "store-manager", "technician"]), async (c) => {
      const p = c.get("principal");
      const rows =
        p.role === "store-manager" && p.storeId
          ? await s.db.select().from(stores).where(eq(stores.id, p.storeId))
          : await s.db.select().from(stores).orderBy(stores.name);
      return c.json(rows);
    });
}
