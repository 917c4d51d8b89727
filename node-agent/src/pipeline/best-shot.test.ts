import { describe, expect, it } from "vitest";
import { BestShotSelector, type Candidate } from "./best-shot.ts";

const TIMING = { intervalMs: 5000, settleMs: 1000 };

function run(selector: BestShotSelector<string>, seen: Array<[ts: number, quality: number]>, trackId = "t1") {
  const sent: Candidate<string>[] = [];
  for (const [ts, quality] of seen) {
    const shot = selector.observe({ trackId, ts, quality, payload: `${trackId}@${ts}` }, TIMING);
    if (shot) sent.push(shot);
  }
  return sent;
}

describe("best shot", () => {
  it("sends the best face of a track's first second, then the best face of each interval", () => {
    const selector = new BestShotSelector<string>();
    const sent = run(selector, [
      [0, 0.5],
      [400, 0.8],
      [800, 0.6],
      [1000, 0.7], // settled: the best so far (0.8 at 400) goes
      [2000, 0.9],
      [3000, 0.95],
      [5999, 0.6],
      [6000, 0.4], // interval over: the best since (0.95 at 3000) goes
      [7000, 0.3],
    ]);
    expect(sent.map((s) => [s.payload, s.quality])).toEqual([
      ["t1@400", 0.8],
      ["t1@3000", 0.95],
    ]);
    // 0.3 since then is no better than 0.95: nothing more at the end
    expect(selector.end("t1")).toBeUndefined();
  });

  it("at the end of a track sends the face seen since the last template when it is better", () => {
    const selector = new BestShotSelector<string>();
    const sent = run(selector, [
      [0, 0.5],
      [1000, 0.5],
      [2000, 0.9],
    ]);
    expect(sent.map((s) => s.ts)).toEqual([1000]);
    expect(selector.end("t1")?.payload).toBe("t1@2000");
  });

  it("never sends more than one template per track per interval, even for a face that stays perfect", () => {
    const selector = new BestShotSelector<string>();
    const seen: Array<[number, number]> = [];
    for (let ts = 0; ts <= 21_000; ts += 100) seen.push([ts, 1]);
    const sent = run(selector, seen);
    expect(sent.map((s) => s.ts)).toEqual([1000, 6000, 11000, 16000, 21000]);
    expect(selector.end("t1")).toBeUndefined();
  });

  it("a track too short to settle still sends its best face when it ends", () => {
    const selector = new BestShotSelector<string>();
    expect(
      run(selector, [
        [0, 0.4],
        [100, 0.7],
        [200, 0.5],
      ]),
    ).toEqual([]);
    expect(selector.end("t1")?.quality).toBe(0.7);
  });

  it("keeps tracks apart", () => {
    const selector = new BestShotSelector<string>();
    run(selector, [[0, 0.5]], "a");
    run(selector, [[100, 0.9]], "b");
    expect(selector.end("a")?.quality).toBe(0.5);
    expect(selector.end("b")?.quality).toBe(0.9);
  });
});
