/**
 * Model bench (not a timed test): single-inference latency per model at 1 and 2 intra-op threads, and
 * detect + align + embed per face through FacePipeline (fp32 vs int8 embedder) against the same frames through
 * @vladmandic/human. Configurations are interleaved round by round so that load from anything else on the
 * machine falls on all of them alike; medians and p95 are over all rounds.
 */
import { mkdir, writeFile } from "node:fs/promises";
import * as os from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ModelManifest } from "@glance/shared";
import * as ort from "onnxruntime-node";
import { cropToTensor, loadLfw } from "../eval/lfw.ts";
import { letterbox } from "../inference/blazeface.ts";
import { decodeImage, type RawImage } from "../inference/image.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { FacePipeline } from "../inference/pipeline.ts";
import { sessionOptions } from "../inference/session.ts";
import { type HumanPeer, loadHumanPeer } from "./peer-human.ts";

export const benchResultsDir = resolve(fileURLToPath(import.meta.url), "../../../../bench-results");
const peopleDir = resolve(fileURLToPath(import.meta.url), "../../../../../shared/datasets/people");

export interface Stats {
  median: number;
  p95: number;
  runs: number;
}

export function stats(ms: readonly number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  return { median: round(q(0.5)), p95: round(q(0.95)), runs: s.length };
}
const round = (x: number) => Math.round(x * 100) / 100;

export interface BenchOptions {
  models: string[];
  /** embedders for the end-to-end rows, fp32 first */
  pipelines: string[];
  detector: string;
  threads: number[];
  rounds: number;
  perRound: number;
  frames: string[];
  peer: boolean;
  onProgress?: (done: number, total: number, what: string) => void;
}

export const defaultBenchOptions: BenchOptions = {
  // the shipped models: the default detector and embedder (dlib-resnet-int8) beside its fp32 source
  models: ["blazeface-back", "blazeface-front", "dlib-resnet", "dlib-resnet-int8"],
  pipelines: ["dlib-resnet", "dlib-resnet-int8"],
  detector: "blazeface-back",
  threads: [1, 2],
  rounds: 10,
  perRound: 5,
  frames: ["scenes/barack_obama-480p.jpg", "scenes/two-faces.jpg"],
  peer: true,
};

export interface ModelRow {
  model: string;
  precision: string;
  threads: number;
  stats: Stats;
}

export interface PipelineRow {
  name: string;
  backend: string;
  threads: number | null;
  faces: number;
  /** per face: total time over a frame divided by the faces found in it */
  perFace: Stats;
}

export interface BenchResult {
  date: string;
  machine: string;
  loadAverage: number[];
  models: ModelRow[];
  pipelines: PipelineRow[];
}

type Job = { key: string; run: () => Promise<number> };

async function modelJob(manifest: ModelManifest, modelPath: string, threads: number): Promise<Job> {
  // the options the pipeline runs with, so that these rows explain the pipeline rows
  const session = await ort.InferenceSession.create(modelPath, sessionOptions(threads));
  const input = manifest.inputs[0];
  if (!input) throw new Error(`${manifest.name} has no input`);
  const shape = input.shape.map((d) => (typeof d === "number" ? d : 1));
  let data: Float32Array;
  if (manifest.task === "detector") {
    const img = await decodeImage(join(peopleDir, "scenes/barack_obama-480p.jpg"));
    const size = manifest.preprocessing.width;
    data = (await letterbox(img, size, manifest.preprocessing.mean[0] ?? 127.5, manifest.preprocessing.std[0] ?? 127.5))
      .tensor;
  } else {
    data = await cropToTensor(loadLfw().images[0]?.file ?? "", manifest.preprocessing);
  }
  const feeds = { [input.name]: new ort.Tensor("float32", data, shape) };
  return {
    key: `${manifest.name}|${threads}`,
    run: async () => {
      const t = performance.now();
      await session.run(feeds);
      return performance.now() - t;
    },
  };
}

async function pipelineJob(p: FacePipeline, frames: RawImage[], key: string): Promise<Job & { faces: number }> {
  let faces = 0;
  for (const f of frames) faces += (await p.detect(f)).length;
  return {
    key,
    faces,
    run: async () => {
      const t = performance.now();
      let n = 0;
      for (const f of frames) {
        for (const face of await p.detect(f)) {
          await p.embed(f, face);
          n++;
        }
      }
      return (performance.now() - t) / Math.max(1, n);
    },
  };
}

function peerJob(peer: HumanPeer, frames: RawImage[]): Job {
  return {
    key: "peer",
    run: async () => {
      const t = performance.now();
      let n = 0;
      for (const f of frames) n += await peer.run(f);
      return (performance.now() - t) / Math.max(1, n);
    },
  };
}

