import { DEFAULT_EMBEDDER, defaultModelsDir, loadManifest } from "@glance/models";
import { describe, expect, it } from "vitest";
import { Gallery, type Member } from "./gallery.ts";
import {
  EXTRAPOLATION_DECADES,
  openSetFromEnv,
  openSetThreshold,
  perComparisonFar,
  thresholdAtFar,
} from "./open-set.ts";

const { manifest } = await loadManifest(defaultModelsDir(), DEFAULT_EMBEDDER);
if (!manifest.embedding) throw new Error(`${DEFAULT_EMBEDDER} has no embedding spec`);
const calibrated = manifest.embedding.thresholds;
// a calibration with room to move: the shipped fr-feature figures (1e-4 is already a normal-fit guess there)
const wide = { "1e-2": 0.3532, "1e-3": 0.4461, "1e-4": 0.5069 };

describe("open-set threshold from the embedder's calibration", () => {
  it("is exactly the manifest's 1e-3 threshold for a gallery of one identity", () => {
    expect(openSetThreshold(calibrated, 1, 1e-3).threshold).toBe(calibrated["1e-3"]);
    expect(openSetThreshold(calibrated, 0, 1e-3).threshold).toBe(calibrated["1e-3"]);
    expect(openSetThreshold(calibrated, 1, 1e-2).threshold).toBe(calibrated["1e-2"]);
    expect(openSetThreshold(calibrated, 1, 1e-3)).toMatchObject({ extrapolated: false, clamped: false });
  });

  it("rises with the number of identities, keeping the 1:N false-accept rate at the target", () => {
    const sizes = [1, 2, 5, 10, 100, 1000];
    const thresholds = sizes.map((n) => openSetThreshold(wide, n, 1e-3).threshold);
    for (let i = 1; i < sizes.length; i++) expect(thresholds[i]).toBeGreaterThan(thresholds[i - 1] as number);
    // 10 identities at 1e-3 overall ≈ 1e-4 per comparison: the manifest's 1e-4 point
    expect(openSetThreshold(wide, 10, 1e-3).threshold).toBeCloseTo(0.5069, 3);
    // 1 − (1 − f)^N really is the target
    const f = perComparisonFar(1e-3, 1000);
    expect(1 - (1 - f) ** 1000).toBeCloseTo(1e-3, 12);
  });

  it("interpolates in log-FAR between calibrated points", () => {
    // halfway between 1e-2 and 1e-3 in log space
    expect(thresholdAtFar(wide, 10 ** -2.5).threshold).toBeCloseTo((0.3532 + 0.4461) / 2, 10);
  });

  it("extrapolates one decade past the lowest calibrated FAR, then clamps and says the target is missed", () => {
    const slope = 0.5069 - 0.4461;
    const at100 = openSetThreshold(wide, 100, 1e-3); // needs 1e-5 per comparison: the edge of extrapolation
    expect(at100.threshold).toBeCloseTo(0.5069 + slope, 3);
    expect(at100).toMatchObject({ extrapolated: true, clamped: false, expectedFar: 1e-3 });
    const at1m = openSetThreshold(wide, 1_000_000, 1e-3);
    expect(at1m.threshold).toBeCloseTo(0.5069 + EXTRAPOLATION_DECADES * slope, 10);
    expect(at1m.clamped).toBe(true);
    expect(at1m.expectedFar).toBeGreaterThan(0.99);
    // a compressed calibration (dlib's cosines) runs into cosine 1: clamped below it rather than matching nobody
    const capped = openSetThreshold(calibrated, 70, 1e-3);
    expect(capped).toMatchObject({ clamped: true, threshold: 0.999 });
    // and the rate it reports is the one the capped threshold gives, above the target
    expect(capped.expectedFar).toBeGreaterThan(1e-3);
    expect(capped.perComparisonFar).toBeGreaterThan(perComparisonFar(1e-3, 70));
  });

  it("never goes laxer than the highest calibrated FAR", () => {
    expect(openSetThreshold(wide, 1, 0.1)).toMatchObject({ threshold: 0.3532, clamped: true });
  });

  it("reads GLANCE_FAR and GLANCE_MARGIN, refusing nonsense instead of falling back", () => {
    expect(openSetFromEnv(wide, { GLANCE_FAR: "1e-2", GLANCE_MARGIN: "0.02" })).toMatchObject({
      far: 0.01,
      margin: 0.02,
    });
    expect(openSetFromEnv(wide, {}).far).toBe(1e-3);
    expect(() => openSetFromEnv(wide, { GLANCE_FAR: "0.1%" })).toThrow(/GLANCE_FAR/);
    expect(() => openSetFromEnv(wide, { GLANCE_MARGIN: "-1" })).toThrow(/GLANCE_MARGIN/);
    expect(openSetFromEnv(wide, {}).scale).toBe("per-comparison");
    expect(openSetFromEnv(wide, { GLANCE_OPEN_SET: "gallery-size" }).scale).toBe("gallery-size");
    expect(() => openSetFromEnv(wide, { GLANCE_OPEN_SET: "gallery" })).toThrow(/GLANCE_OPEN_SET/);
  });

  it("per comparison (the orchestrator's default), keeps the manifest threshold and reports the 1:N rate it gives", () => {
    const person = (id: string, x: number): [Member, Float32Array[]] => [
      { personId: id, displayName: id, consents: [{ scope: "all-stores", expiresAt: null }] },
      [Float32Array.from([x, Math.sqrt(1 - x * x)])],
    ];
    const perComparison = new Gallery("s@1", { thresholds: calibrated, far: 1e-3, scale: "per-comparison" });
    const gallerySize = new Gallery("s@1", { thresholds: calibrated, far: 1e-3, scale: "gallery-size" });
    for (let i = 0; i < 6; i++) {
      perComparison.add(...person(`p${i}`, i / 10));
      gallerySize.add(...person(`p${i}`, i / 10));
    }
    expect(perComparison.openSet).toMatchObject({
      threshold: calibrated["1e-3"],
      identities: 6,
      scale: "per-comparison",
    });
    // six chances of a 1e-3 false accept
    expect(perComparison.openSet.expectedFar).toBeCloseTo(1 - (1 - 1e-3) ** 6, 12);
    expect(gallerySize.openSet.threshold).toBeGreaterThan(calibrated["1e-3"] as number);
    expect(gallerySize.openSet.expectedFar).toBe(1e-3);
  });
});
