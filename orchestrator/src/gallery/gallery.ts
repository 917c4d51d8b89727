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
  private readonly vectors = new Map<string, Float32Array[]>();

  constructor(
    readonly space: string,
    /** calibrated cosine threshold (1:1 FAR 1e-3 from the embedder manifest) */
    readonly threshold: number,
  ) {}

  get size(): { people: number; templates: number } {
    let count = 0;
    for (const list of this.vectors.values()) count += list.length;
    return { people: this.members.size, templates: count };
  }

  /** Adds templates (and consents) of a person; calling it again for the same person merges. */
  add(member: Member, embeddings: Float32Array[]): void {
    const known = this.members.get(member.personId);
    const consents = [...(known?.consents ?? []), ...member.consents].filter(
      (c, i, all) =>
        all.findIndex((d) => d.scope === c.scope && d.expiresAt?.getTime() === c.expiresAt?.getTime()) === i,
    );
    this.members.set(member.personId, { ...member, consents });
    const list = this.vectors.get(member.personId) ?? [];
    list.push(...embeddings);
    this.vectors.set(member.personId, list);
  }

  remove(personId: string): void {
    this.members.delete(personId);
    this.vectors.delete(personId);
  }

  /** Best consented member for a probe seen in `storeId`; members whose consent does not cover it are skipped. */
  match(probe: Float32Array, storeId: string, now = new Date()): Match {
    let best: { member: Member; score: number } | undefined;
    for (const [personId, list] of this.vectors) {
      const member = this.members.get(personId);
      if (!member || !covers(member, storeId, now)) continue;
      for (const v of list) {
        const score = dot(probe, v);
        if (!best || score > best.score) best = { member, score };
      }
    }
    if (!best || best.score < this.threshold) return { kind: "unknown", score: best?.score ?? 0 };
    return { kind: "member", personId: best.member.personId, displayName: best.member.displayName, score: best.score };
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

function dot(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return -1;
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}
