import type { PrivacyMode } from "@glance/shared";
import { describe, expect, it } from "vitest";
import type { TrackEnded } from "./best-shot.ts";
import type { Embedded } from "./embed.ts";
import { memberGate } from "./member-gate.ts";
import { newCounters, StageTimer } from "./metrics.ts";

const face = (trackId: string, v: number[]): Embedded => ({
  kind: "embedding",
  trackId,
  ts: 1,
  quality: 0.9,
  embedding: Float32Array.from(v),
});
const ended = { kind: "track-ended", track: { trackId: "t1" } } as unknown as TrackEnded;

async function gate(
  mode: PrivacyMode,
  gallery: { loaded: boolean; members?: number[][] },
  items: (Embedded | TrackEnded)[],
) {
  const counters = newCounters();
  async function* source() {
    yield* items;
  }
  const out: (Embedded | TrackEnded)[] = [];
  const match = (probe: Float32Array) => {
    const hit = gallery.members?.find((m) => m.every((x, i) => x === probe[i]));
    return hit ? { personId: "member", score: 1 } : undefined;
  };
  for await (const item of memberGate(
    source(),
    { mode: () => mode, gallery: { loaded: gallery.loaded, match }, counters },
    new StageTimer(),
  ))
    out.push(item);
  return { out, counters };
}

describe("member gate", () => {
  it("in members-only without a gallery lets no face through, only counts them (and track ends still pass)", async () => {
    const probe = face("t1", [1, 0]);
    const { out, counters } = await gate("members-only", { loaded: false }, [probe, ended]);
    expect(out).toEqual([ended]);
    expect(counters.skipped["no-gallery"]).toBe(1);
    expect([...probe.embedding]).toEqual([0, 0]);
  });

  it("in members-only passes members, drops and zeroes everyone else", async () => {
    const member = face("t1", [1, 0]);
    const stranger = face("t2", [0, 1]);
    const { out, counters } = await gate("members-only", { loaded: true, members: [[1, 0]] }, [member, stranger]);
    expect(out).toEqual([member]);
    expect(counters.members).toBe(1);
    expect(counters.skipped["non-member"]).toBe(1);
    expect([...stranger.embedding]).toEqual([0, 0]);
  });

  it("in visitor mode leaves every face alone", async () => {
    const a = face("t1", [1, 0]);
    const b = face("t2", [0, 1]);
    const { out, counters } = await gate("visitor", { loaded: false }, [a, b]);
    expect(out).toEqual([a, b]);
    expect(counters.skipped).toEqual({});
  });
});
