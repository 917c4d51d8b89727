import { randomUUID } from "node:crypto";
import { and, asc, eq, gt, inArray, isNull, or } from "drizzle-orm";
import { z } from "zod";
import type { Db } from "../db/client.ts";
import { plays, promotions, screens } from "../db/schema.ts";
import type { ScreenHub } from "../signage/hub.ts";
import { renderMessage } from "./render.ts";

/** Whom a promotion rule is for: members, every non-member, or only pseudonymous visitors of one kind. */
export const Audience = z.enum(promotions.audience.enumValues);
export type Audience = z.infer<typeof Audience>;

export interface Trigger {
  storeId: string;
  audience: "member" | "unknown";
  /** for a pseudonymous visitor (store in "visitor" mode): rules for "first-time" or "returning" apply as well */
  visitor?: "first-time" | "returning" | undefined;
  personId: string | null;
  displayName: string | null;
  /**
   * whom the cooldown applies to: "person:<id>" for members, "visitor:<id>" for pseudonymous visitors (stable across
   * tracks and cameras, so a visitor loitering in view does not get the offer again each time a node re-detects
   * them), "track:<node>/<track>" where the store keeps no visitor templates
   */
  subject: string;
  now: Date;
}

export interface TriggeredPromotion {
  promotionId: string;
  title: string;
  message: string;
  durationMs: number;
  audience: Audience;
  playIds: string[];
  /** live connections the promotion reached right now */
  delivered: number;
}

/**
 * Cooldowns this instance has started, so a loitering subject is turned away without a database round trip; the
 * plays table stays the truth for other instances and after a restart. Also holds when the store has no screen
 * (no play rows to cool down on).
 */
export class Cooldowns {
  private readonly until = new Map<string, number>();
  private lastPrune = 0;

  active(ruleId: string, subject: string, now: number): boolean {
    const until = this.until.get(`${ruleId} ${subject}`);
    return until !== undefined && until > now;
  }

  start(ruleId: string, subject: string, now: number, cooldownMs: number): void {
    this.until.set(`${ruleId} ${subject}`, now + cooldownMs);
    if (now - this.lastPrune > 60_000) {
      this.lastPrune = now;
      for (const [key, until] of this.until) if (until <= now) this.until.delete(key);
    }
  }
}

type Rule = typeof promotions.$inferSelect;

/**
 * Every active rule, read at most once per `ttlMs` (concurrent recognitions share the read): the hot path asks the
 * database for rules about once a second instead of once per template. A rule created, changed or deactivated
 * through the API applies within `ttlMs`.
 */
export class RuleCache {
  private rules: Rule[] = [];
  private loadedAt = -Infinity;
  private loading: Promise<Rule[]> | undefined;

  constructor(
    private readonly db: Db,
    private readonly ttlMs = 1000,
  ) {}

  async active(now = Date.now()): Promise<Rule[]> {
    if (now - this.loadedAt < this.ttlMs) return this.rules;
    this.loading ??= this.db
      .select()
      .from(promotions)
      .where(eq(promotions.active, true))
      .orderBy(asc(promotions.createdAt), asc(promotions.id))
      .then((rules) => {
        this.rules = rules;
        this.loadedAt = now;
        return rules;
      })
      .finally(() => {
        this.loading = undefined;
      });
    return this.loading;
  }
}

/**
 * Picks the oldest active rule for this store (or all stores) and audience that is not cooling down for this
 * subject, records one play per screen of the store (proof of play completes it later) and pushes it to the
 * connected screens. One promotion per recognition: a screen shows one thing at a time.
 */
export async function triggerPromotion(
  db: Db,
  hub: ScreenHub,
  t: Trigger,
  cooldowns?: Cooldowns,
  cache?: RuleCache,
): Promise<TriggeredPromotion | undefined> {
  const audiences: Audience[] = t.visitor ? [t.audience, t.visitor] : [t.audience];
  const rules = cache
    ? (await cache.active(t.now.getTime())).filter(
        (r) => audiences.includes(r.audience) && (r.storeId === null || r.storeId === t.storeId),
      )
    : await db
        .select()
        .from(promotions)
        .where(
          and(
            eq(promotions.active, true),
            inArray(promotions.audience, audiences),
            or(isNull(promotions.storeId), eq(promotions.storeId, t.storeId)),
          ),
        )
        .orderBy(asc(promotions.createdAt), asc(promotions.id));

  const now = t.now.getTime();
  for (const rule of rules) {
    if (cooldowns?.active(rule.id, t.subject, now)) continue;
    const since = new Date(t.now.getTime() - rule.cooldownMs);
    const recent = await db
      .select({ sentAt: plays.sentAt })
      .from(plays)
      .where(and(eq(plays.promotionId, rule.id), eq(plays.subject, t.subject), gt(plays.sentAt, since)))
      .limit(1);
    const last = recent[0];
    if (last) {
      // another instance (or this one before a restart) played it: skip the database next time
      cooldowns?.start(rule.id, t.subject, last.sentAt.getTime(), rule.cooldownMs);
      continue;
    }
    cooldowns?.start(rule.id, t.subject, now, rule.cooldownMs);

    const storeScreens = await db.select({ id: screens.id }).from(screens).where(eq(screens.storeId, t.storeId));
    const message = renderMessage(rule.messageTemplate, t.displayName);
    const rows = storeScreens.map((s) => ({
      id: randomUUID(),
      promotionId: rule.id,
      screenId: s.id,
      storeId: t.storeId,
      personId: t.personId,
      subject: t.subject,
      sentAt: t.now,
    }));
    if (rows.length > 0) await db.insert(plays).values(rows);

    let delivered = 0;
    for (const row of rows) {
      delivered += hub.push(row.screenId, {
        playId: row.id,
        promotionId: rule.id,
        title: rule.title,
        message,
        durationMs: rule.durationMs,
        // screens only tell members from everyone else
        audience: rule.audience === "member" ? "member" : "unknown",
      });
    }
    return {
      promotionId: rule.id,
      title: rule.title,
      message,
      durationMs: rule.durationMs,
      audience: rule.audience,
      playIds: rows.map((r) => r.id),
      delivered,
    };
  }
  return undefined;
}
