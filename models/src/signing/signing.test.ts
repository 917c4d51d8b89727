import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { isGlanceError, type ModelManifest } from "@glance/shared";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels, builtVersion, DEFAULT_DIST, MODELS_ROOT } from "../build.ts";
import { loadManifest } from "../inference/manifest.ts";
import { DEFAULT_DETECTOR, defaultEmbedder, FacePipeline } from "../inference/pipeline.ts";
import { quantizedRecipes } from "../quantize/recipe.ts";
import {
  devSigningKey,
  generateHqKey,
  type ModelSigningKey,
  readSigningKey,
  readTrustFile,
  type TrustedKey,
} from "./keys.ts";
import { signModelDir } from "./sign.ts";

const run = promisify(execFile);
/** the models a default pipeline loads, as `name/version` folders under dist */
const MODELS = [DEFAULT_DETECTOR, defaultEmbedder()].map((name) => {
  const version = builtVersion(name);
  if (!version) throw new Error(`no recipe named ${name}`);
  return `${name}/${version}`;
});
const EMBEDDER = defaultEmbedder();
/** an int8 embedder is made from its fp32 model: a copy of dist carries it too, so a rebuild need not fetch it */
const SOURCE = quantizedRecipes.find((q) => q.name === EMBEDDER)?.from;

let scratch: string;
let hq: { key: ModelSigningKey; trust: TrustedKey[]; keyFile: string; trustFile: string };
let stranger: ModelSigningKey;

