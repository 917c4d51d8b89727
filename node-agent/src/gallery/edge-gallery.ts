import {
  type DesiredState,
  decodeEdgeGallery,
  decodeEmbedding,
  type EdgeGallery as EdgeGalleryMessage,
  edgeGalleryHeader,
  GlanceError,
  isGlanceError,
  type KeyPair,
  open,
} from "@glance/shared";

export interface EdgeMatch {
  personId: string;
  score: number;
}

export interface EdgeGalleryInfo {
  version: number | undefined;
  members: number;
  /** why the last gallery received was refused (code: message), if it was */
  refused?: string;
}

/**
 * The members-only edge gallery: consented members of this node's store, pushed by the orchestrator sealed to this
 * node's key and signed with the key its desired state names. Held in memory only (never written to disk); a
 * replaced or erased member's vectors are zeroed. A gallery that is not for this node, not signed by the
 * orchestrator, not openable with this node's key, in another embedding space or older than the one held is
 * refused and the previous one kept. A member whose consent for this store ends (`until`) is dropped at that moment
 * by this node's clock, whether or not the orchestrator's next gallery has arrived (offline, say).
 */
export class EdgeGallery {
  readonly #nodeId: string;
  readonly #sealingKey: KeyPair;
  #version: number | undefined;
  /** the newest version ever held: survives a withdrawal, so an old gallery cannot come back */
  #floor = -1;
  #ts = 0;
  #threshold = 1;
  #ids: string[] = [];
  /** per entry, when its member's consent ends (epoch ms, 0: until withdrawn) */
  #until: number[] = [];
  /** the soonest of #until (Infinity: none) */
  #nextEnd = Number.POSITIVE_INFINITY;
  #vectors = new Float32Array(0);
  #dim = 0;
  #refused: string | undefined;
  /** erase-member commands received (person id → command time): a gallery built before an erasure never brings them back */
  readonly #erased = new Map<string, number>();

  readonly #now: () => number;

  /** `now`: this node's clock, epoch ms (tests move it) */
  constructor(nodeId: string, sealingKey: KeyPair, now: () => number = Date.now) {
    this.#nodeId = nodeId;
    this.#sealingKey = sealingKey;
    this.#now = now;
  }

  get loaded(): boolean {
    return this.#version !== undefined;
  }

  get threshold(): number {
    return this.#threshold;
  }