export async function runBench(opts: BenchOptions = defaultBenchOptions): Promise<BenchResult> {
  const dir = defaultModelsDir();
  const jobs: Job[] = [];
  const models: Omit<ModelRow, "stats">[] = [];
  const closers: (() => Promise<void> | void)[] = [];
  for (const name of opts.models) {
    const { manifest, modelPath } = await loadManifest(dir, name);
    for (const threads of opts.threads) {
      jobs.push(await modelJob(manifest, modelPath, threads));
      models.push({ model: `${manifest.name}@${manifest.version}`, precision: manifest.precision, threads });
    }
  }
  const frames = await Promise.all(opts.frames.map((f) => decodeImage(join(peopleDir, f))));
  const pipelines: Omit<PipelineRow, "perFace">[] = [];
  for (const embedder of opts.pipelines) {
    for (const threads of opts.threads) {
      const p = await FacePipeline.load({ detector: opts.detector, embedder, threads });
      closers.push(() => p.close());
      const job = await pipelineJob(p, frames, `pipe|${embedder}|${threads}`);
      jobs.push(job);
      pipelines.push({
        name: `glance ${p.detector.name} (${p.detector.precision}) + ${p.embedder.name} (${p.embedder.precision})`,
        backend: `onnxruntime-node ${threads} thread${threads > 1 ? "s" : ""}`,
        threads,
        faces: job.faces,
      });
    }
  }
  if (opts.peer) {
    const peer = await loadHumanPeer();
    closers.push(() => peer.close());
    let faces = 0;
    for (const f of frames) faces += await peer.run(f);
    jobs.push(peerJob(peer, frames));
    pipelines.push({ name: peer.name, backend: peer.backend, threads: null, faces });
  }

  // warm-up, then interleaved rounds
  const samples = new Map<string, number[]>();
  for (const j of jobs) for (let i = 0; i < 2; i++) await j.run();
  const total = opts.rounds * jobs.length;
  let done = 0;
  for (let r = 0; r < opts.rounds; r++) {
    for (const j of jobs) {
      const list = samples.get(j.key) ?? [];
      // the peer is ~100× slower: fewer runs per round keep the bench short without starving it of samples
      const n = j.key === "peer" ? Math.max(1, Math.ceil(opts.perRound / 5)) : opts.perRound;
      for (let i = 0; i < n; i++) list.push(await j.run());
      samples.set(j.key, list);
      opts.onProgress?.(++done, total, j.key);
    }
  }
  for (const c of closers) await c();

  const modelRows: ModelRow[] = models.map((m, i) => ({ ...m, stats: stats(samples.get(jobs[i]?.key ?? "") ?? []) }));
  const pipeRows: PipelineRow[] = pipelines.map((p, i) => ({
    ...p,
    perFace: stats(samples.get(jobs[models.length + i]?.key ?? "") ?? []),
  }));
  return {
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model ?? "cpu"} × ${os.cpus().length}, ${os.platform()}/${os.arch()}, node ${process.version}, onnxruntime-node ${ort.env.versions.common}`,
    loadAverage: os.loadavg().map((x) => round(x)),
    models: modelRows,
    pipelines: pipeRows,
  };
}

export function formatBench(r: BenchResult): string {
  const lines: string[] = [];
  lines.push(`Model bench ${r.date} — ${r.machine}; load average ${r.loadAverage.join(" ")}`, "");
  lines.push("Single inference (ms)", "");
  lines.push("| model | precision | threads | median | p95 | vs fp32 (median) |", "|---|---|---|---|---|---|");
  for (const m of r.models) {
    const base = r.models.find(
      (x) => x.precision === "fp32" && x.threads === m.threads && m.model.replace("-int8", "") === x.model,
    );
    const ratio = base && m !== base ? `${(base.stats.median / m.stats.median).toFixed(2)}× faster` : "";
    lines.push(`| ${m.model} | ${m.precision} | ${m.threads} | ${m.stats.median} | ${m.stats.p95} | ${ratio} |`);
  }
  lines.push("", "Detect + align + embed, per face (ms)", "");
  lines.push("| pipeline | backend | faces/round | median | p95 | peer ÷ this (median) |", "|---|---|---|---|---|---|");
  const peer = r.pipelines.find((p) => p.threads === null);
  for (const p of r.pipelines) {
    const ratio = peer && p !== peer ? `${(peer.perFace.median / p.perFace.median).toFixed(1)}×` : "";
    lines.push(`| ${p.name} | ${p.backend} | ${p.faces} | ${p.perFace.median} | ${p.perFace.p95} | ${ratio} |`);
  }
  return lines.join("\n");
}

export async function writeBench(r: BenchResult): Promise<string> {
  await mkdir(benchResultsDir, { recursive: true });
  const file = join(benchResultsDir, `models-${r.date.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}
