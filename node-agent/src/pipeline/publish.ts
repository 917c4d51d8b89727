import type { Logger } from "pino";
import type { Outbox } from "../queue/outbox.ts";
import type { TrackEnded } from "./best-shot.ts";
import type { StageTimer } from "./metrics.ts";
import type { Sealed } from "./seal.ts";

export interface PublishContext {
  outbox: Pick<Outbox, "enqueue">;
  nodeId: string;
  cameraId: string;
  timer: StageTimer;
  log: Logger;
}

/**
 * Sink: sealed templates and ended tracks (anonymous dwell events) into the store-and-forward queue. It does not
 * wait for the disk or the broker: a slow SD card or an absent broker must not stall the cameras. The outbox sends
 * them in order, and the agent reports a template once the broker has it.
 */
export async function publish(input: AsyncIterable<Sealed | TrackEnded>, ctx: PublishContext): Promise<void> {
  for await (const item of input) {
    const started = performance.now();
    const queued =
      item.kind === "template"
        ? ctx.outbox.enqueue("template", item.template)
        : ctx.outbox.enqueue("event", {
            nodeId: ctx.nodeId,
            ts: Math.round(item.track.lastSeenTs),
            kind: "track-ended",
            cameraId: ctx.cameraId,
            trackId: item.track.trackId,
            dwellMs: Math.max(0, Math.round(item.track.lastSeenTs - item.track.firstSeenTs)),
          });
    void queued.then(() => ctx.timer.record("queue", performance.now() - started));
  }
}
