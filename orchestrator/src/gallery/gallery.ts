import {
  DEFAULT_FAR,
  DEFAULT_MARGIN,
  type OpenSetCalibration,
  type OpenSetThreshold,
  openSetThreshold,
} from "./open-set.ts";
import { type GraphTuning, type PersonHit, SpaceIndex, type SpaceIndexOptions } from "./space-index.ts";

/**
 * Index options with the graph's search breadth fixed by GLANCE_ANN_EF when it is set and the options do not fix it
 * themselves (otherwise the breadth is measured: SpaceIndex.graphTuning). Throws on a value that is not a positive
 * integer, so a typo does not silently fall back to tuning.
 */
export function indexOptionsWithEnv(
  opts: SpaceIndexOptions = {},
  env: Record<string, string | undefined> = process.env,
): SpaceIndexOptions {
  const raw = env.GLANCE_ANN_EF?.trim();
  if (!raw || opts.ann?.expansionSearch !== undefined) return opts;
  const ef = Number(raw);
  if (!Number.isInteger(ef) || ef < 1 || ef > 4096)
    throw new Error(`GLANCE_ANN_EF must be an integer from 1 to 4096 (the graph's search breadth), not "${raw}"`);
  return { ...opts, ann: { ...opts.ann, expansionSearch: ef } };
}

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

/**
 * Why a visitor is unknown: nobody reached the threshold, or the best identity was not clearly ahead of the
 * runner-up (a lookalike, or someone not consented here who matches at least as well).
 */
export type UnknownReason = "below-threshold" | "ambiguous";

/**
 * A 1:N decision. `threshold` is the open-set threshold it was made at (it rises with the gallery's size when the
 * gallery runs on a calibration), `margin` the best score minus the runner-up identity's. Both are optional in the
 * type so that code deriving a Match (e.g. demoting one to unknown) keeps compiling; the gallery always sets them
 * (margin only when there is a runner-up).
 */
export type Match =
  | { kind: "member"; personId: string; displayName: string; score: number; threshold?: number; margin?: number }
  | { kind: "unknown"; score: number; threshold?: number; margin?: number; reason?: UnknownReason };

/** The open-set rule a gallery decides with, as logs and APIs show it. */
export interface OpenSetState extends OpenSetThreshold {
  /** best − runner-up identity a member match needs */
  margin: number;
  /** "calibrated": threshold from the manifest calibration for this gallery size; "fixed": a given cosine */
  mode: "calibrated" | "fixed";
  /** what the target false-accept rate holds: the whole search, or each comparison (see OpenSetCalibration) */
  scale: "gallery-size" | "per-comparison";
}

/**
 * What the orchestrator's services use of a gallery: a `Gallery` in this thread, or a `GalleryThread` running one on
 * a worker thread (gallery-thread.ts). Changes and searches take effect in the order they are called; the getters
 * are what the gallery held after the last change that completed.
 */
export interface GalleryPort {
  readonly space: string;
  readonly openSet: OpenSetState;
  readonly threshold: number;
  readonly size: { people: number; templates: number };
  readonly graphTuning: GraphTuning | undefined;
  readonly graphRepaired: number;
  graphTuned(): Promise<GraphTuning | undefined>;
  add(member: Member, embeddings: Float32Array[]): void | Promise<void>;
  remove(personId: string): void | Promise<void>;
  matchMany(probes: readonly { probe: Float32Array; storeId: string }[], now?: Date): Match[] | Promise<Match[]>;
  /** why the gallery can no longer answer (its thread died); undefined while it works */
  readonly failure?: Error;
  /** a gallery on its own thread: how long that thread's event loop has been busy and idle since it started */
  utilization?(): { activeMs: number; idleMs: number };
  close?(): Promise<void>;
}

/**
 * In-memory 1:N index of consented members for one embedding space. Cosine (vectors are L2-normalised, so a dot
 * product), exact or through an ANN graph whose candidates are re-scored exactly; a person's score is their best
 * template; open set: below the threshold the visitor is unknown, and so is a visitor whose best identity is not
 * ahead of the runner-up by the margin. Given the embedder's calibration (open-set.ts), the threshold holds the
 * configured 1:N false-accept rate and is recomputed when the number of identities changes; given a plain number,
 * it is that fixed cosine. Rebuilt from the database at start (in bulk: one pass over the templates, one graph
 * insert), updated on enrolment.
 */
export class Gallery implements GalleryPort {
  private readonly members = new Map<string, Member>();
  /** exact brute force over one f32 matrix for small galleries, an HNSW graph (re-scored exactly) above 20k */
  private readonly index: SpaceIndex;

  private readonly calibration: OpenSetCalibration | undefined;
  private readonly fixed: number | undefined;
  private readonly margin: number;
  private state: OpenSetState | undefined;