  info(): EdgeGalleryInfo {
    this.#expire();
    return {
      version: this.#version,
      members: new Set(this.#ids).size,
      ...(this.#refused ? { refused: this.#refused } : {}),
    };
  }

  /**
   * Takes a gallery message (already validated against the contract) if it checks out; throws GlanceError
   * (TOPIC_MISMATCH, KEY_UNKNOWN, REPLAYED_SEQUENCE, SPACE_UNKNOWN, SIGNATURE_INVALID, DECRYPT_FAILED,
   * PAYLOAD_INVALID) and keeps the gallery it holds otherwise.
   */
  accept(message: EdgeGalleryMessage, ctx: { desired: DesiredState | undefined; space: string }): EdgeGalleryInfo {
    try {
      this.#accept(message, ctx);
      this.#refused = undefined;
    } catch (error) {
      const code = isGlanceError(error) ? error.code : "INTERNAL";
      this.#refused = `${code}: ${(error as Error).message}`.slice(0, 256);
      throw error;
    }
    return this.info();
  }

  #accept(message: EdgeGalleryMessage, ctx: { desired: DesiredState | undefined; space: string }): void {
    const header = edgeGalleryHeader(message);
    if (header.nodeId !== this.#nodeId) {
      throw new GlanceError("TOPIC_MISMATCH", `Edge gallery is for node ${header.nodeId}, not this node.`);
    }
    const signer = ctx.desired?.gallerySigningKey;
    if (!signer) {
      throw new GlanceError(
        "KEY_UNKNOWN",
        "No gallery signing key in the desired state yet: the gallery is applied once the desired state names one.",
      );
    }
    if (ctx.desired && header.storeId !== ctx.desired.storeId) {
      throw new GlanceError(
        "TOPIC_MISMATCH",
        `Edge gallery is for store ${header.storeId}, this node is in ${ctx.desired.storeId}.`,
      );
    }
    if (header.recipient !== this.#sealingKey.publicKey) {
      throw new GlanceError(
        "KEY_UNKNOWN",
        "Edge gallery is sealed to another node key: the orchestrator has a stale key for this node.",
      );
    }
    if (header.space !== ctx.space) {
      throw new GlanceError(
        "SPACE_UNKNOWN",
        `Edge gallery is in space ${header.space}; this node embeds in ${ctx.space}.`,
      );
    }
    if (header.version < this.#floor) {
      throw new GlanceError(
        "REPLAYED_SEQUENCE",
        `Edge gallery version ${header.version} is older than one already held (${this.#floor}).`,
      );
    }
    // open() checks the orchestrator's signature before it decrypts anything
    const plaintext = open(message, header, this.#sealingKey, signer);
    try {
      const entries = decodeEdgeGallery(plaintext);
      if (entries.length !== header.members)
        throw new GlanceError("PAYLOAD_INVALID", "Edge gallery member count does not match its header.");
      const kept = entries.filter((e) => {
        const erasedAt = this.#erased.get(e.personId);
        return erasedAt === undefined || erasedAt < header.ts;
      });
      const vectors = kept.map((e) => decodeEmbedding(e.embedding));
      const dim = vectors[0]?.length ?? 0;
      if (vectors.some((v) => v.length !== dim))
        throw new GlanceError("PAYLOAD_INVALID", "Edge gallery mixes embedding sizes.");
      const matrix = new Float32Array(vectors.length * dim);
      vectors.forEach((v, i) => {
        matrix.set(v, i * dim);
        v.fill(0);
      });
      this.#wipe();
      this.#ids = kept.map((e) => e.personId);
      this.#until = kept.map((e) => e.until ?? 0);
      this.#nextEnd = soonest(this.#until);
      this.#vectors = matrix;
      this.#dim = dim;
      this.#version = header.version;
      this.#floor = header.version;
      this.#ts = header.ts;
      this.#threshold = header.threshold;
    } finally {
      plaintext.fill(0);
    }
  }

  /** Best member at or above the gallery threshold, or undefined (not a member, or no gallery). */
  match(probe: Float32Array): EdgeMatch | undefined {
    this.#expire();
    const dim = this.#dim;
    if (dim === 0 || probe.length !== dim) return undefined;
    let best = -Infinity;
    let at = -1;
    const v = this.#vectors;
    for (let i = 0, off = 0; i < this.#ids.length; i++, off += dim) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += (v[off + j] as number) * (probe[j] as number);
      if (dot > best) {
        best = dot;
        at = i;
      }
    }
    if (at < 0 || best < this.#threshold) return undefined;
    return { personId: this.#ids[at] as string, score: best };
  }

  /** Removes a member (erase-member); returns whether they were held. Later galleries built before `ts` stay without them. */
  erase(personId: string, ts: number): boolean {
    this.#erased.set(personId, Math.max(ts, this.#erased.get(personId) ?? 0));
    if (!this.#ids.includes(personId)) return false;
    // a member may have several templates: every one goes
    this.#drop((i) => this.#ids[i] === personId);
    return true;
  }

  /** Drops the entries whose consent has ended by now. */
  #expire(): void {
    const now = this.#now();
    if (now < this.#nextEnd) return;
    this.#drop((i) => (this.#until[i] as number) > 0 && (this.#until[i] as number) <= now);
  }

  /** Removes the entries `gone` names, zeroing the vectors they leave behind. */
  #drop(gone: (i: number) => boolean): void {
    const dim = this.#dim;
    const keep = this.#ids.flatMap((_, i) => (gone(i) ? [] : [i]));
    const vectors = new Float32Array(keep.length * dim);
    keep.forEach((from, to) => {
      vectors.set(this.#vectors.subarray(from * dim, (from + 1) * dim), to * dim);
    });
    this.#vectors.fill(0);
    this.#vectors = vectors;
    this.#ids = keep.map((i) => this.#ids[i] as string);
    this.#until = keep.map((i) => this.#until[i] as number);
    this.#nextEnd = soonest(this.#until);
  }

  /** Drops the gallery (withdrawn by the orchestrator); a later one must still be at least as new. */
  clear(): void {
    this.#wipe();
    this.#version = undefined;
    this.#ts = 0;
  }

  /** the build time of the gallery held (0 without one) */
  get builtAt(): number {
    return this.#ts;
  }

  #wipe(): void {
    this.#vectors.fill(0);
    this.#vectors = new Float32Array(0);
    this.#ids = [];
    this.#until = [];
    this.#nextEnd = Number.POSITIVE_INFINITY;
    this.#dim = 0;
  }
}

/** The soonest consent end among `until` (0: none), or Infinity. */
function soonest(until: readonly number[]): number {
  let min = Number.POSITIVE_INFINITY;
  for (const u of until) if (u > 0 && u < min) min = u;
  return min;
}
