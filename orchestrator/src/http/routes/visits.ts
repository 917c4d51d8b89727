import { and, desc, eq, gte, type SQL } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { actorOf } from "../../audit/http.ts";
import { appendAudit } from "../../audit/log.ts";
import { people, visits } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import { assertStoreAccess, type Env, requireRole } from "../auth.ts";
import { valid } from "../validate.ts";

export const VisitQuery = z.object({
  storeId: z.string().min(1).optional(),
  kind: z.enum(["member", "unknown"]).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type VisitQuery = z.infer<typeof VisitQuery>;

export function visitsRouter(s: Services) {
  return new Hono<Env>().get(
    "/",
    requireRole(s.db, ["hq-admin", "auditor", "store-manager"]),
    valid("query", VisitQuery),
    async (c) => {
      const q = c.req.valid("query");
      const p = c.get("principal");
      const storeId = p.role === "store-manager" ? p.storeId : q.storeId;
      if (q.storeId) assertStoreAccess(p, q.storeId);
      const where: SQL[] = [];
      if (storeId) where.push(eq(visits.storeId, storeId));
      if (q.kind) where.push(eq(visits.kind, q.kind));
      if (q.since) where.push(gte(visits.ts, new Date(q.since)));
      const rows = await s.db
        .select({
          id: visits.id,
          ts: visits.ts,
          kind: visits.kind,
          personId: visits.personId,
          displayName: people.displayName,
          storeId: visits.storeId,
          cameraId: visits.cameraId,
          nodeId: visits.nodeId,
          score: visits.score,
        })
        .from(visits)
        .leftJoin(people, eq(people.id, visits.personId))
        .where(and(...where))
        .orderBy(desc(visits.ts))
        .limit(q.limit);
      // member visits say who was recognised by face where and when: a biometric read, audited like the people
      // list (anonymous and pseudonymous visits name nobody)
      const recognised = [...new Set(rows.flatMap((r) => (r.personId ? [r.personId] : [])))];
      if (recognised.length > 0) {
        await appendAudit(s.db, {
          actor: actorOf(p),
          action: "visits.read",
          details: { visits: rows.length, storeId: storeId ?? null, people: recognised },
        });
      }
      return c.json(rows);
    },
  );
}
