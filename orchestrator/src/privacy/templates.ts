import { decodeEmbedding, encodeEmbedding } from "@glance/shared";
import { and, eq, gt, inArray, isNotNull, isNull, or } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { consents, people, personKeys, templates } from "../db/schema.ts";
import { type Consent, Gallery, type GalleryPort, type Member } from "../gallery/gallery.ts";
import { GalleryThread, type GalleryThreadOptions } from "../gallery/gallery-thread.ts";
import type { OpenSetCalibration } from "../gallery/open-set.ts";
import { type DataKey, type MasterKey, openTemplate, sealTemplate } from "./keyring.ts";

/** Any transaction or the database itself: drizzle gives both the same query surface. */
type Tx = Pick<Db, "select" | "insert" | "update" | "delete">;

export interface NewTemplate {
  id: string;
  space: string;
  embedding: Float32Array;
  quality: number;
  sourceSha256: string;
}

/**
 * Creates the person's data key (wrapped by the master key) and stores their templates sealed with it. Returns the
 * embeddings as a restart will see them (quantised by the codec), for the in-memory index.
 */
export async function storeSealedTemplates(
  tx: Tx,
  masterKey: MasterKey,
  personId: string,
  list: NewTemplate[],
): Promise<Float32Array[]> {
  const { dataKey, wrapped } = masterKey.newDataKey(personId);
  await tx.insert(personKeys).values({
    personId,
    version: wrapped.version,
    wrappedKey: wrapped.ciphertext,
    iv: wrapped.iv,
    masterKeyId: wrapped.masterKeyId,
  });
  const stored: Float32Array[] = [];
  if (list.length === 0) return stored;
  await tx.insert(templates).values(
    list.map((t) => {
      const encoded = encodeEmbedding(t.embedding);
      stored.push(decodeEmbedding(encoded));
      const sealed = sealTemplate(dataKey, t, encoded);
      return {
        id: t.id,
        personId,
        space: t.space,
        ciphertext: sealed.ciphertext,
        iv: sealed.iv,
        keyVersion: sealed.keyVersion,
        quality: t.quality,
        sourceSha256: t.sourceSha256,
      };
    }),
  );
  return stored;
}

/** A stored template's embedding, opened with its person's data key. */
function openEmbedding(
  key: DataKey,
  t: { id: string; space: string; ciphertext: Uint8Array | null; iv: Uint8Array | null },
): Float32Array | undefined {
  if (!t.ciphertext || !t.iv) return undefined;
  return decodeEmbedding(openTemplate(key, { ...t, ciphertext: t.ciphertext, iv: t.iv }));
}

/**
 * One person's templates in `space`, opened (their data key unwrapped once); none when the key is gone (shredded).
 * Inside an erasure's transaction, the last time they are read.
 */
export async function openPersonTemplates(
  db: Tx,
  masterKey: MasterKey,
  personId: string,
  space: string,
): Promise<Float32Array[]> {
  const key = (await dataKeysOf(db, masterKey, [personId])).get(personId);
  if (!key) return [];
  const rows = await db
    .select()
    .from(templates)
    .where(and(eq(templates.personId, personId), eq(templates.space, space)));
  return rows.flatMap((t) => openEmbedding(key, t) ?? []);
}

async function dataKeysOf(db: Tx, masterKey: MasterKey, personIds: string[]): Promise<Map<string, DataKey>> {
  const keys = new Map<string, DataKey>();
  if (personIds.length === 0) return keys;
  for (const row of await db.select().from(personKeys).where(inArray(personKeys.personId, personIds))) {
    keys.set(row.personId, masterKey.unwrap(row));
  }
  return keys;
}

/**
 * Migration path for databases from before encryption at rest: every template still holding a plaintext embedding
 * is sealed under a (new, if needed) data key of its person and the plaintext column is emptied, in one transaction.
 * Postgres keeps the old row versions until VACUUM; run `VACUUM FULL templates` afterwards to drop them from disk.
 */
