import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { decodeImage, type RawImage } from "@glance/models";
import { GlanceError } from "@glance/shared";
import type { Logger } from "pino";
import type { Frame, FrameSource, Pace } from "./frame.ts";
import { latest } from "./latest.ts";

export interface FolderOptions {
  path: string;
  loop?: boolean;
  /** frames per second for pace "realtime" (default 1); also the clock of every-frame timestamps */
  fps?: number;
  pace?: Pace;
}

const IMAGE = /\.(jpe?g|png|webp|tiff?|bmp|gif|avif)$/i;

/** A folder of still images replayed as a camera, in name order; useful for bench rigs and tests. */
export async function openFolder(o: FolderOptions, log: Logger): Promise<FrameSource> {
  let names: string[];
  try {
    names = (await readdir(o.path)).filter((n) => IMAGE.test(n)).sort();
  } catch (cause) {
    throw new GlanceError(
      "CAMERA_UNAVAILABLE",
      `Image folder ${o.path} cannot be read: check source.path in the node config.`,
      undefined,
      {
        cause,
      },
    );
  }
  if (names.length === 0) {
    throw new GlanceError("CAMERA_UNAVAILABLE", `Image folder ${o.path} holds no images (jpg, png, webp, ...).`);
  }
  const pace = o.pace ?? "realtime";
  const period = 1000 / (o.fps ?? 1);
  const abort = new AbortController();

  async function* frames(): AsyncGenerator<Frame> {
    const start = Date.now();
    let index = 0;
    do {
      const before = index;
      for (const name of names) {
        if (abort.signal.aborted) return;
        let image: RawImage;
        try {
          // the models' decoder, so node and orchestrator see identical pixels (EXIF turn, alpha on white, grey to RGB)
          image = await decodeImage(join(o.path, name));
        } catch (error) {
          log.warn({ file: name, err: (error as Error).message }, "image skipped: cannot be decoded");
          continue;
        }
        const due = start + index * period;
        if (pace === "realtime") {
          try {
            await sleep(Math.max(0, due - Date.now()), undefined, { signal: abort.signal });
          } catch {
            return;
          }
        }
        const ts = pace === "realtime" ? Date.now() : Math.round(due);
        yield { image, ts, index: index++ };
      }
      if (index === before) throw new GlanceError("CAMERA_UNAVAILABLE", `No image in ${o.path} could be decoded.`);
    } while (o.loop && !abort.signal.aborted);
  }

  const iterable = pace === "realtime" ? latest(frames()) : { dropped: 0, [Symbol.asyncIterator]: frames };
  return {
    get dropped() {
      return iterable.dropped;
    },
    [Symbol.asyncIterator]: () => iterable[Symbol.asyncIterator](),
    async close() {
      abort.abort();
    },
  };
}
