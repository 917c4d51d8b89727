import { desc, lt } from "drizzle-orm";
import { Hono, type MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { z } from "zod";
import { auditLog } from "../db/schema.ts";
import { type Env, type Principal, requireRole } from "../http/auth.ts";
import { valid } from "../http/validate.ts";
import type { Services } from "../services.ts";
import { AuditAnchor, appendAudit, verifyAudit } from "./log.ts";

export function actorOf(p: Principal): string {
  return `token:${p.tokenId}/${p.role}`;
}

/**
 * Admin actions: every successful mutating API call (tokens, nodes, stores, screens, promotions, ...) is audited
 * with who, which route and which ids. People routes write their own, richer entries; screens reporting plays are
 * routine telemetry, not admin actions.
 */
export function auditAdminActions(s: Services): MiddlewareHandler<Env> {
  return async (c, next) => {
    await next();
    if (!["POST", "PUT", "PATCH", "DELETE"].includes(c.req.method) || c.res.status >= 400) return;
    const principal = c.get("principal") as Principal | undefined;
    if (!principal || principal.role === "signage-screen") return;
    const route = routePath(c, -1);
    // these write their own, richer entries
    if (route.startsWith("/api/people") || route.endsWith("/not-this-person")) return;
    await appendAudit(s.db, {
      actor: actorOf(principal),
      action: `admin ${c.req.method} ${route}`,
      subject: c.req.path,
      details: { status: c.res.status },
    });
  };
}

/**
 * A head from an earlier verification (its `rows` and `head`): the chain must still hold that entry unchanged, which
 * is what shows the newest entries deleted. Both or neither.
 */
export const AuditVerifyQuery = z
  .object({
    anchorSeq: z.coerce.number().pipe(AuditAnchor.shape.seq).optional(),
    anchorHash: AuditAnchor.shape.hash.optional(),
  })
  .refine(
    (q) => (q.anchorSeq === undefined) === (q.anchorHash === undefined),
    "give anchorSeq and anchorHash together",
  );
export type AuditVerifyQuery = z.infer<typeof AuditVerifyQuery>;

/** The auditor's view: recent entries and a full verification of the hash chain. */
export function auditRouter(s: Services) {
  return new Hono<Env>()
    .get("/verify", requireRole(s.db, ["auditor", "hq-admin"]), valid("query", AuditVerifyQuery), async (c) => {
      const { anchorSeq, anchorHash } = c.req.valid("query");
      const anchor = anchorSeq !== undefined && anchorHash ? { seq: anchorSeq, hash: anchorHash } : undefined;
      const verdict = await verifyAudit(s.db, { anchor });
      return c.json(verdict, verdict.ok ? 200 : 409);
    })
    .get(
      "/",
      requireRole(s.db, ["auditor", "hq-admin"]),
      valid(
        "query",
        z.object({
          before: z.coerce.number().int().positive().optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
      ),
      async (c) => {
        const q = c.req.valid("query");
        const rows = await s.db
          .select()
          .from(auditLog)
          .where(q.before ? lt(auditLog.seq, q.before) : undefined)
          .orderBy(desc(auditLog.seq))
          .limit(q.limit);
        return c.json(rows);
      },
    );
}
