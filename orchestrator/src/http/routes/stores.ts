import { GlanceError, PrivacyMode } from "@glance/shared";
import { eq, sql } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { nodes, stores } from "../../db/schema.ts";
import { footfallReport } from "../../footfall/footfall.ts";
import type { Services } from "../../services.ts";
import { setStoreRetention, shredStoreVisitors, visitorCounts } from "../../visitors/visitors.ts";
import { assertStoreAccess, type Env, type Principal, requireRole } from "../auth.ts";
import { Id, newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreateStore = z.object({ id: Id.optional(), name: z.string().trim().min(1).max(200) });
export type CreateStore = z.infer<typeof CreateStore>;

/** Store privacy settings (HQ): what the cameras may do with faces, and how long visitor templates live. */
export const StoreSettings = z
  .object({
    privacyMode: PrivacyMode.optional(),
    /** null: the orchestrator's default (30 days) */
    visitorRetentionDays: z.number().int().min(1).max(365).nullable().optional(),
    /** opt-in coarse attributes (age band, gender, emotion) on the anonymous footfall of this store's cameras */
    attributes: z.boolean().optional(),
  })
  .refine(
    (b) => b.privacyMode !== undefined || b.visitorRetentionDays !== undefined || b.attributes !== undefined,
    "Nothing to change.",
  );
export type StoreSettings = z.infer<typeof StoreSettings>;

export const VisitorCountsQuery = z.object({
  since: z.iso.datetime({ offset: true }).optional(),
  until: z.iso.datetime({ offset: true }).optional(),
});
export type VisitorCountsQuery = z.infer<typeof VisitorCountsQuery>;

const StoreParam = z.object({ id: Id });

export function storesRouter(s: Services) {
  /** the store a count report is about (checked against the caller's store) and its range, default the last 30 days */
  const reportScope = async (principal: Principal, id: string, q: VisitorCountsQuery) => {
    assertStoreAccess(principal, id);
    const until = q.until ? new Date(q.until) : new Date();
    const since = q.since ? new Date(q.since) : new Date(until.getTime() - 30 * 24 * 3600_000);
    const [store] = await s.db.select().from(stores).where(eq(stores.id, id));
    if (!store) throw new GlanceError("NOT_FOUND", `Store ${id} does not exist.`);
    return { store, since, until };
  };
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
    })
    .patch(
      "/:id",
      requireRole(s.db, ["hq-admin"]),
      valid("param", StoreParam),
      valid("json", StoreSettings),
      async (c) => {
        const { id } = c.req.valid("param");
        const body = c.req.valid("json");
        const store = await s.db.transaction(async (tx) => {
          const [store] = await tx
            .update(stores)
            .set({
              ...(body.privacyMode ? { privacyMode: body.privacyMode } : {}),
              ...(body.visitorRetentionDays !== undefined ? { visitorRetentionDays: body.visitorRetentionDays } : {}),
              ...(body.attributes !== undefined ? { attributes: body.attributes } : {}),
            })
            .where(eq(stores.id, id))
            .returning();
          if (!store) throw new GlanceError("NOT_FOUND", `Store ${id} does not exist.`);
          // the nodes converge on the new mode (a count-only node stops publishing templates) and attribute policy
          const nodesChange = body.privacyMode !== undefined || body.attributes !== undefined;
          if (nodesChange) {
            await tx
              .update(nodes)
              .set({ desiredVersion: sql`${nodes.desiredVersion} + 1` })
              .where(eq(nodes.storeId, id));
          }
          return store;
        });
        // a store that leaves "visitor" mode keeps no visitor template: keys and templates go now
        const removed = store.privacyMode === "visitor" ? 0 : await shredStoreVisitors(s.db, id);
        if (store.privacyMode === "visitor" && body.visitorRetentionDays !== undefined) {
          await setStoreRetention(s.db, id, s.visitors.retentionMs(store));
        }
        s.visitors.setPolicy(id, store);
        if (body.privacyMode !== undefined || body.attributes !== undefined) {
          const live = await s.db
            .select({ id: nodes.id, revokedAt: nodes.revokedAt })
            .from(nodes)
            .where(eq(nodes.storeId, id));
          for (const n of live) if (!n.revokedAt) await s.publishDesired(n.id);
        }
        return c.json({ ...store, visitorTemplatesShredded: removed });
      },
    )
    .get(
      "/:id/visitors",
      requireRole(s.db, ["hq-admin", "auditor", "store-manager"]),
      valid("param", StoreParam),
      valid("query", VisitorCountsQuery),
      async (c) => {
        const { store, since, until } = await reportScope(
          c.get("principal"),
          c.req.valid("param").id,
          c.req.valid("query"),
        );
        return c.json({
          storeId: store.id,
          privacyMode: store.privacyMode,
          days: await visitorCounts(s.db, store.id, since, until),
        });
      },
    )
    .get(
      "/:id/footfall",
      requireRole(s.db, ["hq-admin", "auditor", "store-manager"]),
      valid("param", StoreParam),
      valid("query", VisitorCountsQuery),
      async (c) => {
        const { store, since, until } = await reportScope(
          c.get("principal"),
          c.req.valid("param").id,
          c.req.valid("query"),
        );
        const report = await footfallReport(s.db, store.id, since, until);
        return c.json({ ...report, attributesEnabled: store.attributes });
      },
    );
}
