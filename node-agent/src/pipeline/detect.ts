import type { DetectedFace } from "@glance/models";
import type { Frame } from "../sources/frame.ts";
import type { Counters, StageTimer } from "./metrics.ts";
import type { FaceEngine } from "./types.ts";

export interface Detections<F = DetectedFace> {
  frame: Frame;
  faces: F[];
}

/** Stage: finds the faces in each frame. */
export async function* detect(
  frames: AsyncIterable<Frame>,
  engine: Pick<FaceEngine, "detect">,
  timer: StageTimer,
  counters: Counters,
): AsyncGenerator<Detections> {
  for await (const frame of frames) {
    const faces = await timer.time("detect", () => engine.detect(frame.image));
    counters.frames++;
    counters.faces += faces.length;
    yield { frame, faces };
  }
}
