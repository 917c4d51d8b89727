import { type ChildProcessByStdio, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import type { Readable } from "node:stream";
import { GlanceError } from "@glance/shared";
import type { Logger } from "pino";
import { ffmpegPath } from "./ffmpeg.ts";
import type { Frame, FrameSource, Pace } from "./frame.ts";
import { latest } from "./latest.ts";

export interface ReplayOptions {
  path: string;
  loop?: boolean;
  /** resample to this many frames per second; the file's own rate when absent */
  fps?: number;
  /** scale to this width (height keeps the aspect ratio, rounded to even); the file's own size when absent */
  width?: number;
  pace?: Pace;
}

interface OutputFormat {
  width: number;
  height: number;
  fps: number;
}

const STDERR_LINES_KEPT = 20;
const KILL_GRACE_MS = 2000;

/** What ffmpeg reads: its input arguments (ending with `-i <input>`) and a label for messages (no credentials). */
export interface FfmpegInput {
  args: string[];
  label: string;
  /** a live camera runs at its own rate: no `-re`, no looping */
  live: boolean;
}

/** ffmpeg arguments for raw RGB frames on stdout. */
export function replayArgs(o: ReplayOptions): string[] {
  return ffmpegArgs({ args: ["-i", o.path], label: o.path, live: false }, o);
}

export function ffmpegArgs(input: FfmpegInput, o: Omit<ReplayOptions, "path">): string[] {
  const args = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"];
  if (!input.live && (o.pace ?? "realtime") === "realtime") args.push("-re");
  if (!input.live && o.loop) args.push("-stream_loop", "-1");
  args.push(...input.args, "-an", "-sn", "-dn");
  const filters: string[] = [];
  if (o.fps) filters.push(`fps=${o.fps}`);
  if (o.width) filters.push(`scale=${o.width}:-2`);
  if (filters.length > 0) args.push("-vf", filters.join(","));
  args.push("-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1");
  return args;
}

/**
 * ffmpeg announces the output stream before it writes the first frame, e.g.
 * `Stream #0:0(und): Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x360 [SAR 1:1 DAR 16:9], q=2-31, 165722 kb/s, 29.97 fps, ...`
 * Reading the size from there (rather than probing first) keeps one process and ffmpeg's own rounding.
 */
export function parseOutputStream(line: string): OutputFormat | undefined {
  if (!/Stream #\d+:\d+.*Video: rawvideo/.test(line)) return undefined;
  const size = /, (\d+)x(\d+)[ ,]/.exec(line);
  if (!size) return undefined;
  const fps = /, ([\d.]+) (fps|tbr)/.exec(line);
  return { width: Number(size[1]), height: Number(size[2]), fps: fps ? Number(fps[1]) : 25 };
}

/**
 * A video file replayed as a camera through ffmpeg. Pace "realtime" reads at the file's rate and hands the
 * pipeline only the newest frame (stale ones are dropped and counted); "every-frame" decodes as fast as the
 * pipeline consumes, with back-pressure through the pipe, so every frame is processed exactly once.
 */
export function openReplay(o: ReplayOptions, log: Logger): FrameSource & { readonly pid: number | undefined } {
  if (!existsSync(o.path)) {
    throw new GlanceError(
      "CAMERA_UNAVAILABLE",
      `Replay file ${o.path} does not exist: check source.path in the node config.`,
    );
  }
  return openFfmpeg({ args: ["-i", o.path], label: o.path, live: false }, o, log);
}

/**
 * Any ffmpeg input (file, V4L2 device, RTSP stream) as a camera of raw RGB frames. A live input always hands the
 * pipeline only the newest frame.
 */
export function openFfmpeg(
  input: FfmpegInput,
  o: Omit<ReplayOptions, "path">,
  log: Logger,
): FrameSource & { readonly pid: number | undefined } {
  const pace = input.live ? "realtime" : (o.pace ?? "realtime");
  const args = ffmpegArgs(input, o);
  const child: ChildProcessByStdio<null, Readable, Readable> = spawn(ffmpegPath(), args, {
    stdio: ["ignore", "pipe", "pipe"],
  });
  log.debug({ input: input.label, pid: child.pid }, "ffmpeg started");

  let closing = false;
  const stderrTail: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  const failure = (what: string) =>
    new GlanceError(
      "CAMERA_UNAVAILABLE",
      `${input.live ? "Camera" : "Replay of"} ${input.label} failed (${what}): check that ${input.live ? "the camera is connected and reachable" : "the file is a readable video"}. ffmpeg said: ${stderrTail.slice(-3).join(" | ")}`,
    );

  const format = new Promise<OutputFormat>((resolve, reject) => {
    let partial = "";
    let output = false;
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      const lines = (partial + chunk).split(/\r?\n|\r/);
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (!line.trim()) continue;
        // a camera URL may carry credentials: never keep them in a message that gets logged
        stderrTail.push(line.trim().replace(/(\w+:\/\/)[^/@\s]+@/g, "$1***@"));
        if (stderrTail.length > STDERR_LINES_KEPT) stderrTail.shift();
        if (line.startsWith("Output #")) output = true;
        const parsed = output ? parseOutputStream(line) : undefined;
        if (parsed) resolve(parsed);
      }
    });
    child.once("error", (cause) =>
      reject(new GlanceError("CAMERA_UNAVAILABLE", `Could not start ffmpeg: ${cause.message}`)),
    );
    void exited.then(({ code, signal }) =>
      reject(failure(`ffmpeg exited with ${code ?? signal} before the first frame`)),
    );
  });
  // the iterator reports the failure; an unobserved rejection must not crash the process
  format.catch(() => {});

  async function* frames(): AsyncGenerator<Frame> {
    const { width, height, fps } = await format;
    const size = width * height * 3;
    const start = Date.now();
    let buf = Buffer.allocUnsafe(size);
    let filled = 0;
    let index = 0;
    try {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        let offset = 0;
        while (offset < chunk.length) {
          const n = Math.min(size - filled, chunk.length - offset);
          chunk.copy(buf, filled, offset, offset + n);
          filled += n;
          offset += n;
          if (filled < size) continue;
          // every-frame time is video time, so intervals behave the same however fast the machine decodes
          const ts = pace === "realtime" ? Date.now() : Math.round(start + (index * 1000) / fps);
          yield { image: { data: buf, width, height }, ts, index: index++ };
          buf = Buffer.allocUnsafe(size);
          filled = 0;
        }
      }
      const { code, signal } = await exited;
      if (!closing && code !== 0) throw failure(`ffmpeg exited with ${code ?? signal}`);
    } finally {
      if (!closing) kill();
    }
  }

  function kill() {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const hard = setTimeout(() => child.kill("SIGKILL"), KILL_GRACE_MS);
    hard.unref();
    void exited.then(() => clearTimeout(hard));
  }

  const iterable = pace === "realtime" ? latest(frames()) : { dropped: 0, [Symbol.asyncIterator]: frames };

  return {
    get dropped() {
      return iterable.dropped;
    },
    get pid() {
      return child.pid;
    },
    [Symbol.asyncIterator]: () => iterable[Symbol.asyncIterator](),
    async close() {
      closing = true;
      kill();
      await exited;
      log.debug({ pid: child.pid }, "ffmpeg reaped");
    },
  };
}
