import { GlanceError } from "@glance/shared";
import sharp from "sharp";

/** An 8-bit RGB image, channels interleaved, rows top to bottom. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * Decodes a JPEG/PNG/WebP (buffer or file path) into RGB: applies the EXIF orientation, flattens alpha onto white
 * and expands greyscale, so that every caller sees the same pixel layout.
 */
export async function decodeImage(input: Buffer | string): Promise<RawImage> {
  try {
    const { data, info } = await sharp(input, { failOn: "error" })
      .rotate()
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    return toRgb(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.width, info.height, info.channels);
  } catch (cause) {
    const what = typeof input === "string" ? input : `${input.byteLength}-byte buffer`;
    throw new GlanceError(
      "IMAGE_UNREADABLE",
      `Could not decode the image (${what}): ${(cause as Error).message}. Send a complete JPEG or PNG.`,
      typeof input === "string" ? { path: input } : { bytes: input.byteLength },
      { cause },
    );
  }
}

/** RGB from 1 (grey), 2 (grey+alpha), 3 or 4 (RGBA) channel raw pixels; alpha is dropped. */
export function toRgb(src: Uint8Array, width: number, height: number, channels: number): RawImage {
  if (channels === 3) return { data: src, width, height };
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const s = i * channels;
    const g = src[s] ?? 0;
    out[i * 3] = g;
    out[i * 3 + 1] = channels >= 3 ? (src[s + 1] ?? 0) : g;
    out[i * 3 + 2] = channels >= 3 ? (src[s + 2] ?? 0) : g;
  }
  return { data: out, width, height };
}