beforeAll(async () => {
  await buildModels();
  scratch = await mkdtemp(join(tmpdir(), "glance-signing-"));
  const made = await generateHqKey(join(scratch, "hq-keys"));
  hq = { ...made, key: await readSigningKey(made.keyFile), trust: await readTrustFile(made.trustFile) };
  stranger = await readSigningKey((await generateHqKey(join(scratch, "stranger-keys"))).keyFile);
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** a private copy of the default models, signed by `key` (never touches models/dist) */
async function signedCopy(key?: ModelSigningKey): Promise<string> {
  const dist = await mkdtemp(join(scratch, "dist-"));
  for (const m of MODELS) {
    await cp(join(DEFAULT_DIST, m), join(dist, m), { recursive: true });
    if (key) await signModelDir(join(dist, m), key);
  }
  if (SOURCE) {
    const m = `${SOURCE}/${builtVersion(SOURCE)}`;
    await cp(join(DEFAULT_DIST, m), join(dist, m), { recursive: true });
    if (key) await signModelDir(join(dist, m), key);
  }
  return dist;
}

async function editManifest(dir: string, edit: (m: ModelManifest) => void): Promise<void> {
  const path = join(dir, "manifest.json");
  const m = JSON.parse(await readFile(path, "utf8")) as ModelManifest;
  edit(m);
  await writeFile(path, JSON.stringify(m, null, 2));
}

async function loadError(modelsDir: string, trustedKeys?: TrustedKey[]): Promise<unknown> {
  const p = await FacePipeline.load({ modelsDir, ...(trustedKeys ? { trustedKeys } : {}) }).catch((e: unknown) => e);
  if (p instanceof FacePipeline) await p.close();
  return p;
}

describe("models signed at HQ", () => {
  it("load on a node that trusts the HQ key, and say who signed them", async () => {
    const dist = await signedCopy(hq.key);
    const pipeline = await FacePipeline.load({ modelsDir: dist, trustedKeys: hq.trust });
    try {
      expect(pipeline.detector.signature?.keyId).toBe(hq.key.keyId);
      expect(pipeline.embedder.signature?.keyId).toBe(hq.key.keyId);
      expect(pipeline.space).toBe(MODELS[1]?.replace("/", "@"));
    } finally {
      await pipeline.close();
    }
    const { signedBy } = await loadManifest(dist, EMBEDDER, { trust: { keys: hq.trust, source: "test" } });
    expect(signedBy).toBe(hq.key.keyId);
  });

  it("with one flipped byte in model.onnx are refused as MODEL_CORRUPT", async () => {
    const dist = await signedCopy(hq.key);
    const file = join(dist, MODELS[1] as string, "model.onnx");
    const bytes = await readFile(file);
    bytes[12345] = (bytes[12345] ?? 0) ^ 0x01;
    await writeFile(file, bytes);
    const err = await loadError(dist, hq.trust);
    expect(isGlanceError(err, "MODEL_CORRUPT")).toBe(true);
    expect((err as Error).message).toMatch(/does not match the sha256 in its \(HQ-signed\) manifest.*fresh copy/);
  });

  it("whose threshold was edited after signing are refused as MODEL_SIGNATURE_INVALID", async () => {
    const dist = await signedCopy(hq.key);
    await editManifest(join(dist, MODELS[1] as string), (m) => {
      if (m.embedding) m.embedding.thresholds["1e-3"] = 0.2;
    });
    const err = await loadError(dist, hq.trust);
    expect(isGlanceError(err, "MODEL_SIGNATURE_INVALID")).toBe(true);
    expect((err as Error).message).toMatch(/changed after signing/);
  });

  it("whose sha256 was swapped for a replaced model file are refused as MODEL_SIGNATURE_INVALID", async () => {
    const dist = await signedCopy(hq.key);
    const dir = join(dist, MODELS[1] as string);
    const bytes = await readFile(join(dir, "model.onnx"));
    bytes[12345] = (bytes[12345] ?? 0) ^ 0x01;
    await writeFile(join(dir, "model.onnx"), bytes);
    await editManifest(dir, (m) => {
      m.sha256 = createHash("sha256").update(bytes).digest("hex");
    });
    expect(isGlanceError(await loadError(dist, hq.trust), "MODEL_SIGNATURE_INVALID")).toBe(true);
  });
});

describe("a node with trusted keys configured", () => {
  it("refuses unsigned models and says how to sign them", async () => {
    const dist = await signedCopy(hq.key);
    await editManifest(join(dist, MODELS[0] as string), (m) => {
      delete m.signature;
    });
    const err = await loadError(dist, hq.trust);
    expect(isGlanceError(err, "MODEL_SIGNATURE_INVALID")).toBe(true);
    expect((err as Error).message).toMatch(/is not signed.*models:sign/s);
  });

  it("refuses models signed by a key it does not trust", async () => {
    const dist = await signedCopy(stranger);
    const err = await loadError(dist, hq.trust);
    expect(isGlanceError(err, "MODEL_SIGNATURE_INVALID")).toBe(true);
    expect((err as Error).message).toContain(`key ${stranger.keyId}, which is not trusted`);
  });

  it("refuses this checkout's dev-signed models when it trusts HQ keys only", async () => {
    const dist = await signedCopy(await devSigningKey());
    const err = await loadError(dist, hq.trust);
    expect(isGlanceError(err, "MODEL_SIGNATURE_INVALID")).toBe(true);
    expect((err as Error).message).toMatch(/is dev-signed by key dev-/);
  });

  it("reads its trusted keys from GLANCE_MODEL_TRUST, as a trust file or inline JSON", async () => {
    const saved = process.env.GLANCE_MODEL_TRUST;
    try {
      const signed = await signedCopy(hq.key);
      const devSigned = await signedCopy(await devSigningKey());
      process.env.GLANCE_MODEL_TRUST = hq.trustFile;
      expect(await loadError(signed)).toBeInstanceOf(FacePipeline);
      expect(isGlanceError(await loadError(devSigned), "MODEL_SIGNATURE_INVALID")).toBe(true);
      process.env.GLANCE_MODEL_TRUST = JSON.stringify(
        [stranger, hq.trust[0]].map((k) => ({ keyId: k?.keyId, publicKey: k?.publicKey })),
      );
      expect(await loadError(signed)).toBeInstanceOf(FacePipeline);
      process.env.GLANCE_MODEL_TRUST = JSON.stringify([{ keyId: stranger.keyId, publicKey: hq.key.publicKey }]);
      const err = await loadError(signed);
      expect(isGlanceError(err, "CONFIG_INVALID")).toBe(true);
      expect((err as Error).message).toMatch(/does not belong to its public key/);
    } finally {
      if (saved === undefined) delete process.env.GLANCE_MODEL_TRUST;
      else process.env.GLANCE_MODEL_TRUST = saved;
    }
  });
});

describe("the zero-config developer path", () => {
  it("builds dev-signed models that load without any trust configuration", async () => {
    const results = await buildModels();
    const dev = await devSigningKey();
    expect(results.map((r) => r.signedBy)).toEqual(results.map(() => dev.keyId));
    expect(dev.keyId).toMatch(/^dev-[0-9a-f]{16}$/);
    expect(await loadError(await signedCopy())).toBeInstanceOf(FacePipeline);
  });

  it("models:build keeps HQ signatures, and rebuilds (never re-signs) a dev-signed manifest edited by hand", async () => {
    const hqDist = await signedCopy(hq.key);
    const kept = await buildModels({ distDir: hqDist, only: [EMBEDDER] });
    expect(kept.map((r) => [r.status, r.signedBy])).toEqual(kept.map(() => ["up-to-date", hq.key.keyId]));

    const devDist = await signedCopy();
    const dir = join(devDist, MODELS[1] as string);
    const { manifest: original } = await loadManifest(devDist, EMBEDDER);
    const dim = original.embedding?.dim ?? 0;
    expect(original.outputs[0]?.shape).toEqual([1, dim]);
    await editManifest(dir, (m) => {
      m.outputs = [{ name: "output", type: "float32", shape: [1, dim + 1] }];
    });
    expect(isGlanceError(await loadError(devDist), "MODEL_SIGNATURE_INVALID")).toBe(true);
    const rebuilt = (await buildModels({ distDir: devDist, only: [EMBEDDER] })).find((r) => r.name === EMBEDDER);
    expect(rebuilt?.status).toBe("built");
    const { manifest } = await loadManifest(devDist, EMBEDDER);
    expect(manifest.outputs).toEqual(original.outputs);
  });

  it("still refuses unsigned models", async () => {
    const dist = await signedCopy();
    await editManifest(join(dist, MODELS[1] as string), (m) => {
      delete m.signature;
    });
    expect(isGlanceError(await loadError(dist), "MODEL_SIGNATURE_INVALID")).toBe(true);
  });

  it("is off in production: NODE_ENV=production without GLANCE_MODEL_TRUST refuses to load models", async () => {
    const saved = { env: process.env.NODE_ENV, trust: process.env.GLANCE_MODEL_TRUST };
    process.env.NODE_ENV = "production";
    delete process.env.GLANCE_MODEL_TRUST;
    try {
      const err = await loadError(await signedCopy());
      expect(isGlanceError(err, "CONFIG_INVALID")).toBe(true);
      expect((err as Error).message).toMatch(/GLANCE_MODEL_TRUST/);
    } finally {
      process.env.NODE_ENV = saved.env;
      if (saved.trust !== undefined) process.env.GLANCE_MODEL_TRUST = saved.trust;
    }
  });
});

describe("models:keygen and models:sign", () => {
  it("make a 0600 key and a trust file, sign a model dir, and never overwrite a key", async () => {
    const out = join(scratch, "cli-keys");
    const tsx = resolve(MODELS_ROOT, "../node_modules/.bin/tsx");
    const cli = join(MODELS_ROOT, "src/cli.ts");
    const keygen = await run(tsx, [cli, "keygen", "--out", out]);
    const printed = JSON.parse(keygen.stdout) as TrustedKey;
    const [trusted] = await readTrustFile(join(out, "model-signing.pub.json"));
    expect(trusted).toEqual(printed);
    const hex = createHash("sha256").update(Buffer.from(printed.publicKey, "base64url")).digest("hex");
    expect(printed.keyId).toBe(hex.slice(0, 16));
    expect((await stat(join(out, "model-signing.key.json"))).mode & 0o777).toBe(0o600);

    const again = await run(tsx, [cli, "keygen", "--out", out]).catch((e: { code: number; stderr: string }) => e);
    expect(again).toMatchObject({ code: 1, stderr: expect.stringMatching(/CONFLICT: .*already exists/) });
    expect(JSON.parse(await readFile(join(out, "model-signing.pub.json"), "utf8"))).toEqual(printed);

    const dist = await signedCopy();
    const key = join(out, "model-signing.key.json");
    await run(tsx, [cli, "sign", ...MODELS.map((m) => join(dist, m)), "--key", key]);
    const pipeline = await FacePipeline.load({ modelsDir: dist, trustedKeys: [printed] });
    expect(pipeline.embedder.signature?.keyId).toBe(printed.keyId);
    await pipeline.close();
  });
});
