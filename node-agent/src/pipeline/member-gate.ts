import type { PrivacyMode } from "@glance/shared";
import type { EdgeGallery } from "../gallery/edge-gallery.ts";
import type { TrackEnded } from "./best-shot.ts";
import type { Embedded } from "./embed.ts";
import { type Counters, countSkip, type StageTimer } from "./metrics.ts";

export interface GateContext {
  /** the privacy mode of the desired state now */
  mode: () => PrivacyMode | undefined;
  gallery: Pick<EdgeGallery, "loaded" | "match">;
  counters: Counters;
}

/**
 * Stage (members-only): matches each embedding against the edge gallery on the node. A face that is not a member
 * is discarded here, its embedding zeroed, and only counted (`non-member`; `no-gallery` while none is held): nothing
 * about it leaves the node. A member's embedding goes on to be sealed to the orchestrator, which confirms it against
 * its own gallery. In the other modes embeddings pass untouched.
 */
export async function* memberGate(
  input: AsyncIterable<Embedded | TrackEnded>,
  ctx: GateContext,
  timer: StageTimer,
): AsyncGenerator<Embedded | TrackEnded> {
  for await (const item of input) {
    if (item.kind !== "embedding" || ctx.mode() !== "members-only") {
      yield item;
      continue;
    }
    if (!ctx.gallery.loaded) {
      item.embedding.fill(0);
      countSkip(ctx.counters, "no-gallery");
      continue;
    }
    const match = await timer.time("match", () => ctx.gallery.match(item.embedding));
    if (!match) {
      item.embedding.fill(0);
      countSkip(ctx.counters, "non-member");
      continue;
    }
    ctx.counters.members++;
    yield item;
  }
}
