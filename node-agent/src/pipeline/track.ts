import type { Frame } from "../sources/frame.ts";
import type { Detections } from "./detect.ts";
import type { Counters } from "./metrics.ts";

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface TrackerOptions {
  /** a detection continues a track only when it overlaps the track's last box at least this much */
  minIou?: number;
  /** a track ends after this many consecutive frames without a matching detection */
  maxMissed?: number;
  /** prefix of track ids, so ids from different runs never collide */
  idPrefix?: string;
}

export interface Tracked<F> {
  trackId: string;
  face: F;
}

export interface EndedTrack {
  trackId: string;
  firstSeenTs: number;
  lastSeenTs: number;
  /** frames the track was seen in */
  hits: number;
}

interface Track<F> {
  id: string;
  last: F;
  firstSeenTs: number;
  lastSeenTs: number;
  hits: number;
  missed: number;
}

export function iou(a: Box, b: Box): number {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / (a.width * a.height + b.width * b.height - inter);
}

/**
 * Greedy IoU tracker: each frame, detection-track pairs are matched best overlap first; a detection that
 * overlaps no open track by minIou starts a new one. Enough for a fixed camera at 5-15 fps looking at people
 * walking; it has no motion model, so a face that jumps further than its own size between frames starts a new track.
 */
export class IouTracker<F extends { box: Box }> {
  readonly #minIou: number;
  readonly #maxMissed: number;
  readonly #prefix: string;
  #open: Track<F>[] = [];
  #created = 0;

  constructor(o: TrackerOptions = {}) {
    this.#minIou = o.minIou ?? 0.3;
    this.#maxMissed = o.maxMissed ?? 10;
    this.#prefix = o.idPrefix ?? "t";
  }

  get created(): number {
    return this.#created;
  }

  update(faces: readonly F[], ts: number): { tracked: Tracked<F>[]; ended: EndedTrack[] } {
    const pairs: { t: number; f: number; iou: number }[] = [];
    this.#open.forEach((track, t) => {
      faces.forEach((face, f) => {
        const overlap = iou(track.last.box, face.box);
        if (overlap >= this.#minIou) pairs.push({ t, f, iou: overlap });
      });
    });
    pairs.sort((a, b) => b.iou - a.iou);

    const trackTaken = new Set<number>();
    const faceTaken = new Map<number, Track<F>>();
    for (const p of pairs) {
      if (trackTaken.has(p.t) || faceTaken.has(p.f)) continue;
      trackTaken.add(p.t);
      faceTaken.set(p.f, this.#open[p.t] as Track<F>);
    }

    const ended: EndedTrack[] = [];
    this.#open = this.#open.filter((track, t) => {
      if (trackTaken.has(t)) return true;
      track.missed++;
      if (track.missed <= this.#maxMissed) return true;
      ended.push(endOf(track));
      return false;
    });

    const tracked = faces.map((face, f) => {
      let track = faceTaken.get(f);
      if (track) {
        track.last = face;
        track.lastSeenTs = ts;
        track.hits++;
        track.missed = 0;
      } else {
        track = {
          id: `${this.#prefix}${++this.#created}`,
          last: face,
          firstSeenTs: ts,
          lastSeenTs: ts,
          hits: 1,
          missed: 0,
        };
        this.#open.push(track);
      }
      return { trackId: track.id, face };
    });
    return { tracked, ended };
  }

  /** Ends every open track (the source ended or the pipeline stops). */
  flush(): EndedTrack[] {
    const ended = this.#open.map(endOf);
    this.#open = [];
    return ended;
  }
}

function endOf<F>(t: Track<F>): EndedTrack {
  return { trackId: t.id, firstSeenTs: t.firstSeenTs, lastSeenTs: t.lastSeenTs, hits: t.hits };
}

export interface TrackedFrame<F> {
  frame: Frame;
  faces: Tracked<F>[];
  ended: EndedTrack[];
}

/** Stage: gives every detected face a stable track id; when the frames run out, ends the open tracks. */
export async function* track<F extends { box: Box }>(
  input: AsyncIterable<Detections<F>>,
  tracker: IouTracker<F>,
  counters: Counters,
): AsyncGenerator<TrackedFrame<F>> {
  let last: Frame | undefined;
  for await (const { frame, faces } of input) {
    last = frame;
    const { tracked, ended } = tracker.update(faces, frame.ts);
    counters.tracks = tracker.created;
    yield { frame, faces: tracked, ended };
  }
  if (last) yield { frame: last, faces: [], ended: tracker.flush() };
}
