import type { Logger } from "pino";
import {
  openPiCamera,
  openRtsp,
  openV4l2,
  type PiCameraOptions,
  type RtspOptions,
  type V4l2Options,
} from "./camera.ts";
import { type FolderOptions, openFolder } from "./folder.ts";
import type { FrameSource } from "./frame.ts";
import { openReplay, type ReplayOptions } from "./replay.ts";

export { MjpegSplitter, openPiCamera, openRtsp, openV4l2, piCameraCommand } from "./camera.ts";
export type { Frame, FrameSource, Pace } from "./frame.ts";
export { latest } from "./latest.ts";
export { openFolder, openReplay };

export type SourceSpec =
  | ({ kind: "replay" } & ReplayOptions)
  | ({ kind: "folder" } & FolderOptions)
  | ({ kind: "v4l2" } & V4l2Options)
  | ({ kind: "rtsp" } & RtspOptions)
  | ({ kind: "picamera" } & PiCameraOptions);

/** Opens the camera a node config describes. Throws GlanceError CAMERA_UNAVAILABLE when it cannot. */
export async function openSource(spec: SourceSpec, log: Logger): Promise<FrameSource> {
  const child = log.child({ component: "source", kind: spec.kind });
  switch (spec.kind) {
    case "replay":
      return openReplay(spec, child);
    case "folder":
      return openFolder(spec, child);
    case "v4l2":
      return openV4l2(spec, child);
    case "rtsp":
      return openRtsp(spec, child);
    case "picamera":
      return openPiCamera(spec, child);
  }
}

/** Where the source is, for messages and `doctor` (an RTSP URL without its credentials). */
export function describeSource(spec: SourceSpec): string {
  switch (spec.kind) {
    case "replay":
    case "folder":
      return `${spec.kind} ${spec.path}`;
    case "v4l2":
      return `V4L2 camera ${spec.device}`;
    case "rtsp": {
      try {
        const u = new URL(spec.url);
        u.username = "";
        u.password = "";
        return `RTSP camera ${u.toString()}`;
      } catch {
        return "RTSP camera (unparseable URL)";
      }
    }
    case "picamera":
      return `Pi camera (${(spec.command ?? ["rpicam-vid"])[0]})`;
  }
}