  constructor(
    readonly space: string,
    /**
     * the embedder manifest's calibration (`embedding.thresholds`, plus GLANCE_FAR/GLANCE_MARGIN through
     * `openSetFromEnv`): the threshold then follows the gallery size. A number: a fixed cosine threshold.
     */
    threshold: number | OpenSetCalibration,
    indexOptions: SpaceIndexOptions = {},
  ) {
    const opts = indexOptionsWithEnv(indexOptions);
    // the graph's breadth is tuned on probes at the accept threshold: the hardest a decision depends on
    this.index = new SpaceIndex({
      ...opts,
      tuning: { similarity: () => this.openSet.threshold, ...opts.tuning },
    });
    if (typeof threshold === "number") {
      this.fixed = threshold;
      this.margin = DEFAULT_MARGIN;
    } else {
      this.calibration = threshold;
      this.margin = threshold.margin ?? DEFAULT_MARGIN;
    }
  }

  /** The open-set rule in force for the gallery's current size (recomputed only when that size changes). */
  get openSet(): OpenSetState {
    const identities = this.index.people;
    if (this.state?.identities === identities) return this.state;
    const far = this.calibration?.far ?? DEFAULT_FAR;
    const perComparison = this.calibration?.scale === "per-comparison";
    const computed: OpenSetThreshold = this.calibration
      ? perComparison
        ? {
            ...openSetThreshold(this.calibration.thresholds, 1, far),
            identities,
            // N chances of a false accept at the 1:1 rate
            expectedFar: -Math.expm1(Math.max(1, identities) * Math.log1p(-far)),
          }
        : openSetThreshold(this.calibration.thresholds, identities, far)
      : {
          threshold: this.fixed as number,
          identities,
          targetFar: far,
          perComparisonFar: far,
          expectedFar: far,
          extrapolated: false,
          clamped: false,
        };
    this.state = {
      ...computed,
      margin: this.margin,
      mode: this.calibration ? "calibrated" : "fixed",
      scale: perComparison || !this.calibration ? "per-comparison" : "gallery-size",
    };
    return this.state;
  }

  /** The cosine a best match must reach now (see `openSet` for how it was chosen). */
  get threshold(): number {
    return this.openSet.threshold;
  }

  /** How the gallery graph's search breadth was chosen and the recall it measured; undefined below the ANN threshold. */
  get graphTuning(): GraphTuning | undefined {
    return this.index.graphTuning;
  }

  /**
   * The graph's tuning once no measurement is running (the graph searches at its widest until the first one ends);
   * start-up awaits it before it logs the breadth.
   */
  graphTuned(): Promise<GraphTuning | undefined> {
    return this.index.tuned();
  }

  /** people the graph's parallel build left unreachable and placed again (usearch#735, SpaceIndex.graphRepaired) */
  get graphRepaired(): number {
    return this.index.graphRepaired;
  }

  get size(): { people: number; templates: number } {
    return { people: this.members.size, templates: this.index.templates };
  }

  /** Adds templates (and consents) of a person; calling it again for the same person merges. */
  add(member: Member, embeddings: Float32Array[]): void {
    // before anything changes: a refused enrolment leaves no member behind
    const odd = embeddings.find((e) => e.length !== (this.index.dim || embeddings[0]?.length));
    if (odd)
      throw new Error(
        `space ${this.space} holds ${this.index.dim || embeddings[0]?.length}-d embeddings, not ${odd.length}-d`,
      );
    const known = this.members.get(member.personId);
    const consents = [...(known?.consents ?? []), ...member.consents].filter(
      (c, i, all) =>
        all.findIndex((d) => d.scope === c.scope && d.expiresAt?.getTime() === c.expiresAt?.getTime()) === i,
    );
    this.members.set(member.personId, { ...member, consents });
    this.index.add(member.personId, embeddings);
  }

  remove(personId: string): void {
    this.members.delete(personId);
    this.index.remove(personId);
  }

  /**
   * Best consented member for a probe seen in `storeId`; members whose consent does not cover it are never named.
   * The runner-up is the best other identity in the whole gallery, consented here or not: if someone who may not
   * be recognised in this store matches as well as the best consented member, the visitor may well be them, and
   * naming the member would be a misidentification (the visitor is then unknown, "ambiguous").
   */
  match(probe: Float32Array, storeId: string, now = new Date()): Match {
    return this.matchMany([{ probe, storeId }], now)[0] as Match;
  }

