import { performance } from "node:perf_hooks";

const WINDOW = 1000;

/** Per-stage wall time over the last WINDOW samples, for stats() and the status message. */
export class StageTimer {
  readonly #samples = new Map<string, { values: Float64Array; next: number; count: number }>();
  /** stages with a call in progress, and since when: the watchdog's view of a stage that hangs */
  readonly #active = new Map<string, number>();

  async time<T>(stage: string, work: () => T | Promise<T>): Promise<T> {
    const start = performance.now();
    this.#active.set(stage, start);
    try {
      return await work();
    } finally {
      this.#active.delete(stage);
      this.record(stage, performance.now() - start);
    }
  }

  /** The stage whose current call has run longest, if any is running. */
  busiest(): { stage: string; ms: number } | undefined {
    let out: { stage: string; ms: number } | undefined;
    const now = performance.now();
    for (const [stage, since] of this.#active) if (!out || now - since > out.ms) out = { stage, ms: now - since };
    return out;
  }

  /** Forgets calls in progress (they belong to a pipeline the watchdog has abandoned). */
  clearActive(): void {
    this.#active.clear();
  }

  record(stage: string, ms: number): void {
    let s = this.#samples.get(stage);
    if (!s) {
      s = { values: new Float64Array(WINDOW), next: 0, count: 0 };
      this.#samples.set(stage, s);
    }
    s.values[s.next] = ms;
    s.next = (s.next + 1) % WINDOW;
    s.count = Math.min(s.count + 1, WINDOW);
  }

  summary(): Record<string, { p50: number; p95: number }> {
    const out: Record<string, { p50: number; p95: number }> = {};
    for (const [stage, s] of this.#samples) {
      const sorted = s.values.slice(0, s.count).sort();
      const at = (q: number) => Math.round((sorted[Math.min(s.count - 1, Math.floor(q * s.count))] ?? 0) * 100) / 100;
      out[stage] = { p50: at(0.5), p95: at(0.95) };
    }
    return out;
  }
}

/** Running totals the stages add to; read by stats(). */
export interface Counters {
  frames: number;
  faces: number;
  tracks: number;
  templates: number;
  /** members-only: embeddings that matched the edge gallery (each then sealed to the orchestrator) */
  members: number;
  /** faces not considered for a template, by reason (too-small, low-quality, quality:<reason>, non-member, no-gallery) */
  skipped: Record<string, number>;
}

export function newCounters(): Counters {
  return { frames: 0, faces: 0, tracks: 0, templates: 0, members: 0, skipped: {} };
}

export function countSkip(counters: Counters, reason: string): void {
  counters.skipped[reason] = (counters.skipped[reason] ?? 0) + 1;
}
