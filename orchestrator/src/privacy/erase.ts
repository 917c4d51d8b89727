import {
  type Command,
  decodeMessage,
  encodeMessage,
  filterFor,
  GlanceError,
  isGlanceError,
  parseTopic,
  topicFor,
} from "@glance/shared";
import { and, eq, inArray, isNull, or, sql } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { appendAudit } from "../audit/log.ts";
import { matchesFilter } from "../broker/source.ts";
import type { Db } from "../db/client.ts";
import {
  consents,
  edgeErasures,
  erasedKeys,
  nodes,
  people,
  personKeys,
  plays,
  templates,
  visits,
} from "../db/schema.ts";
import type { GalleryPort } from "../gallery/gallery.ts";
import { newId } from "../http/ids.ts";
import type { PersonKeyCache } from "../recognition/key-cache.ts";
import { shredVisitors, type Visitors } from "../visitors/visitors.ts";
import type { MasterKey } from "./keyring.ts";
import { openPersonTemplates } from "./templates.ts";

export interface ErasureDeps {
  db: Db;
  gallery: GalleryPort;
  /**
   * which people hold a data key, as the recognizer caches it: the erased person is dropped from it at once, so a
   * batch searched before the erasure and recognised after it cannot name them (its key re-check asks the database)
   */
  personKeys: Pick<PersonKeyCache, "invalidate">;
  /**
   * the pseudonymous visitor templates: those that match the person's own templates (left before they enrolled, in
   * a store in "visitor" mode) are shredded with them
   */
  visitors: Pick<Visitors, "space" | "lookalikes" | "forget" | "sync">;
  /** tags an erased person's key (erased_keys) so an old import cannot re-enrol them */
  masterKey: MasterKey;
  /** publishes a contract `command` to one node (QoS 1) */
  sendCommand(nodeId: string, command: Command): Promise<void>;
  logger: Logger;
}

export interface Erasure {
  personId: string;
  /** "erase": the person is gone; "withdraw": the person and their (withdrawn) consent records stay as evidence */
  mode: "erase" | "withdraw";
  templatesDestroyed: number;
  keyDestroyed: boolean;
  /** pseudonymous visitor templates of the same face, shredded with the person's own */
  visitorTemplatesDestroyed: number;
  /** nodes told to drop the person from their edge gallery; acks arrive later (GET /api/people/:id/erasure) */
  edgeCommands: { commandId: string; nodeId: string }[];
  auditSeq: number;
}

/**
 * Crypto-shred: the person's wrapped data key and their template rows are deleted in one transaction, so from then
 * on no copy of those ciphertexts (replicas, dumps, backups) can be opened; the in-memory index entry is dropped;
 * every node in the consent scope is sent an `erase-member` command whose ack is recorded when it arrives; an audit
 * entry records it all. Either way the person's visits and plays are de-identified: they keep their counts, not the
 * person's id or anything linking them to each other. `withdraw` keeps the person row and marks the consents
 * withdrawn; `erase` deletes the person (consents cascade) and keeps only a keyed hash of their person key, so the
 * same key enrols again only with a consent given after the erasure.
 */
