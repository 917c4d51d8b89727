import { dirname } from "node:path";
import { isGlanceError } from "@glance/shared";
import { beforeAll, describe, expect, it } from "vitest";
import { buildModels } from "../build.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { quantizeModelDir } from "./quantize-dir.ts";

beforeAll(async () => {
  await buildModels();
});

describe("models:quantize on a model directory", () => {
  it("refuses a detector and says detectors stay fp32", async () => {
    const { modelPath } = await loadManifest(defaultModelsDir(), "blazeface-back");
    const err = await quantizeModelDir(dirname(modelPath)).catch((e: unknown) => e);
    expect(isGlanceError(err) && err.code).toBe("CONFIG_INVALID");
    expect(String((err as Error).message)).toMatch(/stay fp32/);
  });
});
