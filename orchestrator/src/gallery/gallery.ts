import { SpaceIndex, type SpaceIndexOptions } from "./space-index.ts";

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
 * In-memory 1:N index of consented members for one embedding space. Cosine (vectors are L2-normalised, so a dot
 * product), exact or through an ANN graph whose candidates are re-scored exactly; a person's score is their best
 * template; open set: below the threshold the visitor is unknown. Rebuilt from the database at start (in bulk, so a
 * large gallery's graph is built in parallel), updated on enrolment.
 */
export class Gallery {
  private readonly members = new Map<string, Member>();
  /** exact brute force over one f32 matrix for small galleries, an HNSW graph (re-scored exactly) above 20k */
  private readonly index: SpaceIndex;

  constructor(
    readonly space: string,
    /** calibrated cosine threshold (1:1 FAR 1e-3 from the embedder manifest) */
    readonly threshold: number,
    indexOptions: SpaceIndexOptions = {},
  ) {
    this.index = new SpaceIndex(indexOptions);
  }

  get size(): { people: number; templates: number } {
    return { people: this.members.size, templates: this.index.templates };
  }

  /** Adds templates (and consents) of a person; calling it again for the same person merges. */
  add(member: Member, embeddings: Float32Array[]): void {
    const known = this.members.get(member.personId);
    const consents = [...(known?.consents ?? []), ...member.consents].filter(
      (c, i, all) =>
        all.findIndex((d) => d.scope === c.scope && d.expiresAt?.getTime() === c.expiresAt?.getTime()) === i,
    );
    this.members.set(member.personId, { ...member, consents });
    const odd = embeddings.find((e) => e.length !== (this.index.dim || embeddings[0]?.length));
    if (odd)
      throw new Error(
        `space ${this.space} holds ${this.index.dim || embeddings[0]?.length}-d embeddings, not ${odd.length}-d`,
      );
    this.index.add(member.personId, embeddings);
  }

  remove(personId: string): void {
    this.members.delete(personId);
    this.index.remove(personId);
  }

  /** Best consented member for a probe seen in `storeId`; members whose consent does not cover it are skipped. */
  match(probe: Float32Array, storeId: string, now = new Date()): Match {
    const eligible = (personId: string) => {
      const member = this.members.get(personId);
      return !!member && covers(member, storeId, now);
    };
    // floor: when consent filters out every candidate, stop widening once nobody left could reach the threshold
    const [best] = this.index.search(probe, { people: 1, accept: eligible, floor: this.threshold });
    if (!best) return { kind: "unknown", score: 0 };
    const member = this.members.get(best.personId) as Member;
    if (best.score < this.threshold) return { kind: "unknown", score: best.score };
    return { kind: "member", personId: member.personId, displayName: member.displayName, score: best.score };
  }

  /**
   * A gallery of `people` built in bulk (a large gallery's graph is built in parallel). Reading the database is the
   * caller's job: templates are sealed at rest, privacy/templates.ts `loadGallery` opens the consented ones.
   */
  static build(
    space: string,
    threshold: number,
    people: readonly { member: Member; embeddings: readonly Float32Array[] }[],
    indexOptions: SpaceIndexOptions = {},
  ): Gallery {
    const gallery = new Gallery(space, threshold, indexOptions);
    for (const p of people) gallery.add(p.member, []);
    const withTemplates = people.filter((p) => p.embeddings.length > 0);
    const all = withTemplates.flatMap((p) => p.embeddings);
    const dim = all[0]?.length ?? 0;
    if (all.some((e) => e.length !== dim)) throw new Error(`space ${space} holds embeddings of different lengths`);
    const vectors = new Float32Array(all.length * dim);
    all.forEach((e, i) => {
      vectors.set(e, i * dim);
    });
    gallery.index.addMany(
      withTemplates.map((p) => p.member.personId),
      withTemplates.map((p) => p.embeddings.length),
      vectors,
    );
    return gallery;
  }
}
