import { inArray } from "drizzle-orm";
import type { Logger } from "pino";
import { type Db, listen } from "../db/client.ts";
import { personKeys } from "../db/schema.ts";

/** Channel of the person_keys delete trigger (migration 0007). */
export const PERSON_KEY_DELETED = "glance_person_key_deleted";

/**
 * Which people still hold a data key: a member match holds only while it does (the key row is the truth, another
 * instance may have crypto-shredded the person). Positive answers are cached so the hot path makes no round trip;
 * an entry is dropped when the database announces the key's deletion (a trigger NOTIFYs every instance listening on
 * the same Postgres), and after `ttlMs` in any case; every entry is dropped when the notification connection is
 * (re)established, so a deletion missed while it was down outlives it by at most the TTL. On PGlite there is only
 * this process, whose own erasures drop the person from the gallery before the cache is consulted.
 */
export class PersonKeyCache {
  private readonly known = new Map<string, number>();
  private listening: boolean;
  readonly stats = { hits: 0, lookups: 0, invalidations: 0 };

  private constructor(
    private readonly db: Db,
    private readonly ttlMs: number,
    private readonly logger: Logger,
    private readonly external: boolean,
  ) {
    this.listening = !external;
  }

  static async start(opts: {
    db: Db;
    logger: Logger;
    /** the shared Postgres, when there is one: the cache listens for key deletions on its own connection */
    databaseUrl?: string | undefined;
    ttlMs?: number;
  }): Promise<{ cache: PersonKeyCache; stop(): Promise<void> }> {
    const cache = new PersonKeyCache(opts.db, opts.ttlMs ?? 60_000, opts.logger, !!opts.databaseUrl);
    if (!opts.databaseUrl) return { cache, stop: async () => {} };
    const stop = await listen(
      opts.databaseUrl,
      PERSON_KEY_DELETED,
      (personId) => cache.invalidate(personId),
      () => {
        // (re)subscribed: anything deleted while we were not listening may be cached
        cache.known.clear();
        cache.listening = true;
      },
    );
    return {
      cache,
      async stop() {
        cache.listening = false;
        await stop();
      },
    };
  }

  invalidate(personId: string): void {
    this.stats.invalidations++;
    this.known.delete(personId);
  }

  /**
   * Which of these people still hold a data key: cached answers as they are (each kept `ttlMs`, and only while the
   * deletion notifications are heard), the others in one query. Returns those who hold a key.
   */
  async existing(personIds: Iterable<string>, now = Date.now()): Promise<Set<string>> {
    const held = new Set<string>();
    const unknown: string[] = [];
    for (const personId of new Set(personIds)) {
      const at = this.known.get(personId);
      if (at !== undefined && now - at < this.ttlMs) {
        this.stats.hits++;
        held.add(personId);
      } else unknown.push(personId);
    }
    for (let i = 0; i < unknown.length; i += 1000) {
      const chunk = unknown.slice(i, i + 1000);
      this.stats.lookups += chunk.length;
      const rows = await this.db
        .select({ personId: personKeys.personId })
        .from(personKeys)
        .where(inArray(personKeys.personId, chunk));
      const found = new Set(rows.map((r) => r.personId));
      for (const personId of chunk) {
        if (!found.has(personId)) {
          this.known.delete(personId);
          continue;
        }
        held.add(personId);
        if (this.listening) this.known.set(personId, now);
      }
    }
    if (unknown.length > 0 && this.external && !this.listening)
      this.logger.debug({ people: unknown.length }, "key notifications down: not caching");
    return held;
  }
}
