import { readFileSync } from "node:fs";
import type { ModelManifest } from "@glance/shared";

const THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp";

/** SoC temperature in °C (Raspberry Pi, Jetson: thermal_zone0 in millidegrees), or undefined where unreadable. */
export function cpuTemperatureC(file = THERMAL_ZONE): number | undefined {
  try {
    const milli = Number(readFileSync(file, "utf8").trim());
    return Number.isFinite(milli) ? Math.round(milli / 100) / 10 : undefined;
  } catch {
    return undefined;
  }
}

/** `name@version signed by <keyId>` for the status message's `models` record. */
export function modelLabel(m: ModelManifest): string {
  return `${m.name}@${m.version} signed by ${m.signature?.keyId ?? "nobody"}`;
}

/**
 * Rates over a sliding window of totals: frames per second since the last heartbeat, faces (new tracks) per hour
 * over the last hour (or since start when younger).
 */
export class Rates {
  readonly #samples: { at: number; frames: number; tracks: number }[] = [];

  constructor(now = Date.now()) {
    this.#samples.push({ at: now, frames: 0, tracks: 0 });
  }

  sample(frames: number, tracks: number, now = Date.now()): { fps: number; facesPerHour: number } {
    const previous = this.#samples.at(-1) as { at: number; frames: number; tracks: number };
    this.#samples.push({ at: now, frames, tracks });
    while (this.#samples.length > 2 && now - (this.#samples[1] as { at: number }).at >= 3_600_000)
      this.#samples.shift();
    const oldest = this.#samples[0] as { at: number; tracks: number };
    const seconds = (now - previous.at) / 1000;
    const hours = (now - oldest.at) / 3_600_000;
    return {
      fps: seconds > 0 ? Math.round(((frames - previous.frames) / seconds) * 10) / 10 : 0,
      facesPerHour: hours > 0 ? Math.round((tracks - oldest.tracks) / hours) : 0,
    };
  }
}
