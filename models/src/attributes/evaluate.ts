/**
 * Sanity evaluation of the attributes model on ../shared/datasets/people: 6 known adults (labels.json says who),
 * 11 enrolment photos. This is NOT an accuracy measurement: there is no labelled age/gender/emotion set here, six
 * celebrities are no sample, and the only "truth" is that all six are adults and what their public profiles say.
 *
 *   tsx models/src/attributes/evaluate.ts [--models-dir DIR] [--name attributes] [--json]
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { decodeImage } from "../inference/image.ts";
import { FacePipeline } from "../inference/pipeline.ts";
import { AttributesModel, type FaceAttributes, summariseAttributes } from "./attributes.ts";

export const PEOPLE = resolve(import.meta.dirname, "../../../../shared/datasets/people");

export interface PhotoResult {
  person: string;
  photo: string;
  ageYears: number;
  ageBand: string;
  ageBandP: number;
  pMale: number;
  emotion: string;
  emotionP: number;
}

/** the largest face of each enrolment photo, through blazeface-back and the attributes model */
export async function evaluatePeople(
  opts: { modelsDir?: string; name?: string; pipeline?: FacePipeline; model?: AttributesModel } = {},
): Promise<PhotoResult[]> {
  const labels = JSON.parse(await readFile(join(PEOPLE, "labels.json"), "utf8")) as {
    enroll: Record<string, string[]>;
  };
  const pipeline = opts.pipeline ?? (await FacePipeline.load({ modelsDir: opts.modelsDir }));
  const model = opts.model ?? (await AttributesModel.load({ modelsDir: opts.modelsDir, name: opts.name }));
  const names = pipeline.detector.decoding.landmarkNames as string[];
  const out: PhotoResult[] = [];
  try {
    for (const [person, photos] of Object.entries(labels.enroll)) {
      for (const photo of photos) {
        const img = await decodeImage(join(PEOPLE, photo));
        const faces = await pipeline.detect(img);
        const face = faces.sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height)[0];
        if (!face) continue;
        const a: FaceAttributes = await model.analyse(img, face, names);
        const s = summariseAttributes([a]);
        if (!s) continue;
        out.push({
          person,
          photo,
          ageYears: Math.round(a.ageYears * 10) / 10,
          ageBand: s.ageBand,
          ageBandP: s.ageBandConfidence,
          pMale: Math.round(a.pMale * 100) / 100,
          emotion: s.emotion,
          emotionP: s.emotionConfidence,
        });
      }
    }
  } finally {
    if (!opts.pipeline) await pipeline.close();
    if (!opts.model) await model.close();
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: { "models-dir": { type: "string" }, name: { type: "string" }, json: { type: "boolean" } },
  });
  const rows = await evaluatePeople({ modelsDir: values["models-dir"], name: values.name });
  if (values.json) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log("person               photo                          age  band   P(band) P(male) emotion   P");
    for (const r of rows) {
      console.log(
        `${r.person.padEnd(20)} ${r.photo.padEnd(30)} ${r.ageYears.toFixed(1).padStart(4)} ${r.ageBand.padEnd(6)} ${r.ageBandP.toFixed(2).padStart(7)} ${r.pMale.toFixed(2).padStart(7)} ${r.emotion.padEnd(9)} ${r.emotionP.toFixed(2)}`,
      );
    }
  }
}
