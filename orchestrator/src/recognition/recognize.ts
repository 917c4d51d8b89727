import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import { and, eq, gt } from "drizzle-orm";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import { visits } from "../db/schema.ts";
import type { Gallery } from "../gallery/gallery.ts";
import type { AcceptedTemplate } from "../ingest/open-template.ts";
import { type TriggeredPromotion, triggerPromotion } from "../promotions/trigger.ts";
import type { ScreenHub } from "../signage/hub.ts";

export interface Recognition {
  nodeId: string;
  storeId: string;
  cameraId: string;
  personId: string | null;
  displayName: string | null;
  score: number;
  visitor: "member" | "unknown";
  promotion?: TriggeredPromotion;
}

export interface RecognizeDeps {
  db: Db;
  gallery: Gallery;
  hub: ScreenHub;
  events: EventEmitter;
  logger: Logger;
  /** one visit per person (members) or per track (unknown visitors) per store within this window */
  visitDedupeMs: number;
}

/** Match → visit → promotion → "recognition" event, for one accepted template. */
export function createRecognizer(deps: RecognizeDeps): (t: AcceptedTemplate) => Promise<Recognition> {
  // unknown visitors have no identity to look up in the visits table; their node-local track is the next best key
  const lastUnknownVisit = new Map<string, number>();

  return async ({ header, embedding, node }) => {
    const now = new Date(header.ts);
    const match = deps.gallery.match(embedding, node.storeId, now);
    const personId = match.kind === "member" ? match.personId : null;
    const displayName = match.kind === "member" ? match.displayName : null;
    const subject = personId ? `person:${personId}` : `track:${node.id}/${header.trackId}`;

    const windowStart = new Date(now.getTime() - deps.visitDedupeMs);
    let isNewVisit: boolean;
    if (personId) {
      const recent = await deps.db
        .select({ id: visits.id })
        .from(visits)
        .where(and(eq(visits.personId, personId), eq(visits.storeId, node.storeId), gt(visits.ts, windowStart)))
        .limit(1);
      isNewVisit = recent.length === 0;
    } else {
      const last = lastUnknownVisit.get(subject);
      isNewVisit = last === undefined || last <= windowStart.getTime();
      if (isNewVisit) lastUnknownVisit.set(subject, now.getTime());
      for (const [key, ts] of lastUnknownVisit) if (ts <= windowStart.getTime()) lastUnknownVisit.delete(key);
    }
    if (isNewVisit) {
      await deps.db.insert(visits).values({
        id: randomUUID(),
        personId,
        storeId: node.storeId,
        cameraId: header.cameraId,
        nodeId: node.id,
        ts: now,
        score: match.score,
        kind: match.kind,
      });
    }

    const promotion = await triggerPromotion(deps.db, deps.hub, {
      storeId: node.storeId,
      audience: match.kind,
      personId,
      displayName,
      subject,
      now: new Date(),
    });

    const recognition: Recognition = {
      nodeId: node.id,
      storeId: node.storeId,
      cameraId: header.cameraId,
      personId,
      displayName,
      score: match.score,
      visitor: match.kind,
      ...(promotion ? { promotion } : {}),
    };
    deps.logger.info(
      {
        nodeId: node.id,
        storeId: node.storeId,
        visitor: match.kind,
        personId,
        score: Number(match.score.toFixed(3)),
        newVisit: isNewVisit,
        promotionId: promotion?.promotionId,
      },
      "recognition",
    );
    deps.events.emit("recognition", recognition);
    return recognition;
  };
}
