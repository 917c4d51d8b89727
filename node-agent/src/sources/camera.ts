import { type ChildProcessByStdio, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import type { Readable } from "node:stream";
import { decodeImage } from "@glance/models";
import { GlanceError } from "@glance/shared";
import type { Logger } from "pino";
import type { Frame, FrameSource } from "./frame.ts";
import { latest } from "./latest.ts";
import { openFfmpeg } from "./replay.ts";

export interface V4l2Options {
  /** e.g. /dev/video0 */
  device: string;
  /** ask the camera for this mode (it may pick the nearest); `width` below rescales after capture */
  captureWidth?: number;
  captureHeight?: number;
  captureFps?: number;
  /** input format the camera should send, e.g. "mjpeg" (most USB cameras reach 30 fps only in MJPEG) */
  inputFormat?: string;
  fps?: number;
  width?: number;
}

export interface RtspOptions {
  /** rtsp://user:password@host:554/stream; the credentials are never logged */
  url: string;
  fps?: number;
  width?: number;
}

export interface PiCameraOptions {
  width?: number;
  height?: number;
  fps?: number;
  /** the command producing an MJPEG stream on stdout; default rpicam-vid (libcamera) */
  command?: string[];
}

/** A USB (UVC) or other V4L2 camera through ffmpeg. */
export function openV4l2(o: V4l2Options, log: Logger): FrameSource {
  if (!existsSync(o.device)) {
    throw new GlanceError(
      "CAMERA_UNAVAILABLE",
      `${o.device} does not exist: check the USB cable, \`ls /dev/video*\`, and source.device in the node config.`,
    );
  }
  const args = ["-f", "v4l2"];
  if (o.inputFormat) args.push("-input_format", o.inputFormat);
  if (o.captureFps) args.push("-framerate", String(o.captureFps));
  if (o.captureWidth && o.captureHeight) args.push("-video_size", `${o.captureWidth}x${o.captureHeight}`);
  args.push("-i", o.device);
  return openFfmpeg({ args, label: o.device, live: true }, o, log);
}

/** An IP camera's RTSP stream through ffmpeg, over TCP (UDP loses packets, and so frames, on busy networks). */
export function openRtsp(o: RtspOptions, log: Logger): FrameSource {
  let label: string;
  try {
    const u = new URL(o.url);
    if (u.protocol !== "rtsp:" && u.protocol !== "rtsps:") throw new Error("not rtsp");
    u.username = "";
    u.password = "";
    label = u.toString();
  } catch {
    throw new GlanceError("CONFIG_INVALID", "source.url is not an rtsp:// URL.");
  }
  const args = ["-rtsp_transport", "tcp", "-i", o.url];
  return openFfmpeg({ args, label, live: true }, o, log);
}

export function piCameraCommand(o: PiCameraOptions): string[] {
  return [
    "rpicam-vid",
    "--nopreview",
    "--timeout",
    "0",
    "--codec",
    "mjpeg",
    "--width",
    String(o.width ?? 1280),
    "--height",
    String(o.height ?? 720),
    "--framerate",
    String(o.fps ?? 10),
    "--output",
    "-",
  ];
}

const STDERR_LINES_KEPT = 10;
const KILL_GRACE_MS = 2000;

/**
 * The Raspberry Pi camera (libcamera) as `rpicam-vid --codec mjpeg -o -`: the MJPEG stream on its stdout is split
 * into JPEG frames, and the newest is decoded (by the models' decoder) when the pipeline asks for one, so a slow
 * pipeline drops whole compressed frames without paying to decode them.
 */
export function openPiCamera(o: PiCameraOptions, log: Logger): FrameSource & { readonly pid: number | undefined } {
  const [command, ...args] = o.command ?? piCameraCommand(o);
  const child: ChildProcessByStdio<null, Readable, Readable> = spawn(command as string, args, {
    stdio: ["ignore", "pipe", "pipe"],
  });
  log.debug({ command, pid: child.pid }, "camera process started");
  let closing = false;
  const stderrTail: string[] = [];
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    for (const line of chunk.split(/\r?\n|\r/)) {
      if (!line.trim()) continue;
      stderrTail.push(line.trim());
      if (stderrTail.length > STDERR_LINES_KEPT) stderrTail.shift();
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  let spawnError: Error | undefined;
  child.once("error", (e) => {
    spawnError = e;
  });
  const failure = (what: string) =>
    new GlanceError(
      "CAMERA_UNAVAILABLE",
      `Pi camera failed (${what}): check the ribbon cable and \`rpicam-hello --list-cameras\`. ${command} said: ${stderrTail.slice(-3).join(" | ")}`,
    );

  async function* jpegs(): AsyncGenerator<Buffer> {
    const splitter = new MjpegSplitter();
    try {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield* splitter.push(chunk);
      const { code, signal } = await exited;
      if (!closing) throw failure(spawnError ? spawnError.message : `exited with ${code ?? signal}`);
    } finally {
      if (!closing) kill();
    }
  }
  const newest = latest(jpegs());
  async function* frames(): AsyncGenerator<Frame> {
    let index = 0;
    for await (const jpeg of newest) {
      const ts = Date.now();
      let image: Frame["image"];
      try {
        image = await decodeImage(jpeg);
      } catch {
        log.warn("camera frame skipped: not a decodable JPEG");
        continue;
      }
      yield { image, ts, index: index++ };
    }
  }
  function kill() {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const hard = setTimeout(() => child.kill("SIGKILL"), KILL_GRACE_MS);
    hard.unref();
    void exited.then(() => clearTimeout(hard));
  }
  return {
    get dropped() {
      return newest.dropped;
    },
    get pid() {
      return child.pid;
    },
    [Symbol.asyncIterator]: frames,
    async close() {
      closing = true;
      kill();
      await exited;
    },
  };
}

/**
 * Splits a Motion-JPEG byte stream into whole JPEG images. It walks the JPEG marker segments (so an EXIF thumbnail
 * inside APP1 cannot end a frame early) and, after start-of-scan, the entropy-coded data up to the EOI marker.
 * Bytes before an SOI (a stream joined mid-frame) are skipped.
 */
export class MjpegSplitter {
  #buf: Buffer = Buffer.alloc(0);
  /** where scanning resumes inside the current frame, so a big frame arriving in many chunks is walked once */
  #pos = 0;
  #inScan = false;

  *push(chunk: Buffer): Generator<Buffer> {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      const frame = this.#next();
      if (!frame) return;
      yield frame;
    }
  }

  #next(): Buffer | undefined {
    const b = this.#buf;
    if (this.#pos === 0) {
      const soi = findSoi(b);
      if (soi < 0) {
        // keep the last two bytes: they may be the start of the next SOI
        this.#buf = b.subarray(Math.max(0, b.length - 2));
        return undefined;
      }
      this.#buf = b.subarray(soi);
      this.#pos = 2;
      this.#inScan = false;
      return this.#next();
    }
    let p = this.#pos;
    while (!this.#inScan) {
      if (p + 4 > b.length) return this.#wait(p);
      if (b[p] !== 0xff) return this.#resync();
      const marker = b[p + 1] as number;
      if (marker === 0xff) {
        p++; // fill byte
        continue;
      }
      if (marker === 0xd9) return this.#cut(p + 2);
      const length = b.readUInt16BE(p + 2);
      if (length < 2) return this.#resync();
      p += 2 + length;
      if (marker === 0xda) this.#inScan = true;
    }
    // entropy-coded data: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0-D7 a restart marker; anything else ends the scan
    for (;;) {
      const ff = b.indexOf(0xff, p);
      if (ff < 0 || ff + 1 >= b.length) return this.#wait(ff < 0 ? b.length : ff);
      const next = b[ff + 1] as number;
      if (next === 0x00 || (next >= 0xd0 && next <= 0xd7) || next === 0xff) {
        p = ff + (next === 0xff ? 1 : 2);
        continue;
      }
      if (next === 0xd9) return this.#cut(ff + 2);
      // another marker segment after this scan (progressive JPEG): walk it as a header
      this.#inScan = false;
      this.#pos = ff;
      return this.#next();
    }
  }

  #wait(at: number): undefined {
    this.#pos = Math.max(2, at);
    return undefined;
  }

  #cut(end: number): Buffer {
    const frame = Buffer.from(this.#buf.subarray(0, end));
    this.#buf = this.#buf.subarray(end);
    this.#pos = 0;
    this.#inScan = false;
    return frame;
  }

  /** not a JPEG structure where one was expected: look for the next SOI */
  #resync(): Buffer | undefined {
    this.#buf = this.#buf.subarray(2);
    this.#pos = 0;
    this.#inScan = false;
    return this.#next();
  }
}

function findSoi(b: Buffer): number {
  for (let i = b.indexOf(0xff); i >= 0 && i + 2 < b.length; i = b.indexOf(0xff, i + 1)) {
    if (b[i + 1] === 0xd8 && b[i + 2] === 0xff) return i;
  }
  return -1;
}
