/**
 * `npm run models:eval`: fp32 vs int8 embedders side by side.
 *  - LFW 1:1 verification under three input protocols:
 *      pipeline — each crop padded and re-detected/aligned like a camera frame (the path the thresholds come from),
 *      template — the crop mapped onto the ArcFace template by a fixed affine (embedder only, no detector),
 *      stretch  — the crop resized 100→112 (the naive protocol; kept to show what misalignment costs);
 *  - detection on people/scenes (faces per file, landmarks inside the box, by resolution);
 *  - identification people/enroll → people/scenes at the embedder's own FAR 1e-3 threshold;
 *  - a fairness section that says what the data can and cannot support.
 * Writes eval.json, eval.md and roc.png beside each evaluated model's manifest.
 */
import { readFile, writeFile } from "node:fs/promises";
import * as os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { lfwScores } from "../calibrate.ts";
import { decodeImage } from "../inference/image.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { FacePipeline } from "../inference/pipeline.ts";
import { type CropPlacement, loadLfw } from "./lfw.ts";
import { type VerificationMetrics, verificationMetrics } from "./metrics.ts";
import { rocPng } from "./roc-chart.ts";
import { embedAll, scorePairs } from "./verification.ts";

export const peopleDir = resolve(fileURLToPath(import.meta.url), "../../../../../shared/datasets/people");

export interface EvalOptions {
  modelsDir?: string;
  detector?: string;
  /** embedder names (name or name@version) to compare, e.g. ["fr-feature", "fr-feature-int8"] */
  embedders: string[];
  threads?: number;
  onStage?: (stage: string) => void;
}

export type Verification = Omit<VerificationMetrics, "roc">;

export interface SceneDetection {
  file: string;
  width: number;
  height: number;
  expectedFaces: number | null;
  found: number;
  scores: number[];
  /** share of landmarks that fall inside their face's box */
  landmarksInBox: number;
  ms: number;
}

export interface SceneIdentification {
  file: string;
  expected: string[];
  faces: { best: string; score: number; accepted: boolean }[];
  /** null where the file has no identity label */
  correct: boolean | null;
}

export interface EmbedderEval {
  model: string;
  precision: string;
  dir: string;
  verification: Record<CropPlacement | "pipeline", Verification>;
  undetectedLfw: number;
  identification: {
    threshold: number;
    far: "1e-3";
    gallery: Record<string, number>;
    scenes: SceneIdentification[];
    labelledCorrect: number;
    labelledTotal: number;
  };
}

export interface EvalReport {
  date: string;
  machine: string;
  detector: string;
  embedders: EmbedderEval[];
  detection: SceneDetection[];
  fairness: string;
  notes: string[];
}

const FAIRNESS =
  "Not measurable with this data. The LFW subset (70 people) and people/ (6 enrolled people) carry no group labels " +
  "(age, sex, skin tone, ...), and inventing them from the photos would be guesswork. A per-group TAR at the chosen " +
  "threshold needs a labelled set with hundreds of genuine pairs per group (e.g. RFW or FairFace-linked pairs, " +
  "licences permitting); until then no claim about group parity can be made, either way.";

function strip(m: VerificationMetrics): Verification {
  const { roc: _roc, ...rest } = m;
  return rest;
}

interface Labels {
  enroll: Record<string, string[]>;
  scenes: Record<string, string[]>;
}

function expectedFaces(labels: string[]): number | null {
  if (labels.length === 0) return null;
  const first = labels[0] ?? "";
  if (/^two faces/.test(first)) return 2;
  if (/^one face/.test(first)) return 1;
  return labels.length;
}

/** identity labels only: "barack_obama (partly out of frame)" → barack_obama; descriptions → none */
function expectedIdentities(labels: string[]): string[] {
  return labels.map((l) => /^([a-z_]+)(\s|$)/.exec(l)?.[1]).filter((x): x is string => !!x && x.includes("_"));
}

export async function detectScenes(pipeline: FacePipeline, labels: Labels): Promise<SceneDetection[]> {
  const out: SceneDetection[] = [];
  for (const [rel, lab] of Object.entries(labels.scenes)) {
    const img = await decodeImage(join(peopleDir, rel));
    const t0 = performance.now();
    const faces = await pipeline.detect(img);
    const ms = performance.now() - t0;
    let inside = 0;
    let total = 0;
    for (const f of faces) {
      for (const [x, y] of f.landmarks) {
        total++;
        const b = f.box;
        if (x >= b.x && x <= b.x + b.width && y >= b.y && y <= b.y + b.height) inside++;
      }
    }
    out.push({
      file: rel,
      width: img.width,
      height: img.height,
      expectedFaces: expectedFaces(lab),
      found: faces.length,
      scores: faces.map((f) => Math.round(f.score * 1000) / 1000),
      landmarksInBox: total ? inside / total : 1,
      ms: Math.round(ms * 10) / 10,
    });
  }
  return out;
}

