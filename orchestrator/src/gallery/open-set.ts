import { type FalseAcceptRate, GlanceError } from "@glance/shared";

/**
 * The open-set decision of a 1:N search. One probe compared with N identities is N chances of a false accept, so
 * a 1:1 threshold calibrated at FAR f lets through about 1 − (1 − f)^N of strangers. To keep the whole search at
 * the target false-accept rate F, each comparison must be held to f = 1 − (1 − F)^(1/N), and the threshold is read
 * off the embedder manifest's calibration at that f.
 *
 * The manifest gives thresholds at a few FARs (1e-2, 1e-3, 1e-4). Between them the threshold is interpolated
 * linearly in log10(FAR) (impostor tails are roughly exponential, and this is exact at every calibrated point).
 * Beyond the lowest calibrated FAR it is extrapolated along the last segment, but at most one decade further
 * (`EXTRAPOLATION_DECADES`): the 1e-4 points of the shipped manifests are already normal-fit guesses, so anything
 * further is invented. Past that, the threshold is clamped and the search's actual false-accept rate
 * (`expectedFar`) is higher than the target; `clamped` says so (Gallery.openSet carries it for logs and APIs). A
 * cosine never exceeds 1, so a threshold above `MAX_THRESHOLD` is clamped too (the embedder cannot tell that many
 * people apart at that FAR). Above the highest calibrated FAR (a lax target), the highest calibrated point's
 * threshold is used: stricter than asked, never laxer.
 *
 * N is the number of identities in the gallery (a person's score is their best template; their templates are of
 * one face, so they count once). Consent filtering only shrinks the set actually compared, so this errs strict.
 */
export interface OpenSetCalibration {
  /** 1:1 cosine thresholds by false-accept rate, from the embedder manifest (`embedding.thresholds`) */
  thresholds: Partial<Record<FalseAcceptRate, number>>;
  /** false-accept rate of a whole 1:N search to hold (GLANCE_FAR); default 1e-3 */
  far?: number;
  /**
   * a member match needs best − runner-up identity ≥ this (GLANCE_MARGIN); below it the probe is unknown with
   * reason "ambiguous". Cosine units of the embedder; default `DEFAULT_MARGIN`
   */
  margin?: number;
  /**
   * What `far` holds (GLANCE_OPEN_SET): "gallery-size" (default here) — the whole 1:N search, so the threshold rises
   * with the number of identities; "per-comparison" — each 1:1 comparison, the manifest's threshold at `far` whatever
   * the gallery size (the 1:N rate, `expectedFar`, then grows with N and is reported, not held).
   */
  scale?: "gallery-size" | "per-comparison";
}

/**
 * Default second-best margin, in cosine. Measured with `tsx orchestrator/src/gallery/measure-margin.ts` on the LFW
 * pairs (70 people, one photo enrolled, the other as probe), dlib-resnet at its 1e-3 threshold: 0.005 kept 120 of
 * 121 right answers and stopped 1 of 3 wrong members; 0.01 kept 114. Figures in that file's header.
 */
export const DEFAULT_MARGIN = 0.005;
export const DEFAULT_FAR = 1e-3;
/** how far below the lowest calibrated FAR the threshold may be extrapolated, in decades */
export const EXTRAPOLATION_DECADES = 1;
export const MAX_THRESHOLD = 0.999;

export interface OpenSetThreshold {
  /** cosine a best match must reach */
  threshold: number;
  /** identities the search runs against */
  identities: number;
  /** the configured 1:N false-accept target */
  targetFar: number;
  /** the 1:1 FAR each comparison was held to (after clamping) */
  perComparisonFar: number;
  /** the 1:N false-accept rate this threshold gives, by the calibration: > targetFar when clamped */
  expectedFar: number;
  /** true when the threshold lies beyond the lowest calibrated FAR (a guess along the last segment) */
  extrapolated: boolean;
  /** true when the target could not be met within the calibration (+ one decade) or a cosine of 1 */
  clamped: boolean;
}

/** The 1:1 FAR each of `identities` comparisons must keep to for a 1:N rate of `far` (exactly `far` at N ≤ 1). */
export function perComparisonFar(far: number, identities: number): number {
  if (identities <= 1) return far;
  // 1 − (1 − F)^(1/N), computed without cancellation for tiny F
  return -Math.expm1(Math.log1p(-far) / identities);
}

function calibrationPoints(thresholds: OpenSetCalibration["thresholds"]): Array<{ logFar: number; threshold: number }> {
  const points = Object.entries(thresholds)
    .filter((e): e is [string, number] => typeof e[1] === "number" && Number.isFinite(e[1]))
    .map(([far, threshold]) => ({ logFar: Math.log10(Number(far)), threshold }))
    .sort((a, b) => b.logFar - a.logFar);
  if (points.length === 0)
    throw new GlanceError(
      "CONFIG_INVALID",
      "The embedder manifest has no calibrated thresholds; rebuild the models (npm run build:models).",
    );
  return points;
}

