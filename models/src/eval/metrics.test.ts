import { describe, expect, it } from "vitest";
import { rocAuc, rocCurve, tarAtFar, verificationMetrics } from "./metrics.ts";

// genuine pairs score 0.9, 0.8, 0.4; impostors 0.7, 0.3, 0.2, 0.1 — small enough to count by hand
const genuine = [0.9, 0.8, 0.4];
const impostor = [0.7, 0.3, 0.2, 0.1];

describe("verification metrics on a hand-computed case", () => {
  it("AUC counts genuine-over-impostor wins: 11 of 12 pairs here, and a tie counts half", () => {
    expect(rocAuc(genuine, impostor)).toBeCloseTo(11 / 12, 12);
    expect(rocAuc([0.5], [0.5])).toBeCloseTo(0.5, 12);
    expect(rocAuc([1, 1], [0, 0, 0])).toBe(1);
    expect(rocAuc([0], [1])).toBe(0);
  });

  it("the ROC walks from nothing accepted to everything accepted through each distinct score", () => {
    const roc = rocCurve(genuine, impostor);
    expect(roc[0]).toEqual({ threshold: Number.POSITIVE_INFINITY, far: 0, tar: 0 });
    expect(roc.at(-1)).toMatchObject({ far: 1, tar: 1 });
    // accepting scores > 0.7 takes the two top genuines and no impostor
    expect(roc.find((p) => p.threshold === 0.7)).toEqual({ threshold: 0.7, far: 0, tar: 2 / 3 });
    expect(roc).toHaveLength(genuine.length + impostor.length + 1);
  });

  it("TAR at a FAR uses the strictest threshold that lets at most that share of impostors through", () => {
    const at25 = tarAtFar(genuine, impostor, 0.25);
    expect(at25).toMatchObject({ threshold: 0.3, tar: 1, farActual: 0.25, impostorsAccepted: 1, supported: true });
    const at0 = tarAtFar(genuine, impostor, 0.1);
    expect(at0).toMatchObject({ threshold: 0.7, tar: 2 / 3, farActual: 0, impostorsAccepted: 0 });
  });

  it("a FAR finer than one impostor pair is flagged as unsupported", () => {
    expect(tarAtFar(genuine, impostor, 1e-3).supported).toBe(false);
  });

  it("balanced accuracy picks the threshold with the best mean of TAR and TRR", () => {
    const m = verificationMetrics(genuine, impostor);
    expect(m.bestBalancedAccuracy).toBeCloseTo((1 + 3 / 4) / 2, 12);
    expect(m.bestThreshold).toBe(0.3);
    expect(m.genuinePairs).toBe(3);
    expect(m.impostorPairs).toBe(4);
  });
});
