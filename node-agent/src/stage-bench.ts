import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { cosine, type DetectedFace, FacePipeline, type RawImage } from "@glance/models";
import { encodeEmbedding, generateSealingKeyPair, generateSigningKeyPair, TemplateSealer } from "@glance/shared";
import { pino } from "pino";
import { openReplay } from "./sources/replay.ts";

export interface StageBenchOptions {
  video: string;
  width: number;
  /** frames taken from the start of the video */
  frames: number;
  modelsDir?: string;
  detector?: string;
  /** embedders to compare; those that do not load are reported, not fatal */
  embedders: string[];
}

export interface LatencySummary {
  n: number;
  p50: number;
  p95: number;
  mean: number;
}

export interface StageBenchResult {
  cpu: string;
  cores: number;
  loadAverage: number;
  video: string;
  width: number;
  frames: number;
  faces: number;
  /** per stage, ms */
  stages: Record<string, LatencySummary>;
  embedders: {
    name: string;
    loaded: boolean;
    error?: string;
    /** align + embed per face, ms */
    embed?: LatencySummary;
    /** cosine of this embedder's vector with the first embedder's, same face (1 = identical) */
    agreement?: { mean: number; min: number };
  }[];
}

function summarise(values: number[]): LatencySummary {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
  return {
    n: values.length,
    p50: at(0.5),
    p95: at(0.95),
    mean: round(values.reduce((a, b) => a + b, 0) / Math.max(1, values.length)),
  };
}

const round = (x: number) => Math.round(x * 100) / 100;
const round4 = (x: number) => Math.round(x * 10_000) / 10_000;

async function timed<T>(into: number[], work: () => Promise<T> | T): Promise<T> {
  const start = performance.now();
  const out = await work();
  into.push(performance.now() - start);
  return out;
}

/**
 * Per-stage latency on this machine's CPU, one model call at a time (as the node runs them): decode, detect,
 * quality, align + embed for each embedder (fp32 and int8 when both are installed), seal. Embedders see the
 * same faces, so their agreement (cosine) says what quantisation costs in the embedding itself.
 */
export async function benchStages(o: StageBenchOptions): Promise<StageBenchResult> {
  const log = pino({ level: "silent" });
  const frames: RawImage[] = [];
  const decode: number[] = [];
  const source = openReplay({ path: o.video, width: o.width, pace: "every-frame" }, log);
  let last = performance.now();
  for await (const f of source) {
    decode.push(performance.now() - last);
    frames.push(f.image);
    if (frames.length >= o.frames) break;
    last = performance.now();
  }
  await source.close();

  const [first, ...rest] = o.embedders;
  const base = await FacePipeline.load({ modelsDir: o.modelsDir, detector: o.detector, embedder: first });
  const detect: number[] = [];
  const quality: number[] = [];
  const faces: { image: RawImage; face: DetectedFace }[] = [];
  for (const image of frames) {
    const found = await timed(detect, () => base.detect(image));
    for (const face of found) {
      await timed(quality, () => base.quality(image, face));
      faces.push({ image, face });
    }
  }

  const sealing = generateSealingKeyPair();
  const signing = generateSigningKeyPair();
  // as the agent seals: one session for the run (its first template pays the session's keygen, agreement, signature)
  const sealer = new TemplateSealer({ nodeId: "bench", signingKey: signing });
  const sealMs: number[] = [];
  const embedders: StageBenchResult["embedders"] = [];
  const reference: Float32Array[] = [];
  for (const name of [first, ...rest]) {
    let engine: FacePipeline;
    try {
      engine =
        name === first
          ? base
          : await FacePipeline.load({ modelsDir: o.modelsDir, detector: o.detector, embedder: name });
    } catch (err) {
      embedders.push({ name: name ?? "default", loaded: false, error: (err as Error).message.slice(0, 300) });
      continue;
    }
    const embedMs: number[] = [];
    const agreement: number[] = [];
    for (const [i, { image, face }] of faces.entries()) {
      const v = await timed(embedMs, () => engine.embed(image, face));
      if (name === first) {
        reference.push(v);
        const header = { v: 2, nodeId: "bench", seq: i, ts: Date.now(), space: engine.space, kid: "bench" };
        await timed(sealMs, () => sealer.seal(encodeEmbedding(v), header, sealing.publicKey));
      } else {
        agreement.push(cosine(v, reference[i] as Float32Array));
      }
    }
    embedders.push({
      name: `${engine.embedder.name}@${engine.embedder.version}`,
      loaded: true,
      embed: summarise(embedMs),
      agreement:
        name === first
          ? undefined
          : {
              mean: round4(agreement.reduce((a, b) => a + b, 0) / Math.max(1, agreement.length)),
              min: round4(Math.min(...agreement)),
            },
    });
    if (engine !== base) await engine.close();
  }
  await base.close();

  return {
    cpu: cpus()[0]?.model ?? "unknown CPU",
    cores: cpus().length,
    loadAverage: round(loadavg()[0] ?? 0),
    video: o.video,
    width: o.width,
    frames: frames.length,
    faces: faces.length,
    stages: {
      decode: summarise(decode),
      detect: summarise(detect),
      quality: summarise(quality),
      seal: summarise(sealMs),
    },
    embedders,
  };
}

/** The result as a table. */
export function formatStageBench(r: StageBenchResult): string {
  const rows = [
    `${r.frames} frames at ${r.width} px, ${r.faces} faces; ${r.cores} × ${r.cpu}, load average ${r.loadAverage}`,
    "stage                          n      p50 ms   p95 ms   mean ms",
  ];
  const row = (name: string, s: LatencySummary, extra = "") =>
    `${name.padEnd(28)} ${String(s.n).padStart(4)} ${s.p50.toFixed(2).padStart(9)} ${s.p95.toFixed(2).padStart(8)} ${s.mean.toFixed(2).padStart(9)}${extra}`;
  for (const [name, s] of Object.entries(r.stages)) if (name !== "seal") rows.push(row(name, s));
  for (const e of r.embedders) {
    if (!e.loaded || !e.embed) rows.push(`embed ${e.name.padEnd(22)} not available: ${e.error}`);
    else
      rows.push(
        row(
          `embed ${e.name}`,
          e.embed,
          e.agreement ? `   cosine to first: mean ${e.agreement.mean}, min ${e.agreement.min}` : "",
        ),
      );
  }
  if (r.stages.seal) rows.push(row("seal", r.stages.seal));
  return rows.join("\n");
}