export async function identifyScenes(pipeline: FacePipeline, labels: Labels): Promise<EmbedderEval["identification"]> {
  const threshold = pipeline.threshold("1e-3");
  const gallery = new Map<string, Float32Array[]>();
  for (const [person, files] of Object.entries(labels.enroll)) {
    for (const rel of files) {
      const faces = await pipeline.process(await decodeImage(join(peopleDir, rel)));
      // the enrolment photo's subject: the largest face
      const main = faces.sort((a, b) => b.face.box.width * b.face.box.height - a.face.box.width * a.face.box.height)[0];
      if (main) gallery.set(person, [...(gallery.get(person) ?? []), main.embedding]);
    }
  }
  const scenes: SceneIdentification[] = [];
  for (const [rel, lab] of Object.entries(labels.scenes)) {
    const faces = await pipeline.process(await decodeImage(join(peopleDir, rel)));
    const matches = faces.map((f) => {
      let best = "";
      let score = -1;
      for (const [person, embs] of gallery) {
        for (const e of embs) {
          let dot = 0;
          for (let i = 0; i < e.length; i++) dot += (e[i] ?? 0) * (f.embedding[i] ?? 0);
          if (dot > score) [best, score] = [person, dot];
        }
      }
      return { best, score: Math.round(score * 1e4) / 1e4, accepted: score > threshold };
    });
    const expected = expectedIdentities(lab);
    const accepted = matches.filter((m) => m.accepted).map((m) => m.best);
    scenes.push({
      file: rel,
      expected,
      faces: matches,
      correct: expected.length
        ? expected.every((p) => accepted.includes(p)) && accepted.every((p) => expected.includes(p))
        : null,
    });
  }
  const labelled = scenes.filter((s) => s.correct !== null);
  return {
    threshold,
    far: "1e-3",
    gallery: Object.fromEntries([...gallery].map(([k, v]) => [k, v.length])),
    scenes,
    labelledCorrect: labelled.filter((s) => s.correct).length,
    labelledTotal: labelled.length,
  };
}

export async function evaluate(opts: EvalOptions): Promise<{ report: EvalReport; png: Buffer; markdown: string }> {
  const modelsDir = opts.modelsDir ?? defaultModelsDir();
  const stage = opts.onStage ?? (() => {});
  const labels = JSON.parse(await readFile(join(peopleDir, "labels.json"), "utf8")) as Labels;
  const set = loadLfw();
  const embedders: EmbedderEval[] = [];
  const rocs: { label: string; roc: VerificationMetrics["roc"] }[] = [];
  let detection: SceneDetection[] = [];
  let detectorName = "";
  for (const name of opts.embedders) {
    const { manifest, modelPath } = await loadManifest(modelsDir, name);
    const label = `${manifest.name}@${manifest.version} (${manifest.precision})`;
    const pipeline = await FacePipeline.load({
      modelsDir,
      embedder: `${manifest.name}@${manifest.version}`,
      ...(opts.detector ? { detector: opts.detector } : {}),
      threads: opts.threads ?? 1,
    });
    try {
      detectorName = `${pipeline.detector.name}@${pipeline.detector.version} (${pipeline.detector.precision})`;
      stage(`${label}: LFW through detect → align → embed`);
      const ps = await lfwScores(pipeline);
      const pipelineMetrics = verificationMetrics(ps.genuine, ps.impostor);
      rocs.push({ label, roc: pipelineMetrics.roc });
      const verification = { pipeline: strip(pipelineMetrics) } as EmbedderEval["verification"];
      for (const placement of ["arcface", "stretch"] as const) {
        stage(`${label}: LFW, ${placement} crops`);
        const embs = await embedAll(
          {
            model: modelPath,
            input: manifest.inputs[0]?.name ?? "input",
            output: manifest.outputs[0]?.name ?? "output",
            preprocessing: manifest.preprocessing,
          },
          set.images.map((i) => i.file),
          undefined,
          placement,
        );
        const s = scorePairs(set, embs);
        verification[placement] = strip(verificationMetrics(s.genuine, s.impostor));
      }
      if (detection.length === 0) {
        stage(`${detectorName}: people/scenes detection`);
        detection = await detectScenes(pipeline, labels);
      }
      stage(`${label}: enroll → scenes identification`);
      const identification = await identifyScenes(pipeline, labels);
      embedders.push({
        model: label,
        precision: manifest.precision,
        dir: dirname(modelPath),
        verification,
        undetectedLfw: ps.undetected,
        identification,
      });
    } finally {
      await pipeline.close();
    }
  }
  const report: EvalReport = {
    date: new Date().toISOString(),
    machine: machineLine(),
    detector: detectorName,
    embedders,
    detection,
    fairness: FAIRNESS,
    notes: [
      `LFW: ${set.people} people, ${set.pairs.filter((p) => p.genuine).length} genuine and ${set.pairs.filter((p) => !p.genuine).length} impostor photo pairs (from ${(set.people * (set.people - 1)) / 2} person pairs, so impostor pairs are not independent).`,
      "FAR 1e-3 rests on the ~9 highest impostor scores: a rough figure. FAR 1e-4 is NOT supported by this sample (under one expected false accept); its row is shown for completeness and must not be used.",
      "Accuracy is balanced: max over thresholds of (TAR + TRR) / 2, since impostors outnumber genuines 138:1.",
      "A pair is accepted when cosine > threshold.",
      "LFW is celebrity photos and people/ is 6 public figures: neither says how the models do on store cameras.",
    ],
  };
  const impostors = set.pairs.filter((p) => !p.genuine).length;
  const png = await rocPng(rocs, {
    text: "LFW verification through detect → align → embed",
    subtitle: `${set.pairs.length - impostors} genuine / ${impostors} impostor pairs: left of 1e-3 the curve rests on fewer than 10 impostor pairs`,
  });
  return { report, png, markdown: toMarkdown(report) };
}

