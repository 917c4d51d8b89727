import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import type { Suppressions } from "../feedback/suppressions.ts";
import type { GalleryPort, Match } from "../gallery/gallery.ts";
import type { AcceptedTemplate } from "../ingest/open-template.ts";
import { type Cooldowns, type RuleCache, type TriggeredPromotion, triggerPromotion } from "../promotions/trigger.ts";
import type { ScreenHub } from "../signage/hub.ts";
import type { StorePolicy, VisitorHit, VisitorStatus, Visitors } from "../visitors/visitors.ts";
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
  gallery: GalleryPort;
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

/** The outcome of one template of a batch: its recognition, or why it has none (logged by the caller). */
export type BatchOutcome = { recognition: Recognition } | { error: unknown };

/** Match → visit → promotion → "recognition" event, for one accepted template (a batch of one). */
export function createRecognizer(deps: RecognizeDeps): (t: AcceptedTemplate) => Promise<Recognition> {
  const batch = createBatchRecognizer(deps);
  return async (t) => {
    const [outcome] = await batch([t]);
    if (!outcome || "error" in outcome) throw outcome?.error ?? new Error("no recognition");
    return outcome.recognition;
  };
}

/** What a batch's search found (`BatchRecognizer.search`), handed to its `finish`. */
export interface BatchSearch {
  /** when the batch is recognised: consents, visit windows and promotions go by it */
  now: Date;
  policies: Map<string, StorePolicy>;
  /** each template's best match in the gallery, before the key re-check */
  found: Match[];
}

/**
 * Match → visit → promotion → "recognition" event for a batch of accepted templates, in their order, with the same
 * per-template semantics as one at a time. Called as a function it does both stages; the ingest calls them apart, so
 * that the next batch's search runs (on the gallery thread) while this batch finishes (on the main thread).
 */
export interface BatchRecognizer {
  (templates: readonly AcceptedTemplate[]): Promise<BatchOutcome[]>;
  /**
   * The stores' policies and one gallery search for every probe. It records and emits nothing, so it may run ahead
   * of the previous batch's `finish`; whoever is erased meanwhile is caught by `finish`'s key re-check.
   */
  search(templates: readonly AcceptedTemplate[]): Promise<BatchSearch>;
  /**
   * The rest, after the previous batch's `finish`. First what may fail for the batch as a whole and must happen
   * before anything is emitted: the key re-check of matched members (searching again for those whose person has
   * been erased), suppressions, and the batch's pseudonymous visitors (their new templates written in one
   * transaction). If any of that throws, the call rejects having emitted nothing and recorded no visit, and the
   * caller may retry the templates one by one. Then, template by template in order: visit dedupe, the visit write
   * (shared by the batch), promotion, log line and event; a failure there costs that template only (its outcome is
   * the error).
   */
  finish(templates: readonly AcceptedTemplate[], searched: BatchSearch): Promise<BatchOutcome[]>;
}

