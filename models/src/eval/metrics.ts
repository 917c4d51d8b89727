/**
 * 1:1 verification metrics from similarity scores. A pair is accepted when its score is strictly greater than the
 * threshold. FAR = accepted impostors / impostors, TAR = accepted genuines / genuines.
 */

export interface RocPoint {
  threshold: number;
  far: number;
  tar: number;
}

export interface TarAtFar {
  /** the FAR asked for */
  far: number;
  /** the FAR reached at the threshold (≤ far) */
  farActual: number;
  tar: number;
  threshold: number;
  /** impostor pairs accepted at this threshold: the evidence the FAR figure rests on */
  impostorsAccepted: number;
  /** false when fewer than 1/far impostor pairs exist: the FAR cannot be measured at all */
  supported: boolean;
}

export interface VerificationMetrics {
  genuinePairs: number;
  impostorPairs: number;
  auc: number;
  /** max over thresholds of (TAR + TRR) / 2: balanced, because impostors outnumber genuines */
  bestBalancedAccuracy: number;
  bestThreshold: number;
  tarAtFar: TarAtFar[];
  roc: RocPoint[];
}

/** ROC points, one per distinct score, from the strictest threshold (+∞: nothing accepted) down. */
export function rocCurve(genuine: readonly number[], impostor: readonly number[]): RocPoint[] {
  const all = [...genuine.map((s) => ({ s, g: true })), ...impostor.map((s) => ({ s, g: false }))].sort(
    (a, b) => b.s - a.s,
  );
  const points: RocPoint[] = [{ threshold: Number.POSITIVE_INFINITY, far: 0, tar: 0 }];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < all.length; i++) {
    const cur = all[i];
    if (!cur) continue;
    if (cur.g) tp++;
    else fp++;
    const next = all[i + 1];
    if (next && next.s === cur.s) continue;
    // accepting everything > next score: threshold sits at the next score (or -∞ at the end)
    points.push({
      threshold: next ? next.s : Number.NEGATIVE_INFINITY,
      far: impostor.length ? fp / impostor.length : 0,
      tar: genuine.length ? tp / genuine.length : 0,
    });
  }
  return points;
}

/** Area under the ROC: P(genuine score > impostor score) + ½ P(tie) (Mann–Whitney U / (n·m)). */
export function rocAuc(genuine: readonly number[], impostor: readonly number[]): number {
  const roc = rocCurve(genuine, impostor);
  let area = 0;
  for (let i = 1; i < roc.length; i++) {
    const a = roc[i - 1];
    const b = roc[i];
    if (a && b) area += (b.far - a.far) * (a.tar + b.tar) * 0.5;
  }
  return area;
}

export function tarAtFar(genuine: readonly number[], impostor: readonly number[], far: number): TarAtFar {
  const imp = [...impostor].sort((a, b) => b - a);
  const allowed = Math.floor(far * imp.length);
  // accept scores > imp[allowed]: at most `allowed` impostors pass
  const threshold = imp[allowed] ?? Number.NEGATIVE_INFINITY;
  const impostorsAccepted = imp.filter((s) => s > threshold).length;
  const tar = genuine.filter((s) => s > threshold).length / (genuine.length || 1);
  return {
    far,
    farActual: impostorsAccepted / (imp.length || 1),
    tar,
    threshold,
    impostorsAccepted,
    supported: imp.length * far >= 1,
  };
}

export function verificationMetrics(
  genuine: readonly number[],
  impostor: readonly number[],
  fars: readonly number[] = [1e-2, 1e-3, 1e-4],
): VerificationMetrics {
  const roc = rocCurve(genuine, impostor);
  let bestBalancedAccuracy = 0;
  let bestThreshold = 0;
  for (const p of roc) {
    const acc = (p.tar + (1 - p.far)) / 2;
    if (acc > bestBalancedAccuracy) {
      bestBalancedAccuracy = acc;
      bestThreshold = p.threshold;
    }
  }
  return {
    genuinePairs: genuine.length,
    impostorPairs: impostor.length,
    auc: rocAuc(genuine, impostor),
    bestBalancedAccuracy,
    bestThreshold,
    tarAtFar: fars.map((f) => tarAtFar(genuine, impostor, f)),
    roc,
  };
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return dot / (Math.sqrt(na * nb) || 1);
}
