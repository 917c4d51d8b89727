import { GlanceError } from "@glance/shared";
import { and, eq, gt, isNull, or, type SQL } from "drizzle-orm";
import type { MiddlewareHandler } from "hono";
import { hashSecret } from "../auth/secrets.ts";
import type { Db } from "../db/client.ts";
import { apiTokens, type Role } from "../db/schema.ts";

export interface Principal {
  tokenId: string;
  role: Role;
  storeId: string | null;
  screenId: string | null;
}

export type Env = { Variables: { principal: Principal } };

/**
 * A token stands while it is neither revoked nor past its expiry, by this server's clock (the one that set the
 * expiry). Expired and revoked tokens are refused alike, so an answer never tells which.
 */
export function tokenStands(now: Date = new Date()): SQL {
  return and(isNull(apiTokens.revokedAt), or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now))) as SQL;
}

function bearer(header: string | undefined): string | undefined {
  const m = header?.match(/^Bearer\s+(\S+)$/i);
  return m?.[1];
}

/**
 * Bearer-token roles. `allowQueryToken` admits `?token=` for the routes a browser opens without headers
 * (EventSource, the signage page); everywhere else the token must be in the Authorization header.
 */
export function requireRole(
  db: Db,
  roles: readonly Role[],
  opts: { allowQueryToken?: boolean } = {},
): MiddlewareHandler<Env> {
  return async (c, next) => {
    const token = bearer(c.req.header("authorization")) ?? (opts.allowQueryToken ? c.req.query("token") : undefined);
    if (!token) throw new GlanceError("UNAUTHORIZED", "Send a bearer token: Authorization: Bearer <token>.");
    const [row] = await db
      .select()
      .from(apiTokens)
      .where(and(eq(apiTokens.tokenHash, hashSecret(token)), tokenStands()))
      .limit(1);
    if (!row) throw new GlanceError("UNAUTHORIZED", "Token unknown, revoked or expired; ask HQ for a new one.");
    if (!roles.includes(row.role)) {
      throw new GlanceError("FORBIDDEN", `Role ${row.role} may not do this; it needs one of: ${roles.join(", ")}.`);
    }
    c.set("principal", { tokenId: row.id, role: row.role, storeId: row.storeId, screenId: row.screenId });
    await next();
  };
}

/** Store-scoped roles see only their store. */
export function assertStoreAccess(p: Principal, storeId: string | null): void {
  if (p.role === "store-manager" && p.storeId !== storeId) {
    throw new GlanceError("FORBIDDEN", "This token is limited to another store.");
  }
}

export function assertScreenAccess(p: Principal, screenId: string): void {
  if (p.role === "signage-screen" && p.screenId !== screenId) {
    throw new GlanceError("FORBIDDEN", "This screen token belongs to another screen.");
  }
}
