import { access, readdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { GlanceError, ModelManifest } from "@glance/shared";
import { sha256Of } from "../build.ts";
import { signerLabel } from "../signing/keys.ts";
import { verifyManifest } from "../signing/sign.ts";
import { type ModelTrust, resolveTrust } from "../signing/trust.ts";

/** models/dist of this checkout, unless GLANCE_MODELS_DIR points elsewhere (a node's model store, a test dir). */
export function defaultModelsDir(): string {
  const env = process.env.GLANCE_MODELS_DIR;
  return env ? resolve(env) : resolve(dirname(fileURLToPath(import.meta.url)), "../../dist");
}

/**
 * Reads `<dir>/<name>/<version>/manifest.json` (the newest version unless `name@version` is given), checks its
 * signature against the trusted model-signing keys (default: resolveTrust(), see signing/trust.ts) and then the
 * model file against the manifest's sha256, before anyone loads it.
 */
export async function loadManifest(
  dir: string,
  name: string,
  opts: { trust?: ModelTrust } = {},
): Promise<{ manifest: ModelManifest; modelPath: string; signedBy: string }> {
  const [base, wanted] = name.split("@") as [string, string | undefined];
  const root = join(dir, base);
  const version = wanted ?? (await newestVersion(root));
  if (!version) {
    throw new GlanceError("MODEL_NOT_FOUND", `No model ${name} in ${dir}: run \`npm run models:build\` first.`, {
      dir,
      name,
    });
  }
  const mdir = join(root, version);
  let manifest: ModelManifest;
  try {
    manifest = ModelManifest.parse(JSON.parse(await readFile(join(mdir, "manifest.json"), "utf8")));
  } catch (cause) {
    const missing = (cause as NodeJS.ErrnoException).code === "ENOENT";
    throw new GlanceError(
      missing ? "MODEL_NOT_FOUND" : "MODEL_CORRUPT",
      missing
        ? `No manifest for ${base}@${version} in ${dir}: run \`npm run models:build\` first.`
        : `The manifest of ${base}@${version} is unreadable or invalid: run \`npm run models:build -- --force\`.`,
      { dir: mdir },
      { cause },
    );
  }
  const signedBy = verifyManifest(manifest, opts.trust ?? (await resolveTrust()), `${base}@${version} (${mdir})`);
  const modelPath = join(mdir, manifest.file);
  try {
    await access(modelPath);
  } catch (cause) {
    throw new GlanceError(
      "MODEL_NOT_FOUND",
      `${modelPath} is missing: run \`npm run models:build\`.`,
      { modelPath },
      { cause },
    );
  }
  const sha256 = await sha256Of(modelPath);
  if (sha256 !== manifest.sha256) {
    throw new GlanceError(
      "MODEL_CORRUPT",
      `${base}@${version}: model file does not match the sha256 in its (${signerLabel(signedBy)}) manifest; ` +
        (signerLabel(signedBy) === "HQ-signed"
          ? `replace ${mdir} with a fresh copy of the release from HQ.`
          : `delete ${mdir} and run \`npm run models:build\`.`),
      { modelPath, expected: manifest.sha256, actual: sha256 },
    );
  }
  return { manifest, modelPath, signedBy };
}

async function newestVersion(root: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = (await readdir(root, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && !e.name.startsWith("."))
      .map((e) => e.name);
  } catch {
    return undefined;
  }
  return entries.sort(compareVersions).at(-1);
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isFinite(nx) && Number.isFinite(ny) && x !== "" && y !== "" ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}