export async function sealLegacyTemplates(db: Db, masterKey: MasterKey): Promise<number> {
  return db.transaction(async (tx) => {
    const legacy = await tx.select().from(templates).where(isNotNull(templates.legacyEmbedding));
    if (legacy.length === 0) return 0;
    const personIds = [...new Set(legacy.map((t) => t.personId))];
    const keys = await dataKeysOf(tx, masterKey, personIds);
    for (const personId of personIds) {
      if (keys.has(personId)) continue;
      const { dataKey, wrapped } = masterKey.newDataKey(personId);
      await tx.insert(personKeys).values({
        personId,
        version: wrapped.version,
        wrappedKey: wrapped.ciphertext,
        iv: wrapped.iv,
        masterKeyId: wrapped.masterKeyId,
      });
      keys.set(personId, dataKey);
    }
    for (const t of legacy) {
      const sealed = sealTemplate(keys.get(t.personId) as DataKey, t, t.legacyEmbedding as Uint8Array);
      await tx
        .update(templates)
        .set({ ciphertext: sealed.ciphertext, iv: sealed.iv, keyVersion: sealed.keyVersion, legacyEmbedding: null })
        .where(eq(templates.id, t.id));
    }
    return legacy.length;
  });
}

/**
 * The in-memory gallery of one embedding space, rebuilt by unwrapping each consented person's data key and opening
 * their templates (`loadPeople`). With `thread`, the gallery runs on a worker thread of its own (GalleryThread), and a
 * worker that dies is replaced by one built from the database as it is then.
 */
export async function loadGallery(
  db: Db,
  masterKey: MasterKey,
  space: string,
  threshold: number | OpenSetCalibration,
  now = new Date(),
  thread?: GalleryThreadOptions,
): Promise<GalleryPort> {
  const people = await loadPeople(db, masterKey, space, now);
  if (!thread) return Gallery.build(space, threshold, people);
  return GalleryThread.start(space, threshold, people, {
    reload: () => loadPeople(db, masterKey, space, new Date()),
    ...thread,
  });
}

/**
 * Every consented person with templates in this space, their templates opened. People with no live consent
 * (withdrawn or expired) are not read at all; templates whose key is gone (shredded) cannot be opened and are skipped.
 */
export async function loadPeople(
  db: Db,
  masterKey: MasterKey,
  space: string,
  now: Date,
): Promise<{ member: Member; embeddings: Float32Array[] }[]> {
  const live = await db
    .select({
      personId: people.id,
      displayName: people.displayName,
      scope: consents.scope,
      expiresAt: consents.expiresAt,
    })
    .from(people)
    .innerJoin(consents, eq(consents.personId, people.id))
    .where(and(isNull(consents.withdrawnAt), or(isNull(consents.expiresAt), gt(consents.expiresAt, now))));
  const members = new Map<string, { displayName: string; consents: Consent[] }>();
  for (const r of live) {
    const m = members.get(r.personId) ?? { displayName: r.displayName, consents: [] };
    m.consents.push({ scope: r.scope, expiresAt: r.expiresAt });
    members.set(r.personId, m);
  }
  if (members.size === 0) return [];
  // one join rather than an IN list: a chain-sized gallery would exceed the driver's bind-parameter limit
  const rows = await db
    .select({ template: templates, key: personKeys })
    .from(templates)
    .innerJoin(personKeys, eq(personKeys.personId, templates.personId))
    .where(and(eq(templates.space, space), isNotNull(templates.ciphertext)));
  const keys = new Map<string, DataKey>();
  const embeddings = new Map<string, Float32Array[]>();
  for (const { template: t, key: k } of rows) {
    if (!members.has(t.personId) || !t.ciphertext || !t.iv) continue;
    let key = keys.get(t.personId);
    if (!key) {
      key = masterKey.unwrap(k);
      keys.set(t.personId, key);
    }
    const list = embeddings.get(t.personId) ?? [];
    list.push(openEmbedding(key, t) as Float32Array);
    embeddings.set(t.personId, list);
  }
  // only people with templates in this space: a member enrolled under another embedder is not part of it
  return [...embeddings].map(([personId, list]) => ({
    member: { personId, ...(members.get(personId) as { displayName: string; consents: Consent[] }) },
    embeddings: list,
  }));
}
