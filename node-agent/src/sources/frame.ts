import type { RawImage } from "@glance/models";

/** One decoded camera frame. `ts` is when it was captured (ms since epoch), `index` its position in the source. */
export interface Frame {
  image: RawImage;
  ts: number;
  index: number;
}

/** A camera: an async stream of frames that can be closed (which also reaps any decoder process). */
export interface FrameSource extends AsyncIterable<Frame> {
  /** frames thrown away because the pipeline was still busy with an older one (realtime pace only) */
  readonly dropped: number;
  close(): Promise<void>;
}

export type Pace = "realtime" | "every-frame";
