import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { isGlanceError } from "@glance/shared";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { MjpegSplitter, openPiCamera, openRtsp, openV4l2, piCameraCommand } from "./camera.ts";
import { ffmpegPath } from "./ffmpeg.ts";
import type { Frame } from "./frame.ts";

const VIDEO = new URL("../../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const SCENES = new URL("../../../demo/people/scenes/", import.meta.url).pathname;
const log = pino({ level: "silent" });

/** The demo clip as an MJPEG stream on stdout: what `rpicam-vid --codec mjpeg -o -` gives on a Pi. */
const fakeRpicam = () => [
  ffmpegPath(),
  "-hide_banner",
  "-loglevel",
  "error",
  "-re",
  "-i",
  VIDEO,
  "-an",
  "-vf",
  "fps=10,scale=480:-2",
  "-f",
  "mjpeg",
  "-q:v",
  "5",
  "pipe:1",
];

async function mjpegOf(frames: number): Promise<Buffer> {
  const [cmd, ...args] = fakeRpicam()
    .filter((a) => a !== "-re")
    .map((a) => (a === "pipe:1" ? `-frames:v ${frames} pipe:1` : a))
    .flatMap((a) => a.split(" "));
  const child = spawn(cmd as string, args, { stdio: ["ignore", "pipe", "ignore"] });
  const chunks: Buffer[] = [];
  for await (const c of child.stdout as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

describe("Pi camera (rpicam-vid MJPEG pipe)", () => {
  it("splits an MJPEG stream into whole JPEGs however the pipe chunks it", async () => {
    const stream = await mjpegOf(10);
    const whole = [...new MjpegSplitter().push(stream)];
    expect(whole.length).toBe(10);
    for (const jpeg of whole) {
      expect(jpeg.subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
      expect(jpeg.subarray(-2)).toEqual(Buffer.from([0xff, 0xd9]));
    }
    // 1-byte, odd and pipe-sized chunks give the same frames, byte for byte
    for (const size of [1, 7, 4093, 65536]) {
      const splitter = new MjpegSplitter();
      const got: Buffer[] = [];
      for (let i = 0; i < stream.length; i += size) got.push(...splitter.push(stream.subarray(i, i + size)));
      expect(got).toEqual(whole);
    }
    // joined mid-frame: the partial first frame is skipped
    expect([...new MjpegSplitter().push(stream.subarray(1000))]).toEqual(whole.slice(1));
  });

  it("a JPEG with an EXIF thumbnail (a JPEG inside the JPEG) stays one frame", () => {
    const photo = readFileSync(`${SCENES}barack_obama-small.jpg`);
    const thumbnail = readFileSync(`${SCENES}barack_obama-240p.jpg`);
    // APP1 "Exif" segment carrying a whole JPEG, right after the photo's SOI
    const payload = Buffer.concat([Buffer.from("Exif\0\0"), thumbnail]);
    const app1 = Buffer.concat([Buffer.from([0xff, 0xe1]), Buffer.alloc(2), payload]);
    app1.writeUInt16BE(payload.length + 2, 2);
    const withThumb = Buffer.concat([photo.subarray(0, 2), app1, photo.subarray(2)]);
    const frames = [...new MjpegSplitter().push(Buffer.concat([withThumb, photo]))];
    expect(frames.map((f) => f.length)).toEqual([withThumb.length, photo.length]);
  });

  it("yields decoded RGB frames from the camera process and reaps it on close", async () => {
    const camera = openPiCamera({ command: fakeRpicam() }, log);
    const frames: Frame[] = [];
    for await (const f of camera) {
      frames.push(f);
      if (frames.length === 5) break;
    }
    await camera.close();
    expect(frames[0]?.image).toMatchObject({ width: 480, height: 270 });
    for (const f of frames) expect(f.image.data.length).toBe(480 * 270 * 3);
    expect(() => process.kill(camera.pid as number, 0)).toThrow();
  });

  it("a camera process that is missing or dies is CAMERA_UNAVAILABLE", async () => {
    const missing = openPiCamera({ command: ["/nonexistent/rpicam-vid"] }, log);
    const error = await missing[Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => e);
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
  });

  it("asks rpicam-vid for an endless MJPEG stream on stdout", () => {
    expect(piCameraCommand({ width: 640, height: 480, fps: 15 }).join(" ")).toBe(
      "rpicam-vid --nopreview --timeout 0 --codec mjpeg --width 640 --height 480 --framerate 15 --output -",
    );
  });
});

describe("V4L2 and RTSP cameras", () => {
  it("a V4L2 device that is not there says what to check", () => {
    expect(() => openV4l2({ device: "/dev/video99" }, log)).toThrow(
      expect.objectContaining({ code: "CAMERA_UNAVAILABLE", message: expect.stringMatching(/\/dev\/video99.*USB/) }),
    );
  });

  it("an RTSP camera that cannot be reached fails without its password in the message", async () => {
    // a port nothing listens on: connection refused
    const camera = openRtsp({ url: "rtsp://admin:s3cret@127.0.0.1:9/stream" }, log);
    const error = await camera[Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => e);
    await camera.close();
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
    expect((error as Error).message).toMatch(/rtsp:\/\/127\.0\.0\.1:9\/stream/);
    expect((error as Error).message).not.toContain("s3cret");
  });
});
