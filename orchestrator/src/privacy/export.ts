import { GlanceError } from "@glance/shared";
import { asc, eq } from "drizzle-orm";
import { auditEntriesFor } from "../audit/log.ts";
import type { Db } from "../db/client.ts";
import { consents, edgeErasures, people, personKeys, plays, templates, visits } from "../db/schema.ts";

/**
 * Data-subject access: everything held about one person, as JSON. Templates are described (space, quality, photo
 * hash, when, how they are protected), never included: the embedding is biometric data and stays sealed.
 */
export async function exportPerson(db: Db, personId: string) {
  const [person] = await db.select().from(people).where(eq(people.id, personId));
  if (!person) throw new GlanceError("NOT_FOUND", `Person ${personId} does not exist.`);
  const [key] = await db
    .select({ version: personKeys.version, masterKeyId: personKeys.masterKeyId, createdAt: personKeys.createdAt })
    .from(personKeys)
    .where(eq(personKeys.personId, personId));
  const templateRows = await db
    .select({
      id: templates.id,
      space: templates.space,
      quality: templates.quality,
      sourceSha256: templates.sourceSha256,
      keyVersion: templates.keyVersion,
      createdAt: templates.createdAt,
    })
    .from(templates)
    .where(eq(templates.personId, personId))
    .orderBy(asc(templates.createdAt));
  const audit = await auditEntriesFor(db, `person:${personId}`);
  return {
    exportedAt: new Date().toISOString(),
    person: { id: person.id, displayName: person.displayName, createdAt: person.createdAt },
    consents: await db
      .select({
        purpose: consents.purpose,
        scope: consents.scope,
        source: consents.source,
        evidenceRef: consents.evidenceRef,
        grantedAt: consents.grantedAt,
        expiresAt: consents.expiresAt,
        withdrawnAt: consents.withdrawnAt,
      })
      .from(consents)
      .where(eq(consents.personId, personId))
      .orderBy(asc(consents.grantedAt)),
    templates: templateRows.map((t) => ({
      ...t,
      protection: "AES-256-GCM with a per-person data key wrapped by the orchestrator master key; not exported",
    })),
    dataKey: key ? { present: true, ...key } : { present: false },
    visits: await db
      .select({ storeId: visits.storeId, cameraId: visits.cameraId, ts: visits.ts, score: visits.score })
      .from(visits)
      .where(eq(visits.personId, personId))
      .orderBy(asc(visits.ts)),
    promotionsShown: await db
      .select({
        promotionId: plays.promotionId,
        screenId: plays.screenId,
        storeId: plays.storeId,
        sentAt: plays.sentAt,
        playedAt: plays.playedAt,
      })
      .from(plays)
      .where(eq(plays.personId, personId))
      .orderBy(asc(plays.sentAt)),
    edgeErasures: await db
      .select({
        nodeId: edgeErasures.nodeId,
        sentAt: edgeErasures.sentAt,
        ackedAt: edgeErasures.ackedAt,
        ok: edgeErasures.ok,
      })
      .from(edgeErasures)
      .where(eq(edgeErasures.personId, personId)),
    auditTrail: audit.map((a) => ({ seq: a.seq, at: a.at, actor: a.actor, action: a.action, details: a.details })),
  };
}
