import { GlanceError } from "@glance/shared";
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { actorOf } from "../audit/http.ts";
import { appendAudit } from "../audit/log.ts";
import { matchFeedback, visits } from "../db/schema.ts";
import { assertStoreAccess, type Env, requireRole } from "../http/auth.ts";
import { newId } from "../http/ids.ts";
import { valid } from "../http/validate.ts";
import type { Services } from "../services.ts";

export const NotThisPerson = z.object({ note: z.string().trim().max(500).optional() });

/** Staff say a member visit was someone else: recorded, audited, and that person + track pairing suppressed. */
export function feedbackRouter(s: Services) {
  return new Hono<Env>().post(
    "/:visitId/not-this-person",
    requireRole(s.db, ["hq-admin", "store-manager"]),
    valid("param", z.object({ visitId: z.string().min(1).max(64) })),
    valid("json", NotThisPerson),
    async (c) => {
      const { visitId } = c.req.valid("param");
      const p = c.get("principal");
      const [visit] = await s.db.select().from(visits).where(eq(visits.id, visitId));
      if (!visit) throw new GlanceError("NOT_FOUND", `Visit ${visitId} does not exist.`);
      assertStoreAccess(p, visit.storeId);
      if (visit.kind !== "member" || !visit.personId) {
        throw new GlanceError("CONFLICT", "Only a visit recognised as a member can be contested.");
      }
      if (!visit.trackId) {
        throw new GlanceError("CONFLICT", "This visit predates track recording; nothing can be suppressed for it.");
      }
      const id = newId();
      const actor = actorOf(p);
      const note = c.req.valid("json").note ?? null;
      await s.db.insert(matchFeedback).values({
        id,
        visitId,
        personId: visit.personId,
        storeId: visit.storeId,
        nodeId: visit.nodeId,
        trackId: visit.trackId,
        actor,
        note,
      });
      s.suppressions.add(visit.personId, visit.nodeId, visit.trackId);
      await appendAudit(s.db, {
        actor,
        action: "visit.not-this-person",
        subject: `person:${visit.personId}`,
        details: { visitId, nodeId: visit.nodeId, trackId: visit.trackId, ...(note ? { note } : {}) },
      });
      return c.json(
        { feedbackId: id, suppressed: { personId: visit.personId, nodeId: visit.nodeId, trackId: visit.trackId } },
        201,
      );
    },
  );
}
