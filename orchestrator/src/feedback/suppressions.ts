import { gt } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { matchFeedback } from "../db/schema.ts";

/** How long a contested pairing stays suppressed: far longer than any track, short enough that reused ids age out. */
export const SUPPRESSION_TTL_MS = 7 * 24 * 3600_000;

const key = (personId: string, nodeId: string, trackId: string) => `${personId}\u0000${nodeId}\u0000${trackId}`;

/**
 * "Not this person": pairings of a person with one node track that staff contested. The recognizer treats a match
 * of that person on that track as unknown, so the wrong welcome is not shown again while the visitor is still in view.
 */
export class Suppressions {
  private readonly until = new Map<string, number>();

  add(personId: string, nodeId: string, trackId: string, from = new Date()): void {
    this.until.set(key(personId, nodeId, trackId), from.getTime() + SUPPRESSION_TTL_MS);
  }

  has(personId: string, nodeId: string, trackId: string, now = new Date()): boolean {
    const k = key(personId, nodeId, trackId);
    const until = this.until.get(k);
    if (until === undefined) return false;
    if (until > now.getTime()) return true;
    this.until.delete(k);
    return false;
  }

  get size(): number {
    return this.until.size;
  }

  /** The live ones from the database (the feedback table is the record; this is its index). */
  static async load(db: Db, now = new Date()): Promise<Suppressions> {
    const s = new Suppressions();
    const rows = await db
      .select()
      .from(matchFeedback)
      .where(gt(matchFeedback.createdAt, new Date(now.getTime() - SUPPRESSION_TTL_MS)));
    for (const r of rows) s.add(r.personId, r.nodeId, r.trackId, r.createdAt);
    return s;
  }
}
