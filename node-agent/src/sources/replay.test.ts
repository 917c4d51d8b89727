import { writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isGlanceError } from "@glance/shared";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Frame } from "./frame.ts";
import { openReplay, parseOutputStream } from "./replay.ts";

const VIDEO = new URL("../../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const log = pino({ level: "silent" });

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function take(source: AsyncIterable<Frame>, n: number, eachMs = 0): Promise<Frame[]> {
  const out: Frame[] = [];
  for await (const f of source) {
    out.push(f);
    if (out.length >= n) break;
    if (eachMs) await sleep(eachMs);
  }
  return out;
}

describe("replay camera", () => {
  it("yields RGB frames of the requested width with the aspect kept, and ends with the file", async () => {
    const source = openReplay({ path: VIDEO, width: 320, fps: 5, pace: "every-frame" }, log);
    const frames = await take(source, 1000);
    // 10 s of video at 5 fps
    expect(frames.length).toBeGreaterThanOrEqual(48);
    expect(frames.length).toBeLessThanOrEqual(52);
    for (const f of frames) {
      expect(f.image.width).toBe(320);
      expect(f.image.height).toBe(180);
      expect(f.image.data.length).toBe(320 * 180 * 3);
    }
    expect(frames.map((f) => f.index)).toEqual(frames.map((_, i) => i));
    // every-frame timestamps run on video time: 200 ms apart
    expect((frames[1] as Frame).ts - (frames[0] as Frame).ts).toBe(200);
    // not a blank picture
    const first = (frames[10] as Frame).image.data;
    expect(new Set(first.subarray(0, 3000)).size).toBeGreaterThan(20);
    await source.close();
  });

  it("keeps its native size at 640 px and loops past the end of the file when asked", async () => {
    const source = openReplay({ path: VIDEO, fps: 10, loop: true, pace: "every-frame" }, log);
    const frames = await take(source, 130);
    expect(frames).toHaveLength(130);
    expect(frames[0]?.image.width).toBe(640);
    expect(frames[0]?.image.height).toBe(360);
    await source.close();
    expect(alive(source.pid)).toBe(false);
  });

  it("under a slow pipeline, realtime pace drops stale frames instead of queueing them", async () => {
    const source = openReplay({ path: VIDEO, width: 160, fps: 20, pace: "realtime" }, log);
    const frames: Frame[] = [];
    const ages: number[] = [];
    for await (const f of source) {
      ages.push(Date.now() - f.ts);
      frames.push(f);
      if (frames.length >= 8) break;
      await sleep(250); // a pipeline five times slower than the camera
    }
    await source.close();
    expect(source.dropped).toBeGreaterThan(20);
    // the frames handed over are the newest: their indices jump and none waited long (a queue would hand over seconds-old frames)
    const gaps = frames.slice(1).map((f, i) => f.index - (frames[i] as Frame).index);
    expect(Math.min(...gaps)).toBeGreaterThan(1);
    expect(Math.max(...ages)).toBeLessThan(400);
    expect(alive(source.pid)).toBe(false);
  });

  it("under the same slow pipeline, every-frame pace processes every frame", async () => {
    const source = openReplay({ path: VIDEO, width: 160, fps: 20, pace: "every-frame" }, log);
    const frames = await take(source, 8, 250);
    await source.close();
    expect(source.dropped).toBe(0);
    expect(frames.map((f) => f.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it("a missing file is CAMERA_UNAVAILABLE straight away", () => {
    expect(() => openReplay({ path: "/nonexistent/cam.mp4" }, log)).toThrow(
      expect.objectContaining({ code: "CAMERA_UNAVAILABLE" }),
    );
  });

  it("a file ffmpeg cannot decode fails the stream with CAMERA_UNAVAILABLE and leaves no process behind", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-replay-"));
    const bogus = join(dir, "not-a-video.mp4");
    writeFileSync(bogus, "this is not a video");
    const source = openReplay({ path: bogus, pace: "every-frame" }, log);
    const error = await take(source, 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
    expect((error as Error).message).toMatch(/not-a-video\.mp4/);
    await source.close();
    expect(alive(source.pid)).toBe(false);
  });

  it("reads frame size and rate from ffmpeg's output stream line", () => {
    expect(
      parseOutputStream(
        "  Stream #0:0(und): Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x360 [SAR 1:1 DAR 16:9], q=2-31, 165722 kb/s, 29.97 fps, 29.97 tbn",
      ),
    ).toEqual({ width: 640, height: 360, fps: 29.97 });
    expect(
      parseOutputStream("  Stream #0:0(und): Video: h264 (avc1 / 0x31637661), yuv420p, 640x360, 29.97 fps"),
    ).toBeUndefined();
  });
});