export function createBatchRecognizer(deps: RecognizeDeps): BatchRecognizer {
  /** One gallery search for the templates at `at`, each answer written to `found` at its place. */
  const matchInto = async (
    found: Match[],
    templates: readonly AcceptedTemplate[],
    at: readonly number[],
    now: Date,
  ) => {
    if (at.length === 0) return;
    const matches = await deps.gallery.matchMany(
      at.map((i) => {
        const t = templates[i] as AcceptedTemplate;
        return { probe: t.embedding, storeId: t.node.storeId };
      }),
      now,
    );
    at.forEach((i, j) => {
      found[i] = matches[j] as Match;
    });
  };
  const search = async (templates: readonly AcceptedTemplate[]): Promise<BatchSearch> => {
    const now = new Date();
    const policies = new Map<string, StorePolicy>();
    for (const { node } of templates)
      if (!policies.has(node.storeId)) policies.set(node.storeId, await deps.visitors.policy(node.storeId));
    // a count-only store identifies nobody, even from a node that has not yet converged on that mode
    const found: Match[] = templates.map(() => ({ kind: "unknown", score: 0 }));
    const at = templates.flatMap((t, i) =>
      (policies.get(t.node.storeId) as StorePolicy).privacyMode === "count-only" ? [] : [i],
    );
    await matchInto(found, templates, at, now);
    return { now, policies, found };
  };
  const finish = async (
    templates: readonly AcceptedTemplate[],
    { now, policies, found: searched }: BatchSearch,
  ): Promise<BatchOutcome[]> => {
    const found = [...searched];
    const policyOf = (t: AcceptedTemplate) => policies.get(t.node.storeId) as StorePolicy;
    // the data key is the source of truth: another instance may have crypto-shredded this person since our index
    // was built (or this one since the search), so a member match holds only while their key row does (cached,
    // dropped on the deletion's notification)
    const holdsKey = new Set<string>();
    for (let tries = 0; tries < 3; tries++) {
      const unchecked = new Set(
        found.flatMap((m) => (m.kind === "member" && !holdsKey.has(m.personId) ? [m.personId] : [])),
      );
      const held = await deps.keys.existing(unchecked);
      const gone = new Set<string>();
      for (const personId of unchecked) {
        if (held.has(personId)) holdsKey.add(personId);
        else gone.add(personId);
      }
      if (gone.size === 0) break;
      for (const personId of gone) await deps.gallery.remove(personId);
      const at = found.flatMap((m, i) => (m.kind === "member" && gone.has(m.personId) ? [i] : []));
      await matchInto(found, templates, at, now);
    }

    const contested = templates.map((t, i) => {
      const m = found[i] as Match;
      return m.kind === "member" && !!deps.suppressions?.has(m.personId, t.node.id, t.header.trackId, now);
    });
    // only a visitor-mode store keeps (pseudonymous, expiring) templates of people who are not members; a contested
    // member match may still be that member, whose face must not become a visitor template
    const pseudonymous = templates.flatMap((t, i) =>
      (found[i] as Match).kind === "unknown" && policyOf(t).privacyMode === "visitor" && !contested[i] ? [i] : [],
    );
    const visitorHits = await deps.visitors.recogniseMany(
      pseudonymous.map((i) => {
        const t = templates[i] as AcceptedTemplate;
        // when the face was seen (the node's clock) dates the visit; consent and promotions go by our clock
        return { storeId: t.node.storeId, probe: t.embedding, seenAt: new Date(t.header.ts), policy: policyOf(t) };
      }),
      now,
    );
    const visitorOf = new Map(pseudonymous.map((at, j) => [at, visitorHits[j] as VisitorHit]));

    // dedupe and visit writes in template order (the batch's new visits share one INSERT); then promotions and events
    const steps = [];
    for (const [i, t] of templates.entries()) {
      try {
        steps.push(
          await visit(
            deps,
            t,
            contested[i] ? { kind: "unknown", score: (found[i] as Match).score } : (found[i] as Match),
            visitorOf.get(i),
            now,
          ),
        );
      } catch (error) {
        steps.push({ error });
      }
    }
    const outcomes: BatchOutcome[] = [];
    for (const [i, step] of steps.entries()) {
      try {
        if ("error" in step) throw step.error;
        outcomes.push({
          recognition: await announce(deps, templates[i] as AcceptedTemplate, step, !!contested[i], now),
        });
      } catch (error) {
        outcomes.push({ error });
      }
    }
    return outcomes;
  };
  const recognise = async (templates: readonly AcceptedTemplate[]) => finish(templates, await search(templates));
  return Object.assign(recognise, { search, finish });
}

interface VisitStep {
  match: Match;
  subject: string;
  seenAt: Date;
  isNewVisit: boolean;
  pseudonym: Recognition["pseudonym"];
  /** resolves once the visit row is written (undefined: not a new visit) */
  written: Promise<boolean> | undefined;
}

async function visit(
  deps: RecognizeDeps,
  { header, node }: AcceptedTemplate,
  match: Match,
  visitor: VisitorHit | undefined,
  now: Date,
): Promise<VisitStep> {
  const seenAt = new Date(header.ts);
  const personId = match.kind === "member" ? match.personId : null;
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
  const written = isNewVisit
    ? deps.visitLog.record({
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
      })
    : undefined;
  // a refused write is reported by `announce`; until then it must not count as unhandled
  written?.catch(() => {});
  return { match, subject, seenAt, isNewVisit, pseudonym, written };
}

async function announce(
  deps: RecognizeDeps,
  { header, node }: AcceptedTemplate,
  { match, subject, seenAt, isNewVisit, pseudonym, written }: VisitStep,
  contested: boolean,
  now: Date,
): Promise<Recognition> {
  if (written) await written;
  const personId = match.kind === "member" ? match.personId : null;
  const displayName = match.kind === "member" ? match.displayName : null;
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
  if (deps.logger.isLevelEnabled("info"))
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
}
