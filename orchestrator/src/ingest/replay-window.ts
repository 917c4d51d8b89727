import { inArray, sql } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { nodes } from "../db/schema.ts";

/**
 * Anti-replay window per node, as IPsec/DTLS do it (RFC 4303 §3.4.3, bitmap as a ring like RFC 6479): a sequence
 * number is accepted once if it is newer than the highest accepted one, or within REPLAY_WINDOW below it and not seen
 * yet. A node's burst split across orchestrator instances (shared subscriptions) or reordered by QoS 1 redelivery is
 * then accepted whole, while a duplicate or anything older than the window is a replay.
 *
 * The database is the source of truth: `nodes.last_seq` + `nodes.replay_window` change only by compare-and-set, one
 * statement for a whole batch of nodes, so N instances on one database never both accept a seq. Each instance caches
 * the state it last saw. A cached state is always a subset of the true one (state only grows), so a seq the cache
 * calls a replay is one; a seq it calls new is confirmed by the compare-and-set, which re-reads the node on conflict.
 */
export const REPLAY_WINDOW = 1024;
const WINDOW_BYTES = REPLAY_WINDOW / 8;

export interface WindowState {
  /** highest accepted seq; null = none yet */
  highest: number | null;
  /** bit (seq mod REPLAY_WINDOW) set = seq accepted, for seq in (highest - REPLAY_WINDOW, highest] */
  bits: Uint8Array;
}

export type SeqVerdict = "new" | "duplicate" | "too-old";

/** The state a row holds; a row from before the window existed (last_seq, no bitmap) has seen everything up to it. */
export function windowFromRow(lastSeq: number | null, replayWindow: Uint8Array | null): WindowState {
  if (lastSeq === null) return { highest: null, bits: new Uint8Array(WINDOW_BYTES) };
  if (!replayWindow || replayWindow.length !== WINDOW_BYTES)
    return { highest: lastSeq, bits: new Uint8Array(WINDOW_BYTES).fill(0xff) };
  return { highest: lastSeq, bits: Uint8Array.from(replayWindow) };
}

export function classifySeq(state: WindowState, seq: number): SeqVerdict {
  if (state.highest === null || seq > state.highest) return "new";
  if (seq <= state.highest - REPLAY_WINDOW) return "too-old";
  const slot = seq % REPLAY_WINDOW;
  return (state.bits[slot >> 3] as number) & (1 << (slot & 7)) ? "duplicate" : "new";
}

/** Records `seq` (which `classifySeq` called new) in place. */
export function recordSeq(state: WindowState, seq: number): void {
  if (state.highest === null || seq - state.highest >= REPLAY_WINDOW) state.bits.fill(0);
  else for (let s = state.highest + 1; s < seq; s++) clearSlot(state.bits, s % REPLAY_WINDOW);
  if (state.highest === null || seq > state.highest) state.highest = seq;
  const slot = seq % REPLAY_WINDOW;
  state.bits[slot >> 3] = (state.bits[slot >> 3] as number) | (1 << (slot & 7));
}

function clearSlot(bits: Uint8Array, slot: number) {
  bits[slot >> 3] = (bits[slot >> 3] as number) & ~(1 << (slot & 7));
}

/** What ingest needs to know about a registered node; cached per instance. */
export interface KnownNode {
  id: string;
  storeId: string;
  signingPublicKey: string;
  revoked: boolean;
  /** the row's replay columns exactly as last read or written: the compare-and-set's expectation */
  row: { lastSeq: number | null; replayWindow: Uint8Array | null };
}

/** "failed": the database could not decide (the error is in `ReplayGuard.takeFailures()`) */
export type Admission = "accepted" | "replayed" | "revoked" | "unknown" | "failed";

/**
 * Node lookups and replay admission for the ingest, batched: `nodes()` answers a batch's nodes with at most one
 * query (cache misses), `admit()` decides a batch's sequence numbers with one statement when no other instance
 * interferes.
 */
export class ReplayGuard {
  private readonly cache = new Map<string, KnownNode>();
  /** node lookups, compare-and-set statements and nodes that lost one (decided again under a lock) */
  readonly stats = { lookups: 0, compareAndSets: 0, conflicts: 0 };

  private failures: unknown[] = [];

  constructor(private readonly db: Db) {}

  /** Errors behind "failed" admissions since the last call, for the caller's log. */
  takeFailures(): unknown[] {
    const out = this.failures;
    this.failures = [];
    return out;
  }

  /** The registered nodes among `ids` (unknown ones are absent); one query for those not cached. */
  async nodes(ids: Iterable<string>): Promise<Map<string, KnownNode>> {
    const out = new Map<string, KnownNode>();
    const missing: string[] = [];
    for (const id of new Set(ids)) {
      const known = this.cache.get(id);
      if (known) out.set(id, known);
      else missing.push(id);
    }
    if (missing.length > 0) for (const [id, node] of await this.load(missing)) out.set(id, node);
    return out;
  }

  /** Forget what is cached about a node (it was revoked or deleted here). */
  forget(id: string): void {
    this.cache.delete(id);
  }

