import {
  AttributesModel,
  type DetectedFace,
  type FaceAttributes,
  type RawImage,
  summariseAttributes,
} from "@glance/models";
import type { CoarseAttributes, Payload } from "@glance/shared";
import type { Logger } from "pino";
import type { Outbox } from "../queue/outbox.ts";
import type { StageTimer } from "./metrics.ts";
import type { TrackedFrame } from "./track.ts";

/** The part of the attributes model the node uses; only the models package touches onnxruntime. */
export type AttributeEngine = Pick<AttributesModel, "analyse" | "close" | "manifest">;

export interface TrackAttributesOptions {
  /** the store's opt-in (DesiredState.attributes), read for every frame */
  enabled: () => boolean;
  /** the detector's landmark names (its manifest's decoding.landmarkNames) */
  landmarkNames: readonly string[];
  /** loads the model the first time it is needed (default: AttributesModel.load from modelsDir) */
  load?: () => Promise<AttributeEngine>;
  modelsDir?: string;
  /** faces smaller than this (px) are not sampled: the estimate is noise on them */
  minFaceSizePx: () => number;
  /** at most one sample per track per interval (default 1000 ms) */
  sampleEveryMs?: number;
  /** at most this many samples per track (default 5): a long dwell costs no more than a short one */
  maxSamples?: number;
  timer?: StageTimer;
  log: Logger;
}

/**
 * Coarse attributes per track, for the anonymous track-ended event only (never a template, never an identity).
 * While the store's flag is off nothing is loaded and nothing is estimated; when it turns on the model is loaded
 * at the next frame; when it turns off again the model is released and what was gathered is dropped. A few faces
 * of each track are sampled (spread over its dwell), their probabilities averaged, and only the most likely age
 * band, gender and emotion (with their probabilities) are kept when the track ends.
 */
export class TrackAttributes {
  readonly #o: Required<Omit<TrackAttributesOptions, "load" | "modelsDir" | "timer">> &
    Pick<TrackAttributesOptions, "timer">;
  readonly #load: () => Promise<AttributeEngine>;
  #model: AttributeEngine | undefined;
  #loading: Promise<AttributeEngine | undefined> | undefined;
  /** a failed load is not retried until the flag is switched off and on again */
  #failed = false;
  readonly #open = new Map<string, { lastTs: number; faces: FaceAttributes[] }>();
  /** ended tracks whose event has not been queued yet */
  readonly #ended = new Map<string, CoarseAttributes>();

  constructor(opts: TrackAttributesOptions) {
    this.#o = { sampleEveryMs: 1000, maxSamples: 5, ...opts };
    this.#load = opts.load ?? (() => AttributesModel.load({ modelsDir: opts.modelsDir }));
  }

  /** the loaded model's name@version, for the node's status; undefined while none is loaded */
  get model(): string | undefined {
    return this.#model ? `${this.#model.manifest.name}@${this.#model.manifest.version}` : undefined;
  }

  /** samples the frame's tracked faces and closes the ended tracks; call for every frame, in order */
  async observe({ frame, faces, ended }: TrackedFrame<DetectedFace>): Promise<void> {
    if (!this.#o.enabled()) {
      await this.#disable();
      return;
    }
    const model = await this.#ensure();
    if (!model) return;
    const minPx = this.#o.minFaceSizePx();
    for (const { trackId, face } of faces) {
      const t = this.#open.get(trackId) ?? { lastTs: Number.NEGATIVE_INFINITY, faces: [] };
      this.#open.set(trackId, t);
      if (t.faces.length >= this.#o.maxSamples || frame.ts - t.lastTs < this.#o.sampleEveryMs) continue;
      if (Math.min(face.box.width, face.box.height) < minPx) continue;
      const image: RawImage = frame.image;
      const run = () => model.analyse(image, face, this.#o.landmarkNames);
      t.faces.push(await (this.#o.timer ? this.#o.timer.time("attributes", run) : run()));
      t.lastTs = frame.ts;
    }
    for (const { trackId } of ended) {
      const summary = summariseAttributes(this.#open.get(trackId)?.faces ?? []);
      this.#open.delete(trackId);
      if (summary) this.#ended.set(trackId, summary);
    }
  }

  /** the coarse attributes of an ended track, once (then forgotten) */
  take(trackId: string): CoarseAttributes | undefined {
    const a = this.#ended.get(trackId);
    this.#ended.delete(trackId);
    return a;
  }

  /** an outbox that adds its track's attributes to each track-ended event (and touches nothing else) */
  outbox(inner: Pick<Outbox, "enqueue">): Pick<Outbox, "enqueue"> {
    return {
      enqueue: (name, payload) => {
        if (name !== "event") return inner.enqueue(name, payload);
        const event = payload as Payload<"event">;
        const attributes = event.kind === "track-ended" && event.trackId ? this.take(event.trackId) : undefined;
        return inner.enqueue(name, (attributes ? { ...event, attributes } : event) as typeof payload);
      },
    };
  }

  async close(): Promise<void> {
    await this.#disable();
  }

  async #ensure(): Promise<AttributeEngine | undefined> {
    if (this.#model) return this.#model;
    if (this.#failed) return undefined;
    const missing = ["rightEye", "leftEye", "noseTip", "mouthCentre"].filter((n) => !this.#o.landmarkNames.includes(n));
    if (missing.length > 0) {
      this.#failed = true;
      this.#o.log.error({ missing }, "attributes are enabled but the detector gives no landmarks to align faces with");
      return undefined;
    }
    this.#loading ??= this.#load().then(
      (m) => {
        this.#o.log.info({ model: `${m.manifest.name}@${m.manifest.version}` }, "attributes model loaded");
        return m;
      },
      (err: unknown) => {
        this.#failed = true;
        this.#o.log.error(
          { err: (err as Error).message },
          "attributes are enabled but the model cannot be loaded; track-ended events go without them",
        );
        return undefined;
      },
    );
    this.#model = await this.#loading;
    this.#loading = undefined;
    return this.#model;
  }

  async #disable(): Promise<void> {
    this.#failed = false;
    this.#open.clear();
    this.#ended.clear();
    const model = this.#model ?? (await this.#loading);
    this.#model = undefined;
    this.#loading = undefined;
    if (model) {
      await model.close();
      this.#o.log.info("attributes switched off: model released");
    }
  }
}

/** Stage: passes tracked frames through unchanged, after sampling their faces' attributes (when enabled). */
export async function* trackAttributes(
  input: AsyncIterable<TrackedFrame<DetectedFace>>,
  attributes: TrackAttributes,
): AsyncGenerator<TrackedFrame<DetectedFace>> {
  for await (const item of input) {
    await attributes.observe(item);
    yield item;
  }
}
