import type { DetectedFace, RawImage } from "@glance/models";
import { type Counters, countSkip, type StageTimer } from "./metrics.ts";
import type { EndedTrack, TrackedFrame } from "./track.ts";
import type { FaceEngine } from "./types.ts";

export interface ShotSettings {
  /** false while the node has no desired state or is in count-only mode: no face is even scored */
  templates: boolean;
  /** at most one template per track per interval */
  intervalMs: number;
  /** how long a new track is watched before its first template */
  settleMs: number;
  minFaceSizePx: number;
  /** faces scoring below this quality are never sent */
  minQuality: number;
}

export interface Candidate<P> {
  trackId: string;
  ts: number;
  quality: number;
  payload: P;
}

/**
 * Which face of a track to send, and when. The first template waits until the track is settleMs old (a face
 * entering the frame is rarely its best) and carries the best face seen so far; after that, one template per
 * interval with the best face of that interval; when the track ends, the best face since the last template if it
 * beats that template. Equal quality goes to the newer face: quality saturates, and later faces are more settled.
 */
export class BestShotSelector<P> {
  readonly #tracks = new Map<
    string,
    { firstTs: number; best?: Candidate<P>; sent?: { ts: number; quality: number } }
  >();

  observe(c: Candidate<P>, o: { intervalMs: number; settleMs: number }): Candidate<P> | undefined {
    let t = this.#tracks.get(c.trackId);
    if (!t) {
      t = { firstTs: c.ts };
      this.#tracks.set(c.trackId, t);
    }
    if (!t.best || c.quality >= t.best.quality) t.best = c;
    const due = t.sent ? c.ts - t.sent.ts >= o.intervalMs : c.ts - t.firstTs >= Math.min(o.settleMs, o.intervalMs);
    if (!due) return undefined;
    const shot = t.best;
    t.sent = { ts: c.ts, quality: shot.quality };
    t.best = undefined;
    return shot;
  }

  end(trackId: string): Candidate<P> | undefined {
    const t = this.#tracks.get(trackId);
    this.#tracks.delete(trackId);
    return t?.best && (!t.sent || t.best.quality > t.sent.quality) ? t.best : undefined;
  }
}

export interface Shot {
  kind: "shot";
  trackId: string;
  ts: number;
  quality: number;
  image: RawImage;
  face: DetectedFace;
}

export interface TrackEnded {
  kind: "track-ended";
  track: EndedTrack;
}

/** Stage: scores tracked faces and passes on the best shot of each track when it is due, then the track's end. */
export async function* bestShot(
  input: AsyncIterable<TrackedFrame<DetectedFace>>,
  engine: Pick<FaceEngine, "quality">,
  settings: () => ShotSettings,
  timer: StageTimer,
  counters: Counters,
): AsyncGenerator<Shot | TrackEnded> {
  const selector = new BestShotSelector<{ image: RawImage; face: DetectedFace }>();
  const toShot = (c: Candidate<{ image: RawImage; face: DetectedFace }>): Shot => ({
    kind: "shot",
    trackId: c.trackId,
    ts: c.ts,
    quality: c.quality,
    ...c.payload,
  });

  for await (const { frame, faces, ended } of input) {
    const s = settings();
    if (s.templates) {
      for (const { trackId, face } of faces) {
        if (Math.min(face.box.width, face.box.height) < s.minFaceSizePx) {
          countSkip(counters, "too-small");
          continue;
        }
        const q = await timer.time("quality", () => engine.quality(frame.image, face));
        if (q.score < s.minQuality) {
          countSkip(counters, "low-quality");
          for (const reason of q.reasons) countSkip(counters, `quality:${reason}`);
          continue;
        }
        const due = selector.observe(
          { trackId, ts: frame.ts, quality: q.score, payload: { image: frame.image, face } },
          s,
        );
        if (due) yield toShot(due);
      }
    }
    for (const track of ended) {
      const last = selector.end(track.trackId);
      if (last && settings().templates) yield toShot(last);
      yield { kind: "track-ended", track };
    }
  }
}
