import type { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { NodeLink } from "../link.ts";
import type { TrackEnded } from "./best-shot.ts";
import type { Counters, StageTimer } from "./metrics.ts";
import type { Sealed } from "./seal.ts";

export interface PublishContext {
  link: Pick<NodeLink, "send">;
  nodeId: string;
  cameraId: string;
  counters: Counters;
  timer: StageTimer;
  /** receives "template" {trackId, seq, quality, bytes} once the broker has the template */
  events: EventEmitter;
  log: Logger;
}

/**
 * Sink: sealed templates to the template topic, ended tracks as anonymous dwell events. It does not wait for the
 * broker: a slow or absent broker must not stall the cameras (the client queues while offline).
 */
export async function publish(input: AsyncIterable<Sealed | TrackEnded>, ctx: PublishContext): Promise<void> {
  for await (const item of input) {
    if (item.kind === "template") {
      const { trackId, seq, quality } = item.template;
      const started = performance.now();
      ctx.link.send("template", item.template).then(
        (bytes) => {
          ctx.timer.record("deliver", performance.now() - started);
          ctx.counters.templates++;
          ctx.events.emit("template", { trackId, seq, quality, bytes });
        },
        (err: Error) => ctx.log.warn({ seq, err: err.message }, "template not delivered"),
      );
    } else {
      const { track } = item;
      ctx.link
        .send("event", {
          nodeId: ctx.nodeId,
          ts: Math.round(track.lastSeenTs),
          kind: "track-ended",
          cameraId: ctx.cameraId,
          trackId: track.trackId,
          dwellMs: Math.max(0, Math.round(track.lastSeenTs - track.firstSeenTs)),
        })
        .catch((err: Error) => ctx.log.warn({ trackId: track.trackId, err: err.message }, "track event not delivered"));
    }
  }
}