export async function erasePerson(
  deps: ErasureDeps,
  personId: string,
  opts: { mode: "erase" | "withdraw"; actor: string; reason?: string | undefined; now?: Date },
): Promise<Erasure> {
  const now = opts.now ?? new Date();
  // visitors first seen through another instance in the last seconds are looked at too
  await deps.visitors.sync();
  const { scopes, templatesDestroyed, keyDestroyed, lookalikes } = await deps.db.transaction(async (tx) => {
    const [person] = await tx
      .select({ id: people.id, externalKey: people.externalKey })
      .from(people)
      .where(eq(people.id, personId));
    if (!person) throw new GlanceError("NOT_FOUND", `Person ${personId} does not exist.`);
    const scopes = (
      await tx.select({ scope: consents.scope }).from(consents).where(eq(consents.personId, personId))
    ).map((c) => c.scope);
    // the person's own templates, opened one last time: which pseudonymous visitor templates are the same face
    const lookalikes = deps.visitors.lookalikes(
      await openPersonTemplates(tx, deps.masterKey, personId, deps.visitors.space),
    );
    await shredVisitors(tx, lookalikes);
    const keys = await tx
      .delete(personKeys)
      .where(eq(personKeys.personId, personId))
      .returning({ id: personKeys.personId });
    const gone = await tx.delete(templates).where(eq(templates.personId, personId)).returning({ id: templates.id });
    // visits and plays keep their counts, not whose they were: without the person id and the subject they were
    // deduplicated on, no row links one of the person's visits to another
    const subject = `person:${personId}`;
    await tx
      .update(visits)
      .set({ personId: null, subject: sql`'erased:' || ${visits.id}` })
      .where(or(eq(visits.personId, personId), eq(visits.subject, subject)));
    await tx
      .update(plays)
      .set({ personId: null, subject: sql`'erased:' || ${plays.id}` })
      .where(or(eq(plays.personId, personId), eq(plays.subject, subject)));
    if (opts.mode === "erase") {
      await tx.delete(people).where(eq(people.id, personId));
      if (person.externalKey) {
        const erased = { keyTag: deps.masterKey.keyTag(person.externalKey), erasedAt: now };
        await tx
          .insert(erasedKeys)
          .values(erased)
          .onConflictDoUpdate({ target: erasedKeys.keyTag, set: { erasedAt: now } });
      }
    } else {
      await tx
        .update(consents)
        .set({ withdrawnAt: now })
        .where(and(eq(consents.personId, personId), isNull(consents.withdrawnAt)));
    }
    return { scopes, templatesDestroyed: gone.length, keyDestroyed: keys.length > 0, lookalikes };
  });
  deps.personKeys.invalidate(personId);
  deps.visitors.forget(lookalikes);
  await deps.gallery.remove(personId);

  // edge galleries: every live node of every store the person was ever in scope for
  const allStores = scopes.includes("all-stores");
  const storeIds = [...new Set(scopes.filter((s) => s !== "all-stores"))];
  const targets =
    allStores || storeIds.length > 0
      ? await deps.db
          .select({ id: nodes.id })
          .from(nodes)
          .where(allStores ? isNull(nodes.revokedAt) : and(isNull(nodes.revokedAt), inArray(nodes.storeId, storeIds)))
      : [];
  const edgeCommands = targets.map((n) => ({ commandId: newId(), nodeId: n.id }));
  if (edgeCommands.length > 0) {
    await deps.db
      .insert(edgeErasures)
      .values(edgeCommands.map((c) => ({ id: c.commandId, personId, nodeId: c.nodeId, sentAt: now })));
  }
  for (const c of edgeCommands) {
    try {
      await deps.sendCommand(c.nodeId, { id: c.commandId, ts: now.getTime(), kind: "erase-member", personId });
    } catch (error) {
      // the pending row stays: GET /api/people/:id/erasure shows the node as not acknowledged
      deps.logger.error({ err: error, nodeId: c.nodeId, personId }, "erase-member command not sent");
    }
  }

  const { seq } = await appendAudit(
    deps.db,
    {
      actor: opts.actor,
      action: opts.mode === "erase" ? "person.erase" : "consent.withdraw",
      subject: `person:${personId}`,
      details: {
        templatesDestroyed,
        keyDestroyed,
        visitorTemplatesDestroyed: lookalikes.length,
        edgeNodes: edgeCommands.map((c) => c.nodeId),
        ...(opts.reason ? { reason: opts.reason } : {}),
      },
    },
    now,
  );
  deps.logger.info(
    { personId, mode: opts.mode, templatesDestroyed, edgeNodes: edgeCommands.length },
    "person crypto-shredded",
  );
  return {
    personId,
    mode: opts.mode,
    templatesDestroyed,
    keyDestroyed,
    visitorTemplatesDestroyed: lookalikes.length,
    edgeCommands,
    auditSeq: seq,
  };
}

/** Records nodes' acks of erase-member commands (contract `ack`), whenever they arrive. */
export async function startErasureAcks(opts: { client: MqttClient; db: Db; logger: Logger }): Promise<() => void> {
  const filter = filterFor("ack");
  const onMessage = (topic: string, payload: Buffer) => {
    if (!matchesFilter(filter, topic)) return;
    let ack: ReturnType<typeof decodeMessage<"ack">>;
    try {
      ack = decodeMessage("ack", topic, payload);
    } catch (error) {
      opts.logger.warn(
        { code: isGlanceError(error) ? error.code : "INTERNAL", nodeId: parseTopic(topic)?.nodeId },
        "ack ignored",
      );
      return;
    }
    // the topic names the node (the broker ACL guarantees it), so a node can only ack its own command
    const nodeId = parseTopic(topic)?.nodeId ?? ack.nodeId;
    void opts.db
      .update(edgeErasures)
      .set({ ackedAt: new Date(), ok: ack.ok, error: ack.error ?? null })
      .where(and(eq(edgeErasures.id, ack.commandId), eq(edgeErasures.nodeId, nodeId), isNull(edgeErasures.ackedAt)))
      .returning({ personId: edgeErasures.personId })
      .then(
        async (rows) => {
          const row = rows[0];
          if (!row) return;
          await appendAudit(opts.db, {
            actor: `node:${nodeId}`,
            action: "edge.erase-ack",
            subject: `person:${row.personId}`,
            details: { commandId: ack.commandId, ok: ack.ok, ...(ack.error ? { error: ack.error } : {}) },
          });
          opts.logger.info({ nodeId, commandId: ack.commandId, ok: ack.ok }, "edge erasure acknowledged");
        },
        (error: unknown) => opts.logger.error({ err: error, nodeId }, "edge erasure ack not recorded"),
      );
  };
  opts.client.on("message", onMessage);
  await opts.client.subscribeAsync(filter, { qos: 1 });
  return () => opts.client.off("message", onMessage);
}

/** Publishes a command to a node through the orchestrator's own MQTT client. */
export function commandSender(client: MqttClient) {
  return async (nodeId: string, command: Command) => {
    await client.publishAsync(topicFor("command", nodeId), encodeMessage("command", command), { qos: 1 });
  };
}