function machineLine(): string {
  return `${os.cpus()[0]?.model ?? "cpu"} × ${os.cpus().length}, ${os.platform()}/${os.arch()}, node ${process.version}`;
}

const f4 = (x: number) => (Number.isFinite(x) ? x.toFixed(4) : String(x));
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export function toMarkdown(r: EvalReport): string {
  const lines: string[] = [];
  lines.push(`# Model evaluation, ${r.date.slice(0, 10)}`, "", `Machine: ${r.machine}. Detector: ${r.detector}.`, "");
  lines.push("## LFW 1:1 verification", "");
  lines.push(
    "| embedder | protocol | AUC | balanced acc. | at threshold | TAR@FAR 1e-2 (thr) | TAR@FAR 1e-3 (thr) | TAR@FAR 1e-4 |",
    "|---|---|---|---|---|---|---|---|",
  );
  for (const e of r.embedders) {
    for (const [protocol, v] of Object.entries(e.verification)) {
      const t = (far: number) => v.tarAtFar.find((x) => x.far === far);
      const cell = (far: number) => {
        const x = t(far);
        return x ? `${pct(x.tar)} (${f4(x.threshold)}, ${x.impostorsAccepted} imp.)` : "";
      };
      const label = protocol === "arcface" ? "template" : protocol;
      lines.push(
        `| ${e.model} | ${label} | ${f4(v.auc)} | ${pct(v.bestBalancedAccuracy)} | ${f4(v.bestThreshold)} | ${cell(1e-2)} | ${cell(1e-3)} | unsupported (${v.impostorPairs} impostor pairs) |`,
      );
    }
  }
  lines.push("", "![ROC](roc.png)", "");
  lines.push("## Detection on people/scenes", "");
  lines.push(
    "| file | resolution | expected faces | found | scores | landmarks in box | ms |",
    "|---|---|---|---|---|---|---|",
  );
  for (const d of r.detection) {
    lines.push(
      `| ${d.file} | ${d.width}×${d.height} | ${d.expectedFaces ?? "?"} | ${d.found} | ${d.scores.join(", ")} | ${pct(d.landmarksInBox)} | ${d.ms} |`,
    );
  }
  lines.push("", "## Identification people/enroll → people/scenes (accept at the embedder's FAR 1e-3 threshold)", "");
  lines.push(`| file | expected | ${r.embedders.map((e) => e.model).join(" | ")} |`);
  lines.push(`|---|---|${r.embedders.map(() => "---").join("|")}|`);
  const files = r.embedders[0]?.identification.scenes.map((s) => s.file) ?? [];
  for (const file of files) {
    const cells = r.embedders.map((e) => {
      const s = e.identification.scenes.find((x) => x.file === file);
      if (!s) return "";
      const faces =
        s.faces.map((f) => `${f.accepted ? f.best : `(${f.best})`} ${f.score.toFixed(3)}`).join("; ") || "no face";
      return `${faces}${s.correct === null ? "" : s.correct ? " ✓" : " ✗"}`;
    });
    const expected =
      r.embedders[0]?.identification.scenes.find((x) => x.file === file)?.expected.join(", ") || "unlabelled";
    lines.push(`| ${file} | ${expected} | ${cells.join(" | ")} |`);
  }
  lines.push("");
  for (const e of r.embedders) {
    lines.push(
      `- ${e.model}: threshold ${f4(e.identification.threshold)}, ${e.identification.labelledCorrect}/${e.identification.labelledTotal} labelled scenes right; names in parentheses are best matches below the threshold.`,
    );
  }
  lines.push("", "## Fairness", "", r.fairness, "", "## Notes", "", ...r.notes.map((n) => `- ${n}`), "");
  return lines.join("\n");
}

export async function writeReports(out: { report: EvalReport; png: Buffer; markdown: string }): Promise<string[]> {
  const dirs = out.report.embedders.map((e) => e.dir);
  for (const dir of dirs) {
    await writeFile(join(dir, "eval.json"), `${JSON.stringify(out.report, null, 2)}\n`);
    await writeFile(join(dir, "eval.md"), out.markdown);
    await writeFile(join(dir, "roc.png"), out.png);
  }
  return dirs;
}
