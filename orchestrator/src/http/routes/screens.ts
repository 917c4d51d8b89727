import { GlanceError } from "@glance/shared";
import { and, desc, eq } from "drizzle-orm";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { hashSecret, newSecret } from "../../auth/secrets.ts";
import { tokenExpiresAt } from "../../auth/token-lifetime.ts";
import type { Db } from "../../db/client.ts";
import { apiTokens, plays, screens, stores } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import type { PromotionEvent } from "../../signage/hub.ts";
import { assertScreenAccess, assertStoreAccess, type Env, requireRole, tokenStands } from "../auth.ts";
import { Id, newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreateScreen = z.object({
  id: Id.optional(),
  storeId: z.string().min(1),
  name: z.string().trim().min(1).max(200),
});
export type CreateScreen = z.infer<typeof CreateScreen>;

export const ProofOfPlay = z.object({
  playId: z.string().min(1).max(64),
  /** how long the promotion was actually on screen */
  playedMs: z.number().int().nonnegative().max(3_600_000).optional(),
});
export type ProofOfPlay = z.infer<typeof ProofOfPlay>;

const ScreenParam = z.object({ screenId: z.string().min(1).max(64) });

export async function findScreen(db: Db, screenId: string) {
  const [row] = await db
    .select({ id: screens.id, name: screens.name, storeId: screens.storeId, storeName: stores.name })
    .from(screens)
    .innerJoin(stores, eq(stores.id, screens.storeId))
    .where(eq(screens.id, screenId));
  if (!row) throw new GlanceError("NOT_FOUND", `Screen ${screenId} does not exist.`);
  return row;
}

/** Whether the token still stands (neither revoked nor expired since the request was let in). */
async function tokenLive(db: Db, tokenId: string): Promise<boolean> {
  const [row] = await db
    .select({ id: apiTokens.id })
    .from(apiTokens)
    .where(and(eq(apiTokens.id, tokenId), tokenStands()));
  return !!row;
}

export function screensRouter(s: Services) {
  return new Hono<Env>()
    .post("/", requireRole(s.db, ["hq-admin", "store-manager"]), valid("json", CreateScreen), async (c) => {
      const body = c.req.valid("json");
      assertStoreAccess(c.get("principal"), body.storeId);
      const store = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, body.storeId));
      if (store.length === 0) throw new GlanceError("NOT_FOUND", `Store ${body.storeId} does not exist.`);
      const id = body.id ?? newId();
      const taken = await s.db.select({ id: screens.id }).from(screens).where(eq(screens.id, id));
      if (taken.length > 0) throw new GlanceError("CONFLICT", `Screen ${id} already exists.`);
      const token = newSecret("gl_");
      // a new screen's token lives the signage-screen default; POST /api/tokens re-issues one, of any lifetime
      const tokenExpires = tokenExpiresAt("signage-screen", undefined);
      const [screen] = await s.db.insert(screens).values({ id, storeId: body.storeId, name: body.name }).returning();
      await s.db.insert(apiTokens).values({
        id: newId(),
        tokenHash: hashSecret(token),
        role: "signage-screen",
        storeId: body.storeId,
        screenId: id,
        label: `screen ${body.name}`,
        expiresAt: tokenExpires,
      });
      // the token is shown here once; it goes into the player's URL: /signage/<id>?token=<token>
      return c.json(
        {
          screen,
          token,
          tokenExpiresAt: tokenExpires.toISOString(),
          signageUrl: `/signage/${id}?token=${encodeURIComponent(token)}`,
        },
        201,
      );
    })
    .get(
      "/:screenId/events",
      requireRole(s.db, ["signage-screen", "hq-admin"], { allowQueryToken: true }),
      valid("param", ScreenParam),
      async (c) => {
        const { screenId } = c.req.valid("param");
        const principal = c.get("principal");
        assertScreenAccess(principal, screenId);
        const screen = await findScreen(s.db, screenId);
        const log = s.logger.child({ screenId });
        return streamSSE(c, async (stream) => {
          const queue: PromotionEvent[] = [];
          let wake: (() => void) | undefined;
          const unsubscribe = s.hub.subscribe(screenId, (event) => {
            queue.push(event);
            wake?.();
          });
          stream.onAbort(() => {
            unsubscribe();
            wake?.();
          });
          log.info("screen connected");
          await stream.writeSSE({ event: "hello", data: JSON.stringify({ screenId, storeName: screen.storeName }) });
          while (!stream.aborted && !stream.closed) {
            const event = queue.shift();
            if (event) {
              await stream.writeSSE({ event: "promotion", id: event.playId, data: JSON.stringify(event) });
              continue;
            }
            // sleep until the next promotion or the keep-alive tick, whichever comes first
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, s.pingIntervalMs);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
            if (queue.length === 0 && !stream.aborted) {
              // a stream outlives its token's check at connect: a revoked or expired token ends it by the next
              // keep-alive (one event, "revoked", for both: they are refused alike)
              if (!(await tokenLive(s.db, principal.tokenId))) {
                await stream.writeSSE({
                  event: "revoked",
                  data: "This token was revoked or has expired; ask HQ for a new one.",
                });
                log.info("screen token revoked or expired: stream closed");
                break;
              }
              await stream.writeSSE({ event: "ping", data: String(Date.now()) });
            }
          }
          unsubscribe();
          log.info("screen disconnected");
        });
      },
    )
    .get(
      "/:screenId/plays",
      requireRole(s.db, ["hq-admin", "auditor", "store-manager"]),
      valid("param", ScreenParam),
      async (c) => {
        const { screenId } = c.req.valid("param");
        const screen = await findScreen(s.db, screenId);
        assertStoreAccess(c.get("principal"), screen.storeId);
        const rows = await s.db
          .select({
            id: plays.id,
            promotionId: plays.promotionId,
            sentAt: plays.sentAt,
            playedAt: plays.playedAt,
            playedMs: plays.playedMs,
          })
          .from(plays)
          .where(eq(plays.screenId, screenId))
          .orderBy(desc(plays.sentAt))
          .limit(500);
        return c.json(rows);
      },
    )
    .post(
      "/:screenId/plays",
      requireRole(s.db, ["signage-screen"], { allowQueryToken: true }),
      valid("param", ScreenParam),
      valid("json", ProofOfPlay),
      async (c) => {
        const { screenId } = c.req.valid("param");
        assertScreenAccess(c.get("principal"), screenId);
        const body = c.req.valid("json");
        const [play] = await s.db
          .update(plays)
          .set({ playedAt: new Date(), playedMs: body.playedMs ?? null })
          .where(and(eq(plays.id, body.playId), eq(plays.screenId, screenId)))
          .returning();
        if (!play) throw new GlanceError("NOT_FOUND", `Play ${body.playId} was not sent to screen ${screenId}.`);
        return c.json(play);
      },
    );
}