  /** Reads `ids` into the cache; inside a transaction (`locked`) with their rows locked until it ends. */
  private async load(ids: string[], locked?: Db): Promise<Map<string, KnownNode>> {
    this.stats.lookups++;
    const query = (locked ?? this.db)
      .select({
        id: nodes.id,
        storeId: nodes.storeId,
        signingPublicKey: nodes.signingPublicKey,
        revokedAt: nodes.revokedAt,
        lastSeq: nodes.lastSeq,
        replayWindow: nodes.replayWindow,
      })
      .from(nodes)
      .where(inArray(nodes.id, ids));
    const rows = locked ? await query.for("update") : await query;
    const out = new Map<string, KnownNode>();
    for (const r of rows) {
      const node: KnownNode = {
        id: r.id,
        storeId: r.storeId,
        signingPublicKey: r.signingPublicKey,
        revoked: r.revokedAt !== null,
        row: { lastSeq: r.lastSeq, replayWindow: r.replayWindow },
      };
      this.cache.set(r.id, node);
      out.set(r.id, node);
    }
    for (const id of ids) if (!out.has(id)) this.cache.delete(id);
    return out;
  }

  /**
   * Decides each (nodeId, seq) in order: "accepted" exactly once across every instance on the database, "replayed"
   * for a duplicate or a seq older than the window, "revoked"/"unknown" when the node is (now) revoked or gone.
   *
   * Optimistic first (cached state, one compare-and-set for the batch); nodes another instance changed meanwhile are
   * decided again under a row lock (SELECT … FOR UPDATE in a transaction), so a busy instance can never starve
   * another one into endless retries.
   */
  async admit(items: readonly { nodeId: string; seq: number }[]): Promise<Admission[]> {
    const verdicts = new Array<Admission>(items.length);
    const byNode = new Map<string, number[]>();
    for (const [i, item] of items.entries()) {
      const list = byNode.get(item.nodeId);
      if (list) list.push(i);
      else byNode.set(item.nodeId, [i]);
    }
    const decide = (ids: Iterable<string>, known: Map<string, KnownNode>) => {
      const writes: { node: KnownNode; state: WindowState }[] = [];
      for (const id of ids) {
        const node = known.get(id);
        const indices = byNode.get(id) as number[];
        if (!node || node.revoked) {
          for (const i of indices) verdicts[i] = node ? "revoked" : "unknown";
          continue;
        }
        const state = windowFromRow(node.row.lastSeq, node.row.replayWindow);
        let changed = false;
        for (const i of indices) {
          const seq = (items[i] as { seq: number }).seq;
          if (classifySeq(state, seq) === "new") {
            recordSeq(state, seq);
            verdicts[i] = "accepted";
            changed = true;
          } else verdicts[i] = "replayed";
        }
        if (changed) writes.push({ node, state });
      }
      return writes;
    };
    const commit = (writes: { node: KnownNode; state: WindowState }[], won: Set<string>) => {
      const lost: string[] = [];
      for (const { node, state } of writes) {
        if (won.has(node.id)) node.row = { lastSeq: state.highest, replayWindow: state.bits };
        else lost.push(node.id);
      }
      return lost;
    };

    const writes = decide(byNode.keys(), await this.nodes(byNode.keys()));
    if (writes.length === 0) return verdicts;
    const lost = commit(writes, await this.compareAndSet(this.db, writes));
    if (lost.length === 0) return verdicts;
    this.stats.conflicts += lost.length;
    // the winners' seqs are spent already: a failure here must fail only the nodes it was deciding
    await this.db
      .transaction(async (tx) => {
        const locked = await this.load(lost, tx as unknown as Db);
        const again = decide(lost, locked);
        if (again.length === 0) return;
        const stillLost = commit(again, await this.compareAndSet(tx as unknown as Db, again));
        if (stillLost.length > 0) throw new Error(`replay window changed under a row lock (${stillLost.join(", ")})`);
      })
      .catch((error: unknown) => {
        this.failures.push(error);
        for (const id of lost) for (const i of byNode.get(id) as number[]) verdicts[i] = "failed";
      });
    return verdicts;
  }

  /** One UPDATE for every node of the batch; a node is written only if its row is still what we based it on. */
  private async compareAndSet(db: Db, writes: { node: KnownNode; state: WindowState }[]): Promise<Set<string>> {
    this.stats.compareAndSets++;
    const values = sql.join(
      writes.map(
        ({ node, state }) =>
          sql`(${node.id}::text, ${node.row.lastSeq}::bigint, ${node.row.replayWindow ? Buffer.from(node.row.replayWindow) : null}::bytea, ${state.highest}::bigint, ${Buffer.from(state.bits)}::bytea)`,
      ),
      sql`, `,
    );
    const res = (await db.execute(sql`
      update ${nodes} as n set last_seq = v.new_seq, replay_window = v.new_window
      from (values ${values}) as v(id, old_seq, old_window, new_seq, new_window)
      where n.id = v.id and n.revoked_at is null
        and n.last_seq is not distinct from v.old_seq and n.replay_window is not distinct from v.old_window
      returning n.id`)) as unknown as { rows?: { id: string }[] } | { id: string }[];
    const rows = Array.isArray(res) ? res : (res.rows ?? []);
    return new Set(rows.map((r) => r.id));
  }
}
