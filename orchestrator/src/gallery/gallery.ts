import { decodeEmbedding } from "@glance/shared";
import { and, eq, gt, isNull, or } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { consents, people, templates } from "../db/schema.ts";

export interface Consent {
  /** "all-stores" or the one store the person agreed to be recognised in */
  scope: string;
  /** recognition stops at this instant; null = until withdrawn */
  expiresAt: Date | null;
}

export interface Member {
  personId: string;
  displayName: string;
  /** live consents; the person is recognised in a store while any of them covers it */
  consents: Consent[];
}

function covers(member: Member, storeId: string, now: Date): boolean {
  return member.consents.some(
    (c) => (c.scope === "all-stores" || c.scope === storeId) && (c.expiresAt === null || c.expiresAt > now),
  );
}

export type Match =
  | { kind: "member"; personId: string; displayName: string; score: number }
  | { kind: "unknown"; score: number };

/**
 * In-memory 1:N index of consented members for one embedding space. Exact cosine (vectors are L2-normalised, so a
 * dot product); a person's score is their best template; open set: below the threshold the visitor is unknown.
 * Rebuilt from the database at start, updated on enrolment.
 */
export class Gallery {
  private readonly members = new Map<string, Member>();
  /** all templates as one row-major matrix (rows × dim), so a 1:N scan is a tight loop over contiguous memory */
  private matrix = new Float32Array(0);
  private owners: string[] = [];
  private dim = 0;

  constructor(
    readonly space: string,
    /** calibrated cosine threshold (1:1 FAR 1e-3 from the embedder manifest) */
    readonly threshold: number,
  ) {}

  get size(): { people: number; templates: number } {
    return { people: this.members.size, templates: this.owners.length };
  }

  /** Adds templates (and consents) of a person; calling it again for the same person merges. */
  add(member: Member, embeddings: Float32Array[]): void {
    const known = this.members.get(member.personId);
    const consents = [...(known?.consents ?? []), ...member.consents].filter(
      (c, i, all) =>
        all.findIndex((d) => d.scope === c.scope && d.expiresAt?.getTime() === c.expiresAt?.getTime()) === i,
    );
    this.members.set(member.personId, { ...member, consents });
    for (const e of embeddings) {
      if (this.dim === 0) this.dim = e.length;
      if (e.length !== this.dim)
        throw new Error(`space ${this.space} holds ${this.dim}-d embeddings, not ${e.length}-d`);
      const row = this.owners.length;
      if ((row + 1) * this.dim > this.matrix.length) {
        const grown = new Float32Array(Math.max(64, row * 2) * this.dim);
        grown.set(this.matrix);
        this.matrix = grown;
      }
      this.matrix.set(e, row * this.dim);
      this.owners.push(member.personId);
    }
  }

  remove(personId: string): void {
    this.members.delete(personId);
    let kept = 0;
    for (let row = 0; row < this.owners.length; row++) {
      if (this.owners[row] === personId) continue;
      if (kept !== row) this.matrix.copyWithin(kept * this.dim, row * this.dim, (row + 1) * this.dim);
      this.owners[kept++] = this.owners[row] as string;
    }
    this.owners.length = kept;
  }

  /** Best consented member for a probe seen in `storeId`; members whose consent does not cover it are skipped. */
  match(probe: Float32Array, storeId: string, now = new Date()): Match {
    const { matrix, owners, dim } = this;
    if (probe.length !== dim) return { kind: "unknown", score: 0 };
    const eligible = new Map<string, boolean>();
    let bestRow = -1;
    let bestScore = -Infinity;
    for (let row = 0; row < owners.length; row++) {
      const owner = owners[row] as string;
      let ok = eligible.get(owner);
      if (ok === undefined) {
        const member = this.members.get(owner);
        ok = !!member && covers(member, storeId, now);
        eligible.set(owner, ok);
      }
      if (!ok) continue;
      let score = 0;
      const base = row * dim;
      for (let i = 0; i < dim; i++) score += (probe[i] as number) * (matrix[base + i] as number);
      if (score > bestScore) {
        bestScore = score;
        bestRow = row;
      }
    }
    if (bestRow < 0) return { kind: "unknown", score: 0 };
    const member = this.members.get(owners[bestRow] as string) as Member;
    if (bestScore < this.threshold) return { kind: "unknown", score: bestScore };
    return { kind: "member", personId: member.personId, displayName: member.displayName, score: bestScore };
  }

  /** Loads every template of `space` whose person holds a live (granted, not withdrawn, not expired) consent. */
  static async load(db: Db, space: string, threshold: number, now = new Date()): Promise<Gallery> {
    const gallery = new Gallery(space, threshold);
    const rows = await db
      .select({
        templateId: templates.id,
        personId: people.id,
        displayName: people.displayName,
        expiresAt: consents.expiresAt,
        scope: consents.scope,
        embedding: templates.embedding,
      })
      .from(templates)
      .innerJoin(people, eq(people.id, templates.personId))
      .innerJoin(consents, eq(consents.personId, people.id))
      .where(
        and(
          eq(templates.space, space),
          isNull(consents.withdrawnAt),
          or(isNull(consents.expiresAt), gt(consents.expiresAt, now)),
        ),
      );
    // a person with several consents appears once per consent: one copy of each template, every consent
    const seen = new Set<string>();
    for (const row of rows) {
      const consent: Consent = { scope: row.scope, expiresAt: row.expiresAt };
      const embeddings = seen.has(row.templateId) ? [] : [decodeEmbedding(row.embedding)];
      seen.add(row.templateId);
      gallery.add({ personId: row.personId, displayName: row.displayName, consents: [consent] }, embeddings);
    }
    return gallery;
  }
}
