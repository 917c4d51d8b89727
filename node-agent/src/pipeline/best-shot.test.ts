import { describe, expect, it } from "vitest";
import { BestShotSelector, type Candidate } from "./best-shot.ts";

const INTERVAL = 5000;

function run(selector: BestShotSelector<string>, seen: Array<[ts: number, quality: number]>, trackId = "t1") {
  const sent: Candidate<string>[] = [];
  for (const [ts, quality] of seen) {
    const shot = selector.observe({ trackId, ts, quality, payload: `${trackId}@${ts}` }, INTERVAL);
    if (shot) sent.push(shot);
  }
  return sent;
}

describe("best shot", () => {
  it("sends a track's first face at once, then within each interval only the best face seen", () => {
    const selector = new BestShotSelector<string>();
    const sent = run(selector, [
      [0, 0.5],
      [1000, 0.7],
      [2000, 0.9],
      [3000, 0.6],
      [4999, 0.8],
      [5000, 0.4],
      [6000, 0.95],
    ]);
    // 0.5 immediately; at 5000 (the interval elapsed) the best since, 0.9 from ts 2000; 0.95 has to wait
    expect(sent.map((s) => [s.payload, s.quality])).toEqual([
      ["t1@0", 0.5],
      ["t1@2000", 0.9],
    ]);
    // at the end of the track, the 0.95 seen since the last template goes out
    expect(selector.end("t1")?.payload).toBe("t1@6000");
  });

  it("never sends more than one template per track per interval however good the faces get", () => {
    const selector = new BestShotSelector<string>();
    const seen: Array<[number, number]> = [];
    for (let ts = 0; ts <= 20_000; ts += 100) seen.push([ts, 0.1 + ts / 40_000]);
    const sent = run(selector, seen);
    expect(sent.map((s) => s.ts)).toEqual([0, 5000, 10000, 15000, 20000]);
    for (let i = 1; i < sent.length; i++)
      expect((sent[i] as Candidate<string>).quality).toBeGreaterThan((sent[i - 1] as Candidate<string>).quality);
  });

  it("sends nothing more at the end, or after the interval, when no better face came", () => {
    const selector = new BestShotSelector<string>();
    const sent = run(selector, [
      [0, 0.9],
      [3000, 0.5],
      [7000, 0.6],
    ]);
    expect(sent.map((s) => s.ts)).toEqual([0]);
    expect(selector.end("t1")).toBeUndefined();
  });

  it("keeps tracks apart", () => {
    const selector = new BestShotSelector<string>();
    expect(run(selector, [[0, 0.5]], "a")).toHaveLength(1);
    expect(run(selector, [[100, 0.4]], "b")).toHaveLength(1);
    expect(run(selector, [[200, 0.8]], "a")).toHaveLength(0);
    expect(selector.end("a")?.quality).toBe(0.8);
    expect(selector.end("b")).toBeUndefined();
  });
});
