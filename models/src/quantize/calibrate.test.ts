import { describe, expect, it } from "vitest";
import { entropyThreshold, histogramQuantiles } from "./calibrate.ts";

describe("activation range calibration", () => {
  it("percentile ranges cut off the rarest values on each side", () => {
    const h = new Float64Array(100);
    h[0] = 1; // one outlier low
    for (let i = 10; i < 90; i++) h[i] = 100;
    h[99] = 1; // one outlier high
    expect(histogramQuantiles(h, 0.001, 0.999)).toEqual([10, 89]);
    expect(histogramQuantiles(h, 0, 1)).toEqual([0, 99]);
  });

  it("entropy clips a long sparse tail but keeps the bulk of a distribution", () => {
    // |x| histogram: a half-normal bulk over the first ~600 bins, then a handful of far outliers
    const h = new Float64Array(2048);
    for (let i = 0; i < 2048; i++) h[i] = Math.round(1e6 * Math.exp(-((i / 200) ** 2) / 2));
    h[1900] = 3;
    h[2047] = 1;
    const t = entropyThreshold(h, 128);
    expect(t).toBeGreaterThan(400);
    expect(t).toBeLessThan(1900);
  });
});
