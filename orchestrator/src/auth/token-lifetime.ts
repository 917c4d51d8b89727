import type { Role } from "../db/schema.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * How long an issued API token lives when HQ does not say, in days. Every issued token expires; only the bootstrap
 * admin token (dataDir/admin-token, readable by the operator alone) does not. The shorter the reach of a role's
 * token and the more often its holder changes or carries it around, the shorter its life:
 * - hq-admin 30: the whole estate, including deleting people; issued for a person or an integration, renewed monthly.
 * - technician 30: carried on field laptops from store to store; a site visit rarely lasts longer.
 * - auditor 30: an audit is a bounded engagement; read access to everyone's data should end with it.
 * - store-manager 90: one store, used daily from the back office; a quarter bounds a leaver nobody revoked.
 * - signage-screen 365: one screen's promotions, in an unattended player's URL; renewing means a visit to the screen,
 *   so yearly; a stolen player is revoked, not waited out.
 * Revocation stays the answer to a known leak; the lifetime bounds the leaks nobody noticed.
 */
export const defaultTokenLifetimeDays: Readonly<Record<Role, number>> = {
  "hq-admin": 30,
  technician: 30,
  auditor: 30,
  "store-manager": 90,
  "signage-screen": 365,
};

/**
 * The label of the bootstrap admin token's row (the token in dataDir/admin-token, which never expires): the API
 * refuses it for tokens it issues, so it marks that token alone (migration 0014 relies on it).
 */
export const BOOTSTRAP_LABEL = "bootstrap admin";

/** No token outlives a year: the longest default, and the longest HQ may ask for. */
export const maxTokenLifetimeDays = 365;

/** When a token of `role` issued at `now` expires: after `days` if HQ chose, else the role's default. */
export function tokenExpiresAt(role: Role, days: number | undefined, now: Date = new Date()): Date {
  return new Date(now.getTime() + (days ?? defaultTokenLifetimeDays[role]) * DAY_MS);
}
