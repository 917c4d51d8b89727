import { GlanceError } from "@glance/shared";
import { and, eq, isNull } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { hashSecret, newSecret } from "../../auth/secrets.ts";
import { BOOTSTRAP_LABEL, maxTokenLifetimeDays, tokenExpiresAt } from "../../auth/token-lifetime.ts";
import { apiTokens, roles, screens, stores } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { newId } from "../ids.ts";
import { valid } from "../validate.ts";

export const CreateToken = z
  .object({
    role: z.enum(roles),
    label: z
      .string()
      .trim()
      .min(1)
      .max(200)
      .refine((label) => label.toLowerCase() !== BOOTSTRAP_LABEL, {
        message: `"${BOOTSTRAP_LABEL}" names the token in the orchestrator's data directory; choose another label`,
      }),
    storeId: z.string().optional(),
    screenId: z.string().optional(),
    expiresInDays: z
      .number()
      .int()
      .min(1)
      .max(maxTokenLifetimeDays)
      .optional()
      .describe(
        `Lifetime in whole days, 1-${maxTokenLifetimeDays}; default by role. There is no token that never expires.`,
      ),
  })
  .refine((t) => t.role !== "store-manager" || t.storeId, {
    message: "a store-manager token needs storeId",
    path: ["storeId"],
  })
  .refine((t) => t.role !== "signage-screen" || t.screenId, {
    message: "a signage-screen token needs screenId",
    path: ["screenId"],
  });
export type CreateToken = z.infer<typeof CreateToken>;

const TokenParam = z.object({ tokenId: z.string().min(1).max(64) });

/**
 * HQ hands out role tokens (the plaintext is in the creation response only), each with a lifetime, lists them (never
 * a token or its hash) and revokes one that leaked: the next request with it is refused, as after its expiry.
 */
export function tokensRouter(s: Services) {
  return new Hono<Env>()
    .get("/", requireRole(s.db, ["hq-admin", "auditor"]), async (c) => {
      const rows = await s.db
        .select({
          id: apiTokens.id,
          role: apiTokens.role,
          label: apiTokens.label,
          storeId: apiTokens.storeId,
          screenId: apiTokens.screenId,
          createdAt: apiTokens.createdAt,
          revokedAt: apiTokens.revokedAt,
          expiresAt: apiTokens.expiresAt,
        })
        .from(apiTokens)
        .orderBy(apiTokens.createdAt);
      return c.json(rows);
    })
    .post("/:tokenId/revoke", requireRole(s.db, ["hq-admin"]), valid("param", TokenParam), async (c) => {
      const { tokenId } = c.req.valid("param");
      if (tokenId === c.get("principal").tokenId) {
        throw new GlanceError("CONFLICT", "This is the token you are using; revoke it with another hq-admin token.");
      }
      const [revoked] = await s.db
        .update(apiTokens)
        .set({ revokedAt: new Date() })
        .where(and(eq(apiTokens.id, tokenId), isNull(apiTokens.revokedAt)))
        .returning({ id: apiTokens.id, role: apiTokens.role, revokedAt: apiTokens.revokedAt });
      if (!revoked) {
        const [row] = await s.db
          .select({ revokedAt: apiTokens.revokedAt })
          .from(apiTokens)
          .where(eq(apiTokens.id, tokenId));
        if (!row) throw new GlanceError("NOT_FOUND", `Token ${tokenId} does not exist.`);
        throw new GlanceError("CONFLICT", `Token ${tokenId} was already revoked at ${row.revokedAt?.toISOString()}.`);
      }
      return c.json(revoked);
    })
    .post("/", requireRole(s.db, ["hq-admin"]), valid("json", CreateToken), async (c) => {
      const body = c.req.valid("json");
      let storeId = body.storeId ?? null;
      if (body.screenId) {
        const [screen] = await s.db.select().from(screens).where(eq(screens.id, body.screenId));
        if (!screen) throw new GlanceError("NOT_FOUND", `Screen ${body.screenId} does not exist.`);
        storeId = screen.storeId;
      } else if (storeId) {
        const found = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, storeId));
        if (found.length === 0) throw new GlanceError("NOT_FOUND", `Store ${storeId} does not exist.`);
      }
      const token = newSecret("gl_");
      const id = newId();
      const expiresAt = tokenExpiresAt(body.role, body.expiresInDays);
      await s.db.insert(apiTokens).values({
        id,
        tokenHash: hashSecret(token),
        role: body.role,
        storeId,
        screenId: body.screenId ?? null,
        label: body.label,
        expiresAt,
      });
      return c.json(
        { id, role: body.role, storeId, screenId: body.screenId ?? null, expiresAt: expiresAt.toISOString(), token },
        201,
      );
    });
}
