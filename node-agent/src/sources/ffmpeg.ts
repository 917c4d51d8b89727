import { accessSync, constants } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, join } from "node:path";
import { GlanceError } from "@glance/shared";

let resolved: string | undefined;

/** The system `ffmpeg` when one is on PATH (usually built with the device's hardware decoders), else the bundled static one. */
export function ffmpegPath(): string {
  if (resolved) return resolved;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "ffmpeg");
    try {
      accessSync(candidate, constants.X_OK);
      resolved = candidate;
      return candidate;
    } catch {
      // not here
    }
  }
  try {
    const installer = createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string };
    resolved = installer.path;
    return resolved;
  } catch (cause) {
    throw new GlanceError(
      "CAMERA_UNAVAILABLE",
      "No ffmpeg found: install ffmpeg on PATH or reinstall the node agent so @ffmpeg-installer/ffmpeg brings its binary.",
      undefined,
      { cause },
    );
  }
}
