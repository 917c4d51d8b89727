import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isGlanceError } from "@glance/shared";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { openFolder } from "./folder.ts";
import type { Frame } from "./frame.ts";

const SCENES = new URL("../../../demo/people/scenes", import.meta.url).pathname;
const log = pino({ level: "silent" });

async function collect(source: AsyncIterable<Frame>, max: number): Promise<Frame[]> {
  const out: Frame[] = [];
  for await (const f of source) {
    out.push(f);
    if (out.length >= max) break;
  }
  return out;
}

describe("image folder camera", () => {
  it("yields every image once as RGB, RGBA PNG included, then ends", async () => {
    const source = await openFolder({ path: SCENES, pace: "every-frame" }, log);
    const frames = await collect(source, 100);
    expect(frames).toHaveLength(10);
    for (const f of frames) expect(f.image.data.length).toBe(f.image.width * f.image.height * 3);
    expect(new Set(frames.map((f) => `${f.image.width}x${f.image.height}`)).size).toBeGreaterThan(3);
    await source.close();
  });

  it("starts over when looping", async () => {
    const source = await openFolder({ path: SCENES, pace: "every-frame", loop: true }, log);
    const frames = await collect(source, 25);
    expect(frames).toHaveLength(25);
    expect(frames[10]?.image.width).toBe(frames[0]?.image.width);
    await source.close();
  });

  it("at realtime pace shows images at the given rate and drops those a slow pipeline had no time for", async () => {
    const source = await openFolder({ path: SCENES, pace: "realtime", fps: 20, loop: true }, log);
    const seen: Frame[] = [];
    for await (const f of source) {
      seen.push(f);
      if (seen.length >= 5) break;
      await sleep(300);
    }
    await source.close();
    expect(source.dropped).toBeGreaterThan(0);
    // (decoding a 1080p JPEG can take longer than a frame period, so not every step skips)
    expect(Math.max(...seen.slice(1).map((f, i) => f.index - (seen[i] as Frame).index))).toBeGreaterThan(1);
  });

  it("an empty folder is CAMERA_UNAVAILABLE", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-folder-"));
    const error = await openFolder({ path: dir }, log).catch((e: unknown) => e);
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
  });
});
