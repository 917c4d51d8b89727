import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import type { Suppressions } from "../feedback/suppressions.ts";
import type { Gallery } from "../gallery/gallery.ts";
import type { AcceptedTemplate } from "../ingest/open-template.ts";
import { type Cooldowns, type RuleCache, type TriggeredPromotion, triggerPromotion } from "../promotions/trigger.ts";
import type { ScreenHub } from "../signage/hub.ts";
import type { VisitorStatus, Visitors } from "../visitors/visitors.ts";
import type { PersonKeyCache } from "./key-cache.ts";
import type { VisitLog } from "./visit-log.ts";

export interface Recognition {
  nodeId: string;
  storeId: string;
  cameraId: string;
  personId: string | null;
  displayName: string | null;
  score: number;
  /** a consented member, or anyone else (what signage and most consumers go by) */
  visitor: "member" | "unknown";
  /**
   * For a non-member in a store in "visitor" privacy mode: their pseudonymous visitor id (random, store-scoped,
   * expiring, never linked to a member), whether this visit is their first to the store or a later one, and how
   * many visits of theirs the store has counted. Absent for members and in "members-only" / "count-only" stores.
   */
  pseudonym?: { visitorId: string; status: VisitorStatus; visits: number; score: number };
  /** false when this sighting belongs to a visit already counted (same subject, store and window) */
  newVisit: boolean;
  promotion?: TriggeredPromotion;
}

export interface RecognizeDeps {
  db: Db;
  gallery: Gallery;
  hub: ScreenHub;
  events: EventEmitter;
  logger: Logger;
  /** recent visits (dedupe) and the batched visit writer; its window is the dedupe window */
  visitLog: VisitLog;
  /** which people still hold a data key */
  keys: PersonKeyCache;
  /** store privacy policies and pseudonymous visitor templates */
  visitors: Visitors;
  /** promotion cooldowns this instance started */
  cooldowns?: Cooldowns;
  /** active promotion rules, re-read about once a second */
  rules?: RuleCache;
  /** a template older than this (a node's backlog after an outage) still counts as a visit but shows nothing */
  promotionMaxAgeMs: number;
  /** person + node track pairings staff marked "not this person": such a match counts as unknown */
  suppressions?: Suppressions;
}

/** Match → visit → promotion → "recognition" event, for one accepted template. */
export function createRecognizer(deps: RecognizeDeps): (t: AcceptedTemplate) => Promise<Recognition> {
  return async ({ header, embedding, node }) => {
    // when the face was seen (the node's clock) dates the visit; consent and promotions go by our clock
    const seenAt = new Date(header.ts);
    const now = new Date();
    const policy = await deps.visitors.policy(node.storeId);
    // a count-only store identifies nobody, even from a node that has not yet converged on that mode
    let found: ReturnType<Gallery["match"]> =
      policy.privacyMode === "count-only"
        ? { kind: "unknown", score: 0 }
        : deps.gallery.match(embedding, node.storeId, now);
    // the data key is the source of truth: another instance may have crypto-shredded this person since our index was
    // built, so a member match holds only while their key row does (cached, dropped on the deletion's notification)
    for (let tries = 0; found.kind === "member" && tries < 3; tries++) {
      if (await deps.keys.exists(found.personId)) break;
      deps.gallery.remove(found.personId);
      found = deps.gallery.match(embedding, node.storeId, now);
    }
    const contested = found.kind === "member" && !!deps.suppressions?.has(found.personId, node.id, header.trackId, now);
    const match: typeof found = contested ? { kind: "unknown", score: found.score } : found;
    const personId = match.kind === "member" ? match.personId : null;
    const displayName = match.kind === "member" ? match.displayName : null;

    // only a visitor-mode store keeps (pseudonymous, expiring) templates of people who are not members; a contested
    // member match may still be that member, whose face must not become a visitor template
    const visitor =
      match.kind === "unknown" && policy.privacyMode === "visitor" && !contested
        ? await deps.visitors.recognise(node.storeId, embedding, seenAt, policy, now)
        : undefined;
    const subject = personId
      ? `person:${personId}`
      : visitor
        ? `visitor:${visitor.visitorId}`
        : `track:${node.id}/${header.trackId}`;

    // dedupe across the store's cameras: the subject is the person or visitor, not the camera
    const isNewVisit = await deps.visitLog.isNewVisit(node.storeId, subject, seenAt, now.getTime());
    let pseudonym: Recognition["pseudonym"];
    if (visitor) {
      if (isNewVisit) visitor.entry.visits += 1;
      const visits = Math.max(visitor.entry.visits, 1);
      pseudonym = {
        visitorId: visitor.visitorId,
        status: visits > 1 ? "returning" : "first-time",
        visits,
        score: visitor.score,
      };
    }
    if (isNewVisit) {
      await deps.visitLog.record({
        id: randomUUID(),
        personId,
        storeId: node.storeId,
        cameraId: header.cameraId,
        nodeId: node.id,
        trackId: header.trackId,
        ts: seenAt,
        score: match.score,
        kind: match.kind,
        subject,
        visitorId: visitor?.visitorId ?? null,
        visitor: pseudonym?.status ?? null,
      });
    }

    const fresh = now.getTime() - seenAt.getTime() <= deps.promotionMaxAgeMs;
    const promotion = fresh
      ? await triggerPromotion(
          deps.db,
          deps.hub,
          {
            storeId: node.storeId,
            audience: match.kind,
            visitor: pseudonym?.status,
            personId,
            displayName,
            subject,
            now,
          },
          deps.cooldowns,
          deps.rules,
        )
      : undefined;

    const recognition: Recognition = {
      nodeId: node.id,
      storeId: node.storeId,
      cameraId: header.cameraId,
      personId,
      displayName,
      score: match.score,
      visitor: match.kind,
      ...(pseudonym ? { pseudonym } : {}),
      newVisit: isNewVisit,
      ...(promotion ? { promotion } : {}),
    };
    deps.logger.info(
      {
        nodeId: node.id,
        storeId: node.storeId,
        visitor: match.kind,
        personId,
        ...(pseudonym ? { pseudonym: pseudonym.status } : {}),
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
