import { randomUUID } from "node:crypto";
import { and, asc, eq, gt, isNull, or } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { plays, promotions, screens } from "../db/schema.ts";
import type { ScreenHub } from "../signage/hub.ts";
import { renderMessage } from "./render.ts";

export interface Trigger {
  storeId: string;
  audience: "member" | "unknown";
  personId: string | null;
  displayName: string | null;
  /** whom the cooldown applies to: "person:<id>" for members, "track:<node>/<track>" for unknown visitors */
  subject: string;
  now: Date;
}

export interface TriggeredPromotion {
  promotionId: string;
  title: string;
  message: string;
  durationMs: number;
  audience: "member" | "unknown";
  playIds: string[];
  /** live connections the promotion reached right now */
  delivered: number;
}

/**
 * Picks the oldest active rule for this store (or all stores) and audience that is not cooling down for this
 * subject, records one play per screen of the store (proof of play completes it later) and pushes it to the
 * connected screens. One promotion per recognition: a screen shows one thing at a time.
 */
export async function triggerPromotion(db: Db, hub: ScreenHub, t: Trigger): Promise<TriggeredPromotion | undefined> {
  const rules = await db
    .select()
    .from(promotions)
    .where(
      and(
        eq(promotions.active, true),
        eq(promotions.audience, t.audience),
        or(isNull(promotions.storeId), eq(promotions.storeId, t.storeId)),
      ),
    )
    .orderBy(asc(promotions.createdAt), asc(promotions.id));

  for (const rule of rules) {
    const since = new Date(t.now.getTime() - rule.cooldownMs);
    const recent = await db
      .select({ id: plays.id })
      .from(plays)
      .where(and(eq(plays.promotionId, rule.id), eq(plays.subject, t.subject), gt(plays.sentAt, since)))
      .limit(1);
    if (recent.length > 0) continue;

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
        audience: rule.audience,
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
