import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import { and, eq, gt, lt } from "drizzle-orm";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import { personKeys, visits } from "../db/schema.ts";
import type { Suppressions } from "../feedback/suppressions.ts";
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
  /** a template older than this (a node's backlog after an outage) still counts as a visit but shows nothing */
  promotionMaxAgeMs: number;
  /** person + node track pairings staff marked "not this person": such a match counts as unknown */
  suppressions?: Suppressions;
}

/** Match → visit → promotion → "recognition" event, for one accepted template. */
export function createRecognizer(deps: RecognizeDeps): (t: AcceptedTemplate) => Promise<Recognition> {
  // unknown visitors have no identity to look up in the visits table; their node-local track is the next best key
  const lastUnknownVisit = new Map<string, number>();

  return async ({ header, embedding, node }) => {
    // when the face was seen (the node's clock) dates the visit; consent and promotions go by our clock
    const seenAt = new Date(header.ts);
    const now = new Date();
    let found = deps.gallery.match(embedding, node.storeId, now);
    // the data key is the source of truth: another instance may have crypto-shredded this person since our index was
    // built, so a member match holds only while their key row does (one primary-key lookup per member match)
    for (let tries = 0; found.kind === "member" && tries < 3; tries++) {
      const [key] = await deps.db
        .select({ personId: personKeys.personId })
        .from(personKeys)
        .where(eq(personKeys.personId, found.personId))
        .limit(1);
      if (key) break;
      deps.gallery.remove(found.personId);
      found = deps.gallery.match(embedding, node.storeId, now);
    }
    const contested = found.kind === "member" && !!deps.suppressions?.has(found.personId, node.id, header.trackId, now);
    const match: typeof found = contested ? { kind: "unknown", score: found.score } : found;
    const personId = match.kind === "member" ? match.personId : null;
    const displayName = match.kind === "member" ? match.displayName : null;
    const subject = personId ? `person:${personId}` : `track:${node.id}/${header.trackId}`;

    // the window is centred on when the face was seen: a backlog arriving late still dedupes by its own time
    const windowStart = new Date(seenAt.getTime() - deps.visitDedupeMs);
    const windowEnd = new Date(seenAt.getTime() + deps.visitDedupeMs);
    let isNewVisit: boolean;
    if (personId) {
      const recent = await deps.db
        .select({ id: visits.id })
        .from(visits)
        .where(
          and(
            eq(visits.personId, personId),
            eq(visits.storeId, node.storeId),
            gt(visits.ts, windowStart),
            lt(visits.ts, windowEnd),
          ),
        )
        .limit(1);
      isNewVisit = recent.length === 0;
    } else {
      const last = lastUnknownVisit.get(subject);
      isNewVisit = last === undefined || Math.abs(seenAt.getTime() - last) >= deps.visitDedupeMs;
      if (isNewVisit) lastUnknownVisit.set(subject, seenAt.getTime());
      const expired = now.getTime() - 2 * deps.visitDedupeMs;
      for (const [key, ts] of lastUnknownVisit) if (ts < expired) lastUnknownVisit.delete(key);
    }
    if (isNewVisit) {
      await deps.db.insert(visits).values({
        id: randomUUID(),
        personId,
        storeId: node.storeId,
        cameraId: header.cameraId,
        nodeId: node.id,
        trackId: header.trackId,
        ts: seenAt,
        score: match.score,
        kind: match.kind,
      });
    }

    const fresh = now.getTime() - seenAt.getTime() <= deps.promotionMaxAgeMs;
    const promotion = fresh
      ? await triggerPromotion(deps.db, deps.hub, {
          storeId: node.storeId,
          audience: match.kind,
          personId,
          displayName,
          subject,
          now,
        })
      : undefined;

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
        ...(contested ? { suppressed: true } : {}),
        promotionId: promotion?.promotionId,
      },
      "recognition",
    );
    deps.events.emit("recognition", recognition);
    return recognition;
  };
}
