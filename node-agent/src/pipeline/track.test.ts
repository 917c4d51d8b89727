import { describe, expect, it } from "vitest";
import { type Box, IouTracker, iou } from "./track.ts";

const face = (x: number, y: number, size = 80): { box: Box } => ({ box: { x, y, width: size, height: size } });

describe("IoU tracker", () => {
  it("keeps one stable id for a face walking across the frame", () => {
    const tracker = new IouTracker<{ box: Box }>();
    const ids = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const { tracked, ended } = tracker.update([face(20 + i * 12, 100 + i * 2)], i * 100);
      expect(ended).toEqual([]);
      for (const t of tracked) ids.add(t.trackId);
    }
    expect(ids.size).toBe(1);
    expect(tracker.created).toBe(1);
  });

  it("gives two people side by side two tracks that never swap, even as they pass close", () => {
    const tracker = new IouTracker<{ box: Box }>();
    const byPerson: [Set<string>, Set<string>] = [new Set(), new Set()];
    for (let i = 0; i < 30; i++) {
      // A and B walk towards each other until their boxes are 10 px apart, then back away
      const step = 15 - Math.abs(15 - i);
      const a = face(100 + step * 5, 100);
      const b = face(340 - step * 5, 100);
      const { tracked } = tracker.update(i % 2 ? [b, a] : [a, b], i * 100);
      for (const t of tracked) byPerson[t.face === a ? 0 : 1].add(t.trackId);
    }
    expect(byPerson[0].size).toBe(1);
    expect(byPerson[1].size).toBe(1);
    expect([...byPerson[0]][0]).not.toBe([...byPerson[1]][0]);
  });

  it("bridges a few missed frames, then ends the track with its dwell", () => {
    const tracker = new IouTracker<{ box: Box }>({ maxMissed: 3 });
    const first = tracker.update([face(100, 100)], 1000).tracked[0]?.trackId;
    tracker.update([face(104, 100)], 1100);
    tracker.update([], 1200);
    tracker.update([], 1300);
    expect(tracker.update([face(108, 100)], 1400).tracked[0]?.trackId).toBe(first);
    for (let i = 0; i < 3; i++) expect(tracker.update([], 1500 + i * 100).ended).toEqual([]);
    const { ended } = tracker.update([], 1800);
    expect(ended).toEqual([{ trackId: first, firstSeenTs: 1000, lastSeenTs: 1400, hits: 3 }]);
  });

  it("starts a new track when a face appears where none was (IoU below 0.3)", () => {
    const tracker = new IouTracker<{ box: Box }>();
    const a = tracker.update([face(100, 100)], 0).tracked[0]?.trackId;
    // shifted by 45 of 80 px: IoU = 35*80 / (2*6400 - 35*80) = 0.28
    expect(iou(face(100, 100).box, face(145, 100).box)).toBeLessThan(0.3);
    const b = tracker.update([face(145, 100)], 100).tracked[0]?.trackId;
    expect(b).not.toBe(a);
    expect(
      tracker
        .flush()
        .map((t) => t.trackId)
        .sort(),
    ).toEqual([a, b].sort());
  });
});