/** The 1:1 cosine threshold at `far`, interpolated in log-FAR between calibrated points (see the module comment). */
export function thresholdAtFar(
  thresholds: OpenSetCalibration["thresholds"],
  far: number,
): { threshold: number; far: number; extrapolated: boolean; clamped: boolean } {
  const points = calibrationPoints(thresholds);
  const highest = points[0] as { logFar: number; threshold: number };
  const lowest = points[points.length - 1] as { logFar: number; threshold: number };
  let logFar = Math.log10(far);
  const exact = points.find((p) => Math.abs(p.logFar - logFar) < 1e-9);
  if (exact) return { threshold: exact.threshold, far, extrapolated: false, clamped: false };
  if (logFar >= highest.logFar)
    return { threshold: highest.threshold, far: 10 ** highest.logFar, extrapolated: false, clamped: true };
  let clamped = false;
  if (logFar < lowest.logFar - EXTRAPOLATION_DECADES) {
    logFar = lowest.logFar - EXTRAPOLATION_DECADES;
    clamped = true;
  }
  // the segment around logFar, or the lowest one when extrapolating
  let upper = highest;
  let lower = lowest;
  for (let i = 0; i + 1 < points.length; i++) {
    upper = points[i] as typeof upper;
    lower = points[i + 1] as typeof lower;
    if (logFar >= lower.logFar) break;
  }
  const extrapolated = logFar < lowest.logFar;
  let threshold =
    points.length === 1
      ? highest.threshold
      : lower.threshold +
        ((logFar - lower.logFar) * (upper.threshold - lower.threshold)) / (upper.logFar - lower.logFar);
  if (points.length === 1 && logFar !== highest.logFar) clamped = true;
  if (threshold > MAX_THRESHOLD) {
    // the FAR the capped threshold stands for, along the same segment (laxer than wanted: that is the point)
    if (upper.threshold !== lower.threshold)
      logFar =
        lower.logFar +
        ((MAX_THRESHOLD - lower.threshold) * (upper.logFar - lower.logFar)) / (upper.threshold - lower.threshold);
    threshold = MAX_THRESHOLD;
    clamped = true;
  }
  return { threshold, far: 10 ** logFar, extrapolated, clamped };
}

/** The open-set threshold for a 1:N search against `identities` people at a 1:N false-accept target `far`. */
export function openSetThreshold(
  thresholds: OpenSetCalibration["thresholds"],
  identities: number,
  far = DEFAULT_FAR,
): OpenSetThreshold {
  if (!(far > 0 && far < 1))
    throw new GlanceError("CONFIG_INVALID", `GLANCE_FAR must be a rate between 0 and 1 (e.g. 1e-3), not ${far}.`);
  const wanted = perComparisonFar(far, identities);
  const at = thresholdAtFar(thresholds, wanted);
  const n = Math.max(1, identities);
  return {
    threshold: at.threshold,
    identities,
    targetFar: far,
    perComparisonFar: at.far,
    expectedFar: at.clamped ? -Math.expm1(n * Math.log1p(-Math.min(at.far, 1 - 1e-12))) : far,
    extrapolated: at.extrapolated,
    clamped: at.clamped,
  };
}

/**
 * The calibration a Gallery runs with: the manifest's thresholds plus GLANCE_FAR / GLANCE_MARGIN / GLANCE_OPEN_SET
 * from the environment (checked: a typo must not silently fall back to a default). The orchestrator's default is
 * per-comparison: with the shipped embedder (dlib-resnet-int8, TAR 84% at 1:1 FAR 1e-3) holding a 1:N rate of 1e-3
 * needs 0.967 at 6 people and exceeds the calibration (clamped at 0.999) from about 35, i.e. it would recognise
 * nobody; the 1:N rate a gallery actually runs at is reported instead (GET /api/health `openSet.expectedFar`).
 */
export function openSetFromEnv(
  thresholds: OpenSetCalibration["thresholds"],
  env: Record<string, string | undefined> = process.env,
): OpenSetCalibration {
  const read = (name: string, fallback: number, ok: (x: number) => boolean) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const x = Number(raw);
    if (!Number.isFinite(x) || !ok(x))
      throw new GlanceError("CONFIG_INVALID", `${name}=${raw} is not valid; unset it or give a number in range.`);
    return x;
  };
  const scale = env.GLANCE_OPEN_SET || "per-comparison";
  if (scale !== "per-comparison" && scale !== "gallery-size")
    throw new GlanceError(
      "CONFIG_INVALID",
      `GLANCE_OPEN_SET=${scale} is not valid; use per-comparison (default) or gallery-size.`,
    );
  return {
    thresholds,
    far: read("GLANCE_FAR", DEFAULT_FAR, (x) => x > 0 && x < 1),
    margin: read("GLANCE_MARGIN", DEFAULT_MARGIN, (x) => x >= 0 && x < 1),
    scale,
  };
}
