import type { Logger } from "pino";
import { type FolderOptions, openFolder } from "./folder.ts";
import type { FrameSource } from "./frame.ts";
import { openReplay, type ReplayOptions } from "./replay.ts";

export type { Frame, FrameSource, Pace } from "./frame.ts";
export { latest } from "./latest.ts";
export { openFolder, openReplay };

export type SourceSpec = ({ kind: "replay" } & ReplayOptions) | ({ kind: "folder" } & FolderOptions);

/** Opens the camera a node config describes. Throws GlanceError CAMERA_UNAVAILABLE when it cannot. */
export async function openSource(spec: SourceSpec, log: Logger): Promise<FrameSource> {
  const child = log.child({ component: "source", kind: spec.kind });
  return spec.kind === "replay" ? openReplay(spec, child) : openFolder(spec, child);
}
