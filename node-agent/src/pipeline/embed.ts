import type { Shot, TrackEnded } from "./best-shot.ts";
import type { StageTimer } from "./metrics.ts";
import type { FaceEngine } from "./types.ts";

export interface Embedded {
  kind: "embedding";
  trackId: string;
  ts: number;
  quality: number;
  /** in memory only: sealed by the next stage and then wiped */
  embedding: Float32Array;
}

/** Stage: aligns the chosen face and computes its embedding; the frame is let go here. */
export async function* embed(
  input: AsyncIterable<Shot | TrackEnded>,
  engine: Pick<FaceEngine, "embed">,
  timer: StageTimer,
): AsyncGenerator<Embedded | TrackEnded> {
  for await (const item of input) {
    if (item.kind !== "shot") {
      yield item;
      continue;
    }
    const embedding = await timer.time("embed", () => engine.embed(item.image, item.face));
    yield { kind: "embedding", trackId: item.trackId, ts: item.ts, quality: item.quality, embedding };
  }
}
