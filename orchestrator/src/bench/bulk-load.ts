import { encodeEmbedding } from "@glance/shared";
import type { Db } from "../db/client.ts";
import { consents, people, personKeys, templates } from "../db/schema.ts";
import { type SyntheticCentres, type SyntheticGallery, syntheticGallery } from "../gallery/synthetic.ts";
import { type DataKey, type MasterKey, sealTemplate } from "../privacy/keyring.ts";

/**
 * Fills the database with a synthetic consented gallery straight through drizzle (chunked multi-row inserts), so a
 * bench can start an orchestrator over 100k templates without 100k HTTP enrolments. Person ids are the synthetic
 * gallery's (`person-<n>`); every person holds an all-stores consent and a data key wrapped by `masterKey`, and
 * their templates are sealed with it exactly as enrolment stores them (privacy/keyring.ts).
 */
export async function bulkLoadGallery(
  db: Db,
  masterKey: MasterKey,
  opts: {
    space: string;
    people: number;
    templatesPerPerson: number;
    dim: number;
    seed?: number;
    spread?: number;
    /** how identity centres are drawn (synthetic.ts); default "isotropic" */
    centres?: SyntheticCentres;
  },
): Promise<SyntheticGallery> {
  const g = syntheticGallery({
    people: opts.people,
    templatesPerPerson: opts.templatesPerPerson,
    dim: opts.dim,
    seed: opts.seed ?? 1,
    ...(opts.spread !== undefined ? { spread: opts.spread } : {}),
    ...(opts.centres !== undefined ? { centres: opts.centres } : {}),
  });
  const now = new Date();
  const chunk = 1000;
  const dataKeys = new Map<string, DataKey>();
  for (let at = 0; at < g.personIds.length; at += chunk) {
    const ids = g.personIds.slice(at, at + chunk);
    await db.insert(people).values(ids.map((id) => ({ id, displayName: `Member ${id}` })));
    await db.insert(personKeys).values(
      ids.map((personId) => {
        const { dataKey, wrapped } = masterKey.newDataKey(personId);
        dataKeys.set(personId, dataKey);
        return {
          personId,
          version: wrapped.version,
          wrappedKey: wrapped.ciphertext,
          iv: wrapped.iv,
          masterKeyId: wrapped.masterKeyId,
        };
      }),
    );
    await db.insert(consents).values(
      ids.map((id) => ({
        id: `consent-${id}`,
        personId: id,
        purpose: "loyalty-recognition",
        scope: "all-stores",
        source: "bench",
        grantedAt: now,
        expiresAt: null,
      })),
    );
  }
  const rows = g.personIds.length * opts.templatesPerPerson;
  for (let at = 0; at < rows; at += chunk) {
    const values = [];
    for (let row = at; row < Math.min(rows, at + chunk); row++) {
      const id = `template-${row}`;
      const personId = g.personIds[Math.floor(row / opts.templatesPerPerson)] as string;
      const encoded = encodeEmbedding(g.vectors.subarray(row * opts.dim, (row + 1) * opts.dim));
      const sealed = sealTemplate(dataKeys.get(personId) as DataKey, { id, space: opts.space }, encoded);
      values.push({
        id,
        personId,
        space: opts.space,
        ciphertext: sealed.ciphertext,
        iv: sealed.iv,
        keyVersion: sealed.keyVersion,
        quality: 0.9,
        sourceSha256: "0".repeat(64),
      });
    }
    await db.insert(templates).values(values);
  }
  return g;
}
