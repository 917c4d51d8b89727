import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels } from "./build.ts";
import { calibrate, LFW_DIR, lfwScores } from "./calibrate.ts";
import { FacePipeline } from "./inference/pipeline.ts";
import { FR_FEATURE_CALIBRATION } from "./recipes.ts";

// the dataset lives beside the project (../shared), not in a user's clone: skipped without it, except where
// GLANCE_REQUIRE_DATASETS is set (CI), where a missing dataset fails instead of passing quietly
const haveLfw = existsSync(LFW_DIR);
describe.skipIf(!haveLfw && !process.env.GLANCE_REQUIRE_DATASETS)("fr-feature on LFW pairs", () => {
  let pipeline: FacePipeline;
  beforeAll(async () => {
    if (!haveLfw) {
      throw new Error(
        `GLANCE_REQUIRE_DATASETS is set but ${LFW_DIR} is missing: put shared/datasets beside the project.`,
      );
    }
    await buildModels();
    // fr-feature's own calibration, whatever the default embedder is
    pipeline = await FacePipeline.load({ embedder: "fr-feature", threads: 2 });
  });
  afterAll(async () => {
    await pipeline?.close();
  });

  it("tells the same person from different people, and the shipped thresholds are the measured ones", async () => {
    const scores = await lfwScores(pipeline);
    const c = calibrate(scores);
    console.log(
      `LFW: ${c.genuinePairs} genuine / ${c.impostorPairs} impostor pairs, genuine mean ${c.genuineMean.toFixed(3)}, ` +
        `impostor mean ${c.impostorMean.toFixed(3)}, best accuracy ${c.bestAccuracy.toFixed(4)} at ${c.bestThreshold.toFixed(3)}, ` +
        `AUC ${c.auc.toFixed(4)}, thresholds ${JSON.stringify(c.thresholds)}`,
    );
    expect(scores.undetected).toBeLessThanOrEqual(3);
    expect(c.genuinePairs).toBe(70);
    expect(c.genuineMean - c.impostorMean).toBeGreaterThan(0.4);
    expect(c.bestAccuracy).toBeGreaterThanOrEqual(0.95);
    // onnxruntime and sharp versions may move scores a little, not the calibration
    for (const far of ["1e-2", "1e-3", "1e-4"] as const) {
      expect(Math.abs(c.thresholds[far] - FR_FEATURE_CALIBRATION.thresholds[far])).toBeLessThan(0.02);
    }
    expect(pipeline.threshold("1e-3")).toBe(FR_FEATURE_CALIBRATION.thresholds["1e-3"]);
  });
});