  /**
   * `match` for many probes at once (an ingest batch), each with its own store: one search of the two best
   * identities for all of them, then a consent-filtered search only for those whose best identity may not be
   * recognised in their store. Same decisions and scores as `match` one by one.
   */
  matchMany(probes: readonly { probe: Float32Array; storeId: string }[], now = new Date()): Match[] {
    const { threshold, margin } = this.openSet;
    const eligibleIn = (storeId: string) => (personId: string) => {
      const member = this.members.get(personId);
      return !!member && covers(member, storeId, now);
    };
    // the two best identities regardless of consent, for every probe in one search on every core; in the common
    // case the best is eligible and that is all
    const tops = this.index.searchMany(
      probes.map((p) => p.probe),
      { people: 2 },
    );
    // the others again, with consent, grouped by store (who may be named differs by store); floor: when consent
    // filters out every candidate, stop widening once nobody left could reach the threshold
    const refusedIn = new Map<string, number[]>();
    for (const [i, hits] of tops.entries()) {
      const top = hits[0];
      const { storeId } = probes[i] as { storeId: string };
      if (!top || eligibleIn(storeId)(top.personId)) continue;
      const list = refusedIn.get(storeId) ?? [];
      list.push(i);
      refusedIn.set(storeId, list);
    }
    const filtered = new Map<number, PersonHit | undefined>();
    for (const [storeId, at] of refusedIn) {
      const found = this.index.searchMany(
        at.map((i) => (probes[i] as { probe: Float32Array }).probe),
        { people: 1, accept: eligibleIn(storeId), floor: threshold },
      );
      at.forEach((i, j) => {
        filtered.set(i, found[j]?.[0]);
      });
    }
    return tops.map((hits, i): Match => {
      const [top, second] = hits;
      if (!top) return { kind: "unknown", score: 0, threshold, reason: "below-threshold" };
      let best = top;
      let runnerUp = second;
      if (filtered.has(i)) {
        const found = filtered.get(i);
        if (!found) return { kind: "unknown", score: 0, threshold, reason: "below-threshold" };
        best = found;
        runnerUp = top;
      }
      const gap = runnerUp ? best.score - runnerUp.score : undefined;
      const withGap = gap === undefined ? {} : { margin: gap };
      if (best.score < threshold)
        return { kind: "unknown", score: best.score, threshold, ...withGap, reason: "below-threshold" };
      if (gap !== undefined && gap < margin)
        return { kind: "unknown", score: best.score, threshold, ...withGap, reason: "ambiguous" };
      const member = this.members.get(best.personId) as Member;
      return {
        kind: "member",
        personId: member.personId,
        displayName: member.displayName,
        score: best.score,
        threshold,
        ...withGap,
      };
    });
  }

  /**
   * A gallery of `people` built in bulk. Reading the database is the
   * caller's job: templates are sealed at rest, privacy/templates.ts `loadGallery` opens the consented ones.
   */
  static build(
    space: string,
    threshold: number | OpenSetCalibration,
    people: readonly { member: Member; embeddings: readonly Float32Array[] }[],
    indexOptions: SpaceIndexOptions = {},
  ): Gallery {
    const { counts, vectors } = packTemplates(space, people);
    return Gallery.fromRows(
      space,
      threshold,
      people.map((p) => p.member),
      counts,
      vectors,
      indexOptions,
    );
  }

  /** `build` from templates already packed (`packTemplates`): `counts[i]` rows of `vectors` are `members[i]`'s. */
  static fromRows(
    space: string,
    threshold: number | OpenSetCalibration,
    members: readonly Member[],
    counts: readonly number[],
    vectors: Float32Array,
    indexOptions: SpaceIndexOptions = {},
  ): Gallery {
    const gallery = new Gallery(space, threshold, indexOptions);
    for (const member of members) gallery.add(member, []);
    // people with no template hold no graph node
    const held = members.filter((_, i) => (counts[i] ?? 0) > 0);
    gallery.index.addMany(
      held.map((m) => m.personId),
      counts.filter((n) => n > 0),
      vectors,
    );
    return gallery;
  }
}

/**
 * People's templates in one row-major buffer, person after person, with how many each holds: the form a bulk
 * build takes, and the one buffer that moves to the gallery thread.
 */
export function packTemplates(
  space: string,
  people: readonly { embeddings: readonly Float32Array[] }[],
): { counts: number[]; vectors: Float32Array } {
  const counts = people.map((p) => p.embeddings.length);
  const dim = people.find((p) => p.embeddings.length > 0)?.embeddings[0]?.length ?? 0;
  const vectors = new Float32Array(counts.reduce((a, b) => a + b, 0) * dim);
  let at = 0;
  for (const { embeddings } of people)
    for (const e of embeddings) {
      if (e.length !== dim) throw new Error(`space ${space} holds embeddings of different lengths`);
      vectors.set(e, at);
      at += dim;
    }
  return { counts, vectors };
}
